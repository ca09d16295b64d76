"""Ridge classification probe: every alpha from one eigendecomposition of the centred Gram.

Also holds the small base shared by the closed-form probes (:class:`RidgeProbe`,
:class:`~repscope.probe._generative.LDAProbe`, :class:`~repscope.probe._generative.GaussianNBProbe`):
label encoding, batched access to in-memory arrays or a FeatureStore, and the
``decision_function`` / ``predict`` / ``predict_proba`` / ``score`` methods.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from numbers import Integral, Real
from typing import Any, ClassVar, Literal

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from repscope._array import is_torch, to_numpy
from repscope._kernels.eigenpath import (
    ClassSums,
    EigenBasis,
    eigh_psd,
    loo_sq_errors,
    path_coefs,
    path_decision,
    ridge_filters,
    ridge_gcv_path,
)
from repscope._params import ValidatedEstimator, parameter_error
from repscope._validation import check_features, check_labels
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.probe._ridge_dual import (
    DualGram,
    DualProblem,
    TridiagonalProblem,
    dual_problem,
    fold_decisions,
    tridiagonal_problem,
)
from repscope.stats import Moments

__all__ = ["RidgeProbe"]

Selection = Literal["gcv", "loo", "holdout", "kfold"]
Solver = Literal["auto", "primal", "dual"]
DEFAULT_ALPHAS = (1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5)

# constraints shared by the closed-form probes (RidgeProbe, LDAProbe, GaussianNBProbe)
CV_FOLDS = [Interval(Integral, 2, None, closed="left")]
FRACTION = [Interval(Real, 0, 1, closed="neither")]
SEED = [Interval(Integral, 0, None, closed="left"), None]
BATCH_SIZE = [Interval(Integral, 1, None, closed="left")]


def check_grid(owner: Any, name: str, values: Any, expected: str, low: float,
               high: float = np.inf) -> np.ndarray:
    """A path parameter (one value or a sequence) as a non-empty 1-D float64 grid.

    The constraints have already checked its type; this checks what they cannot: that a
    sequence is non-empty and 1-D and that every value is finite and in ``[low, high]``.
    """
    grid = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)) or (
            grid < low).any() or (grid > high).any():
        raise parameter_error(owner, name, expected, values)
    return grid


# --------------------------------------------------------------------------- data access
class _Source:
    """Batches ``(X_b, targets_b, rows_b)`` of in-memory arrays or of one store layer.

    ``targets`` are encoded class indices (n,) or a multi-hot matrix (n, L), numpy.
    """

    def __init__(self, X: Any, targets: np.ndarray, batch_size: int, store: Any = None,
                 layer: str | None = None) -> None:
        self.X, self.targets, self.batch_size = X, targets, batch_size
        self.store, self.layer = store, layer
        self.n = int(targets.shape[0])
        #: the batches are new arrays that nothing else holds (a FeatureStore's dense rows,
        #: read ahead and cast to float64 in a background thread): Moments may centre them
        #: in place
        self.owned = False

    def batches(self, *, read_ahead: bool = True,
                float64: bool = False) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
        """``(X_b, targets_b, rows_b)``. A FeatureStore's dense layer is read two batches
        ahead in a background thread (``read_ahead=False``: in this thread, for callers that
        keep every batch), cast there to float64 with ``float64`` (for Moments)."""
        if self.store is not None:
            from repscope.store import FeatureStore, open_layers

            start = 0
            layer = str(self.layer)
            src = open_layers(self.store, [layer])
            self.owned = False
            if read_ahead and isinstance(src, FeatureStore) and not src.layer_info(layer).ragged:
                self.owned = True
                it = src.iter_batches(layer, self.batch_size, prefetch=2,
                                      dtype=np.float64 if float64 else None)
            else:
                it = src.iter_batches(layer, self.batch_size)
            for Xb in it:
                rows = np.arange(start, start + len(Xb))
                start += len(Xb)
                yield check_features(Xb, name="X"), self.targets[rows], rows
            return
        for a in range(0, self.n, self.batch_size):
            b = min(a + self.batch_size, self.n)
            yield self.X[a:b], self.targets[a:b], np.arange(a, b)


def _take(Xb: Any, mask: np.ndarray) -> Any:
    if is_torch(Xb):
        import torch

        return Xb[torch.as_tensor(mask, device=Xb.device)]
    return Xb[mask]


def fold_ids(n: int, selection: str, cv: int, validation_fraction: float,
             random_state: int | None) -> tuple[np.ndarray, int]:
    """Fold of every row (``-1`` = never held out) and the number of folds."""
    perm = np.random.default_rng(random_state).permutation(n)
    ids = np.empty(n, dtype=np.int64)
    if selection == "kfold":
        ids[perm] = np.arange(n) % cv
        return ids, cv
    if selection == "holdout":
        n_val = max(1, round(validation_fraction * n))
        ids[:] = -1
        ids[perm[:n_val]] = 0
        return ids, 1
    ids[:] = -1
    return ids, 0


def fold_moments(source: _Source, folds: np.ndarray, n_folds: int, multilabel: bool,
                 class_cov: Literal["diag", "full", "none"] = "none") -> tuple[Moments, list[Moments]]:
    """One pass: the Moments of every fold and of all rows (labels, or multi-hot Y)."""
    parts = [Moments(class_cov=class_cov) for _ in range(max(n_folds, 1))]
    rest = Moments(class_cov=class_cov)  # rows that are never held out
    for Xb, tb, rows in source.batches(float64=True):
        fb = folds[rows]
        for f, m in [(-1, rest), *enumerate(parts)]:
            mask = fb == f
            if not mask.any():
                continue
            whole = mask.all()  # then no other fold takes a row of this batch
            sel = Xb if whole else _take(Xb, mask)
            owned = source.owned or (not whole and not is_torch(sel))  # _take copies
            if multilabel:
                m._update(sel, tb[mask], None, owned=owned)
            else:
                m._update(sel, None, tb[mask], owned=owned)
    total = rest.copy()
    for m in parts:
        total.merge(m)
    return total, (parts if n_folds > 0 else [])


def sums_of(m: Moments, n_classes: int, shift: np.ndarray, multilabel: bool) -> ClassSums:
    """ClassSums of labelled Moments, or indicator sums of Moments with multi-hot Y."""
    classes = np.arange(n_classes)
    if not multilabel:
        return ClassSums.from_moments(m, classes, shift)
    d = shift.shape[0]
    if m.n == 0:
        return ClassSums(shift, 0.0, np.zeros(d), np.zeros((d, d)), np.zeros(n_classes),
                         np.zeros((n_classes, d)))
    delta = m.mean - shift
    nk = m.n * m.mean_y
    s1k = (m.cross_scatter() + np.outer(delta, nk)).T
    return ClassSums(shift, float(m.n), m.n * delta, m.scatter() + m.n * np.outer(delta, delta),
                     nk, s1k)


# --------------------------------------------------------------------------- shared base
class _ClosedFormClassifier(ClassifierMixin, ValidatedEstimator):
    """Shared plumbing of the closed-form probes (not public)."""

    classes_: np.ndarray
    n_features_in_: int
    multilabel: bool = False

    def _encode(self, X: Any, y: Any) -> tuple[Any, np.ndarray]:
        """Validate ``X, y``; set ``classes_`` and ``n_features_in_``; encode the targets."""
        X = check_features(X, name="X")
        targets = self._encode_targets(y, int(X.shape[0]))
        self.n_features_in_ = int(X.shape[1])
        return X, targets

    def _encode_targets(self, y: Any, n: int) -> np.ndarray:
        """Set ``classes_``; class indices (n,) or a float multi-hot matrix (n, L)."""
        if getattr(self, "multilabel", False):
            Y = to_numpy(y) if is_torch(y) else np.asarray(y)
            if Y.ndim != 2 or Y.shape[0] != n or not np.isin(Y, (0, 1)).all():
                raise RepscopeValueError(
                    f"y must be a multi-hot indicator matrix of shape ({n}, n_labels) with 0/1 "
                    f"entries when multilabel=True; got shape {Y.shape}."
                )
            self.classes_ = np.arange(Y.shape[1])
            targets = Y.astype(np.float64)
        else:
            lab = check_labels(y, n_samples=n, name="y", min_classes=2)
            if lab.dtype.kind == "O":
                lab = lab.astype(str)
            self.classes_, inverse = np.unique(lab, return_inverse=True)
            targets = inverse.astype(np.int64)
        return targets

    def _store_targets(self, store: Any, layer: str, labels: Any) -> np.ndarray:
        """Encoded targets for a store layer; sets ``classes_`` and ``n_features_in_``."""
        if isinstance(labels, str):
            lab = np.asarray(store.metadata([labels])[labels])
        elif labels is None:
            raise RepscopeTypeError(
                "labels must be a metadata column name or an array with one label per sample; "
                "got None."
            )
        else:
            lab = to_numpy(labels) if is_torch(labels) else np.asarray(labels)
        targets = self._encode_targets(lab, store.n_samples)
        self.n_features_in_ = int(np.prod(store.layer_info(layer).shape_tail))
        return targets

    def _check_X(self, X: Any) -> Any:
        check_is_fitted(self, "classes_")
        X = check_features(X, name="X")
        if int(X.shape[1]) != self.n_features_in_:
            raise RepscopeValueError(
                f"X must have {self.n_features_in_} features (columns), as in fit; got shape "
                f"{tuple(int(s) for s in X.shape)}."
            )
        return X

    def _decision(self, X: Any) -> Any:
        """Linear decision values ``X coef_^T + intercept_`` in X's backend."""
        coef, b = self.coef_, self.intercept_
        if is_torch(X):
            import torch

            dt = X.dtype if X.dtype.is_floating_point else torch.float32
            Xt = X.to(dtype=dt)
            return Xt @ torch.as_tensor(coef.T, dtype=dt, device=X.device) + torch.as_tensor(
                b, dtype=dt, device=X.device)
        return np.asarray(X) @ coef.T + b

    def decision_function(self, X: Any) -> Any:
        """Decision values, shape (n_samples,) for two classes else (n_samples, n_classes).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)

        Returns
        -------
        Array in X's backend and device (float64 for numpy input).
        """
        d = self._decision(self._check_X(X))
        if len(self.classes_) == 2 and not self.multilabel and d.shape[1] == 1:
            return d[:, 0]
        return d

    def predict(self, X: Any) -> Any:
        """Predicted labels, shape (n_samples,) (or (n_samples, n_labels) 0/1 if multilabel).

        Numeric labels come back as a torch tensor for torch input; string labels as numpy.
        """
        d = self.decision_function(X)
        if self.multilabel:
            return (d > 0).long() if is_torch(d) else (d > 0).astype(np.int64)
        idx = (d > 0) if d.ndim == 1 else d.argmax(1)
        idx_np = to_numpy(idx).astype(np.int64)
        out = self.classes_[idx_np]
        if is_torch(d) and out.dtype.kind in "iuf":
            import torch

            return torch.as_tensor(out, device=d.device)
        return out

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, shape (n_samples, n_classes): the softmax of the decision
        values (the logistic sigmoid for two classes; per-label sigmoid if multilabel).

        These are *uncalibrated* for ridge; temperature-scale them before reading them as
        confidences.
        """
        d = self.decision_function(X)
        if is_torch(d):
            import torch

            if self.multilabel:
                return torch.sigmoid(d)
            if d.ndim == 1:
                p = torch.sigmoid(d)
                return torch.stack([1 - p, p], 1)
            return torch.softmax(d, 1)
        from scipy.special import expit, softmax

        if self.multilabel:
            return expit(d)
        if d.ndim == 1:
            p = expit(d)
            return np.stack([1 - p, p], 1)
        return softmax(d, axis=1)

    def predict_log_proba(self, X: Any) -> Any:
        """Logarithm of :meth:`predict_proba`."""
        p = self.predict_proba(X)
        if is_torch(p):
            import torch

            return torch.log(p)
        with np.errstate(divide="ignore"):
            return np.log(p)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy (subset accuracy for multi-label), like scikit-learn's classifiers."""
        pred = self.predict(X)
        pred_np = to_numpy(pred) if is_torch(pred) else np.asarray(pred)
        y_np = to_numpy(y) if is_torch(y) else np.asarray(y)
        if y_np.dtype.kind == "O":
            y_np = y_np.astype(str)
        hit = (pred_np == y_np).all(1) if pred_np.ndim == 2 else pred_np == y_np
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        return float(np.average(hit, weights=w))


