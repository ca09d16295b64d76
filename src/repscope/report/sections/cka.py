"""Section ``cka``: a layer x layer similarity matrix between two models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._sections import esc, figure, fmt, html_table, register_section
from repscope.report._svg import heatmap


def _one(r: RecordLike) -> str:
    v = r.values
    m = np.asarray(v.get("matrix", np.empty((0, 0))), dtype=float)
    if m.ndim != 2 or m.size == 0:
        return f"<p class=\"warn\">{esc(f'Record {r.layer or r.model}: no 2-D matrix.')}</p>"
    rows = [str(s) for s in (v.get("rows") or range(m.shape[0]))]
    cols = [str(s) for s in (v.get("cols") or range(m.shape[1]))]
    model_a = str(v.get("model_a") or r.model or "model A")
    model_b = str(v.get("model_b") or "model B")
    measure = str(r.params.get("measure", "CKA")) if r.params else "CKA"
    finite = m[np.isfinite(m)]
    unit = bool(finite.size) and finite.min() >= 0 and finite.max() <= 1
    title = f"{measure}: {model_a} (rows) × {model_b} (columns)"
    svg = heatmap(m, title=title, row_labels=rows, col_labels=cols, row_title=model_a,
                  col_title=model_b, vmin=0.0 if unit else None, vmax=1.0 if unit else None,
                  colour_label=measure)
    best = []
    for i, name in enumerate(rows):
        row = m[i]
        if np.isfinite(row).any():
            j = int(np.nanargmax(row))
            best.append([name, cols[j] if j < len(cols) else str(j), float(row[j])])
        else:
            best.append([name, "—", float("nan")])
    caption = f"On {r.dataset}" if r.dataset else ""
    extra = ", ".join(f"{k}={fmt(val)}" for k, val in (r.params or {}).items() if k != "measure")
    if extra:
        caption += ("; " if caption else "") + extra
    table = html_table([f"{model_a} layer", f"best-matching {model_b} layer", measure], best,
                       caption=f"Best-matching {model_b} layer for each {model_a} layer",
                       digits=3)
    return figure(svg, caption) + table


@register_section(
    "cka",
    title="Layer-to-layer similarity (CKA)",
    order=30,
    description="Similarity of every pair of layers of two models on the same inputs; bright "
    "cells are layers whose representations agree.",
)
def render_cka(records: Sequence[RecordLike]) -> str:
    """One heat map and best-match table per record."""
    return "".join(f'<div class="block">{_one(r)}</div>' for r in records)
