"""Report section ``probe_points``: per-point probe mIoU by layer, with the multi-level probe
(all layers concatenated) as a dashed level, and a table of every row. Renders stored records
only; nothing is recomputed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._common import as_float
from repscope.report._sections import Missing, esc, figure, html_table, ordered_unique
from repscope.report._svg import line_chart

__all__ = ["render_probe_points"]

_MULTI = "multi-level"


def _per_probe(v: Any, probe: str) -> float | Missing:
    x = as_float(v.get(probe)) if isinstance(v, dict) else float("nan")
    return Missing() if np.isnan(x) else x


def _group(records: Sequence[RecordLike]) -> list[RecordLike]:
    """The records of the latest run of a group, in their row order."""
    runs = ordered_unique(r.run_id for r in records)
    last = [r for r in records if r.run_id == runs[-1]]
    return sorted(last, key=lambda r: int(as_float(r.values.get("order", 0)) or 0))


def render_probe_points(records: Sequence[RecordLike]) -> str:
    """Per (model, dataset): mIoU of each per-point probe by layer (a line per probe, the
    multi-level score dashed across), then a table of mIoU and point accuracy per row."""
    out = []
    for model, dataset in ordered_unique((r.model, r.dataset) for r in records):
        mine = _group([r for r in records if (r.model, r.dataset) == (model, dataset)])
        probes = ordered_unique(p for r in mine for p in (r.values.get("miou") or {}))
        singles = [r for r in mine if not r.values.get("multi_level")]
        multi = [r for r in mine if r.values.get("multi_level")]
        label = f"{model}" + (f" on {dataset}" if dataset else "")
        parts = []
        if singles and probes:
            x = np.arange(len(singles), dtype=float)
            series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            dashed = []
            for p in probes:
                y = np.array([as_float((r.values.get("miou") or {}).get(p)) for r in singles])
                series[p] = (x, y)
                dashed.append(False)
            for p in probes:
                for r in multi:
                    level = as_float((r.values.get("miou") or {}).get(p))
                    series[f"{p} · {_MULTI}"] = (x, np.full(len(singles), level))
                    dashed.append(True)
            chart = line_chart(series, title=f"Per-point mIoU by layer: {label}",
                               x_label="layer", y_label="test mIoU",
                               x_tick_labels=[r.layer for r in singles], y_range=(0.0, 1.0),
                               dashed=dashed)
            parts.append(figure(chart, "Solid: each layer alone; dashed: every layer's point "
                                "features concatenated (multi-level)."))
        rows = []
        for r in mine:
            v = r.values
            layers = v.get("layers") or []
            rows.append([r.layer, "+".join(map(str, layers)) if v.get("multi_level") else "",
                         int(as_float(v.get("n_features", 0)) or 0),
                         *(_per_probe(v.get("miou") or {}, p) for p in probes),
                         *(_per_probe(v.get("accuracy") or {}, p) for p in probes)])
        v0 = mine[0].values
        caption = (f"{label}: {int(as_float(v0.get('n_train_points')) or 0)} training and "
                   f"{int(as_float(v0.get('n_test_points')) or 0)} test points (split by "
                   f"image), {int(as_float(v0.get('n_classes')) or 0)} classes")
        table = html_table(["layer", "levels", "width", *probes, *probes], rows,
                           caption=caption, digits=3,
                           header_groups=[("rows", 3), ("test mIoU", len(probes)),
                                          ("point accuracy", len(probes))])
        note = ("Each level is sampled bilinearly at every point on its own grid (align "
                "corners), standardised with training statistics; the multi-level row "
                "concatenates all levels. mIoU averages the intersection over union of every "
                "class present in the test points or the predictions.")
        parts.append(f'{table}<p class="note">{esc(note)}</p>')
        out.append(f'<div class="block">{"".join(parts)}</div>')
    return "".join(out)
