"""Linear encoding models: ridge from features to many continuous targets, one alpha each.

The cost is one ``d x d`` Gram, one ``X^T Y`` and one ``eigh`` per fold; every alpha and every
target is then scored from ``d x d`` / ``d x t`` moments (no per-target solves, no Python loop
over targets).
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, ClassVar, Literal

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from repscope._array import is_torch, to_numpy
from repscope._kernels.eigenpath import (
    eigh_psd,
    heldout_sse_path,
    loo_sq_errors,
    ridge_filters,
    ridge_gcv_path,
)
from repscope._params import ValidatedEstimator
from repscope._validation import check_features, check_paired
from repscope.exceptions import RepscopeValueError
from repscope.probe._ridge import check_grid

__all__ = ["EncodingModel"]

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 6, 9))


class _Sums:
    """Additive sums of a set of rows about a fixed shift (already subtracted)."""

    def __init__(self, n: float, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray,
                 sxy: np.ndarray, syy: np.ndarray) -> None:
        self.n, self.sx, self.sy, self.sxx, self.sxy, self.syy = n, sx, sy, sxx, sxy, syy

    @classmethod
    def of(cls, Xc: Any, Yc: Any) -> _Sums:
        return cls(float(Xc.shape[0]), _n(Xc.sum(0)), _n(Yc.sum(0)), _n(Xc.T @ Xc),
                   _n(Xc.T @ Yc), _n((Yc * Yc).sum(0)))

    def __add__(self, o: _Sums) -> _Sums:
        return _Sums(self.n + o.n, self.sx + o.sx, self.sy + o.sy, self.sxx + o.sxx,
                     self.sxy + o.sxy, self.syy + o.syy)

    def __sub__(self, o: _Sums) -> _Sums:
        return _Sums(self.n - o.n, self.sx - o.sx, self.sy - o.sy, self.sxx - o.sxx,
                     self.sxy - o.sxy, self.syy - o.syy)

    def centred(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Means of x and y, centred Gram, centred cross, centred target sums of squares."""
        mx, my = self.sx / self.n, self.sy / self.n
        G = self.sxx - np.outer(self.sx, mx)
        return mx, my, (G + G.T) * 0.5, self.sxy - np.outer(self.sx, my), self.syy - self.sy * my


def _n(x: Any) -> np.ndarray:
    return to_numpy(x).astype(np.float64, copy=False) if is_torch(x) else np.asarray(x)


