"""Report sections of the geometry capability (renderers only format stored records).

* ``geometry``: per-layer curves, one panel per measure family (each measure scaled to
  [0, 1] over the layers so that a family shares one chart; every point's hover text gives
  the measure, the layer and the raw value), then the raw values by layer;
* ``geometry_persistence``: H0 barcodes (longest bars) of the first, middle and last layers
  and the persistence summaries by layer;
* ``geometry_coding_rate``: the coding-rate table (R, R_c, Delta R, shuffled baseline) and
  Delta R by layer;
* ``geometry_persistence_track``: a persistence score across checkpoints, with the plateau.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._common import as_float, by_series, layer_axis, layer_table
from repscope.report._sections import esc, figure, html_table, latest_per
from repscope.report._svg import colour_for, line_chart

__all__ = [
    "render_geometry",
    "render_geometry_coding_rate",
    "render_geometry_persistence",
    "render_geometry_persistence_track",
]

_FAMILY_TITLES = {
    "separability": "Supervised separability",
    "persistence": "Label-free separability (H0 persistence)",
    "coding_rate": "Coding rate",
    "subspace": "Subspace structure",
}


def _mapping(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _family_chart(family: str, measures: list[str], groups: dict[str, list[RecordLike]],
                  better: Mapping[str, Any]) -> str:
    xs, ticks, x_label = layer_axis(groups)
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    labels: dict[str, list[str]] = {}
    colours: list[int] = []
    dashed: list[bool] = []
    several = len(groups) > 1
    for j, m in enumerate(measures):
        for g, (label, rs) in enumerate(groups.items()):
            raw = np.array([as_float(_mapping(r.values.get("measures")).get(m)) for r in rs])
            fin = raw[np.isfinite(raw)]
            lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 1.0)
            scaled = (raw - lo) / (hi - lo) if hi > lo else np.where(np.isfinite(raw), 0.5,
                                                                     np.nan)
            hib = better.get(m)
            arrow = " ↑" if hib is True else (" ↓" if hib is False else "")
            name = f"{m}{arrow}" + (f" · {label}" if several else "")
            series[name] = (xs[label], scaled)
            labels[name] = [f"layer {r.layer}, value {v:.4g}, scaled" for r, v in zip(rs, raw)]
            colours.append(j)
            dashed.append(several and g % 2 == 1)
    chart = line_chart(series, title=_FAMILY_TITLES.get(family, family.replace("_", " ")),
                       x_label=x_label, y_label="scaled to [0, 1] per measure",
                       x_tick_labels=ticks, y_range=(-0.05, 1.05), colours=colours,
                       dashed=dashed, point_labels=labels)
    return figure(chart,
                  "Each measure is scaled to [0, 1] over the layers shown (hover a point for "
                  "its value); ↑ higher is better, ↓ lower is better.")


def _getter(measure: str) -> Callable[[RecordLike], float]:
    return lambda r: as_float(_mapping(r.values.get("measures")).get(measure))


def render_geometry(records: Sequence[RecordLike]) -> str:
    """One panel per measure family (per-layer curves) and the raw values by layer."""
    recs = latest_per(records)
    groups = by_series(recs)
    families: dict[str, list[str]] = {}
    better: dict[str, Any] = {}
    for r in recs:
        fam = _mapping(r.values.get("families"))
        hib = _mapping(r.values.get("higher_is_better"))
        for m in _mapping(r.values.get("measures")):
            families.setdefault(str(fam.get(m, "other")), [])
            if m not in families[str(fam.get(m, "other"))]:
                families[str(fam.get(m, "other"))].append(m)
            better.setdefault(m, hib.get(m))
    parts = [_family_chart(f, ms, groups, better) for f, ms in families.items()]
    for family, ms in families.items():
        parts.append(layer_table(groups, [(m, _getter(m)) for m in ms],
                                 caption=_FAMILY_TITLES.get(family, family.replace("_", " ")),
                                 digits=4))
    pair = {int(as_float(r.values.get("n_pairwise"))) for r in recs
            if as_float(r.values.get("n_pairwise")) < as_float(r.values.get("n_samples"))}
    if pair:
        parts.append(f"<p>O(n^2)-time measures ran on a random subsample of "
                     f"{esc(', '.join(str(p) for p in sorted(pair)))} samples.</p>")
    return "".join(parts)


# --------------------------------------------------------------------------- persistence
def _barcode(bars: np.ndarray, title: str, colour: str, max_bars: int = 40) -> str:
    """An H0 barcode: one horizontal bar per class, born at 0, dying at its length."""
    bars = np.sort(np.asarray(bars, dtype=float)[np.isfinite(bars)])[::-1][:max_bars]
    width, left, top, row = 300.0, 12.0, 26.0, 5.0
    height = top + row * max(1, bars.size) + 24
    span = float(bars.max()) if bars.size and bars.max() > 0 else 1.0
    out = [f'<svg role="img" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
           f'height="{height:.0f}">',  # inline SVG in HTML needs no xmlns
           f"<title>{esc(title)}</title>",
           f'<text x="{left}" y="16" font-size="12" font-weight="600">{esc(title)}</text>']
    for i, b in enumerate(bars):
        y = top + i * row
        w = (width - 2 * left) * b / span
        out.append(f'<rect x="{left}" y="{y:.1f}" width="{max(w, 0.5):.1f}" height="{row - 1.5}" '
                   f'fill="{colour}"><title>bar {i + 1}: dies at {b:.4g}</title></rect>')
    out.append(f'<text x="{left}" y="{height - 8:.0f}" font-size="10" fill="#555">0</text>')
    out.append(f'<text x="{width - left}" y="{height - 8:.0f}" font-size="10" fill="#555" '
               f'text-anchor="end">{span:.3g} (longest)</text></svg>')
    return "".join(out)


def _pick(n: int, k: int = 3) -> list[int]:
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def render_geometry_persistence(records: Sequence[RecordLike]) -> str:
    """Barcodes of the first, middle and last layers of each model, and the summaries."""
    recs = latest_per(records)
    groups = by_series(recs)
    codes = []
    for g, (label, rs) in enumerate(groups.items()):
        for i in _pick(len(rs)):
            bars = np.array([as_float(v) for v in (rs[i].values.get("bars") or [])])
            codes.append(_barcode(bars, f"{label} · {rs[i].layer}", colour_for(g)))
    parts = []
    if codes:
        parts.append(figure('<div style="display:flex;flex-wrap:wrap;gap:8px">'
                            + "".join(codes) + "</div>",
                            "H0 barcodes of the L2-normalised embeddings: the longest bars "
                            "(component deaths = minimum-spanning-tree edge lengths). A few "
                            "bars far longer than the rest mean separated groups."))
    xs, ticks, x_label = layer_axis(groups)
    ratio = {label: (xs[label], [as_float(r.values.get("max_ratio")) for r in rs])
             for label, rs in groups.items()}
    parts.append(figure(line_chart(ratio, title="Longest / median bar by layer",
                                   x_label=x_label, y_label="max / median bar",
                                   x_tick_labels=ticks)))
    parts.append(layer_table(groups, [
        ("entropy", lambda r: as_float(r.values.get("entropy"))),
        ("max / median", lambda r: as_float(r.values.get("max_ratio"))),
        ("top-(K-1) / median", lambda r: as_float(r.values.get("top_ratio"))),
        ("median bar", lambda r: as_float(r.values.get("median_bar"))),
        ("samples", lambda r: as_float(r.values.get("n_samples"))),
    ], caption="H0 persistence by layer (top-(K-1) uses the number of classes)", digits=4))
    return "".join(parts)


def render_geometry_coding_rate(records: Sequence[RecordLike]) -> str:
    """The coding-rate table and the rate reduction by layer."""
    recs = latest_per(records)
    groups = by_series(recs)
    xs, ticks, x_label = layer_axis(groups)
    series: dict[str, tuple[Any, Any]] = {}
    dashed: list[bool] = []
    colours: list[int] = []
    for g, (label, rs) in enumerate(groups.items()):
        series[f"{label} · ΔR"] = (xs[label], [as_float(r.values.get("rate_reduction"))
                                               for r in rs])
        series[f"{label} · ΔR, shuffled labels"] = (
            xs[label], [as_float(r.values.get("rate_reduction_shuffled")) for r in rs])
        colours += [g, g]
        dashed += [False, True]
    parts = [figure(line_chart(series, title="Rate reduction by layer", x_label=x_label,
                               y_label="ΔR = R − R_c (nats)", x_tick_labels=ticks,
                               colours=colours, dashed=dashed),
                    "Rate reduction of the true classes (solid) against randomly permuted "
                    "labels (dashed); unit-norm rows.")]
    parts.append(layer_table(groups, [
        ("R", lambda r: as_float(r.values.get("rate"))),
        ("R_c", lambda r: as_float(r.values.get("compressed_rate"))),
        ("ΔR", lambda r: as_float(r.values.get("rate_reduction"))),
        ("ΔR shuffled", lambda r: as_float(r.values.get("rate_reduction_shuffled"))),
        ("eps²", lambda r: as_float(r.values.get("eps2"))),
    ], caption="Coding rate by layer", digits=4))
    return "".join(parts)


def render_geometry_persistence_track(records: Sequence[RecordLike]) -> str:
    """The tracked persistence score across checkpoints; the plateau is marked."""
    recs = latest_per(records)
    groups = by_series(recs)
    series = {}
    rows = []
    for label, rs in groups.items():
        series[label] = (np.arange(len(rs)), [as_float(r.values.get("value")) for r in rs])
        hit = [r.layer for r in rs if r.values.get("plateau")]
        score = str(rs[0].values.get("score", "")) if rs else ""
        rows.append([label, score, len(rs), hit[0] if hit else "not reached"])
    ticks = [r.layer for r in next(iter(groups.values()), [])]
    same = all([r.layer for r in rs] == ticks for rs in groups.values())
    chart = line_chart(series, title="Persistence score across checkpoints",
                       x_label="checkpoint", y_label="score",
                       x_tick_labels=ticks if same else None)
    return figure(chart) + html_table(["model", "score", "checkpoints", "plateau at"], rows,
                                      caption="Unsupervised stopping signal")
