r"""Label-free separability from 0-dimensional persistence (Gourgoulias et al., 2023).

Embeddings are L2-normalised; the H0 persistence of their Vietoris–Rips filtration is the
vector of Euclidean minimum-spanning-tree edge lengths (every class is born at 0 and dies when
its component merges). Well-separated groups give a few long bars (the gaps between groups)
against many short within-group bars, so

* the **persistence entropy** :math:`-\sum_i \hat p_i \log \hat p_i`, :math:`\hat p = p / \sum p`,
  falls, and
* the **max-bar ratio** :math:`\max p / \mathrm{median}\, p` rises,

as groups separate. When the number of classes ``K`` is known, the **top-(K-1) bar ratio**
(mean of the ``K - 1`` longest bars over the median bar) targets exactly the ``K - 1`` merges
between classes; it uses ``K`` and so is not label-free.

The MST runs in O(n) memory (:func:`repscope._kernels.mst.euclidean_mst`, O(n^2) time) and
refuses ``n > max_samples``. :func:`track` follows a score across checkpoints and detects its
plateau with the relative-change rule (an unsupervised stopping signal for fine-tuning).

Recipe notes (reconstructed): the paper's exact score ``S`` was not retrieved; we ship both
candidate summaries. Zero-length bars (duplicate points) count in the median; a median of 0
(more than half the points duplicated) gives an infinite ratio.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from repscope._kernels.mst import DEFAULT_MAX_SAMPLES, euclidean_mst
from repscope._progress import ProgressLike, progress_for
from repscope._validation import check_positive_int, check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.geometry._inputs import as_array, normalize_rows
from repscope.geometry._registry import register_geometry_measure
from repscope.results import RecordedResult

__all__ = [
    "PersistenceResult",
    "PersistenceTrackResult",
    "h0_persistence",
    "persistence_entropy",
    "persistence_max_ratio",
    "persistence_top_ratio",
    "plateau_index",
    "track",
]

#: Longest bars kept in a record (the barcode draws these).
RECORD_BARS = 200


def _entropy(p: np.ndarray) -> float:
    total = float(p.sum())
    if total <= 0:
        return 0.0
    q = p[p > 0] / total
    return float(-(q * np.log(q)).sum())


def _ratio(top: float, median: float) -> float:
    if median > 0:
        return top / median
    return np.inf if top > 0 else np.nan


@dataclass(frozen=True)
class PersistenceResult(RecordedResult):
    """H0 persistence of one point cloud.

    Attributes
    ----------
    deaths : tuple of float
        The ``n - 1`` death times (MST edge lengths), longest first.
    entropy : float
        Persistence entropy of the normalised bar lengths.
    max_ratio : float
        Longest bar over the median bar.
    top_ratio : float
        Mean of the ``n_classes - 1`` longest bars over the median bar (NaN without
        ``n_classes``).
    n_classes : int or None
    n_samples : int
    normalized : bool
        Whether rows were L2-normalised first.
    """

    analysis: ClassVar[str] = "geometry_persistence"

    deaths: tuple[float, ...]
    entropy: float
    max_ratio: float
    top_ratio: float
    n_classes: int | None
    n_samples: int
    normalized: bool

    @property
    def median(self) -> float:
        return float(np.median(self.deaths)) if self.deaths else float("nan")

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One record: the summaries, the longest bars and 21 quantiles of all bars."""
        d = np.asarray(self.deaths, dtype=float)
        quant = np.quantile(d, np.linspace(0, 1, 21)).tolist() if d.size else []
        return [("", {
            "entropy": self.entropy, "max_ratio": self.max_ratio, "top_ratio": self.top_ratio,
            "n_classes": self.n_classes, "n_samples": self.n_samples,
            "normalized": self.normalized, "median_bar": self.median,
            "bars": d[:RECORD_BARS].tolist(), "quantiles": quant})]


