"""CCA family: mean canonical correlation, SVCCA, PWCCA, all from paired second moments.

Canonical correlations are the singular values of ``W_x^T S_xy W_y`` with ``W = S^{-1/2}`` on
the numerical range of each scatter matrix (eigenvalues below ``tol`` times the largest are
dropped, so singular covariances need no regularisation; ``reg`` adds ridge shrinkage). When
``d_x + d_y > n`` each input is first reduced to its row space (``n x r``, see
:func:`~repscope.similarity._measures._common.row_space`): CCA and SVCCA are rotation
invariant, so the value is the same and the cost ``O(n^2 d)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from repscope._validation import check_paired, check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.similarity._measures._common import PairStats, centered_f64, row_space
from repscope.similarity._measures._streaming_specs import register_streaming
from repscope.similarity._registry import register_measure
from repscope.stats import Moments

__all__ = ["canonical_correlations", "cca_similarity", "pwcca", "svcca"]

_TOL = 1e-10


def _whitener(S: np.ndarray, reg: float, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(W, V, w)``: ``W = V diag(w)^{-1/2}`` on the kept eigen-directions of ``S + reg I``."""
    w, V = np.linalg.eigh(S)
    top = float(w[-1])
    if not top > 0:
        raise RepscopeValueError("CCA is undefined for a constant representation (zero scatter).")
    if reg > 0:
        w = w + reg * float(np.trace(S)) / S.shape[0]
    keep = w > tol * max(float(w[-1]), 0.0)
    V, w = V[:, keep], w[keep]
    return V / np.sqrt(w), V, w


