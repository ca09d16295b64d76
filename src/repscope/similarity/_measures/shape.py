"""Shape metrics: orthogonal Procrustes distance and the angular (partially whitened) metric.

Williams, Kunz, Kornblith & Linderman (2021), *Generalized Shape Metrics on Neural
Representations*. With centred ``X~`` and ``C_x = X~^T X~ / n``, partial whitening

.. math::

    \\phi_\\alpha(X) = \\tilde X\\,\\big(\\alpha I + (1 - \\alpha)\\, C_x^{-1/2}\\big)

interpolates from CCA (``alpha = 0``) to Procrustes (``alpha = 1``), and the angular metric is

.. math::

    \\theta_\\alpha(X, Y) = \\arccos \\frac{\\lVert \\phi_\\alpha(X)^\\top \\phi_\\alpha(Y)\\rVert_*}
        {\\lVert \\phi_\\alpha(X)\\rVert_F \\lVert \\phi_\\alpha(Y)\\rVert_F} \\in [0, \\pi/2].

Every quantity is a function of ``S_xx, S_yy, S_xy`` (so it streams); nuclear norms are sums of
float64 singular values. When ``d_x + d_y > n`` the inputs are reduced to their row spaces
first (the metrics are rotation invariant), so ``d = 16,384`` at ``n = 1,000`` costs
``O(n^2 d)``. Different widths are handled as zero padding (the nuclear norm of the
rectangular cross term).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from repscope._validation import check_paired, check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.similarity._measures._common import centered_gram, gram_row_space
from repscope.similarity._measures._streaming_specs import register_streaming
from repscope.similarity._measures.cca import _pair_stats
from repscope.similarity._registry import register_measure
from repscope.stats import Moments

__all__ = ["procrustes_distance", "shape_distance"]

_ALL4 = {"orthogonal", "isotropic_scale", "translation", "permutation"}


def _nuclear(M: np.ndarray) -> float:
    return float(np.linalg.svd(M, compute_uv=False).sum())


def _procrustes_from_moments(m: Moments, *, squared: bool = False) -> float:
    sxx, syy = float(np.trace(m.scatter())), float(np.trace(m.scatter_y()))
    if not (sxx > 0 and syy > 0):
        raise RepscopeValueError("Procrustes distance is undefined for a constant representation.")
    cos = min(_nuclear(m.cross_scatter()) / np.sqrt(sxx * syy), 1.0)
    d2 = max(2.0 - 2.0 * cos, 0.0)
    return float(d2 if squared else np.sqrt(d2))


@register_measure(
    "procrustes", higher_is_better=False, is_metric=True, invariances=_ALL4,
    direction="distance", identity=0.0, estimator="orthogonal Procrustes, unit Frobenius norm",
    streaming=True,
)
def procrustes_distance(X: Any, Y: Any, *, squared: bool = False) -> float:
    """Orthogonal Procrustes distance between centred, unit-Frobenius-norm representations.

    .. math::

        d(X, Y) = \\min_{Q^\\top Q = I} \\lVert \\hat X Q - \\hat Y \\rVert_F
            = \\sqrt{2 - 2 \\lVert \\hat X^\\top \\hat Y \\rVert_*},
        \\qquad \\hat X = \\tilde X / \\lVert \\tilde X \\rVert_F

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    squared : bool, default=False
        Return ``d^2 = 2 - 2 ||X^T Y||_*`` (Ding et al. 2021's convention) instead of ``d``.

    Returns
    -------
    float in [0, sqrt(2)]

    Notes
    -----
    A metric (``squared=False``) invariant to orthogonal transforms, isotropic scaling,
    translation and permutation. Equals :func:`scipy.linalg.orthogonal_procrustes`'s residual.
    """
    X, Y = check_paired(X, Y, min_samples=3, reject_constant=True)
    n, dx, dy = int(X.shape[0]), int(X.shape[1]), int(Y.shape[1])
    if dx + dy <= n:
        return _procrustes_from_moments(_pair_stats(X, Y).moments, squared=squared)
    return _procrustes_from_grams(centered_gram(X, "X"), centered_gram(Y, "Y"), squared=squared)


def _procrustes_from_grams(K: np.ndarray, L: np.ndarray, *, squared: bool) -> float:
    """Gram path: with ``B B^T = K``, the singular values of ``X~^T Y~`` are the square roots
    of the eigenvalues of ``B^T L B`` (float64 ``eigvalsh``), so one ``eigh`` of ``K`` and one
    ``eigvalsh`` replace two reductions and an SVD."""
    tk, tl = float(np.trace(K)), float(np.trace(L))
    if not (tk > 0 and tl > 0):
        raise RepscopeValueError("Procrustes distance is undefined for a constant representation.")
    B = gram_row_space(K)
    lam = np.linalg.eigvalsh(B.T @ L @ B)
    cos = min(float(np.sqrt(np.clip(lam, 0.0, None)).sum()) / np.sqrt(tk * tl), 1.0)
    d2 = max(2.0 - 2.0 * cos, 0.0)
    return float(d2 if squared else np.sqrt(d2))


register_streaming("procrustes")(lambda s, **o: _procrustes_from_moments(s.moments, **o))


def _partial_whitener(S: np.ndarray, n: int, alpha: float, tol: float = 1e-10) -> np.ndarray:
    """``alpha I + (1 - alpha) C^{-1/2}`` with ``C = S / n`` on its numerical range."""
    if alpha >= 1.0:
        return np.eye(S.shape[0])
    w, V = np.linalg.eigh(S / n)
    if not w[-1] > 0:
        raise RepscopeValueError("the shape metric is undefined for a constant representation.")
    keep = w > tol * float(w[-1])
    V, w = V[:, keep], w[keep]
    return alpha * np.eye(S.shape[0]) + (1.0 - alpha) * (V / np.sqrt(w)) @ V.T


def _shape_from_moments(m: Moments, *, alpha: float = 1.0) -> float:
    sxx, syy, sxy = m.scatter(), m.scatter_y(), m.cross_scatter()
    Zx, Zy = _partial_whitener(sxx, m.n, alpha), _partial_whitener(syy, m.n, alpha)
    nx = float(np.einsum("ij,ij->", Zx, sxx @ Zx))
    ny = float(np.einsum("ij,ij->", Zy, syy @ Zy))
    if not (nx > 0 and ny > 0):
        raise RepscopeValueError("the shape metric is undefined for a constant representation.")
    cos = _nuclear(Zx.T @ sxy @ Zy) / np.sqrt(nx * ny)
    return float(np.arccos(np.clip(cos, -1.0, 1.0)))


def shape_distance(X: Any, Y: Any, *, alpha: float = 1.0) -> float:
    """Angular generalized shape metric with partial whitening ``alpha`` (Williams et al.).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    alpha : float in [0, 1], default=1.0
        1: angular Procrustes (no whitening); 0: CCA (full whitening, then ``cos theta`` is the
        mean canonical correlation for equal widths).

    Returns
    -------
    float in [0, pi/2] (radians)

    Notes
    -----
    A metric. Invariant to orthogonal transforms, translation and permutation for every alpha;
    to isotropic scaling for ``alpha`` in {0, 1}; to invertible linear maps for ``alpha = 0``.
    Convention: ``C_x`` is the covariance ``X~^T X~ / n`` (netrep whitens with the unnormalised
    ``X^T X``, which changes values for ``0 < alpha < 1`` only).
    """
    X, Y = check_paired(X, Y, min_samples=3, reject_constant=True)
    check_scalar(alpha, "alpha", caller="shape_distance", min_value=0, max_value=1)
    return _shape_from_moments(_pair_stats(X, Y).moments, alpha=float(alpha))


register_measure(
    "shape_angular", higher_is_better=False, is_metric=True, invariances=_ALL4,
    direction="distance", identity=0.0, estimator="angular shape metric, alpha=1 (Procrustes)",
    streaming=True, defaults={"alpha": 1.0},
)(shape_distance)
register_measure(
    "shape_cca", higher_is_better=False, is_metric=True,
    invariances=_ALL4 | {"invertible_linear"}, direction="distance", identity=0.0,
    estimator="angular shape metric, alpha=0 (CCA)", streaming=True, defaults={"alpha": 0.0},
)(shape_distance)
register_streaming("shape_angular", alpha=1.0)(lambda s, **o: _shape_from_moments(s.moments, **o))
register_streaming("shape_cca", alpha=0.0)(lambda s, **o: _shape_from_moments(s.moments, **o))
