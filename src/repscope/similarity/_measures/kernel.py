"""Kernel dependence measures: HSIC and k-JEM (numerics in :mod:`repscope._kernels.hsic`)."""

from __future__ import annotations

from typing import Any, Literal

from repscope._kernels.hsic import DEFAULT_BLOCK
from repscope._kernels.hsic import hsic as _hsic
from repscope._kernels.hsic import kjem as _kjem
from repscope._validation import check_paired
from repscope.similarity._registry import register_measure

__all__ = ["hsic", "kjem"]


@register_measure(
    "hsic", higher_is_better=True, is_metric=False,
    invariances={"orthogonal", "isotropic_scale", "translation", "permutation"},
    estimator="biased HSIC, Gaussian kernels, median-heuristic bandwidth",
)
def hsic(
    X: Any,
    Y: Any,
    *,
    kernel: Literal["rbf", "linear"] = "rbf",
    sigma_x: float | None = None,
    sigma_y: float | None = None,
    unbiased: bool = False,
    block: int = DEFAULT_BLOCK,
) -> float:
    """Hilbert-Schmidt independence criterion (unnormalised; see :func:`rbf_cka` for CKA).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    kernel : {"rbf", "linear"}, default="rbf"
    sigma_x, sigma_y : float, optional
        Gaussian bandwidths; default the median heuristic.
    unbiased : bool, default=False
        Song et al.'s unbiased estimator instead of ``tr(KHLH) / (n-1)^2``.
    block : int
        Rows per kernel block (memory ``O(block * n)``).

    Returns
    -------
    float

    Notes
    -----
    With the median-heuristic Gaussian kernel: invariant to orthogonal transforms, isotropic
    scaling, translation and permutation. ``O(n^2 d)`` time.
    """
    X, Y = check_paired(X, Y, min_samples=4 if unbiased else 3, reject_constant=True)
    return _hsic(X, Y, kernel=kernel, sigma_x=sigma_x, sigma_y=sigma_y, unbiased=unbiased,
                 block=block)


@register_measure(
    "kjem", higher_is_better=True, is_metric=False,
    invariances={"orthogonal", "translation", "permutation"},
    estimator="k-JEM (SepCLR), Gaussian kernels, tau=0.5",
)
def kjem(X: Any, Y: Any, *, tau: float = 0.5, block: int = DEFAULT_BLOCK) -> float:
    """k-JEM kernel joint-entropy dependence (Louiset et al., 2024); see
    :func:`repscope._kernels.hsic.kjem` for the formula.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    tau : float, default=0.5
        Kernel temperature (fixed, so the value depends on the scale of the inputs: the paper
        L2-normalises embeddings first).

    Returns
    -------
    float <= 0, rising with dependence.

    Notes
    -----
    Invariant to orthogonal transforms, translation and permutation (not to scaling).
    """
    X, Y = check_paired(X, Y, min_samples=3, reject_constant=True)
    return _kjem(X, Y, tau=tau, block=block)
