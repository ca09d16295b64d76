"""Linear CKA (biased and debiased), in feature space from :class:`~repscope.stats.Moments`.

.. math::

    \\mathrm{CKA}(X, Y) = \\frac{\\lVert \\tilde X^\\top \\tilde Y \\rVert_F^2}
        {\\lVert \\tilde X^\\top \\tilde X \\rVert_F \\, \\lVert \\tilde Y^\\top \\tilde Y \\rVert_F}

with column-centred ``X~, Y~`` (Kornblith et al., 2019). This equals the ``n x n`` kernel form
``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear kernels, but costs ``O(n d^2)`` and
streams: only the ``d x d`` moments are kept, accumulated in float64.

The **debiased** CKA uses Song et al.'s unbiased HSIC estimator in the numerator *and* both
denominator terms. With centred rows ``x_i`` and ``k_i = |x_i|^2``, ``l_i = |y_i|^2``:

.. math::

    n(n-3)\\,\\mathrm{HSIC}_1(K, L) = \\lVert \\tilde X^\\top \\tilde Y\\rVert_F^2
        - \\frac{n}{n-2} \\sum_i k_i l_i + \\frac{\\sum_i k_i \\sum_i l_i}{(n-1)(n-2)}

(the unbiased estimator is translation invariant, so centring is free), which again needs only
``d x d`` moments plus row-norm sums (:class:`~repscope.similarity._measures._common.PairStats`).
When ``d_x + d_y > n`` the ``n x n`` Gram form is cheaper and is used instead (same value).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from repscope._validation import check_paired
from repscope.exceptions import RepscopeValueError
from repscope.similarity._measures._common import (
    PairStats,
    centered_gram,
    pow2_exponent,
    pow2_rescaled,
)
from repscope.stats import Moments

__all__ = [
    "cka_from_moments",
    "cka_from_stats",
    "linear_cka",
    "linear_cka_matrix",
    "use_feature_space",
]


def _fro2(a: np.ndarray) -> float:
    return float(np.einsum("ij,ij->", a, a))


def use_feature_space(n: int, dx: int, dy: int) -> bool:
    """True when the ``O(n (d_x + d_y)^2)`` feature-space form is cheaper than the
    ``O(n^2 (d_x + d_y))`` Gram form."""
    return dx + dy <= n


def _ratio(hxy: float, hxx: float, hyy: float, *, clip: bool) -> float:
    den = hxx * hyy
    if not den > 0:
        raise RepscopeValueError(
            "linear CKA is undefined when X or Y is constant (zero variance in every feature)"
            + ("" if clip else " or when the unbiased HSIC of X or Y with itself is not positive")
            + "."
        )
    v = hxy / np.sqrt(den)
    return float(np.clip(v, 0.0, 1.0)) if clip else float(min(v, 1.0))


def _scatter_exponent(s: np.ndarray) -> int:
    """The ``e`` with which ``2^-e`` rescales the data behind the scatter ``s`` into a safe
    range (0 when it already is): ``pow2_exponent`` of ``sqrt(max diag s)``."""
    d = np.diag(s)
    return pow2_exponent(np.sqrt(max(float(d.max()), 0.0))) if d.size else 0


def _ldexp(a: np.ndarray, e: int) -> np.ndarray:
    """``a * 2^e`` (exact), ``a`` itself when ``e == 0``."""
    return a if e == 0 else np.ldexp(a, e)


def cka_from_moments(m: Moments) -> float:
    """Biased linear CKA of the paired ``(X, Y)`` accumulated in ``m``."""
    sxy, sxx, syy = m.cross_scatter(), m.scatter(), m.scatter_y()
    return _ratio(_fro2(sxy), _fro2(sxx), _fro2(syy), clip=True)


def _debiased_terms(n: int, sxy2: float, sxx2: float, syy2: float, sk: float, sl: float,
                    kl: float, kk: float, ll: float) -> tuple[float, float, float]:
    """``n(n-3) HSIC_1`` for (K,L), (K,K), (L,L) from centred feature-space sums."""
    if n < 4:
        raise RepscopeValueError(f"debiased CKA needs n >= 4 samples; got n={n}.")
    a, b = n / (n - 2.0), 1.0 / ((n - 1.0) * (n - 2.0))
    return (sxy2 - a * kl + b * sk * sl, sxx2 - a * kk + b * sk * sk, syy2 - a * ll + b * sl * sl)


def cka_from_stats(s: PairStats, *, debiased: bool = False) -> float:
    """Linear CKA from paired statistics; ``debiased`` needs ``PairStats(row_norms=True)``."""
    m = s.moments
    sxx, syy, sxy = s.scatters()
    if not debiased:
        return _ratio(_fro2(sxy), _fro2(sxx), _fro2(syy), clip=True)
    kl, kk, ll = s.centered_norm_sums()
    h = _debiased_terms(m.n, _fro2(sxy), _fro2(sxx), _fro2(syy), float(np.trace(sxx)),
                        float(np.trace(syy)), kl, kk, ll)
    return _ratio(*h, clip=False)


def _gram_cka(K: np.ndarray, L: np.ndarray, *, debiased: bool) -> float:
    """Linear CKA from the ``n x n`` Gram matrices of centred inputs (used when d > n)."""
    if not debiased:
        return _ratio(_fro2_sym(K, L), _fro2(K), _fro2(L), clip=True)
    dk, dl = np.diag(K).copy(), np.diag(L).copy()
    return _ratio(*_debiased_terms(K.shape[0], _fro2_sym(K, L), _fro2(K), _fro2(L),
                                   float(dk.sum()), float(dl.sum()), float(dk @ dl),
                                   float(dk @ dk), float(dl @ dl)), clip=False)


def _fro2_sym(K: np.ndarray, L: np.ndarray) -> float:
    return float(np.einsum("ij,ij->", K, L))


def linear_cka(X: Any, Y: Any, *, debiased: bool = False) -> float:
    """Linear CKA between paired representations (biased or debiased HSIC estimator).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        Representations of the same inputs (any widths); numpy or torch.
    debiased : bool, default=False
        Use the unbiased HSIC estimator (Song et al., 2012) in the numerator and both
        denominator terms (needs ``n >= 4``). The biased estimator is inflated towards 1 when
        ``d`` is large relative to ``n``; the debiased one is not, and can be slightly negative.

    Returns
    -------
    float
        In ``[0, 1]`` (biased); at most 1 (debiased). 1 for identical representations up to
        rotation and isotropic scale.

    Raises
    ------
    RepscopeValueError
        Different numbers of rows, fewer than 3 (debiased: 4) samples, NaN/inf, constant input.

    Notes
    -----
    Invariant to orthogonal transforms, isotropic scaling, translation and permutation of the
    features of either input; not invariant to general invertible linear maps.
    Feature-space form (``O(n (d_x + d_y)^2)`` time, ``d x d`` float64 memory) when
    ``d_x + d_y <= n``, otherwise the Gram form (``O(n^2 (d_x + d_y))``, ``n x n`` memory);
    both give the same value. The ``n x n`` centring matrix is never built.
    An input whose largest absolute entry is outside ``[2^-33, 2^32)`` is first multiplied by
    a power of two (exact), so inputs scaled by 1e-100 or 1e76 give the unscaled value
    instead of underflowing to "constant" or overflowing to 0 or NaN.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((100, 5))
    >>> round(linear_cka(X, 3 * X + 1), 12)
    1.0
    """
    X, Y = check_paired(X, Y, min_samples=4 if debiased else 3, reject_constant=True)
    X, Y = pow2_rescaled(X), pow2_rescaled(Y)
    n, dx, dy = int(X.shape[0]), int(X.shape[1]), int(Y.shape[1])
    if use_feature_space(n, dx, dy):
        return cka_from_stats(PairStats.from_arrays(X, Y, row_norms=debiased), debiased=debiased)
    return _gram_cka(centered_gram(X, "X"), centered_gram(Y, "Y"), debiased=debiased)


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
        # each layer rescaled on its own (exact powers of two; CKA is per-layer scale invariant)
        X = np.concatenate([pow2_rescaled(np.asarray(b, dtype=np.float64)) for b in blocks_x],
                           axis=1)
        Y = np.concatenate([pow2_rescaled(np.asarray(b, dtype=np.float64)) for b in blocks_y],
                           axis=1)
        X, Y = check_paired(X, Y, min_samples=2)
        m = Moments().update(X, Y)
        wx = [int(np.shape(b)[1]) for b in blocks_x]
        wy = [int(np.shape(b)[1]) for b in blocks_y]
    sxx, syy, sxy = m.scatter(), m.scatter_y(), m.cross_scatter()
    ox, oy = np.cumsum([0, *wx]), np.cumsum([0, *wy])
    bx = [sxx[ox[i]:ox[i + 1], ox[i]:ox[i + 1]] for i in range(len(wx))]
    by = [syy[oy[j]:oy[j + 1], oy[j]:oy[j + 1]] for j in range(len(wy))]
    # A layer whose scatter is far from 1 is rescaled by an exact power of two per layer (its
    # data times 2^-e), so the squared norms below neither overflow nor underflow.
    ex, ey = [_scatter_exponent(b) for b in bx], [_scatter_exponent(b) for b in by]
    nx = np.array([np.sqrt(_fro2(_ldexp(b, -2 * e))) for b, e in zip(bx, ex, strict=True)])
    ny = np.array([np.sqrt(_fro2(_ldexp(b, -2 * e))) for b, e in zip(by, ey, strict=True)])
    out = np.empty((len(wx), len(wy)))
    for i in range(len(wx)):
        for j in range(len(wy)):
            num = _fro2(_ldexp(sxy[ox[i]:ox[i + 1], oy[j]:oy[j + 1]], -ex[i] - ey[j]))
            den = nx[i] * ny[j]
            out[i, j] = np.clip(num / den, 0.0, 1.0) if den > 0 else np.nan
    if np.isnan(out).any():
        bad_x = [i for i in range(len(wx)) if nx[i] == 0]
        bad_y = [j for j in range(len(wy)) if ny[j] == 0]
        raise RepscopeValueError(
            f"linear CKA is undefined for constant layers: X layers {bad_x}, Y layers {bad_y}."
        )
    return out
