r"""Maps that carry one representation space onto another: orthogonal (Procrustes) and ridge.

Every map here is affine, :math:`\hat y = s\,(x - \mu_x) W + \mu_y`, fitted from the additive
moments of the paired data (:class:`~repscope.stats.Moments`: means, ``X^T X``, ``X^T Y``,
``Y^T Y`` in float64), so the same code fits in memory, over a FeatureStore larger than RAM
(:meth:`fit_moments` on streamed moments, see :func:`paired_moments`) and across ranks
(``Moments.all_reduce``).

``Y`` is never a *target* in the supervised sense: it is the paired representation of the same
inputs in a second space (another model, another layer, another modality). ``fit(X, Y)``
estimates the map between the spaces; ``score(X, Y)`` asks how well it carries held-out ``X``
onto the held-out partner ``Y``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from numbers import Real
from typing import Any, ClassVar

import numpy as np
from sklearn.utils._param_validation import Interval

from repscope._array import as_float64_numpy, from_numpy_like, is_torch
from repscope._params import ValidatedEstimator, parameter_error
from repscope._validation import check_features, check_paired
from repscope.exceptions import RepscopeValueError
from repscope.stats import Moments

__all__ = ["AffineMapMixin", "LinearMap", "OrthogonalMap", "paired_moments"]

#: Smallest number of paired samples a map is fitted from.
MIN_SAMPLES = 3


def paired_moments(batches: Iterable[tuple[Any, Any]]) -> Moments:
    """Accumulate the paired moments of ``(X_batch, Y_batch)`` pairs (any number, any size).

    Parameters
    ----------
    batches : iterable of (array of shape (b, d_x), array of shape (b, d_y))
        Paired rows, e.g. ``zip(store_a.iter_batches(la, 4096), store_b.iter_batches(lb, 4096))``.

    Returns
    -------
    Moments
        With ``n``, the means, ``X^T X``, ``X^T Y`` and ``Y^T Y`` (float64, about a shift).
    """
    m = Moments()
    for xb, yb in batches:
        xb = np.asarray(xb).reshape(len(xb), -1) if not is_torch(xb) else xb.reshape(len(xb), -1)
        yb = np.asarray(yb).reshape(len(yb), -1) if not is_torch(yb) else yb.reshape(len(yb), -1)
        xb, yb = check_paired(xb, yb)
        m.update(xb, yb)
    return m


def _check_moments(m: Any, caller: str) -> Moments:
    if not isinstance(m, Moments):
        raise RepscopeValueError(
            f"{caller} expects a paired repscope.stats.Moments; got {type(m).__name__}. Build "
            "one with Moments().update(X, Y) or paired_moments(batches)."
        )
    if m.n_targets is None:
        raise RepscopeValueError(
            f"{caller} needs paired moments (update(X, Y) with both spaces); this Moments has "
            "only X."
        )
    if m.n < MIN_SAMPLES:
        raise RepscopeValueError(
            f"{caller} needs at least {MIN_SAMPLES} paired samples; the moments hold n={m.n}."
        )
    return m


def _raw_scatter(m: Moments, center: bool) -> tuple[np.ndarray, np.ndarray, float, float]:
    """``(X^T X, X^T Y, tr(X^T X), tr(Y^T Y))``, centred or about the origin."""
    sxx, sxy, syy_tr = m.scatter(), m.cross_scatter(), float(np.trace(m.scatter_y()))
    if not center:
        mx, my = m.mean, m.mean_y
        sxx = sxx + m.n * np.outer(mx, mx)
        sxy = sxy + m.n * np.outer(mx, my)
        syy_tr += m.n * float(my @ my)
    return sxx, sxy, float(np.trace(sxx)), syy_tr


class AffineMapMixin(ABC):
    """``transform``, ``score`` and validation shared by every map (fitted affine parts).

    A fitted map holds ``mean_x_`` (d_x,), ``weight_`` (d_x, d_y) with the scale folded in,
    and ``mean_y_`` (d_y,): :math:`\\hat y = (x - \\mu_x) W + \\mu_y`.
    """

    mean_x_: np.ndarray
    mean_y_: np.ndarray
    weight_: np.ndarray
    n_features_in_: int
    n_features_out_: int
    #: scikit-learn's parameter validation, from the estimator base (ValidatedEstimator)
    _validate_params: Callable[[], None]

    def fit(self, X: Any, Y: Any) -> Any:
        """Fit the map from paired representations ``X`` (n, d_x) and ``Y`` (n, d_y).

        ``Y`` is the representation of the same ``n`` inputs in the second space, not a
        supervised target. Returns ``self``.
        """
        self._validate_params()
        X, Y = check_paired(X, Y, min_samples=MIN_SAMPLES)
        return self.fit_moments(Moments().update(X, Y))

    @abstractmethod
    def fit_moments(self, moments: Moments) -> Any:
        """Fit from paired :class:`~repscope.stats.Moments`; returns self."""

    def _check_fitted(self) -> None:
        if not hasattr(self, "weight_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call fit(X, Y) or "
                "fit_moments(moments) first."
            )

    def _check_x(self, X: Any, name: str = "X") -> Any:
        X = check_features(X, name=name)
        if int(X.shape[1]) != self.n_features_in_:
            raise RepscopeValueError(
                f"{type(self).__name__}.transform expected {name} with {self.n_features_in_} "
                f"columns (the width it was fitted on); got shape {tuple(X.shape)}."
            )
        return X

    def transform(self, X: Any) -> Any:
        """Map ``X`` (n, d_x) into the second space: an array of shape (n, d_y).

        The output keeps ``X``'s backend, device and floating dtype.
        """
        self._check_fitted()
        X = self._check_x(X)
        return apply_affine(X, self.mean_x_, self.weight_, self.mean_y_)

    def score(self, X: Any, Y: Any) -> float:
        """Held-out :math:`R^2 = 1 - \\lVert Y - \\hat Y\\rVert_F^2 / \\lVert Y - \\bar Y\\rVert_F^2`.

        The variance-weighted coefficient of determination of the mapped ``X`` against its
        partner ``Y`` (``Y``'s own mean, over all columns); 1 is a perfect map, 0 is no better
        than ``Y``'s mean.
        """
        self._check_fitted()
        X, Y = check_paired(X, Y, min_samples=2)
        Yh = as_float64_numpy(self.transform(X))
        Yn = as_float64_numpy(Y)
        if Yn.shape[1] != self.n_features_out_:
            raise RepscopeValueError(
                f"{type(self).__name__}.score expected Y with {self.n_features_out_} columns; "
                f"got shape {tuple(Yn.shape)}."
            )
        return r2_score_total(Yn, Yh)

    def __sklearn_tags__(self) -> Any:
        # fit needs the paired Y; transform maps X into Y's space and keeps float32/float64
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()  # type: ignore[misc]
        tags.target_tags.required = True
        tags.transformer_tags = TransformerTags(preserves_dtype=["float64", "float32"])
        tags.input_tags.allow_nan = False
        return tags


def r2_score_total(Y: np.ndarray, Yh: np.ndarray) -> float:
    """Variance-weighted :math:`R^2` of predictions ``Yh`` for ``Y`` (both float64)."""
    sst = float(((Y - Y.mean(axis=0)) ** 2).sum())
    if sst <= 0:
        raise RepscopeValueError("R^2 is undefined when Y is constant (zero variance).")
    return 1.0 - float(((Y - Yh) ** 2).sum()) / sst


def apply_affine(X: Any, mean_x: np.ndarray, weight: np.ndarray, mean_y: np.ndarray) -> Any:
    """``(X - mean_x) @ weight + mean_y`` in ``X``'s backend, device and floating dtype."""
    if is_torch(X):
        import torch

        dt = X.dtype if X.dtype in (torch.float32, torch.float64) else torch.float32
        W = torch.as_tensor(weight, dtype=dt, device=X.device)
        mx = torch.as_tensor(mean_x, dtype=dt, device=X.device)
        my = torch.as_tensor(mean_y, dtype=dt, device=X.device)
        out = (X.to(dt) - mx) @ W + my
        return out.to(X.dtype) if X.dtype.is_floating_point else out
    Xn = np.asarray(X)
    dt = Xn.dtype if Xn.dtype in (np.float32, np.float64) else np.float64
    out = (Xn.astype(dt, copy=False) - mean_x.astype(dt)) @ weight.astype(dt) + mean_y.astype(dt)
    return from_numpy_like(out, X)


class OrthogonalMap(AffineMapMixin, ValidatedEstimator):
    r"""Orthogonal Procrustes map with optional mean shift and isotropic scaling.

    .. math::

        \hat y = s\,(x - \mu_x)\,Q + \mu_y, \qquad
        Q = \arg\min_{Q^\top Q = I} \lVert \tilde Y - s \tilde X Q \rVert_F = U V^\top,
        \quad \tilde X^\top \tilde Y = U \Sigma V^\top,
        \qquad s = \frac{\operatorname{tr}\Sigma}{\lVert \tilde X \rVert_F^2}

    with :math:`\tilde X = X - \mu_x`, :math:`\tilde Y = Y - \mu_y` when ``center`` (the
    canonicalizing recipe of Gupta et al. [1]_) and the raw arrays otherwise. For different
    widths ``Q`` is a partial isometry (``d_x x d_y`` with orthonormal rows or columns).

    ``Y`` is not a target: it is the paired representation of the same inputs in the second
    space, and the map is one rigid motion between the two spaces. Only ``X^T Y`` (and
    ``tr X^T X`` for the scale) are needed, so :meth:`fit_moments` fits from streamed
    :class:`~repscope.stats.Moments`.

    Parameters
    ----------
    center : bool, default=True
        Remove each space's mean first (the mean shift); otherwise a pure rotation.
    scale : bool, default=False
        Also fit the optimal isotropic scale ``s`` (otherwise ``s = 1``).

    Attributes
    ----------
    rotation_ : ndarray of shape (d_x, d_y)
        ``Q`` (without the scale).
    scale_ : float
    mean_x_, mean_y_ : ndarray of shape (d_x,), (d_y,)
        Zero when ``center=False``.
    weight_ : ndarray of shape (d_x, d_y)
        ``s Q``, used by :meth:`transform`.
    singular_values_ : ndarray of shape (min(d_x, d_y),)
        Of the (centred) cross scatter ``X^T Y``.
    n_features_in_, n_features_out_ : int

    References
    ----------
    .. [1] Gupta, Kansal, Jegelka, Isola, Garg. Canonicalizing Multimodal Contrastive
       Representation Learning. arXiv 2602.17584.

    Examples
    --------
    >>> import numpy as np
    >>> from repscope._testing import random_orthogonal
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 8)); Q = random_orthogonal(8, rng)
    >>> m = OrthogonalMap().fit(X, X @ Q + 3.0)
    >>> bool(np.allclose(m.rotation_, Q)), round(m.score(X, X @ Q + 3.0), 12)
    (True, 1.0)
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "center": ["boolean"],
        "scale": ["boolean"],
    }

    def __init__(self, *, center: bool = True, scale: bool = False) -> None:
        self.center = center
        self.scale = scale

    def fit_moments(self, moments: Moments) -> OrthogonalMap:
        """Fit from paired :class:`~repscope.stats.Moments` (streamed or merged); returns self."""
        self._validate_params()
        m = _check_moments(moments, "OrthogonalMap.fit_moments")
        _, sxy, xx_tr, _ = _raw_scatter(m, self.center)
        if xx_tr <= 0:
            raise RepscopeValueError(
                "OrthogonalMap cannot be fitted: X is constant (zero variance in every feature)."
            )
        if not np.any(sxy):
            raise RepscopeValueError(
                "OrthogonalMap cannot be fitted: the cross scatter X^T Y is zero (X or Y is "
                "constant)."
            )
        u, s, vt = np.linalg.svd(sxy, full_matrices=False)
        self.rotation_ = u @ vt
        self.singular_values_ = s
        self.scale_ = float(s.sum() / xx_tr) if self.scale else 1.0
        self.weight_ = self.scale_ * self.rotation_
        dx, dy = sxy.shape
        self.mean_x_ = m.mean if self.center else np.zeros(dx)
        self.mean_y_ = m.mean_y if self.center else np.zeros(dy)
        self.n_features_in_, self.n_features_out_ = int(dx), int(dy)
        self.n_samples_fit_ = int(m.n)
        return self


def _eigh_desc(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return np.clip(w[::-1], 0.0, None), v[:, ::-1]


def _default_alphas(lam: np.ndarray) -> np.ndarray:
    ref = float(lam.mean()) if lam.size and lam.mean() > 0 else 1.0
    return ref * np.logspace(-6, 3, 19)


class LinearMap(AffineMapMixin, ValidatedEstimator):
    r"""General affine map by ridge regression, with the ridge strength chosen by GCV.

    .. math::

        \hat y = (x - \mu_x) W + \mu_y, \qquad
        W = (\tilde X^\top \tilde X + \alpha I)^{-1} \tilde X^\top \tilde Y

    (scikit-learn's ``Ridge`` objective :math:`\lVert \tilde Y - \tilde X W\rVert_F^2 +
    \alpha \lVert W \rVert_F^2`). With several ``alphas`` the one minimising generalized
    cross-validation (Golub, Heath & Wahba 1979),
    :math:`\mathrm{GCV}(\alpha) = n\,\mathrm{RSS}(\alpha) / (n - \mathrm{df}(\alpha))^2`,
    :math:`\mathrm{df} = \sum_i \lambda_i / (\lambda_i + \alpha)` (+1 for the intercept), is
    kept. Every alpha comes from one ``eigh`` of ``X^T X`` and the RSS follows from the
    moments in closed form, so the whole path streams (:meth:`fit_moments`).

    ``Y`` is not a supervised target: it is the paired representation of the same inputs in
    the second space; this is the unconstrained counterpart of :class:`OrthogonalMap` (the
    linear-encoding / predictivity map).

    Parameters
    ----------
    alphas : float or sequence of float, optional
        Ridge strength(s) on the scatter scale (as scikit-learn's ``Ridge(alpha)``); ``0``
        gives least squares (pseudo-inverse). Default: 19 values log-spaced from ``1e-6`` to
        ``1e3`` times the mean eigenvalue of ``X^T X``.
    fit_intercept : bool, default=True
        Centre both spaces (fit the mean shift).

    Attributes
    ----------
    coef_ : ndarray of shape (d_x, d_y)
        ``W`` (equal to ``weight_``).
    intercept_ : ndarray of shape (d_y,)
        ``mu_y - mu_x W``.
    alpha_ : float
        The chosen alpha.
    alphas_, gcv_ : ndarray of shape (n_alphas,)
        The alphas tried and their GCV scores (per sample, summed over columns of ``Y``).
    mean_x_, mean_y_, weight_, n_features_in_, n_features_out_
        As in :class:`OrthogonalMap`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((300, 5)); A = rng.standard_normal((5, 3))
    >>> m = LinearMap(alphas=0.0).fit(X, X @ A + 1)
    >>> bool(np.allclose(m.coef_, A)), bool(np.allclose(m.intercept_, 1))
    (True, True)
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "alphas": [None, Interval(Real, 0, None, closed="left"), "array-like"],
        "fit_intercept": ["boolean"],
    }

    def __init__(
        self, *, alphas: float | Sequence[float] | None = None, fit_intercept: bool = True
    ) -> None:
        self.alphas = alphas
        self.fit_intercept = fit_intercept

    def _alpha_grid(self, lam: np.ndarray) -> np.ndarray:
        if self.alphas is None:
            return _default_alphas(lam)
        a = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64)).ravel()
        if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a < 0):
            raise parameter_error(self, "alphas", "a non-negative float or a non-empty sequence "
                                  "of them", self.alphas)
        return a

    def fit_moments(self, moments: Moments) -> LinearMap:
        """Fit from paired :class:`~repscope.stats.Moments`; returns self."""
        self._validate_params()
        m = _check_moments(moments, "LinearMap.fit_moments")
        sxx, sxy, xx_tr, yy_tr = _raw_scatter(m, self.fit_intercept)
        if xx_tr <= 0:
            raise RepscopeValueError(
                "LinearMap cannot be fitted: X is constant (zero variance in every feature)."
            )
        lam, v = _eigh_desc(sxx)
        c = v.T @ sxy  # (d_x, d_y)
        c2 = np.einsum("ij,ij->i", c, c)
        alphas = self._alpha_grid(lam)
        tol = lam[0] * max(sxx.shape) * np.finfo(np.float64).eps
        n = float(m.n)
        gcv = np.empty(alphas.size)
        for i, a in enumerate(alphas):
            inv = _ridge_inverse(lam, a, tol)
            rss = max(yy_tr - float(np.sum(c2 * (2.0 * inv - lam * inv**2))), 0.0)
            df = float(np.sum(lam * inv)) + (1.0 if self.fit_intercept else 0.0)
            gcv[i] = n * rss / (n - df) ** 2 if n > df else np.inf
        best = int(np.argmin(gcv)) if np.isfinite(gcv).any() else 0
        self.alphas_, self.gcv_ = alphas, gcv / n
        self.alpha_ = float(alphas[best])
        self.coef_ = v @ (_ridge_inverse(lam, self.alpha_, tol)[:, None] * c)
        self.weight_ = self.coef_
        dx, dy = sxy.shape
        self.mean_x_ = m.mean if self.fit_intercept else np.zeros(dx)
        self.mean_y_ = m.mean_y if self.fit_intercept else np.zeros(dy)
        self.intercept_ = self.mean_y_ - self.mean_x_ @ self.coef_
        self.n_features_in_, self.n_features_out_ = int(dx), int(dy)
        self.n_samples_fit_ = int(m.n)
        return self


def _ridge_inverse(lam: np.ndarray, alpha: float, tol: float) -> np.ndarray:
    """``1 / (lambda + alpha)``; for ``alpha == 0`` the pseudo-inverse (0 below ``tol``)."""
    if alpha > 0:
        return 1.0 / (lam + alpha)
    out = np.zeros_like(lam)
    ok = lam > tol
    out[ok] = 1.0 / lam[ok]
    return out
