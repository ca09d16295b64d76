"""Report sections of the probing suite (found automatically by :mod:`repscope.report`).

* ``probe``: accuracy by layer, one line per (model, probe), with the 95% interval drawn as
  dashed lines of the same colour;
* ``probe_few_shot`` and ``probe_learning_curve``: accuracy against shots per class / training
  size, with intervals;
* ``probe_calibration``: the reliability diagram before and after temperature scaling.

Renderers only format stored records; nothing is recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._common import as_float
from repscope.report._sections import (
    esc,
    figure,
    html_table,
    ordered_unique,
    series_labels,
)
from repscope.report._svg import line_chart

__all__ = [
    "render_probe",
    "render_probe_calibration",
    "render_probe_few_shot",
    "render_probe_learning_curve",
]



def _arr(v: Any) -> np.ndarray:
    if v is None:
        return np.zeros(0)
    out = []
    for x in (v if isinstance(v, (list, tuple, np.ndarray)) else [v]):
        out.append(as_float(x))
    return np.asarray(out, dtype=float)


def _latest(records: Sequence[RecordLike]) -> list[RecordLike]:
    """The last record per (model, dataset, layer, probe), at its key's first position."""
    best: dict[tuple[str, str, str, str], RecordLike] = {}
    for r in records:
        probe = str(r.params.get("probe", "")) if r.params else ""
        best[(r.model, r.dataset, r.layer, probe)] = r
    return list(best.values())


def _series_name(r: RecordLike, labels: dict[tuple[str, str], str]) -> str:
    probe = str(r.params.get("probe", "")) if r.params else ""
    base = labels[(r.model, r.dataset)]
    return f"{base} · {probe}" if probe else base


def _with_bands(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                ) -> tuple[dict[str, tuple[Any, Any]], list[int], list[bool]]:
    """Each curve plus its lower and upper interval bounds as dashed lines (same colour)."""
    series: dict[str, tuple[Any, Any]] = {}
    colours: list[int] = []
    dashed: list[bool] = []
    for i, (name, (x, y, lo, hi)) in enumerate(curves.items()):
        series[name] = (x, y)
        colours.append(i)
        dashed.append(False)
        if np.isfinite(lo).any():
            series[f"{name} (95% low)"] = (x, lo)
            series[f"{name} (95% high)"] = (x, hi)
            colours += [i, i]
            dashed += [True, True]
    return series, colours, dashed


def _y_range(values: Sequence[np.ndarray]) -> tuple[float, float] | None:
    v = np.concatenate([a[np.isfinite(a)] for a in values]) if values else np.zeros(0)
    return (0.0, 1.0) if v.size and v.min() >= 0 and v.max() <= 1 else None


def render_probe(records: Sequence[RecordLike]) -> str:
    """One accuracy-by-layer chart per probe kind (a line and its interval per model), the
    best layer per model and probe, and a full table."""
    recs = _latest(records)
    if not recs:
        return f"<p>{esc('No probe results.')}</p>"
    labels = series_labels(recs)
    groups: dict[str, list[RecordLike]] = {}
    for r in recs:
        groups.setdefault(_series_name(r, labels), []).append(r)
    layer_lists = [[r.layer for r in rs] for rs in groups.values()]
    shared = all(ls == layer_lists[0] for ls in layer_lists)
    ticks = ordered_unique(layer_lists[0]) if shared else None
    # one chart per probe kind, one line (with its interval) per model
    by_probe: dict[str, dict[str, list[RecordLike]]] = {}
    for r in recs:
        probe = str(r.params.get("probe", "")) if r.params else ""
        by_probe.setdefault(probe, {}).setdefault(labels[(r.model, r.dataset)], []).append(r)
    charts = []
    for probe, per_model in by_probe.items():
        curves = {}
        for name, rs in per_model.items():
            x = np.arange(len(rs), dtype=float) if shared else (
                np.linspace(0, 1, len(rs)) if len(rs) > 1 else np.zeros(1))
            curves[name] = (x, _arr([r.values.get("accuracy") for r in rs]),
                            _arr([r.values.get("ci_low") for r in rs]),
                            _arr([r.values.get("ci_high") for r in rs]))
        series, colours, dashed = _with_bands(curves)
        title = f"{probe} probe: accuracy by layer" if probe else "Probe accuracy by layer"
        chart = line_chart(series, title=title,
                           x_label="layer" if shared else "relative depth", y_label="accuracy",
                           x_tick_labels=ticks, colours=colours, dashed=dashed,
                           y_range=_y_range([c[1] for c in curves.values()]))
        charts.append(figure(chart, f"Accuracy of the {probe or 'probe'} probe at each layer, "
                             "one line per model; dashed: 95% interval."))
    best_rows = []
    for name, rs in groups.items():
        acc = _arr([r.values.get("accuracy") for r in rs])
        if np.isfinite(acc).any():
            i = int(np.nanargmax(acc))
            v = rs[i].values
            best_rows.append([name, rs[i].layer, acc[i], as_float(v.get("ci_low")),
                              as_float(v.get("ci_high")), as_float(v.get("chance"))])
    best = html_table(["model · probe", "best layer", "accuracy", "95% low", "95% high",
                       "chance"], best_rows, caption="Best layer per model and probe", digits=3)
    rows = [[name, r.layer, as_float(r.values.get("accuracy")), as_float(r.values.get("ci_low")),
             as_float(r.values.get("ci_high"))] for name, rs in groups.items() for r in rs]
    full = html_table(["model · probe", "layer", "accuracy", "95% low", "95% high"], rows,
                      digits=3)
    return ("".join(charts)
            + best + f"<details><summary>Every layer ({len(rows)} values)</summary>{full}"
            "</details>")


