"""PCA spectra and effective rank from a covariance (or a :class:`Moments`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from repscope.exceptions import RepscopeValueError
from repscope.results import RecordedResult
from repscope.stats._moments import Moments

if TYPE_CHECKING:
    from repscope.distributed import DistContext

__all__ = ["PCASpectrum", "PCASpectrumResult", "effective_rank", "layer_spectrum",
           "pca_spectrum"]


@dataclass(frozen=True)
class PCASpectrumResult(RecordedResult):
    """Eigen-spectrum of a feature covariance.

    Attributes
    ----------
    explained_variance : ndarray of shape (n_features,)
        Covariance eigenvalues, descending (clipped at 0).
    explained_variance_ratio : ndarray of shape (n_features,)
        Eigenvalues over their sum.
    effective_rank : float
        ``exp(H(p))`` with ``p`` the explained-variance ratio (Roy & Vetterli, 2007).
    participation_ratio : float
        ``(sum l)^2 / sum l^2``.
    n_components_90 : int
        Components needed for 90% of the variance.
    n_samples : int
    """

    analysis: ClassVar[str] = "pca_spectrum"

    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    effective_rank: float
    participation_ratio: float
    n_components_90: int
    n_samples: int

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``pca_spectrum`` record: the explained-variance ratios and the rank summaries."""
        return [("", {
            "explained_variance_ratio": self.explained_variance_ratio,
            "effective_rank": self.effective_rank,
            "participation_ratio": self.participation_ratio,
            "n_components_90": self.n_components_90})]


#: The former name of :class:`PCASpectrumResult` (kept for one release).
PCASpectrum = PCASpectrumResult


def effective_rank(eigenvalues: Any) -> float:
    """Entropy effective rank ``exp(-sum p_i log p_i)`` of non-negative eigenvalues.

    .. math:: \\mathrm{erank} = \\exp\\Big(-\\sum_i p_i \\log p_i\\Big),\\quad p_i = \\lambda_i / \\sum_j \\lambda_j

    Returns 0.0 for an all-zero spectrum. Invariant to scaling the eigenvalues.
    """
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    total = lam.sum()
    if total <= 0:
        return 0.0
    p = lam[lam > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def pca_spectrum(X_or_moments: Any) -> PCASpectrumResult:
    """PCA spectrum of features (array of shape (n_samples, n_features)) or of a Moments.

    Uses the ``d x d`` covariance accumulated in float64 and ``numpy.linalg.eigvalsh``; never
    an ``n x n`` matrix.

    Raises
    ------
    RepscopeValueError
        The features (or the Moments) hold no samples: a spectrum of nothing is not rank 0.
    """
    m = X_or_moments if isinstance(X_or_moments, Moments) else Moments().update(X_or_moments)
    if m.n == 0:
        shape = "" if isinstance(X_or_moments, Moments) else f" (shape {tuple(np.shape(X_or_moments))})"
        raise RepscopeValueError(
            f"pca_spectrum got no samples: 0 rows{shape}. Pass features of at least one input."
        )
    cov = m.covariance() if m.n > 1 else np.zeros((m.n_features or 0,) * 2)
    lam = np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)
    total = lam.sum()
    ratio = lam / total if total > 0 else np.zeros_like(lam)
    pr = float(total**2 / (lam**2).sum()) if total > 0 else 0.0
    k90 = int(np.searchsorted(np.cumsum(ratio), 0.9 - 1e-12) + 1) if total > 0 else 0
    return PCASpectrumResult(
        explained_variance=lam,
        explained_variance_ratio=ratio,
        effective_rank=effective_rank(lam),
        participation_ratio=pr,
        n_components_90=min(k90, lam.size),
        n_samples=m.n,
    )


def layer_spectrum(
    source: Any, layer: str, *, dist: DistContext | None = None, batch_size: int = 4096
) -> PCASpectrumResult:
    """PCA spectrum of one layer of a source, streamed (memory independent of ``n``).

    Parameters
    ----------
    source : FeatureStore or LayerSource
        Anything with ``n_samples`` and ``iter_batches(layer, batch_size, start=, stop=)``
        (:func:`repscope.store.open_layers` gives one per sample, ragged layers pooled).
    layer : str
    dist : DistContext, optional
        With several ranks (:func:`repscope.distributed.context`) each rank reads only its
        contiguous share of the rows and the float64 :class:`Moments` are all-reduced, so every
        rank returns the spectrum of the whole layer. Default: one process.
    batch_size : int, default=4096
        Rows read at a time.

    Raises
    ------
    RepscopeValueError
        The layer holds no samples.
    DistributedError
        Another rank stopped during the all-reduce.
    """
    rows = None if dist is None else dist.share(source.n_samples)
    m = Moments.from_store(source, layer, batch_size=batch_size, rows=rows)
    if dist is not None and dist.is_distributed:
        with dist.collective(f"adding the moments of layer {layer!r}"):
            m.all_reduce(dist.group)
    return pca_spectrum(m)
