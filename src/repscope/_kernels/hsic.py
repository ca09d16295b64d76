"""Kernel dependence: HSIC (biased and unbiased), Gaussian kernels, k-JEM.

Shared numerics for :mod:`repscope.similarity` (RBF CKA, HSIC, k-JEM) and any module that needs
a kernel dependence estimate. Everything is float64 and works in **row blocks**: an ``n x n``
kernel is never held in memory at once, only a ``block x n`` slab (``O(n block)`` memory,
``O(n^2 d)`` time, which is inherent to non-linear kernels).

Estimators
----------
With kernel matrices ``K, L`` (``n x n``), ``H = I - 11^T/n`` (never built) and ``K~ = K`` with a
zeroed diagonal:

.. math::

    \\mathrm{HSIC}_0(K, L) = \\frac{\\operatorname{tr}(K H L H)}{(n-1)^2}
    \\qquad\\text{(biased; Gretton et al., 2005)}

    \\mathrm{HSIC}_1(K, L) = \\frac{1}{n(n-3)}\\Big[\\operatorname{tr}(\\tilde K \\tilde L)
      + \\frac{\\mathbf 1^\\top \\tilde K \\mathbf 1\\, \\mathbf 1^\\top \\tilde L \\mathbf 1}{(n-1)(n-2)}
      - \\frac{2}{n-2}\\, \\mathbf 1^\\top \\tilde K \\tilde L \\mathbf 1\\Big]
    \\qquad\\text{(unbiased; Song et al., 2012)}

Both are functions of a few sums that add over row blocks: ``sum K*L``, the row sums of ``K``
and ``L`` and their diagonals (see :class:`KernelSums`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from repscope._array import as_float64_numpy
from repscope.exceptions import RepscopeValueError

__all__ = [
    "KernelSums",
    "gaussian_kernel_block",
    "hsic",
    "hsic_from_sums",
    "kernel_sums",
    "kjem",
    "median_sq_distance",
    "sq_distances_block",
]

#: rows per block of an ``n x n`` kernel (``block * n`` float64 per kernel in memory).
DEFAULT_BLOCK = 1024
#: rows used for the median heuristic when ``n`` is larger (a seeded random subset).
MEDIAN_MAX_ROWS = 2000


def sq_distances_block(A: np.ndarray, B: np.ndarray, sq_a: np.ndarray, sq_b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``A`` and ``B`` (clipped at 0)."""
    d = sq_a[:, None] + sq_b[None, :] - 2.0 * (A @ B.T)
    np.maximum(d, 0.0, out=d)
    return d


def median_sq_distance(X: Any, *, max_rows: int = MEDIAN_MAX_ROWS, seed: int = 0) -> float:
    """Median of the squared pairwise distances between distinct rows of ``X``.

    Exact for ``n <= max_rows``; above that, the median over the pairs of a seeded random subset
    of ``max_rows`` rows (the bandwidth heuristic does not need more).

    Raises
    ------
    RepscopeValueError
        If every pairwise distance is zero (constant ``X``).
    """
    X = as_float64_numpy(X, name="X")
    n = X.shape[0]
    if n > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
        X = X[idx]
    Xc = X - X.mean(axis=0)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    d = sq_distances_block(Xc, Xc, sq, sq)
    med = float(np.median(d[np.triu_indices(d.shape[0], k=1)]))
    if not med > 0:
        raise RepscopeValueError(
            "the median pairwise distance of X is 0 (constant or mostly duplicated rows); the "
            "median-heuristic bandwidth is undefined. Pass an explicit bandwidth instead."
        )
    return med


def gaussian_kernel_block(
    Xb: np.ndarray, X: np.ndarray, sq_b: np.ndarray, sq: np.ndarray, sigma2: float
) -> np.ndarray:
    """Rows ``exp(-||x_i - x_j||^2 / (2 sigma2))`` of a Gaussian kernel for the block ``Xb``."""
    d = sq_distances_block(Xb, X, sq_b, sq)
    d *= -1.0 / (2.0 * sigma2)
    return np.exp(d, out=d)


