"""Report sections of ``repscope.nn``: angular margins of margin-head probes. Renders stored
records only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._common import as_float
from repscope.report._sections import html_table, latest_per, panels
from repscope.report._svg import line_chart

__all__ = ["render_probe_margins"]

_STATS = ("accuracy", "margin_mean", "margin_median", "frac_negative", "intra_angle",
          "inter_angle_min", "inter_angle_mean")


def render_probe_margins(records: Sequence[RecordLike]) -> str:
    """Per (model, layer): the distribution of per-sample angular margins of the margin head
    and of the softmax probe on held-out rows, and a table of their angular statistics."""
    charts, rows = [], []
    for r in latest_per(records, ("model", "dataset", "layer")):
        heads = r.values.get("heads") or {}
        edges = np.asarray(r.values.get("edges") or [], dtype=float)
        if not heads or edges.size < 2:
            continue
        centres = (edges[:-1] + edges[1:]) / 2
        series = {name: (centres, np.asarray(h.get("hist", []), dtype=float))
                  for name, h in heads.items()}
        where = f"{r.model} {r.layer}" + (f" on {r.dataset}" if r.dataset else "")
        charts.append(line_chart(
            series, title=f"Angular margins: {where}", x_label="margin (degrees)",
            y_label="held-out samples", width=470, height=320))
        for name, h in heads.items():
            rows.append([r.model, r.layer, name, *(as_float(h.get(k)) for k in _STATS)])
    if not rows:
        return "<p>No margin-probe records.</p>"
    table = html_table(["model", "layer", "head", "accuracy", "mean margin (°)",
                        "median margin (°)", "negative", "angle to class centre (°)",
                        "min angle between classes (°)", "mean angle between classes (°)"],
                       rows, digits=3)
    note = ("A sample's angular margin is the angle to the nearest other class's direction "
            "minus the angle to its own class's (negative: closer to another class). The "
            "margin head's angles are in its learned embedding; the softmax probe's in the "
            "standardised features its weights act on. Held-out rows of one stratified split.")
    return panels(charts, caption=note) + table
