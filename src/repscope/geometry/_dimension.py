"""Intrinsic dimension, anisotropy, spectral entropy and the feature-weighting curve by layer.

* TwoNN (Facco et al., 2017): with ``r1 < r2`` a point's two nearest-neighbour distances,
  ``mu = r2 / r1`` is Pareto with exponent ``d``; ``d`` is the slope through the origin of
  ``-log(1 - F(mu))`` against ``log mu`` (the largest 10% of ``mu`` discarded).
* MLE (Levina & Bickel, 2004, with MacKay & Ghahramani's pooling): per point
  ``m_k(x)^{-1} = (1/(k-1)) sum_{j<k} log(T_k(x) / T_j(x))``, and
  ``d = 1 / mean_x m_k(x)^{-1}``.
* Anisotropy (Ethayarajh, 2019): the mean cosine between distinct samples.
* Spectral entropy: the Shannon entropy (nats) of the covariance eigenvalues over their sum,
  ``log`` of the effective rank.
* Feature weighting (Xue et al., ICLR 2024, §9 of the recipes): per layer, the probe accuracy
  of several attributes (chance-normalised), their spread, and the spectral entropy; deeper
  (more specialised) layers weight features more unequally.

Duplicate rows have no defined neighbour-distance ratio; the two intrinsic-dimension
estimators count each distinct row once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from repscope._progress import ProgressLike, progress_for
from repscope._validation import check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.geometry._pairwise import (
    DEFAULT_MAX_SAMPLES,
    check_max_samples,
    features64,
    l2_normalize,
)
from repscope.geometry._registry import register_geometry_measure
from repscope.results import RecordedResult

__all__ = [
    "FeatureWeightingResult",
    "anisotropy",
    "feature_weighting",
    "mle_id",
    "spectral_entropy",
    "twonn",
]


def _distinct(X: np.ndarray, caller: str, need: int) -> np.ndarray:
    U = np.unique(X, axis=0)
    if U.shape[0] < need:
        raise RepscopeValueError(
            f"{caller} needs at least {need} distinct samples; got {U.shape[0]} distinct of "
            f"{X.shape[0]} rows.")
    return U


def _neighbour_distances(X: np.ndarray, k: int) -> np.ndarray:
    """Euclidean distances to the ``k`` nearest other rows, nearest first (exact, chunked)."""
    from repscope._kernels.knn import knn_search

    res = knn_search(X, X, k, metric="euclidean", exclude_self=True)
    return np.asarray(res.values, dtype=np.float64)


def twonn(
    X: Any, y: Any = None, *, discard_fraction: float = 0.1,
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
) -> float:
    """TwoNN intrinsic dimension (Facco, d'Errico, Rodriguez & Laio, 2017).

    ``O(n^2 d)`` time (exact 2-NN search), ``O(n)`` memory.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : ignored
    discard_fraction : float, default=0.1
        Fraction of the largest ratios left out of the fit (the recipe's 10%).
    max_samples : int or None, default=50000

    Returns
    -------
    float
    """
    check_scalar(discard_fraction, "discard_fraction", caller="twonn", kind=float, min_value=0,
                 max_value=1, include_max=False)
    Z = features64(X, caller="twonn", min_samples=3)
    check_max_samples(Z.shape[0], max_samples, caller="twonn", cost="O(n^2) time")
    Z = _distinct(Z, "twonn", 3)
    D = _neighbour_distances(Z, 2)
    mu = np.sort(D[:, 1] / D[:, 0])
    n = mu.size
    keep = max(int(np.floor(n * (1.0 - discard_fraction))), 2)
    F = np.arange(1, n + 1) / n
    x = np.log(mu[:keep])
    yv = -np.log(1.0 - F[:keep])
    den = float(x @ x)
    if not den > 0:
        raise RepscopeValueError(
            "twonn is undefined: every point's two nearest neighbours are equally far (a "
            "lattice); add a little noise or use mle_id.")
    return float((x @ yv) / den)


def mle_id(
    X: Any, y: Any = None, *, k: int = 20, max_samples: int | None = DEFAULT_MAX_SAMPLES,
) -> float:
    """Maximum-likelihood intrinsic dimension (Levina & Bickel, 2004; MacKay & Ghahramani's
    average of inverses over points).

    ``O(n^2 d)`` time (exact k-NN search), ``O(n k)`` memory.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : ignored
    k : int, default=20
        Neighbours per point (>= 2).
    max_samples : int or None, default=50000

    Returns
    -------
    float
    """
    check_scalar(k, "k", caller="mle_id", kind=int, min_value=2)
    Z = features64(X, caller="mle_id", min_samples=3)
    check_max_samples(Z.shape[0], max_samples, caller="mle_id", cost="O(n^2) time")
    Z = _distinct(Z, "mle_id", k + 1)
    T = _neighbour_distances(Z, k)
    inv = np.log(T[:, -1:] / T[:, :-1]).sum(axis=1) / (k - 1)
    mean_inv = float(inv.mean())
    if not mean_inv > 0:
        raise RepscopeValueError(
            "mle_id is undefined: every point's k nearest neighbours are equally far; use a "
            "larger k.")
    return 1.0 / mean_inv


def anisotropy(X: Any, y: Any = None) -> float:
    """Mean cosine similarity between distinct samples (Ethayarajh, 2019), in ``O(n d)``.

    ``sum_{i != j} u_i.u_j = ||sum_i u_i||^2 - sum_i ||u_i||^2`` for the L2-normalised rows
    ``u``; all-zero rows count as zero vectors. 0 for directions spread evenly, 1 when every
    sample points the same way.
    """
    U = l2_normalize(features64(X, caller="anisotropy", min_samples=2))
    n = U.shape[0]
    s = U.sum(axis=0)
    return float((s @ s - np.einsum("ij,ij->", U, U)) / (n * (n - 1.0)))


def spectral_entropy(X: Any, y: Any = None, *, normalized: bool = False) -> float:
    """Shannon entropy (nats) of the covariance eigenvalues over their sum.

    Equals ``log`` of :func:`~repscope.stats.effective_rank`; ``normalized=True`` divides by
    ``log(n_features)`` (1 = every direction equal, 0 = one direction). Streams through
    :class:`~repscope.stats.Moments` (``d x d``, never ``n x n``).

    Raises
    ------
    RepscopeValueError
        All samples equal (no variance: the entropy is undefined).
    """
    from repscope.stats import pca_spectrum

    Z = features64(X, caller="spectral_entropy", min_samples=2)
    p = np.asarray(pca_spectrum(Z).explained_variance_ratio)
    p = p[p > 0]
    if p.size == 0:
        raise RepscopeValueError(
            "spectral_entropy is undefined for features with no variance (every sample equal).")
    h = float(-(p * np.log(p)).sum())
    if normalized:
        return h / np.log(Z.shape[1]) if Z.shape[1] > 1 else 0.0
    return h


@register_geometry_measure(
    "twonn", higher_is="higher intrinsic dimension", higher_is_better=None, labels="none",
    cost="n^2", range=(0.0, None),
    reference="Facco et al., Estimating the intrinsic dimension of datasets by a minimal "
              "neighborhood information, Sci. Rep. 2017")
def _twonn_measure(X: Any, y: Any = None, **opts: Any) -> float:
    """TwoNN intrinsic dimension; see :func:`twonn`."""
    return twonn(X, **opts)


@register_geometry_measure(
    "mle_id", higher_is="higher intrinsic dimension", higher_is_better=None, labels="none",
    cost="n^2", range=(0.0, None),
    reference="Levina & Bickel, Maximum likelihood estimation of intrinsic dimension, NIPS "
              "2004; MacKay & Ghahramani's correction")
def _mle_measure(X: Any, y: Any = None, **opts: Any) -> float:
    """MLE intrinsic dimension; see :func:`mle_id`."""
    return mle_id(X, **opts)


@register_geometry_measure(
    "anisotropy", higher_is="more anisotropic (samples point the same way)",
    higher_is_better=None, labels="none", cost="moments", range=(-1.0, 1.0),
    reference="Ethayarajh, How contextual are contextualized word representations?, EMNLP 2019")
def _anisotropy_measure(X: Any, y: Any = None, **opts: Any) -> float:
    """Mean cosine between distinct samples; see :func:`anisotropy`."""
    return anisotropy(X)


@register_geometry_measure(
    "spectral_entropy", higher_is="more equal variance across directions",
    higher_is_better=None, labels="none", cost="moments", range=(0.0, None),
    reference="Xue et al., Investigating the benefits of projection head for representation "
              "learning, ICLR 2024 (feature-weighting inequality)")
def _spectral_entropy_measure(X: Any, y: Any = None, **opts: Any) -> float:
    """Spectral entropy (nats) of the covariance; see :func:`spectral_entropy`."""
    return spectral_entropy(X, **opts)


@dataclass(frozen=True)
class FeatureWeightingResult(RecordedResult):
    """The feature-weighting inequality at every layer: one curve per layer.

    Attributes
    ----------
    layers : tuple of str
    attributes : tuple of str
    accuracy : tuple of tuple of float
        ``accuracy[l][a]``: held-out probe accuracy of attribute ``a`` at layer ``l``.
    chance : tuple of float
        Majority-class accuracy of each attribute.
    normalized_accuracy : tuple of tuple of float
        ``(accuracy - chance) / (1 - chance)``: 0 = chance, 1 = perfect.
    accuracy_spread : tuple of float
        Per layer, max - min of the normalised accuracies over attributes (0 = every attribute
        equally decodable; larger = more unequal weighting).
    spectral_entropy : tuple of float
        Per layer, nats.
    normalized_spectral_entropy : tuple of float
        Per layer, over ``log(n_features)``.
    effective_rank : tuple of float
    n_features : tuple of int
    probe : str
    protocol : str
    """

    analysis: ClassVar[str] = "geometry_feature_weighting"

    layers: tuple[str, ...]
    attributes: tuple[str, ...]
    accuracy: tuple[tuple[float, ...], ...]
    chance: tuple[float, ...]
    normalized_accuracy: tuple[tuple[float, ...], ...]
    accuracy_spread: tuple[float, ...]
    spectral_entropy: tuple[float, ...]
    normalized_spectral_entropy: tuple[float, ...]
    effective_rank: tuple[float, ...]
    n_features: tuple[int, ...]
    probe: str
    protocol: str

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``geometry_feature_weighting`` record per layer."""
        return [(layer, {
            "attributes": list(self.attributes), "accuracy": list(self.accuracy[i]),
            "chance": list(self.chance), "normalized_accuracy": list(self.normalized_accuracy[i]),
            "accuracy_spread": self.accuracy_spread[i],
            "spectral_entropy": self.spectral_entropy[i],
            "normalized_spectral_entropy": self.normalized_spectral_entropy[i],
            "effective_rank": self.effective_rank[i], "n_features": self.n_features[i]})
            for i, layer in enumerate(self.layers)]


def feature_weighting(
    source: Any,
    attributes: Mapping[str, Any],
    *,
    probe: Any = None,
    protocol: Any = None,
    layers: Sequence[str] | None = None,
    progress: ProgressLike = False,
) -> FeatureWeightingResult:
    """Per-attribute probe accuracy spread and spectral entropy at every layer.

    Parameters
    ----------
    source : FeatureStore, LayerSource or mapping of str to array of shape (n_samples, d)
        Layers read one at a time (token layers mean-pooled).
    attributes : mapping of str to array-like of shape (n_samples,)
        At least two labelled attributes of the same samples (e.g. digit, parity).
    probe : estimator or callable, optional
        Default :func:`repscope.probe._layerwise.default_probe` (closed-form ridge).
    protocol : Holdout, KFold or FixedValidation, optional
        Default ``KFold(5)``; every layer and attribute gets the same splits of its labels.
    layers : sequence of str, optional
    progress : bool or callable, default=False

    Returns
    -------
    FeatureWeightingResult
    """
    from repscope.probe._layerwise import _probe_name, default_probe
    from repscope.probe._protocols import DEFAULT_PROTOCOL, evaluate
    from repscope.stats import effective_rank, pca_spectrum
    from repscope.store._layers import layer_source

    if not isinstance(attributes, Mapping) or len(attributes) < 2:
        raise RepscopeValueError(
            "attributes of feature_weighting must map at least two attribute names to labels "
            f"(the spread is over attributes); got {len(attributes) if isinstance(attributes, Mapping) else type(attributes).__name__}.")
    src = layer_source(source, layers, pooling="mean", name="source", caller="feature_weighting")
    names = list(src.layers)
    if not names:
        raise RepscopeValueError("source has no layers for feature_weighting.")
    factory = probe if probe is not None else default_probe()
    proto = protocol if protocol is not None else DEFAULT_PROTOCOL
    attrs = list(attributes)
    acc, norm, spread, ent, nent, erank, widths = [], [], [], [], [], [], []
    chance: list[float] = []
    with progress_for(progress, "layers", len(names), prefix="feature weighting") as advance:
        for name in names:
            X = features64(src.read(name), name=f"features of layer {name!r}",
                           caller="feature_weighting")
            row, nrow, chance = [], [], []
            for a in attrs:
                labels = np.asarray(attributes[a])
                if labels.shape[0] != X.shape[0]:
                    raise RepscopeValueError(
                        f"attribute {a!r} has {labels.shape[0]} labels but layer {name!r} has "
                        f"{X.shape[0]} samples; pass one label per sample.")
                r, _ = evaluate(factory, X, labels, proto)
                row.append(float(r.accuracy))
                chance.append(float(r.chance))
                nrow.append((r.accuracy - r.chance) / (1.0 - r.chance) if r.chance < 1 else 0.0)
            spec = pca_spectrum(X)
            p = np.asarray(spec.explained_variance_ratio)
            p = p[p > 0]
            h = float(-(p * np.log(p)).sum()) if p.size else 0.0
            acc.append(tuple(row))
            norm.append(tuple(float(v) for v in nrow))
            spread.append(float(max(nrow) - min(nrow)))
            ent.append(h)
            nent.append(h / np.log(X.shape[1]) if X.shape[1] > 1 else 0.0)
            erank.append(effective_rank(spec.explained_variance))
            widths.append(int(X.shape[1]))
            advance(1)
    return FeatureWeightingResult(
        layers=tuple(names), attributes=tuple(attrs), accuracy=tuple(acc), chance=tuple(chance),
        normalized_accuracy=tuple(norm), accuracy_spread=tuple(spread),
        spectral_entropy=tuple(ent), normalized_spectral_entropy=tuple(float(v) for v in nent),
        effective_rank=tuple(erank), n_features=tuple(widths), probe=_probe_name(factory),
        protocol=repr(proto))
