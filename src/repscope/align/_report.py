"""Report section ``alignment``: how well a map carries one model's space onto another's —
held-out retrieval (mapped vs unmapped), paired cosine, R^2, matching, kernel agreement, the
orthogonality gap, and retrieval against the subspace size k. Renders stored records only."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._common import as_float
from repscope.report._sections import Missing, esc, figure, html_table
from repscope.report._svg import line_chart


def _by_k(d: Mapping[Any, Any] | None) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for k, val in (d or {}).items():
        try:
            out[int(k)] = val
        except (TypeError, ValueError):
            continue
    return dict(sorted(out.items()))


#: Why a cell of the metrics table is empty.
_NO_MAP = Missing("not applicable: there is no map to score without one")
_WIDTHS = Missing("not computed: the two spaces have different widths, so unmapped pairs "
                  "cannot be compared")
_MATCHING = Missing("not computed: skipped for this many held-out pairs (the n × n "
                    "matching is limited by max_matching)")


def _num(value: Any, why: Missing) -> float | Missing:
    f = as_float(value)
    return why if math.isnan(f) else f


def _metrics_table(v: Mapping[str, Any]) -> str:
    mapped, raw = _by_k(v.get("retrieval")), _by_k(v.get("retrieval_unmapped"))
    rows: list[list[Any]] = [[f"retrieval top-{k}", as_float(val), as_float(raw.get(k))]
                             for k, val in mapped.items()]
    rows.append(["paired cosine", as_float(v.get("cosine")),
                 _num(v.get("cosine_unmapped"), _WIDTHS)])
    rows.append(["R² (map's held-out score)", as_float(v.get("r2")), _NO_MAP])
    rows.append(["matching accuracy (Hungarian)", _num(v.get("matching"), _MATCHING), _NO_MAP])
    rows.append(["kernel agreement (linear CKA)", as_float(v.get("kernel_agreement")), _NO_MAP])
    return html_table(["held-out metric", f"{v.get('map', 'fitted')} map", "unmapped"], rows,
                      caption=f"{v.get('n_train', '?')} training pairs, {v.get('n_test', '?')} "
                              "held out", digits=3)


def _gap_table(g: Mapping[str, Any]) -> str:
    if not g:
        return ""
    rows = [["orthogonal map (+ shift, scale)", as_float(g.get("orthogonal_residual"))],
            ["general linear map (ridge, GCV)", as_float(g.get("linear_residual"))],
            ["orthogonality gap", as_float(g.get("gap"))]]
    return html_table(["held-out residual 1 − R²", "value"], rows, digits=3,
                      caption="Gap ≈ 0: the spaces differ by a rotation; > 0: a general linear "
                              "map is needed")


def _sweep_chart(v: Mapping[str, Any]) -> str:
    sw = v.get("sweep") or {}
    ks = [int(k) for k in (sw.get("ks") or [])]
    curves = _by_k(sw.get("retrieval"))
    if not ks or not curves:
        return ""
    series: dict[str, tuple[Any, Any]] = {}
    dashed = []
    for j, ys in curves.items():
        series[f"top-{j}, {sw.get('method', 'cca')} subspace"] = (ks, np.asarray(ys, dtype=float))
        dashed.append(False)
    mapped, raw = _by_k(v.get("retrieval")), _by_k(v.get("retrieval_unmapped"))
    for j in curves:
        if j in mapped:
            series[f"top-{j}, full {v.get('map', '')} map"] = (
                [ks[0], ks[-1]], [as_float(mapped[j])] * 2)
            dashed.append(True)
        if j in raw:
            series[f"top-{j}, unmapped"] = ([ks[0], ks[-1]], [as_float(raw[j])] * 2)
            dashed.append(True)
    svg = line_chart(series, title="Held-out retrieval against the subspace size k",
                     x_label="k (subspace dimensions, log scale)", y_label="retrieval accuracy",
                     x_log=True, y_range=(0.0, 1.0), dashed=dashed)
    best = ks[int(np.nanargmax(np.asarray(next(iter(curves.values())), dtype=float)))]
    return figure(svg, f"Best k for top-{next(iter(curves))}: {best} "
                       "(dashed: the full-width map and the unmapped baseline)")


def _one(r: RecordLike) -> str:
    v = r.values
    a, b = v.get("model_a"), v.get("model_b")
    head = ""
    if a or b:
        la, lb = v.get("layer_a", ""), v.get("layer_b", "")
        head = f"<p>{esc(f'{a} [{la}] → {b} [{lb}]')}</p>"
    note = f"<p class=\"note\">{esc(v['note'])}</p>" if v.get("note") else ""
    return head + note + _metrics_table(v) + _gap_table(v.get("orthogonality_gap") or {}) + \
        _sweep_chart(v)


def render_alignment(records: Sequence[RecordLike]) -> str:
    """Metrics, orthogonality gap and retrieval-vs-k chart per record."""
    return "".join(f'<div class="block">{_one(r)}</div>' for r in records)
