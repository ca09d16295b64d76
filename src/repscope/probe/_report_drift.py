"""Report section ``feature_drift``: how far each layer's features moved between two
checkpoints (LP-FT diagnostics). Drift curves by layer (linear CKA and mean per-sample cosine;
relative L2 and head-kernel change) with one line per comparison, and a table. Renders stored
records only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._common import as_float, cell
from repscope.report._sections import esc, html_table, ordered_unique, panels
from repscope.report._svg import line_chart

__all__ = ["render_feature_drift"]


def _label(r: RecordLike) -> str:
    params = r.params or {}
    a, b = params.get("a"), params.get("b")
    side = f"{a} → {b}" if a and b else str(r.model)
    return side + (f" on {r.dataset}" if r.dataset else "")


def render_feature_drift(records: Sequence[RecordLike]) -> str:
    """Drift curves by layer (one line per pair of checkpoints) and the drift table."""
    groups: dict[str, list[RecordLike]] = {}
    for r in records:
        latest = groups.setdefault(_label(r), [])
        latest[:] = [x for x in latest if x.layer != r.layer] + [r]
    layers = ordered_unique(r.layer for rs in groups.values() for r in rs)
    pos = {name: i for i, name in enumerate(layers)}
    charts = []
    for title, keys, y_range in (
        ("Similarity to the first checkpoint", ("linear_cka", "cosine_mean"), (0.0, 1.0)),
        ("Distance from the first checkpoint", ("relative_l2", "head_kernel_change"), None),
    ):
        series = {}
        where = {}
        for label, rs in groups.items():
            x = np.array([pos[r.layer] for r in rs], dtype=float)
            for key in keys:
                name = f"{label} · {key.replace('_', ' ')}"
                series[name] = (x, np.array([as_float(r.values.get(key)) for r in rs]))
                where[name] = [r.layer for r in rs]
        charts.append(line_chart(series, title=title, x_label="layer", y_label=" / ".join(
            k.replace("_", " ") for k in keys), x_tick_labels=layers, y_range=y_range,
            point_labels=where, width=470, height=340))
    rows = [[label, r.layer, int(as_float(r.values.get("width", 0))),
             int(as_float(r.values.get("n_samples", 0))),
             *(cell(r, k) for k in ("cosine_mean", "cosine_median", "relative_l2",
                                    "linear_cka", "head_kernel_change"))]
            for label, rs in groups.items() for r in rs]
    table = html_table(["checkpoints", "layer", "width", "inputs", "cosine mean",
                        "cosine median", "relative L2", "linear CKA", "head-kernel change"],
                       rows, digits=3)
    note = ("Each input's features at the second checkpoint against the first: cosine and L2 "
            "per input (relative L2: mean distance over the first checkpoint's mean norm), "
            "linear CKA of the two feature sets, and the relative Frobenius change of the head "
            "kernel H Hᵀ. LP-FT (fine-tuning from a fitted linear-probe head) is expected to "
            "move the features less than FT from a fresh head (Tomihari & Sato 2024).")
    return panels(charts) + table + f'<p class="note">{esc(note)}</p>'
