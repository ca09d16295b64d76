"""CKA family: linear (biased, debiased), RBF (median-heuristic bandwidth), minibatch (Nguyen).

See :mod:`repscope.similarity._cka` for the linear forms and :mod:`repscope._kernels.hsic` for
the kernel sums.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from repscope._kernels.hsic import DEFAULT_BLOCK, hsic
from repscope._validation import check_paired, check_positive_int, check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.similarity._cka import _debiased_terms, _fro2, linear_cka, use_feature_space
from repscope.similarity._measures._common import PairStats, centered_f64, pow2_rescaled
from repscope.similarity._registry import register_measure

__all__ = ["MinibatchCKA", "linear_cka_debiased", "minibatch_cka", "rbf_cka"]

_ALL4 = {"orthogonal", "isotropic_scale", "translation", "permutation"}

register_measure(
    "linear_cka", higher_is_better=True, is_metric=False, invariances=_ALL4, identity=1.0,
    estimator="biased HSIC", streaming=True,
)(linear_cka)


@register_measure(
    "linear_cka_debiased", higher_is_better=True, is_metric=False, invariances=_ALL4,
    identity=1.0, estimator="unbiased HSIC (Song et al. 2012)", streaming=True,
)
def linear_cka_debiased(X: Any, Y: Any) -> float:
    """Debiased linear CKA: :func:`linear_cka` with ``debiased=True``.

    The unbiased HSIC estimator is used in the numerator and in both denominator terms (PyPI
    ``repsim`` mixes an unbiased numerator with biased denominators, which is not this).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)

    Returns
    -------
    float
        At most 1; near 0 for independent representations, even when ``d >> n``.

    Notes
    -----
    Invariant to orthogonal transforms, isotropic scaling, translation and permutation.
    """
    return linear_cka(X, Y, debiased=True)


@register_measure(
    "rbf_cka", higher_is_better=True, is_metric=False, invariances=_ALL4, identity=1.0,
    estimator="biased HSIC, Gaussian kernels, median-heuristic bandwidth",
)
def rbf_cka(
    X: Any,
    Y: Any,
    *,
    bandwidth_scale: float = 1.0,
    sigma_x: float | None = None,
    sigma_y: float | None = None,
    debiased: bool = False,
    block: int = DEFAULT_BLOCK,
) -> float:
    """CKA with Gaussian (RBF) kernels.

    .. math::

        k(x, x') = \\exp\\Big(-\\frac{\\lVert x - x'\\rVert^2}{2\\sigma^2}\\Big),\\qquad
        \\sigma^2 = s^2\\,\\operatorname{median}_{i<j} \\lVert x_i - x_j\\rVert^2

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    bandwidth_scale : float, default=1.0
        ``s`` above (Kornblith et al.'s ``threshold``; they report 0.2-0.8 as well).
    sigma_x, sigma_y : float, optional
        Fixed bandwidths (then the measure is no longer scale invariant).
    debiased : bool, default=False
        Unbiased HSIC in numerator and denominator.
    block : int
        Rows per kernel block.

    Returns
    -------
    float

    Notes
    -----
    Inherently ``O(n^2 d)`` time. Memory is ``O(block * n)``: the kernels are formed and reduced
    one row block at a time and never held whole. The median is taken over distinct pairs
    (Kornblith et al.'s code includes the zero diagonal), exactly for ``n <= 2000`` and over a
    seeded 2000-row subset above. With the median heuristic it is invariant to orthogonal
    transforms, isotropic scaling, translation and permutation.
    """
    X, Y = check_paired(X, Y, min_samples=4 if debiased else 3, reject_constant=True)
    check_scalar(bandwidth_scale, "bandwidth_scale", caller="rbf_cka", min_value=0,
                 include_min=False)
    return hsic(X, Y, kernel="rbf", sigma_x=sigma_x, sigma_y=sigma_y,
                bandwidth_scale=bandwidth_scale, unbiased=debiased, normalize=True, block=block)


def _batch_hsic_u(X: Any, Y: Any) -> tuple[float, float, float]:
    """``(HSIC_1(K,L), HSIC_1(K,K), HSIC_1(L,L))`` of one minibatch (linear kernels)."""
    n, dx, dy = int(X.shape[0]), int(X.shape[1]), int(Y.shape[1])
    if use_feature_space(n, dx, dy):
        s = PairStats.from_arrays(X, Y, row_norms=True)
        m = s.moments
        sxy, sxx, syy = m.cross_scatter(), m.scatter(), m.scatter_y()
        kl, kk, ll = s.centered_norm_sums()
        h = _debiased_terms(n, _fro2(sxy), _fro2(sxx), _fro2(syy), float(np.trace(sxx)),
                            float(np.trace(syy)), kl, kk, ll)
    else:
        Xc, Yc = centered_f64(X, "X"), centered_f64(Y, "Y")
        K, L = Xc @ Xc.T, Yc @ Yc.T
        dk, dl = np.diag(K).copy(), np.diag(L).copy()
        h = _debiased_terms(n, float(np.einsum("ij,ij->", K, L)), _fro2(K), _fro2(L),
                            float(dk.sum()), float(dl.sum()), float(dk @ dl), float(dk @ dk),
                            float(dl @ dl))
    scale = 1.0 / (n * (n - 3.0))
    return h[0] * scale, h[1] * scale, h[2] * scale


class MinibatchCKA:
    """Nguyen et al.'s minibatch CKA accumulator (``update`` per minibatch, then ``compute``).

    .. math::

        \\mathrm{CKA}_{mb} = \\frac{\\frac1k\\sum_b \\mathrm{HSIC}_1(K_b, L_b)}
            {\\sqrt{\\frac1k\\sum_b \\mathrm{HSIC}_1(K_b, K_b)\\;\\frac1k\\sum_b
            \\mathrm{HSIC}_1(L_b, L_b)}}

    Each term is an unbiased estimate of the population HSIC, so as the number of minibatches
    grows the value converges to the population CKA, which is what **debiased** CKA estimates
    on the full data, not the biased CKA (tested). State: three floats and a count.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((512, 4))
    >>> acc = MinibatchCKA()
    >>> for s in range(0, 512, 128):
    ...     _ = acc.update(X[s:s + 128], X[s:s + 128] @ np.diag([1, 2, 3, 4.0]))
    >>> 0.75 < acc.compute() < 0.85  # population CKA: 30 / (2 sqrt(354)) = 0.797
    True
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every batch."""
        self.hxy = self.hxx = self.hyy = 0.0
        self.n_batches = 0

    def update(self, X: Any, Y: Any) -> MinibatchCKA:
        """Add one minibatch (at least 4 rows)."""
        X, Y = check_paired(X, Y, min_samples=4, reject_constant=True)
        a, b, c = _batch_hsic_u(X, Y)
        self.hxy += a
        self.hxx += b
        self.hyy += c
        self.n_batches += 1
        return self

    def merge(self, other: MinibatchCKA) -> MinibatchCKA:
        """Add another accumulator's batches."""
        self.hxy += other.hxy
        self.hxx += other.hxx
        self.hyy += other.hyy
        self.n_batches += other.n_batches
        return self

    def compute(self) -> float:
        """The minibatch CKA of the batches seen."""
        if self.n_batches == 0:
            raise RepscopeValueError("MinibatchCKA has seen no batches; call update(X, Y) first.")
        den = self.hxx * self.hyy
        if not den > 0:
            raise RepscopeValueError(
                "minibatch CKA is undefined: the averaged HSIC of X or Y with itself is not "
                "positive (constant input or batches too small)."
            )
        return float(min(self.hxy / np.sqrt(den), 1.0))


@register_measure(
    "minibatch_cka", higher_is_better=True, is_metric=False, invariances=_ALL4, identity=1.0,
    estimator="minibatch unbiased HSIC (Nguyen et al. 2021); converges to debiased CKA",
)
def minibatch_cka(X: Any, Y: Any, *, batch_size: int = 256, seed: int | None = None) -> float:
    """Minibatch CKA (Nguyen, Raghu & Kornblith, 2021) over consecutive row batches.

    Rows are split, in order, into ``ceil(n / batch_size)`` near-equal batches (each at least 4
    rows) and fed to :class:`MinibatchCKA`. This is an estimator of the population CKA that
    converges to **debiased** CKA, not to the biased :func:`linear_cka`; it is kept under its own
    name for reproducing published numbers.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    batch_size : int, default=256
    seed : int, optional
        Shuffle the rows with this seed first. Without it, batches are consecutive rows: on data
        stored in a meaningful order (grouped by class or source) each batch then sees one group
        and the value measures within-group similarity.

    Returns
    -------
    float

    Notes
    -----
    Invariant to orthogonal transforms, isotropic scaling, translation and permutation.
    """
    X, Y = check_paired(X, Y, min_samples=4, reject_constant=True)
    X, Y = pow2_rescaled(X), pow2_rescaled(Y)  # one exact power of two for every batch
    bs = check_positive_int(batch_size, "batch_size", caller="minibatch_cka")
    n = int(X.shape[0])
    if seed is not None:
        order = np.random.default_rng(seed).permutation(n)
        X, Y = X[order], Y[order]
    k = max(1, min(-(-n // bs), n // 4))
    acc = MinibatchCKA()
    bounds = np.linspace(0, n, k + 1).round().astype(int)
    for s, e in itertools.pairwise(bounds):
        acc.update(X[s:e], Y[s:e])
    return acc.compute()