class EncodingModel(RegressorMixin, ValidatedEstimator):
    """Ridge regression to many targets with one alpha per target (a linear encoding model).

    For every target ``t`` and alpha ``a`` on the path,

    .. math:: w_t(a) = V (\\Lambda + a I)^{-1} V^T X_c^T y_{t,c},

    from one eigendecomposition :math:`X_c^T X_c = V \\Lambda V^T`; ``alpha_[t]`` minimises
    the chosen cross-validated squared error of target ``t``.

    Parameters
    ----------
    alphas : sequence of float, default=logspace(-2, 6, 9)
    per_target_alpha : bool, default=True
        One alpha per target; otherwise one alpha minimising the error summed over targets.
    cv : int, "gcv" or "loo", default=5
        ``k`` (>= 2): k-fold with random folds; each fold's training sums are the total minus
        the fold's, and its held-out error for every alpha and target comes from the fold's
        moments (``O(A d^2 t)`` per fold, no pass over held-out predictions).
        ``"gcv"``: generalized cross-validation from the moments alone. ``"loo"``: exact
        efficient leave-one-out (scikit-learn ``RidgeCV``'s default), a second chunked pass.
    fit_intercept : bool, default=True
    random_state : int or None, default=0
        Seeds the fold assignment.
    batch_size : int, default=1024
        Rows per chunk of the ``"loo"`` pass.

    Attributes
    ----------
    coef_ : ndarray of shape (n_targets, n_features)
    intercept_ : ndarray of shape (n_targets,)
    alpha_ : ndarray of shape (n_targets,)
    cv_mse_ : ndarray of shape (n_alphas, n_targets)
        Cross-validated mean squared error of every alpha and target.
    cv_r2_ : ndarray of shape (n_targets,)
        Cross-validated R^2 at each target's alpha, ``1 - mse / var(y_t)``.
    n_features_in_, n_targets_ : int

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((500, 20)); Y = X @ rng.standard_normal((20, 300))
    >>> model = EncodingModel(cv=5).fit(X, Y + rng.standard_normal(Y.shape))
    >>> model.alpha_.shape, bool(model.score_targets(X, Y)["r2"].mean() > 0.9)
    ((300,), True)
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "alphas": [Interval(Real, 0, None, closed="left"), "array-like"],
        "per_target_alpha": ["boolean"],
        "cv": [Interval(Integral, 2, None, closed="left"), StrOptions({"gcv", "loo"})],
        "fit_intercept": ["boolean"],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        *,
        per_target_alpha: bool = True,
        cv: int | Literal["gcv", "loo"] = 5,
        fit_intercept: bool = True,
        random_state: int | None = 0,
        batch_size: int = 1024,
    ) -> None:
        self.alphas = alphas
        self.per_target_alpha = per_target_alpha
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.random_state = random_state
        self.batch_size = batch_size

    def _check_params(self) -> np.ndarray:
        """Validate the parameters (``_parameter_constraints``); the alpha grid."""
        self._validate_params()
        return check_grid(self, "alphas", self.alphas,
                          "a non-empty sequence of finite non-negative floats", 0.0)

    def fit(self, X: Any, Y: Any) -> EncodingModel:
        """Fit every target's ridge path and select its alpha.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
        Y : array-like or torch.Tensor of shape (n_samples, n_targets) (or (n_samples,))

        Returns
        -------
        self
        """
        alphas = self._check_params()
        Y = _targets_2d(Y)
        X, Y = check_paired(X, Y, names=("X", "Y"), min_samples=2)
        n, t = int(X.shape[0]), int(Y.shape[1])
        Xf, Yf = _f64(X), _f64(Y)
        if self.fit_intercept:
            cx, cy = Xf.mean(0), Yf.mean(0)
        else:
            cx, cy = Xf[:1] * 0, Yf[:1] * 0
        Xc, Yc = Xf - cx, Yf - cy
        if self.cv == "gcv" or self.cv == "loo":
            total = _Sums.of(Xc, Yc)
            mx, my, G, B, tss = self._stats(total)
            basis = eigh_psd(G)
            C = basis.vectors.T @ B
            if self.cv == "gcv":
                mse = ridge_gcv_path(basis.values, C, tss, n, alphas,
                                     fit_intercept=self.fit_intercept)
            else:
                F = ridge_filters(basis.values, alphas)
                sse = np.zeros((alphas.size, t))
                for a in range(0, n, self.batch_size):
                    Zb = (Xc[a:a + self.batch_size] - _like(mx, Xc)) @ _like(basis.vectors, Xc)
                    Tb = Yc[a:a + self.batch_size] - _like(my, Yc)
                    sse += loo_sq_errors(Zb, Tb, F, C, n, fit_intercept=self.fit_intercept)
                mse = sse / n
        else:
            k = int(self.cv)
            if n < k:
                raise RepscopeValueError(
                    f"cv={k} folds need at least {k} samples; got {n}.")
            ids = np.empty(n, dtype=np.int64)
            ids[np.random.default_rng(self.random_state).permutation(n)] = np.arange(n) % k
            parts = []
            for f in range(k):
                sel = np.nonzero(ids == f)[0]
                idx = _like(sel, Xc) if is_torch(Xc) else sel
                parts.append(_Sums.of(Xc[idx], Yc[idx]))
            total = parts[0]
            for p in parts[1:]:
                total = total + p
            sse = np.zeros((alphas.size, t))
            for p in parts:
                sse += self._fold_sse(total - p, p, alphas)
            mse = sse / n
            mx, my, G, B, tss = self._stats(total)
            basis = eigh_psd(G)
            C = basis.vectors.T @ B
        if self.per_target_alpha:
            best = mse.argmin(0)
        else:
            best = np.full(t, int(mse.sum(1).argmin()))
        F = ridge_filters(basis.values, alphas)
        W = basis.vectors @ (F[best].T * C)  # (d, t), one product for every target's alpha
        self.alpha_ = alphas[best]
        self.cv_mse_ = mse
        var = tss / n
        r2 = 1.0 - mse[best, np.arange(t)] / np.where(var > 0, var, 1.0)
        self.cv_r2_ = np.where(var > 0, r2, 0.0)
        self.coef_ = np.ascontiguousarray(W.T)
        self.intercept_ = (_n(cy).ravel() + my - (_n(cx).ravel() + mx) @ W) if \
            self.fit_intercept else np.zeros(t)
        self.n_features_in_, self.n_targets_ = int(X.shape[1]), t
        return self

    def _stats(self, s: _Sums) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                        np.ndarray]:
        if self.fit_intercept:
            return s.centred()
        d, t = s.sx.shape[0], s.sy.shape[0]
        return np.zeros(d), np.zeros(t), s.sxx, s.sxy, s.syy

    def _fold_sse(self, train: _Sums, val: _Sums, alphas: np.ndarray) -> np.ndarray:
        mx, my, G, B, _ = self._stats(train)
        basis = eigh_psd(G)
        V = basis.vectors
        C = V.T @ B
        # held-out sums about the training means
        Mx = val.sxx - np.outer(val.sx, mx) - np.outer(mx, val.sx) + val.n * np.outer(mx, mx)
        Qx = val.sxy - np.outer(val.sx, my) - np.outer(mx, val.sy) + val.n * np.outer(mx, my)
        e2 = val.syy - 2 * my * val.sy + val.n * my**2
        return heldout_sse_path(ridge_filters(basis.values, alphas), C, V.T @ Mx @ V,
                                V.T @ Qx, e2)

    def predict(self, X: Any) -> Any:
        """Predicted targets, shape (n_samples, n_targets), in X's backend and device."""
        check_is_fitted(self, "coef_")
        X = check_features(X, name="X")
        if int(X.shape[1]) != self.n_features_in_:
            raise RepscopeValueError(
                f"X must have {self.n_features_in_} features (columns), as in fit; got shape "
                f"{tuple(int(s) for s in X.shape)}.")
        if is_torch(X):
            import torch

            dt = X.dtype if X.dtype.is_floating_point else torch.float32
            kw = {"dtype": dt, "device": X.device}
            return X.to(dt) @ torch.as_tensor(self.coef_.T, **kw) + torch.as_tensor(
                self.intercept_, **kw)
        return np.asarray(X) @ self.coef_.T + self.intercept_

    def score_targets(self, X: Any, Y: Any) -> dict[str, np.ndarray]:
        """Held-out R^2 and Pearson r of every target on ``(X, Y)``.

        Returns
        -------
        dict with ``"r2"`` and ``"pearson_r"``, each an ndarray of shape (n_targets,).
        ``r2`` follows ``sklearn.metrics.r2_score(multioutput="raw_values")`` (a constant
        target scores 1 if predicted exactly, else 0); ``pearson_r`` is 0 where a target or
        its prediction is constant.
        """
        Y = _targets_2d(Y)
        P = _n(self.predict(X)).astype(np.float64)
        Yn = _n(check_features(Y, name="Y")).astype(np.float64)
        if Yn.shape != P.shape:
            raise RepscopeValueError(
                f"Y must have shape {P.shape} (n_samples, n_targets); got {Yn.shape}.")
        yc = Yn - Yn.mean(0)
        pc = P - P.mean(0)
        sst = (yc * yc).sum(0)
        sse = ((Yn - P) ** 2).sum(0)
        r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0),
                      np.where(sse == 0, 1.0, 0.0))
        den = np.sqrt(sst * (pc * pc).sum(0))
        r = np.where(den > 0, (yc * pc).sum(0) / np.where(den > 0, den, 1.0), 0.0)
        return {"r2": r2, "pearson_r": np.clip(r, -1.0, 1.0)}

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean R^2 over targets (scikit-learn's ``uniform_average``)."""
        return float(self.score_targets(X, y)["r2"].mean())


def _targets_2d(Y: Any) -> Any:
    """A 1-D target vector (array, tensor or list) as one column; anything else unchanged."""
    if isinstance(Y, (list, tuple)) or (hasattr(Y, "__array__") and not hasattr(Y, "ndim")):
        Y = np.asarray(Y)
    return Y[:, None] if getattr(Y, "ndim", None) == 1 else Y


def _f64(x: Any) -> Any:
    if is_torch(x):
        import torch

        return x.detach().to(dtype=torch.float64)
    return np.asarray(x, dtype=np.float64)


def _like(v: np.ndarray, like: Any) -> Any:
    if is_torch(like):
        import torch

        return torch.as_tensor(v, device=like.device)
    return v
