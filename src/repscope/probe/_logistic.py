"""``LinearProbe``: L2 logistic regression (softmax or sigmoid heads) along a regularization path.

Regularization convention (the one used everywhere in repscope)
-----------------------------------------------------------------
.. math::

    L(W, b) = \\frac{1}{n} \\sum_{i=1}^n w_i \\, \\ell(W x_i + b, y_i) + \\frac{\\lambda}{2} \\|W\\|_F^2

with ``ell`` the softmax cross-entropy (or the sum of per-label binary cross-entropies for
sigmoid heads), ``w_i`` the class/sample weights and the intercept ``b`` unpenalised.
scikit-learn minimises ``C sum_i w_i ell_i + ||W||^2 / 2``, which has the same minimiser when
``lambda = 1 / (C n)``: :func:`lambda_from_C` and :func:`C_from_lambda` convert.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, ClassVar, Literal

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions

from repscope._array import from_numpy_like, get_namespace, is_torch, to_numpy
from repscope._params import ParameterError, TorchDevice, ValidatedEstimator, parameter_error
from repscope._validation import check_features, check_labels
from repscope.exceptions import RepscopeValueError
from repscope.probe._lbfgs import CurvatureMemory, LogisticObjective, minimize_lbfgs
from repscope.probe._logistic_common import (
    C_from_lambda,
    PathPointResult,
    _all_sum_array,
    _all_union,
    _index,
    _mean_variance,
    _score_sums,
    lambda_from_C,
    stratified_splits,
)

__all__ = ["C_from_lambda", "LinearProbe", "PathPointResult", "lambda_from_C"]

_SMALL_PROBLEM = 2e7  # n * (d + 1) * heads below which the float64 numpy solver is used
_PRECOND_ROWS = 10000  # rows (per rank) used to estimate the preconditioner's covariance


@dataclass
class _Solver:
    obj: LogisticObjective
    mu: np.ndarray | None  # centring (preconditioned coordinates)
    V: np.ndarray | None  # rotation; original W = W_s V^T
    ev: np.ndarray | None
    curv: float  # typical curvature of the loss in the logits (1/K softmax, 1/4 sigmoid)
    vtmu: Any = None  # V^T mu, cached for the gradient-norm bound


class LinearProbe(ClassifierMixin, ValidatedEstimator):
    """Softmax (multinomial) or sigmoid (multi-label) logistic-regression probe with L2.

    Fits the whole path of ``lambdas`` from strong to weak regularization with full-batch
    L-BFGS, warm-starting each value from the previous solution and carrying the curvature
    pairs over (corrected exactly for the change of the quadratic penalty). The features are
    optionally centred and rotated into the eigenbasis of their covariance, and L-BFGS starts
    from the diagonal inverse Hessian ``1 / (c * eigenvalue + lambda)`` there — a whitening-like
    preconditioner that leaves the objective unchanged (the intercept absorbs the centring).
    The objective is the module-level convention ``(1/n) sum_i w_i loss_i + lambda/2 ||W||^2``.

    Parameters
    ----------
    C : float, optional
        A single scikit-learn ``C`` (converted with :func:`lambda_from_C`). Exclusive with
        ``lambdas``.
    lambdas : float or sequence of float, optional
        L2 strengths (sorted from strong to weak before fitting). Default: 8 values
        ``mean feature variance * logspace(-1, -6, 8)`` (``lambda`` scales with the square of
        the feature scale).
    path : bool
        Warm-start along the path (True) or fit each value from zero (False).
    selection : {"holdout", "kfold", "fixed"}
        How the value is chosen when there are several: a stratified holdout split of the
        training data (``validation_fraction``), stratified ``cv``-fold cross-validation, or a
        fixed validation set passed to ``fit(X_val=..., y_val=...)`` (the path is then fitted
        on all of ``X`` and no refit is needed).
    scoring : {"accuracy", "log_loss"}
        Validation score (higher is better; ``log_loss`` is negated).
    refit : bool
        After holdout/k-fold selection, refit on all the data at the chosen value.
    multilabel : bool
        ``y`` is an ``(n, L)`` 0/1 indicator matrix; ``L`` independent sigmoid heads.
    class_weight : None, "balanced" or dict
        As in scikit-learn (``"balanced"``: ``n / (K n_k)``). Not with ``multilabel``.
    precondition : bool
        Use the eigenbasis preconditioner.
    max_iter : int
        Most L-BFGS iterations per path value.
    tol : float
        Stop when ``max |gradient| <= tol`` (scikit-learn's rule, same scale).
    memory : int
        Number of L-BFGS curvature pairs.
    validation_fraction : float
        Held-out fraction for ``selection="holdout"``.
    cv : int
        Folds for ``selection="kfold"``.
    solver : {"auto", "numpy", "torch"}
        ``numpy``: float64 numpy/BLAS (the fast path for small problems, CPU only); ``torch``:
        float32 matrix products with float64 sums, on the input's device. ``auto`` picks
        numpy for numpy inputs with ``n (d + 1) heads < 2e7`` and torch otherwise.
    device : str, optional
        Torch device for the computation; default: the input's device (CPU for numpy).
    chunk_size : int
        Rows per chunk of the torch objective.
    random_state : int
        Seed for the holdout/k-fold splits.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (label indices ``0..L-1`` for multi-label).
    coef_ : ndarray of shape (n_heads, n_features)
        Head weights (float64); ``n_heads`` is 1 for two classes (sigmoid, as scikit-learn).
    intercept_ : ndarray of shape (n_heads,)
    lambda_, C_ : float
        Selected strength and scikit-learn's equivalent ``C``.
    lambdas_ : ndarray of shape (n_lambdas,)
        The grid, strong to weak.
    coef_path_, intercept_path_ : ndarray of shape (n_lambdas, n_heads, n_features) / (n_lambdas, n_heads)
        Heads along the path fitted on the selection's training data (all of ``X`` for
        ``fixed`` or a single value; the holdout training part for ``holdout``; the last
        fold for ``kfold``).
    path_ : list of PathPointResult
        Per-value convergence records of every fit made (all folds, then the refit).
    scores_ : ndarray of shape (n_lambdas,) or (cv, n_lambdas), or None
        Validation scores.
    n_iter_ : ndarray of shape (n_lambdas,)
        Iterations per value of the path in ``coef_path_``.
    n_features_in_ : int

    Notes
    -----
    Under ``torch.distributed`` pass ``fit(..., group=...)`` with each rank holding a shard:
    the covariance (preconditioner) is all-reduced through :class:`~repscope.stats.Moments`
    and the loss and gradient sums of every L-BFGS evaluation are all-reduced (SUM), so all
    ranks run identical iterations and end with the same head. For ``selection="holdout"`` or
    ``"kfold"`` with several values the shards must be contiguous blocks of the rows in rank
    order (rank 0 the first rows, as :meth:`repscope.distributed.DistContext.share` cuts
    them): the labels are all-gathered, the splits drawn on all of them as in one process,
    and the validation scores all-summed, so the selection (and, with ``solver="auto"`` on
    numpy input, the float64 solver of one process) are those of a one-process fit on the
    concatenated rows, up to float rounding. ``selection="fixed"`` takes sharded
    ``X_val``/``y_val`` in any order.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 5)); y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    >>> probe = LinearProbe(C=1.0).fit(X, y)
    >>> probe.path_[0].converged, float(probe.score(X, y)) > 0.7
    (True, True)
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "C": [None, Interval(Real, 0, np.inf, closed="neither")],
        "lambdas": [None, Interval(Real, 0, np.inf, closed="neither"), "array-like"],
        "path": ["boolean"],
        "selection": [StrOptions({"holdout", "kfold", "fixed"})],
        "scoring": [StrOptions({"accuracy", "log_loss"})],
        "refit": ["boolean"],
        "multilabel": ["boolean"],
        "class_weight": [None, StrOptions({"balanced"}), Mapping],
        "precondition": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, np.inf, closed="left")],
        "memory": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "solver": [StrOptions({"auto", "numpy", "torch"})],
        "device": [None, str, Interval(Integral, 0, None, closed="left"), TorchDevice()],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
    }

    def __init__(
        self,
        C: float | None = None,
        lambdas: float | Sequence[float] | None = None,
        *,
        path: bool = True,
        selection: Literal["holdout", "kfold", "fixed"] = "holdout",
        scoring: Literal["accuracy", "log_loss"] = "accuracy",
        refit: bool = True,
        multilabel: bool = False,
        class_weight: str | Mapping[Any, float] | None = None,
        precondition: bool = True,
        max_iter: int = 500,
        tol: float = 1e-4,
        memory: int = 10,
        validation_fraction: float = 0.2,
        cv: int = 5,
        solver: Literal["auto", "numpy", "torch"] = "auto",
        device: str | None = None,
        chunk_size: int = 8192,
        random_state: int = 0,
    ) -> None:
        self.C = C
        self.lambdas = lambdas
        self.path = path
        self.selection = selection
        self.scoring = scoring
        self.refit = refit
        self.multilabel = multilabel
        self.class_weight = class_weight
        self.precondition = precondition
        self.max_iter = max_iter
        self.tol = tol
        self.memory = memory
        self.validation_fraction = validation_fraction
        self.cv = cv
        self.solver = solver
        self.device = device
        self.chunk_size = chunk_size
        self.random_state = random_state

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        """Validate the parameters (``_parameter_constraints``) and how they combine."""
        self._validate_params()
        if self.C is not None and self.lambdas is not None:
            raise ParameterError(
                "LinearProbe takes either C (scikit-learn's convention) or lambdas, not "
                f"both; got C={self.C!r} and lambdas={self.lambdas!r}."
            )
        if self.multilabel and self.class_weight is not None:
            raise RepscopeValueError(
                "class_weight is not supported with multilabel=True; pass sample weights "
                "through fit(sample_weight=...) instead."
            )

    def _grid(self, n: int, X: Any, group: Any = None, offset: int = 0) -> np.ndarray:
        if self.C is not None:
            return np.array([lambda_from_C(float(self.C), n)])
        if self.lambdas is None:
            var = _mean_variance(X) if group is None else _mean_variance_ranks(X, group, offset,
                                                                               n)
            return var * np.logspace(-1, -6, 8)
        lam = np.atleast_1d(np.asarray(self.lambdas, dtype=np.float64))
        if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam <= 0):
            raise parameter_error(
                self, "lambdas", "a positive finite number or a non-empty 1-D sequence of them "
                "(a tiny value such as 1e-8 for an almost unregularized head)", self.lambdas)
        return np.sort(np.unique(lam))[::-1].copy()

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        X: Any,
        y: Any,
        *,
        X_val: Any = None,
        y_val: Any = None,
        sample_weight: Any = None,
        group: Any = None,
    ) -> LinearProbe:
        """Fit the path and select a value.

        Parameters
        ----------
        X : array-like or Tensor of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels (ints or strings), or a 0/1 indicator matrix with ``multilabel``.
        X_val, y_val : optional
            Fixed validation data for ``selection="fixed"``.
        sample_weight : array-like of shape (n_samples,), optional
            Multiplies the class weights.
        group : torch.distributed process group, optional
            Fit across ranks (each passes its shard); see Notes.

        Returns
        -------
        self

        Raises
        ------
        RepscopeValueError
            One class only, NaN features, mismatched lengths, missing validation data.
        """
        self._check_params()
        distributed = group is not None
        if distributed:
            import torch.distributed as dist

            if not dist.is_available() or not dist.is_initialized():
                raise RepscopeValueError(
                    "group was given but torch.distributed is not initialised; call "
                    "torch.distributed.init_process_group first (e.g. under torchrun)."
                )
        X = check_features(X, name="X", min_samples=1)
        n = int(X.shape[0])
        T, w = self._encode_targets(X, y, sample_weight, group if distributed else None)
        offset, n_total = _offset_and_total(n, group) if distributed else (0, float(n))
        lambdas = self._grid(int(n_total), X, group, offset)
        several = lambdas.size > 1
        if several and self.selection == "fixed" and (X_val is None or y_val is None):
            raise RepscopeValueError(
                "selection='fixed' needs validation data: call fit(X, y, X_val=..., y_val=...)."
            )
        solver = self._make_solver(X, T, w, n_total, group, offset)
        self.lambdas_ = lambdas
        self.n_features_in_ = int(X.shape[1])
        self.path_: list[PathPointResult] = []
        self.scores_: np.ndarray | None = None

        if not several or self.selection == "fixed":
            thetas = self._fit_path(solver, lambdas, "all")
            if several:
                Xv, yv = self._val_data(X_val, y_val, X)
                scores = np.array([self._score_theta(solver, th, Xv, yv, group) for th in thetas])
                self.scores_ = scores
                best = int(np.argmax(scores))
                self._attach_scores(scores, "all")
            else:
                best = 0
            theta_final = thetas[best]
            path_thetas = thetas
        else:
            T_all = _gather_rows(T, group) if distributed else T
            folds = stratified_splits(T_all, int(n_total), self.selection,
                                      self.validation_fraction, int(self.cv), self.random_state)
            scores = np.zeros((len(folds), lambdas.size))
            path_thetas = []
            for f_i, (tr_all, va_all) in enumerate(folds):
                split = "train" if self.selection == "holdout" else f"fold{f_i}"
                tr, va = _local(tr_all, offset, n), _local(va_all, offset, n)
                sub = self._subset_solver(solver, tr, float(tr_all.size))
                path_thetas = self._fit_path(sub, lambdas, split)
                X_va = X[_index(X, va)]
                y_va = T[va] if T.ndim == 1 or self.multilabel else T[va, 0].astype(np.int64)
                for j, th in enumerate(path_thetas):
                    scores[f_i, j] = self._score_theta(solver, th, X_va, y_va, group)
                self._attach_scores(scores[f_i], split)
            mean = scores.mean(axis=0)
            self.scores_ = scores[0] if self.selection == "holdout" else scores
            best = int(np.argmax(mean))
            theta_final = path_thetas[best]
            if self.refit:
                theta_final = self._fit_path(
                    solver, lambdas[best : best + 1], "refit", init=theta_final
                )[0]
        self.lambda_ = float(lambdas[best])
        self.C_ = C_from_lambda(self.lambda_, int(n_total))
        self.coef_, self.intercept_ = self._to_original(solver, theta_final)
        coefs = [self._to_original(solver, th) for th in path_thetas]
        self.coef_path_ = np.stack([c for c, _ in coefs])
        self.intercept_path_ = np.stack([b for _, b in coefs])
        path_split = [p.split for p in self.path_ if p.split != "refit"][-1]
        self.n_iter_ = np.array([p.n_iter for p in self.path_ if p.split == path_split])
        return self

    def _encode_targets(
        self, X: Any, y: Any, sample_weight: Any, group: Any
    ) -> tuple[np.ndarray, np.ndarray | None]:
        n = int(X.shape[0])
        if self.multilabel:
            Y = to_numpy(y) if is_torch(y) else np.asarray(y)
            if Y.ndim != 2 or Y.shape[0] != n:
                raise RepscopeValueError(
                    f"y must be an (n_samples, n_labels) 0/1 indicator matrix with "
                    f"multilabel=True; got shape {Y.shape} for X with {n} rows."
                )
            if not np.all((Y == 0) | (Y == 1)):
                raise RepscopeValueError("y must hold only 0 and 1 with multilabel=True.")
            self.classes_ = np.arange(Y.shape[1])
            self._loss = "sigmoid"
            T = Y.astype(np.float64)
            w = None
        else:
            labels = check_labels(y, n_samples=n, name="y")
            local = np.unique(labels)
            classes = _all_union(local, group) if group is not None else local
            if classes.size < 2:
                raise RepscopeValueError(
                    f"y must contain at least 2 distinct classes to fit a probe; got only "
                    f"{classes.tolist()!r}."
                )
            self.classes_ = classes
            idx = np.searchsorted(classes, labels)
            if classes.size == 2:
                self._loss = "sigmoid"
                T = (idx == 1).astype(np.float64)[:, None]
            else:
                self._loss = "softmax"
                T = idx.astype(np.int64)
            w = self._class_weights(idx, classes, group)
        if sample_weight is not None:
            sw = np.asarray(to_numpy(sample_weight), dtype=np.float64)
            if sw.shape != (n,) or not np.all(np.isfinite(sw)) or np.any(sw < 0):
                raise RepscopeValueError(
                    f"sample_weight must be a non-negative finite 1-D array of length {n}; got "
                    f"shape {sw.shape}."
                )
            w = sw if w is None else w * sw
        return T, w

    def _class_weights(self, idx: np.ndarray, classes: np.ndarray, group: Any) -> np.ndarray | None:
        cw = self.class_weight
        if cw is None:
            return None
        K = classes.size
        if cw == "balanced":
            counts = np.bincount(idx, minlength=K).astype(np.float64)
            if group is not None:
                counts = _all_sum_array(counts, group)
            per = counts.sum() / (K * np.maximum(counts, 1.0))
        else:
            assert isinstance(cw, Mapping)
            unknown = [k for k in cw if k not in set(classes.tolist())]
            if unknown:
                raise RepscopeValueError(
                    f"class_weight names labels {unknown!r} that are not in y; classes are "
                    f"{classes.tolist()!r}."
                )
            per = np.array([float(cw.get(c, 1.0)) for c in classes.tolist()])
        return per[idx]

    def _make_solver(self, X: Any, T: np.ndarray, w: np.ndarray | None, n_total: float,
                     group: Any, offset: int = 0) -> _Solver:
        import repscope._kernels.eigenpath as ep
        from repscope.stats import Moments

        d = int(X.shape[1])
        heads = int(T.shape[1]) if T.ndim == 2 else int(self.classes_.size)
        backend, dev = get_namespace(X)
        # the size rule reads the global n, so every rank of a distributed fit picks the same
        use_torch = (
            self.solver == "torch"
            or (self.solver == "auto"
                and (backend == "torch" or n_total * (d + 1) * heads >= _SMALL_PROBLEM))
        )
        if self.solver == "numpy" and (backend == "torch" and dev != "cpu"):
            raise RepscopeValueError(
                f"solver='numpy' runs on the CPU; X is on {dev}. Use solver='torch' or 'auto'."
            )
        mu = V = ev = None
        if self.precondition:
            # the covariance only shapes the preconditioner (the objective is unchanged), so an
            # evenly spaced subsample of at most `_PRECOND_ROWS` rows is enough (the same
            # global rows whatever the number of ranks)
            m = Moments()
            stride = max(1, -(-round(n_total) // _PRECOND_ROWS))
            rows = X[(-offset) % stride::stride]
            step = max(1, 2**22 // max(d, 1))
            for lo in range(0, int(rows.shape[0]), step):
                m.update(rows[lo : lo + step])
            if group is not None:
                m.all_reduce(group)
            mu = np.asarray(m.mean, dtype=np.float64)
            basis = ep.eigh_psd(m.covariance(ddof=0))
            ev, V = basis.values, basis.vectors
        loss: Literal["softmax", "sigmoid"] = "sigmoid" if self._loss == "sigmoid" else "softmax"
        curv = 0.25 if loss == "sigmoid" else 1.0 / heads
        if use_torch:
            import torch

            device = torch.device(self.device) if self.device is not None else (
                X.device if is_torch(X) else torch.device("cpu"))
            Xt = X if is_torch(X) else torch.from_numpy(np.ascontiguousarray(X))
            Xs = Xt.to(device=device, dtype=torch.float32)  # no copy for float32 input
            tgt = torch.as_tensor(T if T.ndim == 1 else T.astype(np.float32), device=device)
            wt = None if w is None else torch.as_tensor(w, dtype=torch.float32, device=device)
            tb = None
            if V is not None:
                assert mu is not None
                tb = (torch.as_tensor(V, dtype=torch.float64, device=device),
                      torch.as_tensor(mu, dtype=torch.float64, device=device))
            obj = LogisticObjective(Xs, tgt, wt, n_total=n_total, n_out=heads, loss=loss,
                                    group=group, chunk_size=self.chunk_size,
                                    distributed=group is not None, basis=tb)
        else:
            # small problems: rotate the data once instead of the head at every evaluation
            Xn = np.asarray(to_numpy(X), dtype=np.float64)
            nb = None if V is None or mu is None else (V, mu)
            Xs = np.ascontiguousarray(Xn if nb is None else (Xn - nb[1]) @ nb[0])
            obj = LogisticObjective(Xs, T, w, n_total=n_total, n_out=heads, loss=loss, basis=nb,
                                    basis_in_data=nb is not None, group=group,
                                    distributed=group is not None)
        return _Solver(obj, mu, V, ev, curv)

    def _subset_solver(self, solver: _Solver, rows: np.ndarray, n_total: float) -> _Solver:
        """The objective on this rank's ``rows`` of ``solver``'s data (``n_total`` of them over
        every rank)."""
        o = solver.obj
        X = o.X[_index(o.X, rows)]
        tgt = o.target[_index(o.target, rows)]
        w = None if o.weights is None else o.weights[_index(o.weights, rows)]
        obj = LogisticObjective(X, tgt, w, n_total=n_total, n_out=o.n_out, loss=o.loss,
                                chunk_size=o.chunk_size, basis=o.basis,
                                basis_in_data=o.basis_in_data, group=o.group,
                                distributed=o.distributed)
        return _Solver(obj, solver.mu, solver.V, solver.ev, solver.curv)

    def _h0(self, solver: _Solver, lam: float) -> Any:
        o = solver.obj
        if solver.ev is None:
            h = np.ones(o.n_params)
        else:
            hw = 1.0 / (solver.curv * solver.ev + lam)
            h = np.concatenate([np.tile(hw, o.n_out), np.full(o.n_out, 1.0 / solver.curv)])
        return o._vec(h)

    def _fit_path(self, solver: _Solver, lambdas: np.ndarray, split: str,
                  init: Any = None) -> list[Any]:
        o = solver.obj
        mem = CurvatureMemory(size=int(self.memory))
        mask = o.penalty_mask()
        theta = o.zeros() if init is None else init
        state: tuple[float, Any] | None = None
        lam_prev: float | None = None
        out = []
        n_total = round(o.n_total)
        f_noise = 0.0 if not o.is_torch else 1e-6 * float(np.sqrt(1.0 / max(o.n_total, 1.0)))
        for i, lam in enumerate(lambdas.tolist()):
            if not self.path and i > 0:
                theta, state, lam_prev = o.zeros(), None, None
                mem = CurvatureMemory(size=int(self.memory))
            if state is not None and lam_prev is not None:
                # exact update of (f, g) and of the curvature pairs for the new penalty
                delta = lam - lam_prev
                W, _ = o.split(theta)
                f0 = state[0] + 0.5 * delta * float((W * W).sum())
                state = (f0, state[1] + delta * (mask * theta))
                mem.shift_penalty(delta, mask)
            o.lam = lam
            res = minimize_lbfgs(
                o, theta, h0=self._h0(solver, lam), grad_max=lambda g: self._grad_max(solver, g),
                tol=float(self.tol), max_iter=int(self.max_iter), memory=mem, f_noise=f_noise,
                start=state,
            )
            theta, state, lam_prev = res.x, (res.f, res.g), lam
            W, _ = o.split(theta)
            self.path_.append(PathPointResult(
                lam=lam, C=C_from_lambda(lam, n_total), split=split, n_iter=res.n_iter,
                n_evals=res.n_evals, grad_max=self._grad_max_exact(solver, res.g),
                objective=res.f,
                converged=res.converged, warm_start_met_tol=bool(i > 0 and self.path
                                                                 and res.n_iter == 0),
                weight_norm=float(np.sqrt(float((W * W).sum()))), val_score=None,
                status=res.status,
            ))
            out.append(theta)
        return out

    def _grad_max(self, solver: _Solver, g: Any) -> float:
        """``max |gradient|`` in the user's coordinates, or a lower bound above ``tol``.

        The exact value needs the ``K x d x d`` rotation back; the Frobenius norm does not
        (the rotation is orthogonal). Since ``||G||_F / sqrt(p) <= max|G| <= ||G||_F``, the
        rotation is only done when the Frobenius norm cannot decide ``max|G| <= tol``.
        """
        o = solver.obj
        if o.basis is None:
            return float(abs(g).max())
        gWs, gb = o.split(g)
        V, mu = o.basis
        if solver.vtmu is None:
            solver.vtmu = V.T @ mu
        vtmu = solver.vtmu
        # ||gWs V^T + gb mu^T||^2 + ||gb||^2, expanded (V orthogonal)
        fro2 = (float((gWs * gWs).sum()) + 2.0 * float(gb @ (gWs @ vtmu))
                + float(gb @ gb) * (float(mu @ mu) + 1.0))
        fro = float(np.sqrt(max(fro2, 0.0)))
        lower = fro / float(np.sqrt(o.n_params))
        if lower > float(self.tol):
            return lower
        return self._grad_max_exact(solver, g)

    def _grad_max_exact(self, solver: _Solver, g: Any) -> float:
        gW, gb = solver.obj.grad_to_user(g)
        return max(float(abs(gW).max()), float(abs(gb).max()))

    def _to_original(self, solver: _Solver, theta: Any) -> tuple[np.ndarray, np.ndarray]:
        W, b = solver.obj.to_user(theta)
        return (np.asarray(to_numpy(W), dtype=np.float64),
                np.asarray(to_numpy(b), dtype=np.float64))

    def _attach_scores(self, scores: np.ndarray, split: str) -> None:
        j = 0
        for i, p in enumerate(self.path_):
            if p.split == split and p.val_score is None:
                self.path_[i] = PathPointResult(**{**p.__dict__, "val_score": float(scores[j])})
                j += 1

    # ------------------------------------------------------------------ selection helpers
    def _val_data(self, X_val: Any, y_val: Any, X: Any) -> tuple[Any, np.ndarray]:
        Xv = check_features(X_val, name="X_val")
        get_namespace(X, Xv)
        if int(Xv.shape[1]) != int(X.shape[1]):
            raise RepscopeValueError(
                f"X_val must have {X.shape[1]} features like X; got shape {tuple(Xv.shape)}."
            )
        if self.multilabel:
            return Xv, np.asarray(to_numpy(y_val) if is_torch(y_val) else y_val, dtype=np.float64)
        yv = check_labels(y_val, n_samples=int(Xv.shape[0]), name="y_val")
        idx = np.searchsorted(self.classes_, yv)
        idx = np.clip(idx, 0, self.classes_.size - 1)
        if not np.all(self.classes_[idx] == yv):
            raise RepscopeValueError(
                "y_val holds labels that are not in y: "
                f"{sorted(set(yv.tolist()) - set(self.classes_.tolist()))[:5]!r}."
            )
        return Xv, idx

    def _score_theta(self, solver: _Solver, theta: Any, Xv: Any, yv: np.ndarray,
                     group: Any) -> float:
        Z = _logits(solver, theta, Xv)
        s, c = _score_sums(Z, yv, self._loss, self.scoring, self.multilabel)
        if group is not None:
            s, c = _all_sum_array(np.array([s, c]), group).tolist()
        return s / max(c, 1.0)

    # ------------------------------------------------------------------ prediction
    def decision_function(self, X: Any) -> Any:
        """Logits ``X W^T + b``, shape (n_samples, n_heads), in the caller's backend/dtype."""
        self._check_fitted()
        X = check_features(X, name="X")
        if int(X.shape[1]) != self.n_features_in_:
            raise RepscopeValueError(
                f"decision_function expected X with {self.n_features_in_} columns; got shape "
                f"{tuple(X.shape)}."
            )
        if is_torch(X):
            import torch

            dt = X.dtype if X.dtype.is_floating_point else torch.float32
            W = torch.as_tensor(self.coef_, dtype=dt, device=X.device)
            b = torch.as_tensor(self.intercept_, dtype=dt, device=X.device)
            return torch.addmm(b, X.to(dt), W.T)
        Xn = np.asarray(X)
        dt = Xn.dtype if Xn.dtype.kind == "f" else np.float64
        return (Xn.astype(dt, copy=False) @ self.coef_.T.astype(dt) + self.intercept_.astype(dt))

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities (n_samples, n_classes), or per-label probabilities for multi-label."""
        Z = self.decision_function(X)
        Zn = np.asarray(to_numpy(Z), dtype=np.float64)
        if self._loss == "softmax":
            Zn = Zn - Zn.max(axis=1, keepdims=True)
            P = np.exp(Zn)
            P /= P.sum(axis=1, keepdims=True)
        else:
            P = 0.5 * (1.0 + np.tanh(0.5 * Zn))
            if not self.multilabel:
                P = np.concatenate([1.0 - P, P], axis=1)
        return from_numpy_like(P, Z)

    def predict(self, X: Any) -> Any:
        """Labels (n_samples,), or the 0/1 matrix (n_samples, n_labels) for multi-label."""
        Z = np.asarray(to_numpy(self.decision_function(X)), dtype=np.float64)
        if self.multilabel:
            out: np.ndarray = (Z > 0).astype(np.int64)
        elif self._loss == "sigmoid":
            out = self.classes_[(Z[:, 0] > 0).astype(np.int64)]
        else:
            out = self.classes_[Z.argmax(axis=1)]
        if is_torch(X) and out.dtype.kind in "iub":
            import torch

            return torch.as_tensor(out, device=X.device)
        return out

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy (mean per-label accuracy for multi-label)."""
        pred = to_numpy(self.predict(X)) if is_torch(X) else self.predict(X)
        yt = to_numpy(y) if is_torch(y) else np.asarray(y)
        hits = (pred == yt).astype(np.float64)
        if hits.ndim == 2:
            hits = hits.mean(axis=1)
        if sample_weight is not None:
            sw = np.asarray(to_numpy(sample_weight), dtype=np.float64)
            return float((hits * sw).sum() / sw.sum())
        return float(hits.mean())

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            from repscope.exceptions import NotFittedError

            raise NotFittedError(
                "This LinearProbe is not fitted yet; call fit(X, y) before using it."
            )

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


# ---------------------------------------------------------------------- helpers
def _logits(solver: _Solver, theta: Any, X: Any) -> np.ndarray:
    """Logits of the head ``theta`` on raw features, float64 numpy (torch math on torch)."""
    o = solver.obj
    if o.basis_in_data:  # X_val raw, the solver's X rotated: score with the user's head
        W, b = o.to_user(theta)
        return np.asarray(np.asarray(to_numpy(X), dtype=np.float64) @ W.T + b)
    W, b = o.to_user(theta)
    if o.is_torch:
        import torch

        Xt = X if is_torch(X) else torch.from_numpy(np.ascontiguousarray(X))
        Xt = Xt.to(device=o.X.device, dtype=o.X.dtype)
        return to_numpy(torch.addmm(b.to(Xt.dtype), Xt, W.to(Xt.dtype).T), dtype=np.float64)
    Xn = np.asarray(to_numpy(X), dtype=np.float64)
    return np.asarray(Xn @ W.T + b)


def _offset_and_total(n: int, group: Any) -> tuple[int, float]:
    """This rank's first row in the concatenation of the shards (rank order), and the total."""
    import torch.distributed as dist

    sizes: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(sizes, n, group=group)
    rank = dist.get_rank(group)
    return int(sum(sizes[:rank])), float(sum(sizes))


def _gather_rows(T: np.ndarray, group: Any) -> np.ndarray:
    """Every rank's encoded targets, concatenated in rank order (small: one row per sample)."""
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, T, group=group)
    return np.concatenate(parts)


def _local(rows: np.ndarray, offset: int, n: int) -> np.ndarray:
    """The global ``rows`` (sorted) that fall in this rank's block, as local indices."""
    lo, hi = np.searchsorted(rows, [offset, offset + n])
    return rows[lo:hi] - offset


def _mean_variance_ranks(X: Any, group: Any, offset: int, n_total: int) -> float:
    """:func:`_mean_variance` of the first 20,000 rows of the ranks' concatenated shards
    (two passes, the sums all-reduced)."""
    m = min(n_total, 20000)
    local = to_numpy(X[: max(0, min(int(X.shape[0]), m - offset))], dtype=np.float64)
    mean = _all_sum_array(local.sum(axis=0), group) / m
    var = _all_sum_array(((local - mean) ** 2).sum(axis=0), group) / m
    v = float(var.mean())
    return v if v > 0 else 1.0