def _curve_section(records: Sequence[RecordLike], x_key: str, x_label: str, title: str,
                   caption: str, x_log: bool, extra: Sequence[tuple[str, str]]) -> str:
    recs = _latest(records)
    if not recs:
        return f"<p>{esc('No results.')}</p>"
    labels = series_labels(recs)
    curves = {}
    rows = []
    for r in recs:
        name = f"{_series_name(r, labels)} @ {r.layer}" if r.layer else _series_name(r, labels)
        v = r.values
        x = _arr(v.get(x_key))
        curves[name] = (x, _arr(v.get("mean")), _arr(v.get("ci_low")), _arr(v.get("ci_high")))
        rows.append([name, *(as_float(v.get(k)) for k, _ in extra)])
    series, colours, dashed = _with_bands(curves)
    chart = line_chart(series, title=title, x_label=x_label, y_label="accuracy", x_log=x_log,
                       colours=colours, dashed=dashed,
                       y_range=_y_range([c[1] for c in curves.values()]))
    table = html_table(["model · probe @ layer", *(h for _, h in extra)], rows, digits=3) \
        if extra else ""
    detail_rows = [[name, xv, m, lo, hi] for name, (x, y, lo_, hi_) in curves.items()
                   for xv, m, lo, hi in zip(x, y, lo_, hi_)]
    detail = html_table(["series", x_label, "accuracy", "95% low", "95% high"], detail_rows,
                        digits=3)
    return (figure(chart, caption) + table
            + f"<details><summary>All points ({len(detail_rows)})</summary>{detail}</details>")


def render_probe_learning_curve(records: Sequence[RecordLike]) -> str:
    """Learning curves (log x axis) and where each flattens."""
    return _curve_section(records, "sizes", "training samples", "Learning curves",
                          "Accuracy against training-set size; dashed: 95% interval.", True,
                          [("reached_at", "flat from n"), ("asymptote_error", "asymptote error")])


def render_probe_few_shot(records: Sequence[RecordLike]) -> str:
    """Few-shot curves."""
    return _curve_section(records, "shots", "examples per class", "Few-shot accuracy",
                          "Accuracy against shots per class; dashed: 95% interval.", True,
                          [("chance", "chance")])


def render_probe_calibration(records: Sequence[RecordLike]) -> str:
    """Reliability diagrams and ECE/NLL before and after temperature scaling."""
    recs = _latest(records)
    if not recs:
        return f"<p>{esc('No calibration results.')}</p>"
    labels = series_labels(recs)
    parts = []
    rows = []
    for r in recs:
        v = r.values
        name = f"{_series_name(r, labels)} @ {r.layer}"
        series = {
            "perfect calibration": (np.array([0.0, 1.0]), np.array([0.0, 1.0])),
            "before": (_arr(v.get("confidence_before")), _arr(v.get("accuracy_before"))),
            "after temperature scaling": (_arr(v.get("confidence_after")),
                                          _arr(v.get("accuracy_after"))),
        }
        chart = line_chart(series, title=f"Reliability: {name}", x_label="confidence",
                           y_label="accuracy", y_range=(0.0, 1.0), width=640, height=380,
                           colours=[6, 1, 0], dashed=[True, False, False])
        parts.append(figure(chart, f"Reliability diagram for {name}."))
        rows.append([name, as_float(v.get("temperature")), as_float(v.get("ece_before")),
                     as_float(v.get("ece_after")), as_float(v.get("nll_before")), as_float(v.get("nll_after")),
                     as_float(v.get("accuracy"))])
    table = html_table(["model · probe @ layer", "T", "ECE before", "ECE after", "NLL before",
                        "NLL after", "accuracy"], rows, digits=3)
    return "".join(parts) + table
