"""Report section ``similarity_matrix``: a layer x layer heat map for any registered measure,
the best-matching layer pairs and, when recorded, their permutation p-values and bootstrap
intervals. Renders stored records only; nothing is recomputed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._sections import Html, Missing, esc, figure, html_table
from repscope.report._svg import heatmap

_NO_P = Missing("not computed: no permutation test was run")
_NO_CI = Missing("not computed: no bootstrap was run")


def _stat_cells(s: dict[str, Any] | None) -> list[Any]:
    if not s:
        return [_NO_P, _NO_CI]
    p = s.get("p_value")
    ci = (Html(f"[{float(s['ci_low']):.3g}, {float(s['ci_high']):.3g}]")
          if "ci_low" in s else _NO_CI)
    return [float(p) if p is not None else _NO_P, ci]


def _one(r: RecordLike) -> str:
    v = r.values
    m = np.asarray(v.get("matrix", np.empty((0, 0))), dtype=float)
    if m.ndim != 2 or m.size == 0:
        return f"<p class=\"warn\">{esc(f'Record {r.model}: no 2-D similarity matrix.')}</p>"
    rows = [str(s) for s in (v.get("rows") or range(m.shape[0]))]
    cols = [str(s) for s in (v.get("cols") or range(m.shape[1]))]
    model_a = str(v.get("model_a") or r.model or "A")
    model_b = str(v.get("model_b") or "B")
    measure = str(v.get("measure") or (r.params or {}).get("measure", "similarity"))
    hib = bool(v.get("higher_is_better", True))
    finite = m[np.isfinite(m)]
    unit = bool(finite.size) and finite.min() >= 0 and finite.max() <= 1
    direction = "higher = more alike" if hib else "lower = more alike"
    svg = heatmap(m, title=f"{measure}: {model_a} (rows) × {model_b} (columns)",
                  row_labels=rows, col_labels=cols, row_title=model_a, col_title=model_b,
                  vmin=0.0 if unit else None, vmax=1.0 if unit else None,
                  colour_label=f"{measure} ({direction})")
    stats = {(s.get("row"), s.get("col")): s for s in (v.get("stats") or [])}
    best = v.get("best_matches") or []
    table_rows = [[str(b[0]), str(b[1]), float(b[2]), *_stat_cells(stats.get((b[0], b[1])))]
                  for b in best]
    caption = f"n = {v['n_samples']}" if v.get("n_samples") else ""
    if r.dataset:
        caption = f"On {r.dataset}" + (f", {caption}" if caption else "")
    table = html_table([f"{model_a} layer", f"best-matching {model_b} layer", measure,
                        "permutation p", "bootstrap 95% CI"], table_rows,
                       caption=f"Best match for each {model_a} layer ({direction})", digits=3)
    return figure(svg, caption) + table


def render_similarity_matrix(records: Sequence[RecordLike]) -> str:
    """One heat map and best-match table per record (one record per measure)."""
    return "".join(f'<div class="block">{_one(r)}</div>' for r in records)
