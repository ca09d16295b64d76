"""Section ``pca_spectrum``: PCA spectra (cumulative explained variance) and effective rank."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._common import as_float, by_series, cell, layer_axis, layer_table, missing
from repscope.report._sections import figure, latest_per, panels
from repscope.report._svg import line_chart

#: Layers drawn per model in the spectrum chart.
MAX_LAYERS_PER_MODEL = 4


def _ratio(r: RecordLike) -> np.ndarray:
    ev = r.values.get("explained_variance_ratio")
    if ev is None:
        return np.empty(0)
    try:
        return np.asarray(ev, dtype=float).ravel()
    except (TypeError, ValueError):
        return np.empty(0)


def _k_for(ratio: np.ndarray, level: float) -> float:
    if ratio.size == 0 or not np.isfinite(ratio).any():
        return float("nan")
    cum = np.nancumsum(ratio)
    hit = np.nonzero(cum >= level - 1e-12)[0]
    return float(hit[0] + 1) if hit.size else float("nan")


def _pick(n: int, k: int) -> list[int]:
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def render_pca_spectrum(records: Sequence[RecordLike]) -> str:
    """Cumulative-variance chart for a few layers per model, effective-rank chart and table."""
    recs = latest_per(records)
    groups = by_series(recs)
    several = len(groups) > 1
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    colours: list[int] = []  # colour = depth position, dash = model
    dashed: list[bool] = []
    longest = 1
    for g, (label, rs) in enumerate(groups.items()):
        for k, i in enumerate(_pick(len(rs), MAX_LAYERS_PER_MODEL)):
            ratio = _ratio(rs[i])
            if ratio.size:
                name = f"{label} · {rs[i].layer}" if several else (rs[i].layer or label)
                curves[name] = (np.arange(1, ratio.size + 1), np.nancumsum(ratio))
                colours.append(k if len(groups) <= 2 else g)
                dashed.append(len(groups) <= 2 and g == 1)
                longest = max(longest, ratio.size)
    parts = []
    if curves:
        chart = line_chart(curves, title="Cumulative explained variance", x_label="components",
                           y_label="cumulative explained variance", x_log=longest > 30,
                           y_range=(0.0, 1.0), colours=colours, dashed=dashed)
        note = " Colour: depth; dashed: second model." if len(groups) == 2 else ""
        parts.append(figure(chart, f"First, middle and last layers of each model.{note}"))
    xs, ticks, x_label = layer_axis(groups)
    where = {label: [f"layer {r.layer}" for r in rs] for label, rs in groups.items()}
    ranks = {label: (xs[label], [as_float(r.values.get("effective_rank")) for r in rs])
             for label, rs in groups.items()}
    if ticks is not None:
        parts.append(figure(line_chart(ranks, title="Effective rank by layer", x_label=x_label,
                                       y_label="effective rank", x_tick_labels=ticks,
                                       point_labels=where)))
    else:  # different architectures: one panel per model, each with its own layer names
        charts = [line_chart({label: (np.arange(len(rs)), ranks[label][1])},
                             title=f"{label}: effective rank by layer", x_label="layer",
                             y_label="effective rank", x_tick_labels=[r.layer for r in rs],
                             point_labels={label: where[label]}, width=470, height=320)
                  for label, rs in groups.items()]
        parts.append(panels(charts, "One panel per model (their layers differ)."))
    parts.append(layer_table(groups, [
        ("effective rank", lambda r: cell(r, "effective_rank")),
        ("components for 90%", lambda r: _k_for(_ratio(r), 0.9) if _ratio(r).size
         else missing(r, "not computed: no explained-variance ratios recorded")),
        ("top component", lambda r: float(_ratio(r)[0]) if _ratio(r).size
         else missing(r, "not computed: no explained-variance ratios recorded")),
    ], caption="Effective rank and spectrum by layer", digits=3))
    return "".join(parts)