# --------------------------------------------------------------------------- ridge
class RidgeProbe(_ClosedFormClassifier):
    """Ridge classifier on ``±1`` one-hot targets with the whole alpha path from one ``eigh``.

    Minimises, for each alpha on the path,

    .. math:: \\|T - X W - 1 b^T\\|_F^2 + \\alpha \\|W\\|_F^2,

    where :math:`T_{ik} = +1` if sample *i* has class *k* and :math:`-1` otherwise (one
    column, for the second class, when there are two classes; multi-hot ``2Y - 1`` when
    ``multilabel``) — scikit-learn's ``RidgeClassifier`` encoding. With the centred Gram
    :math:`G = X_c^T X_c = V \\Lambda V^T` every alpha's solution is
    :math:`W_\\alpha = V (\\Lambda + \\alpha I)^{-1} V^T X_c^T T_c`, and
    :math:`X_c^T T_c = 2 [n_k (m_k - m)]_k` are the per-class sums a labelled
    :class:`~repscope.stats.Moments` already holds: the fit streams over a FeatureStore and
    all-reduces across ranks (:meth:`fit_moments`).

    Parameters
    ----------
    alphas : sequence of float, default=(1e-2, 1e-1, ..., 1e5)
        The path (8 values by default). A single value fits that alpha.
    selection : {"gcv", "loo", "holdout", "kfold"}, default="gcv"
        How ``alpha_`` is chosen:

        * ``"gcv"``: generalized cross-validation, from the moments alone (no extra pass);
        * ``"loo"``: exact efficient leave-one-out squared error (scikit-learn
          ``RidgeClassifierCV``'s criterion), using each row's leverage
          :math:`h_i = 1/n + z_i^T (\\Lambda + \\alpha I)^{-1} z_i`, :math:`z_i = V^T (x_i - m)`,
          in ``O(n d)`` per alpha: a **second pass** over the rows (in memory, or a second
          stream over the store);
        * ``"holdout"``: accuracy on a random ``validation_fraction`` of the rows;
        * ``"kfold"``: mean accuracy over ``cv`` random folds. Fold ``f``'s training moments
          are the total minus fold ``f``'s, so ``k`` folds cost ``k`` Moments (one pass),
          ``k`` eigendecompositions and one scoring pass; nothing is refit from the rows.

        The final model is refit on all rows at ``alpha_`` (from the total moments).
    fit_intercept : bool, default=True
    solver : {"auto", "primal", "dual"}, default="auto"
        Which Gram is decomposed:

        * ``"primal"``: the ``d x d`` Gram of the features, accumulated as Moments in one
          streaming pass (the only form :meth:`fit_moments` offers);
        * ``"dual"``: the ``n x n`` Gram of the samples, :math:`K = X_c X_c^T = U S U^T`
          (kernel ridge with a linear kernel, centred on the training mean like the primal's
          intercept): every alpha is :math:`W_a = X_c^T U (S + a I)^{-1} U^T T_c`, with the
          same GCV, leave-one-out and held-out criteria (:mod:`repscope.probe._ridge_dual`).
          GCV and a single alpha need only the tridiagonal form of ``K`` (no eigenvectors:
          about half an ``eigh``); leave-one-out and held-out folds use the ``eigh``. It holds the rows in memory (:meth:`from_store` reads the layer in);
        * ``"auto"``: ``"dual"`` when ``n_samples < n_features``, the cheaper ``eigh``
          (``n^3`` against ``d^3``; building the Gram costs ``n^2 d`` against ``n d^2``),
          else ``"primal"``.

        Both give the same path, selection and coefficients (to rounding). For float32
        input the dual's Gram and decomposition run in float32 when every alpha is at least
        ``64 eps32`` times the Gram's largest eigenvalue (else in float64).
    multilabel : bool, default=False
        ``y`` is a multi-hot (n_samples, n_labels) matrix; one ridge target per label.
    cv : int, default=5
        Folds for ``selection="kfold"``.
    validation_fraction : float, default=0.2
        Held-out share for ``selection="holdout"``.
    random_state : int or None, default=0
        Seeds the fold assignment.
    batch_size : int, default=1024
        Rows per batch when accumulating moments and in the scoring pass (bounds the extra
        memory at about ``batch_size x d`` floats).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (1, n_features) for two classes, else (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    alpha_ : float
        The selected alpha.
    path_ : ndarray of shape (n_alphas,)
        Validation score of every alpha, higher is better: accuracy (``holdout``/``kfold``)
        or minus the mean squared error of the ``±1`` targets (``gcv``/``loo``).
    solver_ : {"primal", "dual"}
        The form that was solved.
    n_features_in_ : int

    Notes
    -----
    Cost (primal): one pass to accumulate the ``d x d`` Gram and ``K x d`` class sums, one
    ``eigh`` (plus one per fold), and ``O(d^2 K)`` per alpha; ``"loo"`` adds
    ``O(n d^2 + n d K A)``. Dual: ``O(n^2 d)`` for the Gram, one ``n x n`` ``eigh`` (plus one
    per fold), ``O(n K)`` per alpha (``O(n^2 K)`` for ``"loo"``) and ``O(n d K)`` for the
    coefficients.
    Bad input: one class raises; a class with a single sample is fine; NaN features raise;
    string labels work.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> probe = RidgeProbe(selection="loo").fit(X, y)
    >>> probe.path_.shape, probe.score(X, y) > 0.9
    ((8,), True)
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "alphas": [Interval(Real, 0, None, closed="left"), "array-like"],
        "selection": [StrOptions({"gcv", "loo", "holdout", "kfold"})],
        "fit_intercept": ["boolean"],
        "solver": [StrOptions({"auto", "primal", "dual"})],
        "multilabel": ["boolean"],
        "cv": CV_FOLDS,
        "validation_fraction": FRACTION,
        "random_state": SEED,
        "batch_size": BATCH_SIZE,
    }

    def __init__(
        self,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        *,
        selection: Selection = "gcv",
        fit_intercept: bool = True,
        solver: Solver = "auto",
        multilabel: bool = False,
        cv: int = 5,
        validation_fraction: float = 0.2,
        random_state: int | None = 0,
        batch_size: int = 1024,
    ) -> None:
        self.alphas = alphas
        self.selection = selection
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.multilabel = multilabel
        self.cv = cv
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.batch_size = batch_size

    # ------------------------------------------------------------------ params
    def _check_params(self) -> np.ndarray:
        """Validate the parameters (``_parameter_constraints``); the alpha grid."""
        self._validate_params()
        return check_grid(self, "alphas", self.alphas,
                          "a non-empty sequence of finite non-negative floats", 0.0)

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any) -> RidgeProbe:
        """Fit the path and select ``alpha_``.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) (ints or strings), or (n_samples, n_labels)
            multi-hot when ``multilabel=True``.

        Returns
        -------
        self
        """
        alphas = self._check_params()
        X, targets = self._encode(X, y)
        if self._dual(int(X.shape[0])):
            return self._fit_dual(X, targets, alphas)
        return self._fit_source(_Source(X, targets, self.batch_size), alphas)

    def _dual(self, n: int) -> bool:
        """Whether to solve the dual (``n x n``) form; sets ``solver_``."""
        dual = self.solver == "dual" or (self.solver == "auto" and n < self.n_features_in_)
        self.solver_ = "dual" if dual else "primal"
        return dual

    @classmethod
    def from_store(cls, store: Any, layer: str, *, labels: Any, **params: Any) -> RidgeProbe:
        """Fit on one layer of a :class:`~repscope.store.FeatureStore`, streaming.

        ``labels`` is a metadata column name or an array with one label per sample. The
        moments take one pass; ``"loo"``, ``"holdout"`` and ``"kfold"`` take a second. The
        dual form (``solver="dual"``, or ``"auto"`` with fewer samples than features) reads
        the layer into memory in one pass instead.
        """
        probe = cls(**params)
        alphas = probe._check_params()
        targets = probe._store_targets(store, layer, labels)
        source = _Source(None, targets, probe.batch_size, store, layer)
        if probe._dual(source.n):
            rows = [Xb for Xb, _, _ in source.batches(read_ahead=False)]
            if rows and is_torch(rows[0]):
                import torch

                return probe._fit_dual(torch.cat(rows), targets, alphas)
            return probe._fit_dual(np.concatenate([np.asarray(r) for r in rows]), targets,
                                   alphas)
        return probe._fit_source(source, alphas)

    def fit_moments(self, moments: Moments) -> RidgeProbe:
        """Fit from precomputed (e.g. all-reduced) Moments, selecting by GCV.

        ``moments`` holds labels (``Moments.update(X, labels=y)``) or, when ``multilabel``,
        a multi-hot ``Y``. Only ``selection="gcv"`` (or a single alpha) needs nothing but the
        moments; the other criteria need the rows (use :meth:`fit` or :meth:`from_store`).
        """
        alphas = self._check_params()
        if self.solver == "dual":
            raise RepscopeValueError(
                "fit_moments solves the primal form (the d x d Gram the moments hold); got "
                "solver='dual', which needs the rows. Use fit(X, y) or from_store for it.")
        self.solver_ = "primal"
        if self.selection != "gcv" and alphas.size > 1:
            raise RepscopeValueError(
                f"fit_moments selects alpha by GCV only; got selection={self.selection!r}. Use "
                "selection='gcv', a single alpha, or fit(X, y) / from_store for the others."
            )
        if not isinstance(moments, Moments):
            raise RepscopeTypeError(f"moments must be a Moments; got {type(moments).__name__}.")
        if self.multilabel:
            if moments.n_targets is None:
                raise RepscopeValueError(
                    "multilabel=True needs Moments with a multi-hot Y (update(X, Y=Y)).")
            n_classes = int(moments.n_targets)
            self.classes_ = np.arange(n_classes)
        else:
            if moments.classes.size < 2:
                raise RepscopeValueError(
                    f"y must contain at least 2 distinct classes; the moments hold "
                    f"{moments.classes.size}. Pass labels to Moments.update(X, labels=y).")
            self.classes_ = moments.classes.copy()
            n_classes = self.classes_.size
        self.n_features_in_ = int(moments.n_features or 0)
        total = sums_of(moments, n_classes, moments.mean, self.multilabel)
        self._select_and_refit(total, [], None, None, alphas)
        return self

    def _fit_source(self, source: _Source, alphas: np.ndarray) -> RidgeProbe:
        folds, k = fold_ids(source.n, self.selection, self.cv, self.validation_fraction,
                            self.random_state)
        total_m, parts = fold_moments(source, folds, k, self.multilabel)
        K = len(self.classes_)
        shift = total_m.mean
        total = sums_of(total_m, K, shift, self.multilabel)
        fold_sums = [sums_of(p, K, shift, self.multilabel) for p in parts]
        self._select_and_refit(total, fold_sums, source, folds, alphas)
        return self

    def _fit_dual(self, X: Any, targets: np.ndarray, alphas: np.ndarray) -> RidgeProbe:
        """The whole path from one decomposition of the ``n x n`` Gram (see ``solver``):
        an ``eigh`` for leave-one-out, the tridiagonal form alone for GCV or one alpha."""
        n = int(targets.shape[0])
        if n <= 1:
            raise RepscopeValueError(f"RidgeProbe needs at least 2 samples; got {n}.")
        folds, k = fold_ids(n, self.selection, self.cv, self.validation_fraction,
                            self.random_state)
        gram = DualGram.of(X, center=self.fit_intercept)
        T = self._targets(targets, None)
        amin = float(alphas.min())
        prob: DualProblem | TridiagonalProblem
        # GCV and a single alpha need no eigenvectors: the tridiagonal form serves them
        # wherever T + alpha I is safely positive definite, the eigh everywhere else.
        if self.selection == "gcv" or alphas.size == 1:
            prob = tridiagonal_problem(gram.K, T, fit_intercept=self.fit_intercept,
                                       single=gram.single)
            if gram.single and not prob.single_ok(amin):
                gram = gram.in_float64()  # an alpha near float32 rounding of the spectrum
                prob = tridiagonal_problem(gram.K, T, fit_intercept=self.fit_intercept)
            if not prob.solvable(amin):
                prob = dual_problem(gram.K, T, fit_intercept=self.fit_intercept,
                                    single=gram.single)
        else:
            prob = dual_problem(gram.K, T, fit_intercept=self.fit_intercept, single=gram.single)
            if gram.single and not prob.single_ok(amin):
                gram = gram.in_float64()  # an alpha near float32 rounding of the spectrum
                prob = dual_problem(gram.K, T, fit_intercept=self.fit_intercept, single=False)
        sel = self.selection
        if alphas.size == 1:
            path = np.zeros(1)
        elif sel == "gcv":
            path = -prob.gcv(alphas, fit_intercept=self.fit_intercept).mean(1)
        elif sel == "loo":
            assert isinstance(prob, DualProblem)
            path = -prob.loo_sq(alphas).sum(1) / (n * T.shape[1])
        else:
            K64 = gram.full()
            correct, counts = np.zeros((k, alphas.size)), np.zeros(k)
            for f in range(k):
                held = folds == f
                train = ~held
                if train.sum() <= 1:
                    raise RepscopeValueError(
                        f"a training fold has {int(train.sum())} samples; use fewer folds or "
                        "more data.")
                D = fold_decisions(K64, T, train, held, alphas,
                                   fit_intercept=self.fit_intercept, single=gram.single)
                correct[f] = self._count_correct(D, targets[held])
                counts[f] = held.sum()
            path = (correct / np.maximum(counts, 1)[:, None]).mean(0)
        best = int(np.argmax(path))
        self.path_ = path
        self.alpha_ = float(alphas[best])
        W = gram.coefs(prob.dual_coefs(self.alpha_))  # (d, t)
        self.coef_ = np.ascontiguousarray(W.T)
        self.intercept_ = prob.tbar - gram.mean @ W
        return self

    def _count_correct(self, D: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """Correct predictions (label-averaged if multilabel) of every path value, shape (A,),
        from decision values ``D`` of shape (b, A, t) and encoded targets ``truth``."""
        if self.multilabel:
            return ((D > 0) == (truth[:, None, :] > 0)).mean(2).sum(0)
        pred = (D[:, :, 0] > 0).astype(np.int64) if D.shape[2] == 1 else D.argmax(2)
        return (pred == truth[:, None]).sum(0)

    def _problem(self, cs: ClassSums) -> tuple[EigenBasis, np.ndarray, np.ndarray, np.ndarray,
                                               np.ndarray]:
        """Eigenbasis, ``C = V^T B``, target means, centred target sums of squares, x shift."""
        n = cs.n
        if self.fit_intercept:
            G = cs.scatter()
            B = 2.0 * cs.class_cross()
            tbar = 2.0 * cs.nk / n - 1.0
            tss = 4.0 * (cs.nk - cs.nk**2 / n)
            xm = cs.mean
        else:
            c = cs.shift
            G = cs.s2 + np.outer(cs.s1, c) + np.outer(c, cs.s1) + n * np.outer(c, c)
            Sk = cs.s1k + cs.nk[:, None] * c
            B = (2.0 * Sk - (cs.s1 + n * c)[None, :]).T
            tbar = np.zeros(B.shape[1])
            tss = np.full(B.shape[1], n)
            xm = np.zeros_like(c)
        if len(self.classes_) == 2 and not self.multilabel:
            B, tbar, tss = B[:, 1:], tbar[1:], tss[1:]
        basis = eigh_psd(G)
        return basis, basis.vectors.T @ B, tbar, tss, xm

    def _targets(self, tb: np.ndarray, like: Any) -> Any:
        """``±1`` targets of a batch, in ``like``'s backend (numpy when ``like`` is None)."""
        if self.multilabel:
            T = 2.0 * tb - 1.0
        else:
            T = -np.ones((tb.shape[0], len(self.classes_)))
            T[np.arange(tb.shape[0]), tb] = 1.0
            if len(self.classes_) == 2:
                T = T[:, 1:]
        if is_torch(like):
            import torch

            return torch.as_tensor(T, dtype=torch.float64, device=like.device)
        return T

    def _select_and_refit(self, total: ClassSums, fold_sums: list[ClassSums],
                          source: _Source | None, folds: np.ndarray | None,
                          alphas: np.ndarray) -> None:
        if total.n <= 1:
            raise RepscopeValueError(f"RidgeProbe needs at least 2 samples; got {total.n:.0f}.")
        basis, C, tbar, tss, xm = self._problem(total)
        sel = self.selection
        if alphas.size == 1:
            path = np.zeros(1)
        elif sel == "gcv":
            path = -ridge_gcv_path(basis.values, C, tss, int(total.n), alphas,
                                   fit_intercept=self.fit_intercept).mean(1)
        elif sel == "loo":
            assert source is not None
            path = -self._loo(source, basis, C, tbar, xm, alphas, total.n)
        else:
            assert source is not None
            assert folds is not None
            path = self._heldout_accuracy(source, folds, total, fold_sums, alphas)
        best = int(np.argmax(path))
        self.path_ = path
        self.alpha_ = float(alphas[best])
        W = path_coefs(basis, ridge_filters(basis.values, alphas[best:best + 1]), C)[0]
        self.coef_ = np.ascontiguousarray(W.T)
        self.intercept_ = tbar - xm @ W

    def _loo(self, source: _Source, basis: EigenBasis, C: np.ndarray, tbar: np.ndarray,
             xm: np.ndarray, alphas: np.ndarray, n: float) -> np.ndarray:
        F = ridge_filters(basis.values, alphas)
        acc = np.zeros((alphas.size, C.shape[1]))
        for Xb, tb, _ in source.batches():
            Zb = path_decision(Xb, xm, basis.vectors, np.zeros(basis.values.size))
            T = self._targets(tb, Zb) - (Zb.new_tensor(tbar) if is_torch(Zb) else tbar)
            Tb = T.to(Zb.dtype) if is_torch(Zb) else T.astype(Zb.dtype)
            acc += loo_sq_errors(Zb, Tb, F, C, int(n), fit_intercept=self.fit_intercept)
        return acc.sum(1) / (n * C.shape[1])

    def _heldout_accuracy(self, source: _Source, folds: np.ndarray, total: ClassSums,
                          fold_sums: list[ClassSums], alphas: np.ndarray) -> np.ndarray:
        A = alphas.size
        models = []
        for fs in fold_sums:
            train = total - fs
            if train.n <= 1:
                raise RepscopeValueError(
                    f"a training fold has {train.n:.0f} samples; use fewer folds or more data.")
            basis, C, tbar, _, xm = self._problem(train)
            W = path_coefs(basis, ridge_filters(basis.values, alphas), C)  # (A, d, t)
            t = W.shape[2]
            models.append((xm, W.transpose(1, 0, 2).reshape(W.shape[1], A * t),
                           np.tile(tbar, A), t))
        correct = np.zeros((len(fold_sums), A))
        counts = np.zeros(len(fold_sums))
        for Xb, tb, rows in source.batches():
            fb = folds[rows]
            for f, (xm, W_all, off, t) in enumerate(models):
                mask = fb == f
                if not mask.any():
                    continue
                D = to_numpy(path_decision(_take(Xb, mask), xm, W_all, off)).reshape(-1, A, t)
                correct[f] += self._count_correct(D, tb[mask])
                counts[f] += mask.sum()
        return (correct / np.maximum(counts, 1)[:, None]).mean(0)