@dataclass(frozen=True)
class KernelSums:
    """Additive sums of two ``n x n`` kernels ``K, L`` that determine HSIC_0 and HSIC_1.

    Attributes
    ----------
    n : int
    kl, kk, ll : float
        ``sum_ij K_ij L_ij``, ``sum K^2``, ``sum L^2``.
    rk, rl : ndarray of shape (n,)
        Row sums ``K 1`` and ``L 1``.
    dk, dl : ndarray of shape (n,)
        Diagonals of ``K`` and ``L``.
    """

    n: int
    kl: float
    kk: float
    ll: float
    rk: np.ndarray
    rl: np.ndarray
    dk: np.ndarray
    dl: np.ndarray


KernelBlock = Callable[[slice], np.ndarray]


def kernel_sums(k_rows: KernelBlock, l_rows: KernelBlock, n: int, *, block: int = DEFAULT_BLOCK) -> KernelSums:
    """Accumulate :class:`KernelSums` from row-block callbacks (``rows(slice) -> (b, n)``)."""
    kl = kk = ll = 0.0
    rk, rl = np.empty(n), np.empty(n)
    dk, dl = np.empty(n), np.empty(n)
    for s in range(0, n, block):
        sl = slice(s, min(s + block, n))
        kb, lb = k_rows(sl), l_rows(sl)
        kl += float(np.einsum("ij,ij->", kb, lb))
        kk += float(np.einsum("ij,ij->", kb, kb))
        ll += float(np.einsum("ij,ij->", lb, lb))
        rk[sl], rl[sl] = kb.sum(axis=1), lb.sum(axis=1)
        idx = np.arange(sl.stop - sl.start)
        dk[sl], dl[sl] = kb[idx, idx + s], lb[idx, idx + s]
    return KernelSums(n, kl, kk, ll, rk, rl, dk, dl)


def _hsic_terms(
    n: int, kl: float, rk: np.ndarray, rl: np.ndarray, dk: np.ndarray, dl: np.ndarray, unbiased: bool
) -> float:
    if not unbiased:
        # tr(KHLH) = sum K*L - 2/n (K1).(L1) + (1'K1)(1'L1)/n^2
        val = kl - 2.0 / n * float(rk @ rl) + float(rk.sum()) * float(rl.sum()) / n**2
        return val / (n - 1) ** 2
    # Zero the diagonals: tr(K~L~), 1'K~1, K~1.
    tr = kl - float(dk @ dl)
    rkt, rlt = rk - dk, rl - dl
    sk, sl = float(rkt.sum()), float(rlt.sum())
    val = tr + sk * sl / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(rkt @ rlt)
    return val / (n * (n - 3))


def hsic_from_sums(s: KernelSums, *, unbiased: bool = False) -> tuple[float, float, float]:
    """``(HSIC(K, L), HSIC(K, K), HSIC(L, L))`` from accumulated sums."""
    n = s.n
    if unbiased and n < 4:
        raise RepscopeValueError(f"the unbiased HSIC estimator needs n >= 4 samples; got n={n}.")
    return (
        _hsic_terms(n, s.kl, s.rk, s.rl, s.dk, s.dl, unbiased),
        _hsic_terms(n, s.kk, s.rk, s.rk, s.dk, s.dk, unbiased),
        _hsic_terms(n, s.ll, s.rl, s.rl, s.dl, s.dl, unbiased),
    )


def _gaussian_rows(X: np.ndarray, sigma2: float) -> KernelBlock:
    sq = np.einsum("ij,ij->i", X, X)

    def rows(sl: slice) -> np.ndarray:
        return gaussian_kernel_block(X[sl], X, sq[sl], sq, sigma2)

    return rows


def _linear_rows(X: np.ndarray) -> KernelBlock:
    def rows(sl: slice) -> np.ndarray:
        return np.asarray(X[sl] @ X.T)

    return rows


def _bandwidth(X: np.ndarray, sigma: float | None, scale: float) -> float:
    if sigma is not None:
        if not sigma > 0:
            raise RepscopeValueError(f"the kernel bandwidth sigma must be > 0; got {sigma!r}.")
        return float(sigma) ** 2
    return scale**2 * median_sq_distance(X)


