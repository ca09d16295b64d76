"""Linear CKA in feature space, from :class:`~repscope.stats.Moments`.

.. math::

    \\mathrm{CKA}(X, Y) = \\frac{\\lVert \\tilde X^\\top \\tilde Y \\rVert_F^2}
        {\\lVert \\tilde X^\\top \\tilde X \\rVert_F \\, \\lVert \\tilde Y^\\top \\tilde Y \\rVert_F}

with column-centred ``X~, Y~`` (Kornblith et al., 2019). This equals the ``n x n`` kernel form
``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear kernels, but costs ``O(n d^2)`` and
streams: only the ``d x d`` moments are kept, accumulated in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from repscope._validation import check_paired
from repscope.exceptions import RepscopeValueError
from repscope.stats import Moments

__all__ = ["cka_from_moments", "linear_cka", "linear_cka_matrix"]


def _fro2(a: np.ndarray) -> float:
    return float(np.einsum("ij,ij->", a, a))


def cka_from_moments(m: Moments) -> float:
    """Biased linear CKA of the paired ``(X, Y)`` accumulated in ``m``."""
    sxy, sxx, syy = m.cross_scatter(), m.scatter(), m.scatter_y()
    den = np.sqrt(_fro2(sxx) * _fro2(syy))
    if den <= 0:
        raise RepscopeValueError(
            "linear CKA is undefined when X or Y is constant (zero variance in every feature)."
        )
    return float(np.clip(_fro2(sxy) / den, 0.0, 1.0))


def linear_cka(X: Any, Y: Any) -> float:
    """Linear CKA (biased HSIC estimator) between paired representations.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        Representations of the same inputs (any widths).

    Returns
    -------
    float in [0, 1]; 1 for identical representations up to rotation and isotropic scale.

    Notes
    -----
    Invariant to orthogonal transforms, isotropic scaling and translation of either input;
    not invariant to general invertible linear maps.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((100, 5))
    >>> round(linear_cka(X, 3 * X + 1), 12)
    1.0
    """
    X, Y = check_paired(X, Y, min_samples=2)
    return cka_from_moments(Moments().update(X, Y))


def linear_cka_matrix(
    blocks_x: Sequence[Any] | Moments,
    blocks_y: Sequence[Any] | None = None,
    *,
    widths: tuple[Sequence[int], Sequence[int]] | None = None,
) -> np.ndarray:
    """Layer x layer linear CKA between two lists of representations of the same inputs.

    All layers of each model are concatenated and one paired :class:`Moments` is accumulated,
    so every block of the cross-moment matrix is computed once; entry ``(i, j)`` is
    ``CKA(blocks_x[i], blocks_y[j])``.

    Parameters
    ----------
    blocks_x, blocks_y : sequence of arrays of shape (n_samples, d_i)
        Per-layer features of model A and model B (same rows).
        Alternatively pass a paired ``Moments`` over the concatenations plus ``widths``.
    widths : (widths_x, widths_y), optional
        Layer widths when a Moments is given.

    Returns
    -------
    ndarray of shape (len(blocks_x), len(blocks_y))
    """
    if isinstance(blocks_x, Moments):
        if widths is None:
            raise RepscopeValueError("pass widths=(widths_x, widths_y) with a Moments.")
        m = blocks_x
        wx, wy = list(widths[0]), list(widths[1])
    else:
        if blocks_y is None:
            raise RepscopeValueError("pass blocks_y, the second model's per-layer features.")
        if len(blocks_x) == 0 or len(blocks_y) == 0:
            raise RepscopeValueError("blocks_x and blocks_y must each hold at least one layer.")
        X = np.concatenate([np.asarray(b, dtype=np.float64) for b in blocks_x], axis=1)
        Y = np.concatenate([np.asarray(b, dtype=np.float64) for b in blocks_y], axis=1)
        X, Y = check_paired(X, Y, min_samples=2)
        m = Moments().update(X, Y)
        wx = [int(np.shape(b)[1]) for b in blocks_x]
        wy = [int(np.shape(b)[1]) for b in blocks_y]
    sxx, syy, sxy = m.scatter(), m.scatter_y(), m.cross_scatter()
    ox, oy = np.cumsum([0, *wx]), np.cumsum([0, *wy])
    nx = np.array([np.sqrt(_fro2(sxx[ox[i]:ox[i + 1], ox[i]:ox[i + 1]])) for i in range(len(wx))])
    ny = np.array([np.sqrt(_fro2(syy[oy[j]:oy[j + 1], oy[j]:oy[j + 1]])) for j in range(len(wy))])
    out = np.empty((len(wx), len(wy)))
    for i in range(len(wx)):
        for j in range(len(wy)):
            num = _fro2(sxy[ox[i]:ox[i + 1], oy[j]:oy[j + 1]])
            den = nx[i] * ny[j]
            out[i, j] = np.clip(num / den, 0.0, 1.0) if den > 0 else np.nan
    if np.isnan(out).any():
        bad_x = [i for i in range(len(wx)) if nx[i] == 0]
        bad_y = [j for j in range(len(wy)) if ny[j] == 0]
        raise RepscopeValueError(
            f"linear CKA is undefined for constant layers: X layers {bad_x}, Y layers {bad_y}."
        )
    return out
