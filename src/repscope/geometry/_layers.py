"""The per-layer driver: every registered geometry measure the inputs allow, at every layer.

Measures built on :class:`~repscope.stats.Moments` stream each layer from its source (one
pass per distinct need, shared by all of them); the O(n^2)-time measures read the layer into
memory once (optionally a seeded random subsample) and share what they compute (one MST per
layer for every persistence summary).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from repscope._kernels.mst import DEFAULT_MAX_SAMPLES
from repscope._progress import ProgressLike, progress_for
from repscope.exceptions import RepscopeTypeError, RepscopeValueError, UnknownNameError
from repscope.geometry._inputs import LayerView, labels_for
from repscope.geometry._registry import (
    geometry_info,
    get_geometry_measure,
    list_geometry_measures,
)
from repscope.results import RecordedResult

if TYPE_CHECKING:
    from repscope.db import Record
    from repscope.geometry._coding_rate import CodingRateResult
    from repscope.geometry._persistence import PersistenceResult

__all__ = ["GeometryLayersResult", "default_measures", "geometry_layers", "measure_family"]


def measure_family(name: str) -> str:
    """The family a measure belongs to (the module that registers it, without the
    underscore): ``"separability"``, ``"persistence"``, ``"coding_rate"``, ... One report
    panel per family."""
    fn = geometry_info(name).get("function")
    module = getattr(fn, "__module__", "") or ""
    return module.rsplit(".", 1)[-1].lstrip("_") or "other"


def default_measures(*, labelled: bool) -> list[str]:
    """Every registered measure the inputs allow: all of them with labels, the label-free
    (and label-optional) ones without."""
    names = list_geometry_measures()
    if labelled:
        return names
    return [n for n in names if geometry_info(n)["labels"] != "required"]


@dataclass(frozen=True)
class GeometryLayersResult(RecordedResult):
    """Geometry measures at every layer (the per-layer curves), plus optional persistence
    barcodes and coding-rate tables per layer.

    Attributes
    ----------
    layers : tuple of str
    measures : tuple of str
    values : tuple of tuple of float
        ``values[i][j]``: measure ``j`` at layer ``i``.
    families : tuple of str
        Each measure's family (:func:`measure_family`).
    higher_is_better : tuple of bool or None
    n_samples : int
        Samples in the source (moments-based measures use all of them).
    n_pairwise : int
        Samples the O(n^2)-time measures used (a seeded subsample when smaller).
    n_features : tuple of int
    persistence : tuple of PersistenceResult, optional
    coding_rates : tuple of CodingRateResult, optional
    """

    analysis: ClassVar[str] = "geometry"

    layers: tuple[str, ...]
    measures: tuple[str, ...]
    values: tuple[tuple[float, ...], ...]
    families: tuple[str, ...]
    higher_is_better: tuple[bool | None, ...]
    n_samples: int
    n_pairwise: int
    n_features: tuple[int, ...]
    persistence: tuple[PersistenceResult, ...] | None = None
    coding_rates: tuple[CodingRateResult, ...] | None = None

    def value(self, measure: str) -> np.ndarray:
        """One measure's curve over the layers."""
        if measure not in self.measures:
            raise UnknownNameError(
                f"measure {measure!r} was not computed; computed: {', '.join(self.measures)}.")
        j = self.measures.index(measure)
        return np.array([row[j] for row in self.values], dtype=float)

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``geometry`` record per layer: every measure's value, its family and
        direction, the sample counts and the width."""
        return [(layer, {
            "measures": dict(zip(self.measures, self.values[i])),
            "families": dict(zip(self.measures, self.families)),
            "higher_is_better": dict(zip(self.measures, self.higher_is_better)),
            "n_samples": self.n_samples, "n_pairwise": self.n_pairwise,
            "n_features": self.n_features[i]}) for i, layer in enumerate(self.layers)]

    def to_records(self, *, model: str = "", dataset: str = "", layer: str = "",
                   run_id: str | None = None,
                   params: Mapping[str, Any] | None = None) -> list[Record]:
        """The ``geometry`` records, then the ``geometry_persistence`` and
        ``geometry_coding_rate`` records of each layer when they were computed."""
        out = super().to_records(model=model, dataset=dataset, layer=layer, run_id=run_id,
                                 params=params)
        for i, name in enumerate(self.layers):
            for group in (self.persistence, self.coding_rates):
                if group is not None:
                    out += group[i].to_records(model=model, dataset=dataset, layer=name,
                                               run_id=run_id, params=params)
        return out


def _source(source: Any, layers: Sequence[str] | None) -> Any:
    from repscope.store import FeatureStore, LayerSource
    from repscope.store._layers import layer_source

    if not isinstance(source, (FeatureStore, LayerSource, Mapping)):
        raise RepscopeTypeError(
            "source must be a FeatureStore, a LayerSource (repscope.store.open_layers) or a "
            f"mapping of layer name to array; got {type(source).__name__}.")
    return layer_source(source, layers, pooling="mean", name="source", caller="geometry_layers")


def _check_measures(measures: Sequence[str] | None, labelled: bool) -> list[str]:
    if measures is None:
        return default_measures(labelled=labelled)
    names = []
    for m in measures:
        get_geometry_measure(m)  # unknown names: the registry's error with a close match
        if geometry_info(m)["labels"] == "required" and not labelled:
            raise RepscopeValueError(
                f"geometry measure {m!r} needs labels (--labels); none were given. Label-free "
                f"measures: {', '.join(default_measures(labelled=False))}.")
        names.append(m)
    return list(dict.fromkeys(names))


def geometry_layers(
    source: Any,
    labels: Any = None,
    measures: Sequence[str] | None = None,
    *,
    layers: Sequence[str] | None = None,
    max_samples: int | None = None,
    persistence: bool = False,
    coding_rate: bool = False,
    eps2: float = 0.5,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    progress: ProgressLike = False,
) -> GeometryLayersResult:
    """Every geometry measure the inputs allow, at every layer of a store or arrays.

    Parameters
    ----------
    source : FeatureStore, LayerSource or mapping of str to array of shape (n_samples, ...)
    labels : array-like of shape (n_samples,), optional
        Without labels only the label-free measures run.
    measures : sequence of str, optional
        Registered names (:func:`~repscope.geometry.list_geometry_measures`); default all
        that the inputs allow.
    layers : sequence of str, optional
    max_samples : int, optional
        The O(n^2)-time measures (MST, kNN, silhouette, ...) run on a seeded random subsample
        of this many samples when the source has more; moments-based measures always use
        every sample. Without it, such measures refuse sources of more than 50,000 samples.
    persistence : bool, default=False
        Also keep each layer's H0 persistence (barcode; one MST per layer, shared with the
        persistence measures).
    coding_rate : bool, default=False
        Also compute each layer's coding-rate table (needs labels).
    eps2 : float, default=0.5
        Precision of the coding-rate table.
    options : mapping of str to mapping, optional
        Extra keyword options per measure (``{"thornton": {"k": 10}}``).
    seed : int, default=0
        Seed of the subsample and of the shuffled-label baseline.
    progress : bool or callable, default=False

    Returns
    -------
    GeometryLayersResult
    """
    from repscope.geometry._coding_rate import coding_rate_table
    from repscope.geometry._persistence import h0_persistence

    src = _source(source, layers)
    names = list(src.layers)
    if not names:
        raise RepscopeValueError("source has no layers to measure.")
    n = int(src.n_samples)
    y = None if labels is None else labels_for(labels, n, caller="geometry_layers",
                                              min_classes=2)
    chosen = _check_measures(measures, y is not None)
    if coding_rate and y is None:
        raise RepscopeValueError("coding-rate tables need labels (--labels); none were given.")
    opts = {k: dict(v) for k, v in (options or {}).items()}
    pairwise = [m for m in chosen if geometry_info(m)["cost"] != "moments"]
    cap = DEFAULT_MAX_SAMPLES if max_samples is None else int(max_samples)
    if max_samples is not None and cap < 2:
        raise RepscopeValueError(f"max_samples must be at least 2; got {max_samples}.")
    if (pairwise or persistence) and n > cap and max_samples is None:
        raise RepscopeValueError(
            f"the O(n^2)-time measures ({', '.join(pairwise) or 'persistence'}) run on at most "
            f"{DEFAULT_MAX_SAMPLES} samples; this source has {n}. Pass max_samples (CLI: "
            f"--max-samples {DEFAULT_MAX_SAMPLES}) to run them on a random subsample.")
    sub = None
    if n > cap:
        sub = np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))
    n_pair = n if sub is None else int(sub.size)
    values: list[tuple[float, ...]] = []
    widths: list[int] = []
    pers: list[Any] = []
    rates: list[Any] = []
    steps = len(names) * (len(chosen) + int(persistence) + int(coding_rate))
    with progress_for(progress, "layer measures", steps, prefix="geometry") as advance:
        for name in names:
            view = LayerView(src, name)
            if (pairwise or persistence) and sub is None:
                view.array()  # read once: moments measures then take the smaller Gram too
            pview = view if sub is None else _subview(view, sub)
            y_pair = y if sub is None or y is None else y[sub]
            row = []
            for m in chosen:
                fn = get_geometry_measure(m)
                moments = geometry_info(m)["cost"] == "moments"
                X, lab = (view, y) if moments else (pview, y_pair)
                row.append(float(fn(X, lab if geometry_info(m)["labels"] != "none" else None,
                                    **opts.get(m, {}))))
                advance(1)
            values.append(tuple(row))
            widths.append(int(src.width(name)))
            if persistence:
                K = None if y_pair is None else int(np.unique(y_pair).size)
                pers.append(h0_persistence(pview, n_classes=K, max_samples=max(cap, 2)))
                advance(1)
            if coding_rate:
                rates.append(coding_rate_table(view, y, eps2=eps2, seed=seed))
                advance(1)
    return GeometryLayersResult(
        layers=tuple(names), measures=tuple(chosen), values=tuple(values),
        families=tuple(measure_family(m) for m in chosen),
        higher_is_better=tuple(geometry_info(m)["higher_is_better"] for m in chosen),
        n_samples=n, n_pairwise=n_pair, n_features=tuple(widths),
        persistence=tuple(pers) if persistence else None,
        coding_rates=tuple(rates) if coding_rate else None)


def _subview(view: LayerView, rows: np.ndarray) -> LayerView:
    """A view of the subsampled rows (read from the full layer once)."""
    from repscope.store import open_layers

    return LayerView(open_layers({view.layer: view.array()[rows]}), view.layer)