def h0_persistence(
    X: Any,
    *,
    n_classes: int | None = None,
    normalize: bool = True,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    layer: str | None = None,
    progress: ProgressLike = False,
) -> PersistenceResult:
    """0-dimensional persistence of the rows of ``X`` (their Euclidean MST edge lengths).

    Parameters
    ----------
    X : array of shape (n_samples, n_features), store or LayerSource
    n_classes : int, optional
        ``K`` for the top-(K-1) bar ratio (uses the number of classes: not label-free).
    normalize : bool, default=True
        L2-normalise the rows first (the recipe's choice).
    max_samples : int, default=50,000
        Larger inputs are refused (O(n^2) time) with a message suggesting a subsample.
    layer : str, optional
    progress : bool or callable, default=False

    Returns
    -------
    PersistenceResult

    Raises
    ------
    RepscopeValueError
        NaN/inf, fewer than 2 samples, ``n_classes`` out of ``[2, n]``, too many samples.
    """
    from repscope.geometry._inputs import LayerView

    key = ("h0_deaths", bool(normalize), int(max_samples))
    cached = X.cache.get(key) if isinstance(X, LayerView) else None
    if cached is None:
        A = as_array(X, layer=layer, caller="h0_persistence", min_samples=2)
        Z = normalize_rows(A) if normalize else A
        tree = euclidean_mst(Z, max_samples=max_samples, progress=progress)
        deaths = np.sort(tree.length)[::-1]
        if isinstance(X, LayerView):
            X.cache[key] = deaths
    else:
        deaths = cached
    n = deaths.size + 1
    if n_classes is not None:
        n_classes = check_positive_int(n_classes, "n_classes", caller="h0_persistence")
        if not 2 <= n_classes <= n:
            raise RepscopeValueError(
                f"The 'n_classes' parameter of h0_persistence must be in [2, {n}] (the number "
                f"of samples). Got {n_classes} instead.")
    med = float(np.median(deaths))
    top = (_ratio(float(deaths[:n_classes - 1].mean()), med) if n_classes is not None
           else float("nan"))
    return PersistenceResult(
        deaths=tuple(float(v) for v in deaths), entropy=_entropy(deaths),
        max_ratio=_ratio(float(deaths[0]), med), top_ratio=top, n_classes=n_classes,
        n_samples=n, normalized=bool(normalize))


@register_geometry_measure(
    "persistence_entropy", higher_is="more uniform bars (less separated groups)",
    higher_is_better=False, labels="none", cost="n^2", range=(0.0, None),
    reference="Gourgoulias et al. (2023), arXiv 2305.15016: entropy of H0 bars of "
    "L2-normalised embeddings")
def persistence_entropy(X: Any, y: Any = None, *, max_samples: int = DEFAULT_MAX_SAMPLES,
                        layer: str | None = None) -> float:
    """Persistence entropy of the H0 bars of the L2-normalised rows (label-free)."""
    return h0_persistence(X, max_samples=max_samples, layer=layer).entropy


@register_geometry_measure(
    "persistence_max_ratio", higher_is="more separated groups (a long gap bar)",
    higher_is_better=True, labels="none", cost="n^2", range=(1.0, None),
    reference="Gourgoulias et al. (2023): longest H0 bar over the median bar")
def persistence_max_ratio(X: Any, y: Any = None, *, max_samples: int = DEFAULT_MAX_SAMPLES,
                          layer: str | None = None) -> float:
    """Longest over median H0 bar of the L2-normalised rows (label-free)."""
    return h0_persistence(X, max_samples=max_samples, layer=layer).max_ratio


@register_geometry_measure(
    "persistence_top_ratio", higher_is="more separated classes (K - 1 long gap bars)",
    higher_is_better=True, labels="required", cost="n^2", range=(1.0, None),
    reference="Gourgoulias et al. (2023): top-(K-1) H0 bars over the median bar; uses K, "
    "so not label-free")
def persistence_top_ratio(X: Any, y: Any = None, *, max_samples: int = DEFAULT_MAX_SAMPLES,
                          layer: str | None = None) -> float:
    """Mean of the ``K - 1`` longest H0 bars over the median bar, with ``K`` the number of
    distinct labels in ``y`` (only ``K`` is used; not label-free)."""
    if y is None:
        raise RepscopeValueError("persistence_top_ratio needs labels (for K); got None.")
    K = int(np.unique(np.asarray(y)).size)
    if K < 2:
        raise RepscopeValueError(f"persistence_top_ratio needs at least 2 classes; got {K}.")
    return h0_persistence(X, n_classes=K, max_samples=max_samples, layer=layer).top_ratio


