"""Report sections of the probing suite (found automatically by :mod:`repscope.report`).

* ``probe``: accuracy by layer with the 95% interval as a translucent band; one panel per
  probe kind (a line per model), or one panel per model (a line per probe kind) when a kind
  has more than :data:`MAX_SERIES` models or the models' layers do not line up;
* ``probe_few_shot`` and ``probe_learning_curve``: accuracy against shots per class / training
  size, with interval bands;
* ``probe_calibration``: the reliability diagram before and after temperature scaling.

Every probe kind shown is named in full in the caption (from the probe kinds' registry,
:func:`repscope.capability.kinds`); every point has hover text; x ticks are layer names.
Renderers only format stored records; nothing is recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._common import as_float, cell, merged_layers
from repscope.report._sections import (
    esc,
    figure,
    html_table,
    ordered_unique,
    panels,
    series_labels,
)
from repscope.report._svg import line_chart

__all__ = [
    "render_probe",
    "render_probe_calibration",
    "render_probe_few_shot",
    "render_probe_learning_curve",
]

#: Lines per chart; beyond it the section draws small multiples.
MAX_SERIES = 6
_PANEL_WIDTH = 470.0
_BAND = "95% interval"


def _arr(v: Any) -> np.ndarray:
    if v is None:
        return np.zeros(0)
    out = []
    for x in (v if isinstance(v, (list, tuple, np.ndarray)) else [v]):
        out.append(as_float(x))
    return np.asarray(out, dtype=float)


def _probe(r: RecordLike) -> str:
    return str(r.params.get("probe", "")) if r.params else ""


def _latest(records: Sequence[RecordLike]) -> list[RecordLike]:
    """The last record per (model, dataset, layer, probe), at its key's first position."""
    best: dict[tuple[str, str, str, str], RecordLike] = {}
    for r in records:
        best[(r.model, r.dataset, r.layer, _probe(r))] = r
    return list(best.values())


def _series_name(r: RecordLike, labels: dict[tuple[str, str], str]) -> str:
    probe = _probe(r)
    base = labels[(r.model, r.dataset)]
    return f"{base} · {probe}" if probe else base


def kind_names(probes: Sequence[str]) -> dict[str, str]:
    """The full name of each probe kind (the registry's one-line help), by kind; kinds the
    registry does not know (e.g. a retired analysis's label) are left out."""
    try:
        from repscope.capability import kinds

        known = kinds("probe")
    except Exception:  # a broken third-party capability must not break the report
        return {}
    return {p: known[p].help for p in probes if p in known and known[p].help}


def _short_name(help_text: str) -> str:
    """The first phrase of a kind's help: "Gaussian naive Bayes", "closed-form ridge ..."."""
    return help_text.split(",")[0].split(" (")[0].strip()


def _kinds_caption(probes: Sequence[str]) -> str:
    names = kind_names(probes)
    if not names:
        return ""
    return " Probe kinds: " + "; ".join(f"{p} = {h}" for p, h in names.items()) + "."


def _panel_title(probe: str) -> str:
    full = kind_names([probe]).get(probe)
    return f"{probe} probe ({_short_name(full)})" if full else (f"{probe} probe" if probe
                                                               else "probe")


def _y_range(values: Sequence[np.ndarray]) -> tuple[float, float] | None:
    v = np.concatenate([a[np.isfinite(a)] for a in values]) if values else np.zeros(0)
    return (0.0, 1.0) if v.size and v.min() >= 0 and v.max() <= 1 else None


def _shared_y(recs: Sequence[RecordLike]) -> tuple[float, float] | None:
    values = [_arr([r.values.get(k) for r in recs]) for k in ("accuracy", "ci_low", "ci_high")]
    if _y_range(values[:1]) is not None:  # accuracies: 0 to 1 (bands are clipped to it)
        return (0.0, 1.0)
    finite = np.concatenate([v[np.isfinite(v)] for v in values])
    if not finite.size:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    return (lo - pad, hi + pad)


