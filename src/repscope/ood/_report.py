"""Report sections of OOD detection (found through :mod:`repscope.ood._capability`).

* ``ood``: per model, a detectors x layers AUROC table and one of FPR at the recorded TPR;
  ID vs OOD score histograms of each detector at its best layer (from the bins stored in the
  record); ROC curves of each detector at its best layer (at most :data:`MAX_SERIES` per chart).
* ``ood_diagnostics``: the PT-OOD diagnostics per layer.

Renderers only format stored records; nothing is recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._common import as_float, by_series, cell, floats, missing
from repscope.report._sections import (
    esc,
    html_table,
    ordered_unique,
    panels,
)
from repscope.report._svg import line_chart

__all__ = ["render_ood", "render_ood_diagnostics"]

#: Lines per ROC chart; more detectors are split into several panels.
MAX_SERIES = 6
_PANEL_WIDTH = 470.0


def _detector(r: RecordLike) -> str:
    return str(r.values.get("detector") or (r.params or {}).get("detector", ""))


def _latest(records: Sequence[RecordLike]) -> list[RecordLike]:
    best: dict[tuple[str, str, str, str], RecordLike] = {}
    for r in records:
        best[(r.model, r.dataset, r.layer, _detector(r))] = r
    return list(best.values())


def _matrix_table(rs: Sequence[RecordLike], key: str, caption: str) -> str:
    dets = ordered_unique(_detector(r) for r in rs)
    layers = ordered_unique(r.layer for r in rs)
    at = {(_detector(r), r.layer): r for r in rs}
    rows = []
    for d in dets:
        row: list[Any] = [d]
        for layer in layers:
            r = at.get((d, layer))
            row.append(cell(r, key) if r is not None else missing(None, "not run"))
        rows.append(row)
    return html_table(["detector", *[layer or "(all)" for layer in layers]], rows,
                      caption=caption, digits=3)


def _best(rs: Sequence[RecordLike]) -> dict[str, RecordLike]:
    """Per detector, its record with the highest AUROC (recorded metrics only)."""
    out: dict[str, RecordLike] = {}
    for r in rs:
        a = as_float(r.values.get("auroc"))
        if not np.isfinite(a):
            continue
        d = _detector(r)
        if d not in out or a > as_float(out[d].values.get("auroc")):
            out[d] = r
    return out


def _histogram(r: RecordLike) -> str | None:
    edges = floats(r.values.get("hist_edges"))
    h_id, h_ood = floats(r.values.get("hist_id")), floats(r.values.get("hist_ood"))
    if edges.size < 2 or h_id.size != edges.size - 1 or h_ood.size != h_id.size:
        return None
    centres = 0.5 * (edges[:-1] + edges[1:])
    share_id = h_id / max(h_id.sum(), 1.0)
    share_ood = h_ood / max(h_ood.sum(), 1.0)
    where = [f"score {lo:.4g} to {hi:.4g}" for lo, hi in pairwise(edges)]
    title = (f"{_detector(r)} at {r.layer or '(all)'} (AUROC "
             f"{as_float(r.values.get('auroc')):.3f})")
    return line_chart({"ID (held out)": (centres, share_id), "OOD": (centres, share_ood)},
                      title=title, x_label="score (higher = more in-distribution)",
                      y_label="share of samples", width=_PANEL_WIDTH, height=300,
                      point_labels={"ID (held out)": where, "OOD": where})


def _roc_charts(best: dict[str, RecordLike], positive: str) -> list[str]:
    names = list(best)
    charts = []
    for start in range(0, len(names), MAX_SERIES):
        chunk = names[start:start + MAX_SERIES]
        series = {}
        for d in chunk:
            r = best[d]
            series[f"{d} @ {r.layer or '(all)'}"] = (floats(r.values.get("roc_fpr")),
                                                     floats(r.values.get("roc_tpr")))
        series["chance"] = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
        pos_name, neg_name = ("OOD", "ID") if positive == "ood" else ("ID", "OOD")
        charts.append(line_chart(
            series, title="ROC curves at each detector's best layer",
            x_label=f"false positive rate ({neg_name} taken for {pos_name})",
            y_label=f"true positive rate ({pos_name} found)", y_range=(0.0, 1.0),
            width=_PANEL_WIDTH if len(names) > MAX_SERIES else 640, height=360,
            dashed=[False] * (len(series) - 1) + [True]))
    return charts


def render_ood(records: Sequence[RecordLike]) -> str:
    """AUROC and FPR tables (detectors x layers), score histograms and ROC curves per model."""
    recs = _latest(records)
    if not recs:
        return f"<p>{esc('No OOD detection results.')}</p>"
    parts = []
    for label, rs in by_series(recs).items():
        first = rs[0].values
        tpr = as_float(first.get("tpr"))
        positive = str(first.get("positive", "ood"))
        pct = f"{100 * tpr:g}%" if np.isfinite(tpr) else "the recorded TPR"
        n_id, n_ood = first.get("n_id", "?"), first.get("n_ood", "?")
        parts.append(f"<h3>{esc(label)}</h3>")
        parts.append(f"<p class=\"note\">{esc(f'{n_id} held-out ID samples vs {n_ood} OOD samples. ' + str(first.get('conventions', '')))}</p>")
        parts.append(_matrix_table(rs, "auroc", "AUROC by detector (rows) and layer "
                                   "(columns); 0.5 = chance, 1 = perfect."))
        pos_txt = ("share of ID samples flagged when " + pct + " of OOD is flagged"
                   if positive == "ood" else
                   "share of OOD samples accepted when " + pct + " of ID is accepted")
        parts.append(_matrix_table(rs, "fpr_at_tpr", f"FPR at {pct} TPR ({pos_txt}); "
                                   "lower is better."))
        best = _best(rs)
        hists = [h for h in (_histogram(r) for r in best.values()) if h]
        if hists:
            parts.append(panels(hists, "ID (held out) and OOD score distributions of each "
                                "detector at its best layer: the less they overlap, the "
                                "better the detector. Bins were fixed when the analysis ran "
                                "(1st to 99th percentile of both; scores beyond fall in the "
                                "end bins)."))
        if best:
            parts.append(panels(_roc_charts(best, positive), "ROC curves at each detector's "
                                "best layer; the dashed diagonal is chance."))
    return "".join(parts)


def render_ood_diagnostics(records: Sequence[RecordLike]) -> str:
    """Per model and layer: ID-vs-OOD linear separability and the confident-OOD share."""
    best: dict[tuple[str, str, str], RecordLike] = {}
    for r in records:
        best[(r.model, r.dataset, r.layer)] = r
    recs = list(best.values())
    if not recs:
        return f"<p>{esc('No OOD diagnostics.')}</p>"
    parts = []
    for label, rs in by_series(recs).items():
        conf = as_float(rs[0].values.get("confidence"))
        folds = rs[0].values.get("folds", "?")
        rows = [[r.layer or "(all)", cell(r, "separability_accuracy"),
                 cell(r, "separability_auroc"),
                 cell(r, "confident_ood", "not computed: no class labels"),
                 cell(r, "confident_id", "not computed: no class labels")] for r in rs]
        parts.append(html_table(
            ["layer", "ID-vs-OOD probe: balanced accuracy", "ID-vs-OOD probe: AUROC",
             f"OOD with max softmax >= {conf:g}", f"held-out ID with max softmax >= {conf:g}"],
            rows, digits=3,
            caption=f"{label}: a linear probe trained to tell ID from OOD ({folds}-fold "
            "cross-validated) and the ID probe's confidence on OOD samples."))
    return "".join(parts)