def _cca_core(sxx: np.ndarray, syy: np.ndarray, sxy: np.ndarray, *, reg: float = 0.0,
              tol: float = _TOL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical correlations (descending) and X/Y canonical directions (``d x k``)."""
    Wx, _, _ = _whitener(sxx, reg, tol)
    Wy, _, _ = _whitener(syy, reg, tol)
    U, rho, Vt = np.linalg.svd(Wx.T @ sxy @ Wy, full_matrices=False)
    k = min(Wx.shape[1], Wy.shape[1])
    return np.clip(rho[:k], 0.0, 1.0), Wx @ U[:, :k], Wy @ Vt[:k].T


def _pair_stats(X: Any, Y: Any) -> PairStats:
    """Moments of ``(X, Y)``, or of their row-space reductions when ``d_x + d_y > n``."""
    n, dx, dy = int(X.shape[0]), int(X.shape[1]), int(Y.shape[1])
    if dx + dy <= n:
        return PairStats.from_arrays(X, Y)
    return PairStats.from_arrays(row_space(centered_f64(X, "X")), row_space(centered_f64(Y, "Y")))


def _cca_from_moments(m: Moments, *, reg: float = 0.0, squared: bool = False) -> float:
    rho, _, _ = _cca_core(m.scatter(), m.scatter_y(), m.cross_scatter(), reg=reg)
    return float(np.mean(rho**2) if squared else np.mean(rho))


def canonical_correlations(X: Any, Y: Any, *, reg: float = 0.0) -> np.ndarray:
    """All canonical correlations of paired representations, in descending order.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    reg : float, default=0.0
        Ridge shrinkage added to each scatter matrix, relative to its mean eigenvalue.

    Returns
    -------
    ndarray of shape (min(rank_x, rank_y),)
    """
    X, Y = check_paired(X, Y, min_samples=3, reject_constant=True)
    check_scalar(reg, "reg", caller="canonical_correlations", min_value=0)
    m = _pair_stats(X, Y).moments
    return _cca_core(m.scatter(), m.scatter_y(), m.cross_scatter(), reg=reg)[0]


@register_measure(
    "cca", higher_is_better=True, is_metric=False,
    invariances={"orthogonal", "isotropic_scale", "translation", "permutation",
                 "invertible_linear"},
    identity=1.0, estimator="mean canonical correlation", streaming=True,
)
def cca_similarity(X: Any, Y: Any, *, reg: float = 0.0, squared: bool = False) -> float:
    """Mean canonical correlation ``mean_i rho_i`` (or ``mean_i rho_i^2``, Kornblith's R^2_CCA).

    .. math::

        \\rho = \\operatorname{svd}\\big(S_{xx}^{-1/2} S_{xy} S_{yy}^{-1/2}\\big),
        \\qquad \\bar\\rho = \\frac1k \\sum_{i=1}^{k} \\rho_i, \\quad k = \\min(r_x, r_y)

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    reg : float, default=0.0
        Ridge shrinkage relative to the mean eigenvalue of each scatter (then the measure is no
        longer exactly invariant to invertible linear maps).
    squared : bool, default=False
        Average ``rho^2`` instead of ``rho``.

    Returns
    -------
    float in [0, 1]

    Notes
    -----
    Invariant to invertible linear maps (hence orthogonal, isotropic scaling, permutation) and
    translation when ``reg=0``. With ``n <= d`` every correlation is 1: use :func:`svcca`.
    """
    X, Y = check_paired(X, Y, min_samples=3, reject_constant=True)
    check_scalar(reg, "reg", caller="cca_similarity", min_value=0)
    return _cca_from_moments(_pair_stats(X, Y).moments, reg=reg, squared=squared)


register_streaming("cca")(lambda s, **o: _cca_from_moments(s.moments, **o))


def _n_keep(w_desc: np.ndarray, variance: float, n_components: int | None) -> int:
    if n_components is not None:
        return max(1, min(int(n_components), w_desc.size))
    frac = np.cumsum(w_desc) / w_desc.sum()
    return min(int(np.searchsorted(frac, variance - 1e-12)) + 1, int(w_desc.size))


def _svcca_from_moments(m: Moments, *, variance: float = 0.99,
                        n_components: int | None = None) -> float:
    reduced = []
    for S in (m.scatter(), m.scatter_y()):
        w, V = np.linalg.eigh(S)
        w, V = w[::-1], V[:, ::-1]
        if not w[0] > 0:
            raise RepscopeValueError("SVCCA is undefined for a constant representation.")
        k = _n_keep(np.clip(w, 0.0, None), variance, n_components)
        reduced.append((w[:k], V[:, :k]))
    (wx, Vx), (wy, Vy) = reduced
    cross = Vx.T @ m.cross_scatter() @ Vy
    rho, _, _ = _cca_core(np.diag(wx), np.diag(wy), cross)
    return float(np.mean(rho))


@register_measure(
    "svcca", higher_is_better=True, is_metric=False,
    invariances={"orthogonal", "isotropic_scale", "translation", "permutation"},
    identity=1.0, estimator="SVD (99% variance) then mean canonical correlation",
    streaming=True,
)
def svcca(X: Any, Y: Any, *, variance: float = 0.99, n_components: int | None = None) -> float:
    """SVCCA (Raghu et al., 2017): keep the top principal directions, then mean CCA.

    Convention (the anchors disagree; this is the one used here): each input is centred; its
    principal directions are kept up to the smallest ``k`` whose **explained variance**
    (cumulative sum of squared singular values) reaches ``variance`` (or exactly
    ``n_components``), separately for X and Y; the result is the **mean of the**
    ``min(k_x, k_y)`` canonical correlations between the two reduced representations.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    variance : float in (0, 1], default=0.99
    n_components : int, optional
        Keep exactly this many directions (overrides ``variance``).

    Returns
    -------
    float in [0, 1]

    Notes
    -----
    Invariant to orthogonal transforms, isotropic scaling, translation and permutation (not to
    general invertible maps: they change the principal directions).
    """
    X, Y = check_paired(X, Y, min_samples=3, reject_constant=True)
    check_scalar(variance, "variance", caller="svcca", min_value=0, include_min=False,
                 max_value=1)
    if n_components is not None:
        check_scalar(n_components, "n_components", caller="svcca", kind=int, min_value=1)
    return _svcca_from_moments(_pair_stats(X, Y).moments, variance=variance,
                               n_components=n_components)


register_streaming("svcca")(lambda s, **o: _svcca_from_moments(s.moments, **o))


def _pwcca_terms(sxx: np.ndarray, syy: np.ndarray, sxy: np.ndarray,
                 basis: np.ndarray | None = None) -> float:
    """PWCCA with weights from the X side; ``basis`` maps reduced X coordinates back to the
    original neurons (``d x r``) when X was reduced to its row space."""
    rho, A, _ = _cca_core(sxx, syy, sxy)
    proj = sxx @ A  # <h_i, x_j> for every neuron j, canonical variate i
    if basis is not None:
        proj = basis @ proj
    weights = np.abs(proj).sum(axis=0)
    return float(weights @ rho / weights.sum())


def _pwcca_from_moments(m: Moments) -> float:
    sxx, syy, sxy = m.scatter(), m.scatter_y(), m.cross_scatter()
    if sxx.shape[0] <= syy.shape[0]:
        return _pwcca_terms(sxx, syy, sxy)
    return _pwcca_terms(syy, sxx, sxy.T)


@register_measure(
    "pwcca", higher_is_better=True, is_metric=False,
    invariances={"isotropic_scale", "translation", "permutation"}, symmetric=False,
    identity=1.0, estimator="projection-weighted mean canonical correlation", streaming=True,
)
def pwcca(X: Any, Y: Any) -> float:
    """Projection-weighted CCA (Morcos, Raghu & Bengio, 2018).

    .. math::

        \\mathrm{PWCCA} = \\sum_i \\alpha_i \\rho_i,\\qquad
        \\alpha_i \\propto \\sum_j \\lvert\\langle h_i, x_j\\rangle\\rvert

    where ``h_i = X~ a_i`` are the (unit-variance, mutually orthogonal) canonical variates and
    ``x_j`` the centred neuron columns of the side with **fewer features** (X on ties), as in the
    authors' code. With centred data ``<h_i, x_j> = (S_xx a_i)_j``, so it is Moments-based.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)

    Returns
    -------
    float in [0, 1]

    Notes
    -----
    Invariant to isotropic scaling, translation and permutation (of neurons), not to general
    rotations (the weights use an L1 norm over neurons). Not symmetric when widths tie.
    """
    X, Y = check_paired(X, Y, min_samples=3, reject_constant=True)
    n, dx, dy = int(X.shape[0]), int(X.shape[1]), int(Y.shape[1])
    if dx + dy <= n:
        return _pwcca_from_moments(PairStats.from_arrays(X, Y).moments)
    if dy < dx:
        X, Y = Y, X
    Xc, Yc = centered_f64(X, "X"), centered_f64(Y, "Y")
    B = row_space(Xc)
    basis = Xc.T @ B / np.einsum("ij,ij->j", B, B)  # d x r orthonormal: Xc = B basis^T
    m = PairStats.from_arrays(B, row_space(Yc)).moments
    return _pwcca_terms(m.scatter(), m.scatter_y(), m.cross_scatter(), basis)


register_streaming("pwcca")(lambda s, **o: _pwcca_from_moments(s.moments))