def _layer_chart(title: str, lines: dict[str, list[RecordLike]], ticks: list[str],
                 y_range: tuple[float, float] | None, width: float) -> str:
    """Accuracy by layer: one line per entry of ``lines`` on the layer-name axis ``ticks``,
    its 95% interval as a band, hover text naming series, layer, accuracy and interval."""
    pos = {n: i for i, n in enumerate(ticks)}
    series: dict[str, tuple[Any, Any]] = {}
    bands: dict[str, tuple[Any, Any]] = {}
    where: dict[str, list[str]] = {}
    for name, rs in lines.items():
        series[name] = (np.array([pos[r.layer] for r in rs], dtype=float),
                        _arr([r.values.get("accuracy") for r in rs]))
        bands[name] = (_arr([r.values.get("ci_low") for r in rs]),
                       _arr([r.values.get("ci_high") for r in rs]))
        where[name] = [f"layer {r.layer}" for r in rs]
    return line_chart(series, title=title, x_label="layer", y_label="accuracy",
                      x_tick_labels=[t or "(all)" for t in ticks], y_range=y_range,
                      bands=bands, band_label=_BAND, point_labels=where, width=width,
                      height=360 if width > _PANEL_WIDTH else 320)


def render_probe(records: Sequence[RecordLike]) -> str:
    """Accuracy by layer with interval bands: one panel per probe kind (a line per model),
    or per model (a line per probe kind) when a kind has more than :data:`MAX_SERIES` models
    or the models' layers do not line up; the best layer per model and probe; a full table."""
    recs = _latest(records)
    if not recs:
        return f"<p>{esc('No probe results.')}</p>"
    labels = series_labels(recs)
    groups: dict[str, list[RecordLike]] = {}
    for r in recs:
        groups.setdefault(_series_name(r, labels), []).append(r)
    probes = ordered_unique(_probe(r) for r in recs)
    by_probe: dict[str, dict[str, list[RecordLike]]] = {}
    by_model: dict[str, dict[str, list[RecordLike]]] = {}
    for r in recs:
        by_probe.setdefault(_probe(r), {}).setdefault(labels[(r.model, r.dataset)], []).append(r)
        by_model.setdefault(labels[(r.model, r.dataset)], {}).setdefault(
            _probe(r) or "probe", []).append(r)
    y_range = _shared_y(recs)
    ticks = merged_layers([[r.layer for r in rs] for rs in groups.values()])
    per_kind = ticks is not None and all(len(m) <= MAX_SERIES for m in by_probe.values())
    charts = []
    if per_kind and ticks is not None:
        width = 920.0 if len(by_probe) == 1 else _PANEL_WIDTH
        for probe, per_model in by_probe.items():
            charts.append(_layer_chart(f"{_panel_title(probe)}: accuracy by layer", per_model,
                                       ticks, y_range, width))
        how = "one panel per probe kind, one line per model" if len(by_probe) > 1 else \
            "one line per model"
    else:
        width = 920.0 if len(by_model) == 1 else _PANEL_WIDTH
        for model, per_kind_recs in by_model.items():
            own = merged_layers([[r.layer for r in rs] for rs in per_kind_recs.values()]) or \
                ordered_unique(r.layer for rs in per_kind_recs.values() for r in rs)
            charts.append(_layer_chart(f"{model}: accuracy by layer", per_kind_recs, own,
                                       y_range, width))
        how = ("one panel per model (their layers differ), one line per probe kind"
               if ticks is None else "one panel per model, one line per probe kind")
    caption = (f"Held-out accuracy at each layer, {how}; shaded: 95% interval."
               + _kinds_caption(probes))
    best_rows = []
    for name, rs in groups.items():
        acc = _arr([r.values.get("accuracy") for r in rs])
        if np.isfinite(acc).any():
            i = int(np.nanargmax(acc))
            best_rows.append([name, rs[i].layer, acc[i], cell(rs[i], "ci_low"),
                              cell(rs[i], "ci_high"), cell(rs[i], "chance")])
    best = html_table(["model · probe", "best layer", "accuracy", "95% low", "95% high",
                       "chance"], best_rows, caption="Best layer per model and probe", digits=3)
    rows = [[name, r.layer, cell(r, "accuracy"), cell(r, "ci_low"), cell(r, "ci_high")]
            for name, rs in groups.items() for r in rs]
    full = html_table(["model · probe", "layer", "accuracy", "95% low", "95% high"], rows,
                      digits=3)
    return (panels(charts, caption)
            + best + f"<details><summary>Every layer ({len(rows)} values)</summary>{full}"
            "</details>")