# --------------------------------------------------------------------------- tracking
def plateau_index(scores: Sequence[float], *, tol: float = 1e-2, patience: int = 1) -> int | None:
    r"""The first step ``t`` at which a score has plateaued: the relative change
    :math:`|S_t - S_{t-1}| / |S_{t-1}| < \mathrm{tol}` for ``patience`` consecutive steps
    ending at ``t`` (the recipes' self-stopping rule). None when it never does.

    Examples
    --------
    >>> plateau_index([1.0, 2.0, 2.5, 2.51, 2.512], tol=0.01)
    3
    """
    check_scalar(tol, "tol", caller="plateau_index", min_value=0.0, include_min=False)
    patience = check_positive_int(patience, "patience", caller="plateau_index")
    s = np.asarray(scores, dtype=float)
    run = 0
    for t in range(1, s.size):
        prev = abs(s[t - 1])
        change = abs(s[t] - s[t - 1]) / prev if prev > 0 else (0.0 if s[t] == 0 else np.inf)
        run = run + 1 if change < tol else 0
        if run >= patience:
            return t
    return None


@dataclass(frozen=True)
class PersistenceTrackResult(RecordedResult):
    """A persistence score across checkpoints, with the step where it plateaus.

    Attributes
    ----------
    checkpoints : tuple of str
    score : str
        ``"entropy"``, ``"max_ratio"`` or ``"top_ratio"``.
    values : tuple of float
    plateau : int or None
        Index of the first checkpoint at which the score has plateaued.
    tol : float
    """

    analysis: ClassVar[str] = "geometry_persistence_track"

    checkpoints: tuple[str, ...]
    score: str
    values: tuple[float, ...]
    plateau: int | None
    tol: float

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One record per checkpoint (the checkpoint name in the layer field)."""
        return [(c, {"score": self.score, "value": v, "step": i,
                     "plateau": self.plateau is not None and i == self.plateau})
                for i, (c, v) in enumerate(zip(self.checkpoints, self.values))]


def track(
    checkpoints: Any,
    *,
    score: str = "max_ratio",
    n_classes: int | None = None,
    tol: float = 1e-2,
    patience: int = 1,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    progress: ProgressLike = False,
) -> PersistenceTrackResult:
    """Follow a persistence summary across fine-tuning checkpoints; report where it plateaus.

    Parameters
    ----------
    checkpoints : mapping of str to array, sequence of arrays, FeatureStore or LayerSource
        Embeddings of the same (unlabelled) inputs at each checkpoint, in training order (a
        store's layers are read as checkpoints).
    score : {"max_ratio", "entropy", "top_ratio"}, default="max_ratio"
    n_classes : int, optional
        Needed for ``"top_ratio"``.
    tol, patience
        The plateau rule (:func:`plateau_index`).
    max_samples : int, default=50,000
    progress : bool or callable, default=False

    Returns
    -------
    PersistenceTrackResult
    """
    from repscope._validation import check_choice
    from repscope.store._layers import layer_source

    check_choice(score, "score", ("max_ratio", "entropy", "top_ratio"), caller="track")
    if score == "top_ratio" and n_classes is None:
        raise RepscopeValueError("track(score='top_ratio') needs n_classes.")
    if isinstance(checkpoints, Sequence) and not isinstance(checkpoints, (str, Mapping)):
        checkpoints = {str(i): c for i, c in enumerate(checkpoints)}
    src = layer_source(checkpoints, None, pooling="mean", name="checkpoints", caller="track")
    names = list(src.layers)
    if len(names) < 2:
        raise RepscopeValueError(f"track needs at least 2 checkpoints; got {len(names)}.")
    values = []
    with progress_for(progress, "checkpoints", len(names), prefix="persistence") as advance:
        for name in names:
            r = h0_persistence(src.read(name), n_classes=n_classes, max_samples=max_samples)
            values.append(float(getattr(r, score)))
            advance(1)
    return PersistenceTrackResult(tuple(names), score, tuple(values),
                                  plateau_index(values, tol=tol, patience=patience), float(tol))
