"""Section ``separability``: linear-probe accuracy by layer, one line per model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._sections import esc, figure, html_table, latest_per, register_section
from repscope.report._svg import line_chart
from repscope.report.sections._common import as_float, by_series, layer_axis, layer_table


def _acc(r: RecordLike) -> tuple[float, float]:
    return as_float(r.values.get("accuracy")), as_float(r.values.get("accuracy_std"))


@register_section(
    "separability",
    title="Class separability by layer",
    order=20,
    description="Cross-validated accuracy of a linear classifier trained on each layer's "
    "features; higher means the classes are more linearly separable there.",
)
def render_separability(records: Sequence[RecordLike]) -> str:
    """Line chart of accuracy by layer per model, best layer per model, full table."""
    recs = latest_per(records)
    groups = by_series(recs)
    xs, ticks, x_label = layer_axis(groups)
    series = {label: (xs[label], [_acc(r)[0] for r in rs]) for label, rs in groups.items()}
    accs = np.array([_acc(r)[0] for r in recs], dtype=float)
    finite = accs[np.isfinite(accs)]
    y_range = (0.0, 1.0) if finite.size and finite.min() >= 0 and finite.max() <= 1 else None
    chart = line_chart(series, title="Linear-probe accuracy by layer", x_label=x_label,
                       y_label="accuracy", x_tick_labels=ticks, y_range=y_range)
    best_rows = []
    for label, rs in groups.items():
        vals = np.array([_acc(r)[0] for r in rs], dtype=float)
        if np.isfinite(vals).any():
            i = int(np.nanargmax(vals))
            best_rows.append([label, rs[i].layer, vals[i], _acc(rs[i])[1], len(rs)])
        else:
            best_rows.append([label, "—", float("nan"), float("nan"), len(rs)])
    best = html_table(["model", "best layer", "accuracy", "± std", "layers"], best_rows,
                      caption="Best layer per model", digits=3)
    full = layer_table(groups, [("accuracy", lambda r: _acc(r)[0]),
                                ("± std", lambda r: _acc(r)[1])], digits=3)
    n_rows = len(recs)
    if not recs:
        return f"<p>{esc('No separability values.')}</p>"
    return (
        figure(chart, "Accuracy of a linear probe at each layer (one line per model).")
        + best
        + f"<details><summary>Accuracy at every layer ({n_rows} values)</summary>{full}"
        "</details>"
    )