def _curve_section(records: Sequence[RecordLike], x_key: str, x_label: str, title: str,
                   caption: str, x_log: bool, extra: Sequence[tuple[str, str]]) -> str:
    recs = _latest(records)
    if not recs:
        return f"<p>{esc('No results.')}</p>"
    labels = series_labels(recs)
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    kind_of: dict[str, str] = {}
    rows = []
    for r in recs:
        name = f"{_series_name(r, labels)} @ {r.layer}" if r.layer else _series_name(r, labels)
        v = r.values
        curves[name] = (_arr(v.get(x_key)), _arr(v.get("mean")), _arr(v.get("ci_low")),
                        _arr(v.get("ci_high")))
        kind_of[name] = _probe(r)
        rows.append([name, *(cell(r, k) for k, _ in extra)])
    # more lines than a chart can hold: one panel per probe kind
    if len(curves) > MAX_SERIES:
        chunks = {k: [n for n in curves if kind_of[n] == k] for k in ordered_unique(
            kind_of.values())}
    else:
        chunks = {"": list(curves)}
    y_range = _y_range([c[1] for c in curves.values()])  # bands are clipped to it
    width = 920.0 if len(chunks) == 1 else _PANEL_WIDTH
    charts = []
    for kind, names in chunks.items():
        series = {n: (curves[n][0], curves[n][1]) for n in names}
        bands = {n: (curves[n][2], curves[n][3]) for n in names}
        charts.append(line_chart(series, title=f"{title}: {_panel_title(kind)}" if kind else title,
                                 x_label=x_label, y_label="accuracy", x_log=x_log,
                                 y_range=y_range, bands=bands, band_label=_BAND, width=width))
    table = html_table(["model · probe @ layer", *(h for _, h in extra)], rows, digits=3) \
        if extra else ""
    detail_rows = [[name, xv, m, lo, hi] for name, (x, y, lo_, hi_) in curves.items()
                   for xv, m, lo, hi in zip(x, y, lo_, hi_)]
    detail = html_table(["series", x_label, "accuracy", "95% low", "95% high"], detail_rows,
                        digits=3)
    return (panels(charts, caption + _kinds_caption(ordered_unique(kind_of.values()))) + table
            + f"<details><summary>All points ({len(detail_rows)})</summary>{detail}</details>")


def render_probe_learning_curve(records: Sequence[RecordLike]) -> str:
    """Learning curves (log x axis) and where each flattens."""
    return _curve_section(records, "sizes", "training samples", "Learning curves",
                          "Accuracy against training-set size; shaded: 95% interval.", True,
                          [("reached_at", "flat from n"), ("asymptote_error", "asymptote error")])


def render_probe_few_shot(records: Sequence[RecordLike]) -> str:
    """Few-shot curves, and a table of accuracy, test ECE and NLL per shot count."""
    curves = _curve_section(records, "shots", "examples per class", "Few-shot accuracy",
                            "Accuracy against shots per class; shaded: 95% interval.", True,
                            [("chance", "chance")])
    recs = _latest(records)
    labels = series_labels(recs)
    rows = []
    for r in recs:
        v = r.values
        shots = list(v.get("shots") or [])
        n = len(shots)
        ece_v = list(v.get("ece") or [float("nan")] * n)
        nll_v = list(v.get("nll") or [float("nan")] * n)
        mean = list(v.get("mean") or [float("nan")] * n)
        name = f"{_series_name(r, labels)} @ {r.layer}"
        rows += [[name, s, as_float(m), as_float(e), as_float(ll)]
                 for s, m, e, ll in zip(shots, mean, ece_v, nll_v)]
    if not rows:
        return curves
    table = html_table(["model · probe @ layer", "shots/class", "accuracy", "ECE", "NLL"],
                       rows, digits=3)
    note = ('<p class="note">ECE and NLL of the test predictions, mean over tries; a dash '
            'where the probe gives no probabilities or the record predates them.</p>')
    return curves + table + note


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
        rows.append([name, *(cell(r, k) for k in ("temperature", "ece_before", "ece_after",
                                                     "nll_before", "nll_after", "accuracy"))])
    table = html_table(["model · probe @ layer", "T", "ECE before", "ECE after", "NLL before",
                        "NLL after", "accuracy"], rows, digits=3)
    kinds = _kinds_caption(ordered_unique(_probe(r) for r in recs)).strip()
    note = f'<p class="note">{esc(kinds)}</p>' if kinds else ""
    return "".join(parts) + note + table