def hsic(
    X: Any,
    Y: Any,
    *,
    kernel: Literal["rbf", "linear"] = "rbf",
    sigma_x: float | None = None,
    sigma_y: float | None = None,
    bandwidth_scale: float = 1.0,
    unbiased: bool = False,
    normalize: bool = False,
    block: int = DEFAULT_BLOCK,
) -> float:
    """Hilbert-Schmidt independence criterion between paired samples, in row blocks.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    kernel : {"rbf", "linear"}
        Gaussian kernel ``exp(-||x - x'||^2 / (2 sigma^2))`` or the linear kernel ``x . x'``.
    sigma_x, sigma_y : float, optional
        Gaussian bandwidths; default ``bandwidth_scale * sqrt(median squared distance)`` (the
        median heuristic over distinct pairs, see :func:`median_sq_distance`).
    unbiased : bool
        Song et al.'s unbiased estimator (needs n >= 4) instead of the biased ``tr(KHLH)/(n-1)^2``.
    normalize : bool
        Return ``HSIC(K,L) / sqrt(HSIC(K,K) HSIC(L,L))`` (kernel CKA) instead of HSIC.
    block : int
        Rows per block; memory is ``O(block * n)``.

    Returns
    -------
    float
    """
    Xf = as_float64_numpy(X, name="X")
    Yf = as_float64_numpy(Y, name="Y")
    Xf = Xf - Xf.mean(axis=0)
    Yf = Yf - Yf.mean(axis=0)
    n = Xf.shape[0]
    if kernel == "rbf":
        kx = _gaussian_rows(Xf, _bandwidth(Xf, sigma_x, bandwidth_scale))
        ky = _gaussian_rows(Yf, _bandwidth(Yf, sigma_y, bandwidth_scale))
    elif kernel == "linear":
        kx, ky = _linear_rows(Xf), _linear_rows(Yf)
    else:
        raise RepscopeValueError(f"The 'kernel' parameter must be 'rbf' or 'linear'. Got {kernel!r}.")
    hxy, hxx, hyy = hsic_from_sums(kernel_sums(kx, ky, n, block=block), unbiased=unbiased)
    if not normalize:
        return float(hxy)
    den = hxx * hyy
    if not den > 0:
        raise RepscopeValueError(
            "kernel CKA is undefined: HSIC(K, K) or HSIC(L, L) is not positive (constant "
            "input, or too few samples for the unbiased estimator)."
        )
    return float(hxy / np.sqrt(den))


def kjem(X: Any, Y: Any, *, tau: float = 0.5, block: int = DEFAULT_BLOCK) -> float:
    """k-JEM kernel joint-entropy dependence (SepCLR, Louiset et al., 2024).

    .. math::

        \\mathrm{kJEM}(X, Y) = \\frac1n \\sum_i \\log\\Big(\\frac1n \\sum_j
            e^{-\\lVert x_i - x_j\\rVert^2/(2\\tau)}\\, e^{-\\lVert y_i - y_j\\rVert^2/(2\\tau)}\\Big)

    (the sum over ``j`` includes ``j = i``). It rises with the dependence between ``X`` and ``Y``
    (close pairs in X are also close in Y) and is at most 0. Computed in row blocks with a
    log-sum-exp, so memory is ``O(block * n)``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    tau : float, default=0.5
        Kernel temperature (the paper's value, for L2-normalised embeddings).

    Returns
    -------
    float
    """
    if not tau > 0:
        raise RepscopeValueError(f"The 'tau' parameter of kjem must be > 0. Got {tau!r} instead.")
    Xf = as_float64_numpy(X, name="X")
    Yf = as_float64_numpy(Y, name="Y")
    Xf = Xf - Xf.mean(axis=0)
    Yf = Yf - Yf.mean(axis=0)
    n = Xf.shape[0]
    sqx, sqy = np.einsum("ij,ij->i", Xf, Xf), np.einsum("ij,ij->i", Yf, Yf)
    total = 0.0
    for s in range(0, n, block):
        sl = slice(s, min(s + block, n))
        e = sq_distances_block(Xf[sl], Xf, sqx[sl], sqx)
        e += sq_distances_block(Yf[sl], Yf, sqy[sl], sqy)
        e *= -1.0 / (2.0 * tau)
        m = e.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(e - m).sum(axis=1))
        total += float((lse - np.log(n)).sum())
    return total / n
