"""Report sections of ``repscope.nn``: angular margins of margin-head probes, low-rank spectra
of weights and Tucker decompositions of activations. Renders stored records only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._common import as_float
from repscope.report._sections import html_table, latest_per, panels
from repscope.report._svg import line_chart

__all__ = ["render_low_rank", "render_probe_margins", "render_tucker"]

def _arr(value: object) -> np.ndarray:
    """A stored list or array as a float array (empty when missing)."""
    return np.asarray([] if value is None else value, dtype=float)


_STATS = ("accuracy", "margin_mean", "margin_median", "frac_negative", "intra_angle",
          "inter_angle_min", "inter_angle_mean")


def render_probe_margins(records: Sequence[RecordLike]) -> str:
    """Per (model, layer): the distribution of per-sample angular margins of the margin head
    and of the softmax probe on held-out rows, and a table of their angular statistics."""
    charts, rows = [], []
    for r in latest_per(records, ("model", "dataset", "layer")):
        heads = r.values.get("heads") or {}
        edges = _arr(r.values.get("edges"))
        if not heads or edges.size < 2:
            continue
        centres = (edges[:-1] + edges[1:]) / 2
        series = {name: (centres, _arr(h.get("hist")))
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


def render_low_rank(records: Sequence[RecordLike]) -> str:
    """Per model: effective rank and the rank that keeps 90% of the energy, as a fraction of
    the full rank, layer by layer; and the normalised spectra of a few layers."""
    by_model: dict[str, list[RecordLike]] = {}
    for r in latest_per(records, ("model", "layer")):
        by_model.setdefault(r.model, []).append(r)
    charts, rows = [], []
    for model, rs in by_model.items():
        names = [r.layer for r in rs]
        x = np.arange(len(rs), dtype=float)
        full = np.array([_arr(r.values.get("shape")).min(initial=np.inf) for r in rs])
        eff = np.array([as_float(r.values.get("effective_rank")) for r in rs]) / full
        k90 = np.array([as_float(r.values.get("n_components_90")) for r in rs]) / full
        charts.append(line_chart(
            {"effective rank / full rank": (x, eff), "rank for 90% energy / full rank": (x, k90)},
            title=f"Rank used by each weight: {model}", x_label="layer (module order)",
            y_label="fraction of the full rank", y_range=(0.0, 1.0), point_labels={
                "effective rank / full rank": names, "rank for 90% energy / full rank": names},
            width=470, height=320))
        picks = sorted({0, len(rs) // 2, len(rs) - 1})
        spectra = {}
        for i in picks:
            s = _arr(rs[i].values.get("singular_values"))
            if s.size and s[0] > 0:
                spectra[rs[i].layer] = (np.arange(1, s.size + 1, dtype=float) / s.size, s / s[0])
        if spectra:
            charts.append(line_chart(
                spectra, title=f"Singular values (first, middle, last weight): {model}",
                x_label="rank / full rank", y_label="σ_k / σ_1", width=470, height=320))
        for r, f in zip(rs, full):
            shape = _arr(r.values.get("shape")).astype(int).tolist() or ["?", "?"]
            rows.append([model, r.layer, f"{shape[0]}x{shape[1]}",
                         as_float(r.values.get("effective_rank")),
                         as_float(r.values.get("stable_rank")),
                         as_float(r.values.get("n_components_90")), int(f)])
    if not rows:
        return "<p>No low-rank spectra recorded.</p>"
    note = ("Each linear or convolution weight read as an out x (in x kernel) matrix. The "
            "rank for 90% energy is the smallest k whose best rank-k approximation "
            "(Eckart–Young: the top k singular values) keeps 90% of the squared Frobenius norm; "
            "the effective rank is exp(entropy) of the normalised singular values.")
    table = html_table(["model", "layer", "matrix", "effective rank", "stable rank",
                        "rank for 90%", "full rank"], rows, digits=3)
    return (panels(charts, caption=note)
            + f"<details><summary>Every weight ({len(rows)})</summary>{table}</details>")


def render_tucker(records: Sequence[RecordLike]) -> str:
    """Per (model, layer): the energy each mode keeps on its own, the fit of the core, and
    each mode's spectrum."""
    charts, rows = [], []
    for r in latest_per(records, ("model", "dataset", "layer")):
        kind = (r.params or {}).get("kind", "tokens")
        shape = _arr(r.values.get("shape")).astype(int).tolist()
        ranks = _arr(r.values.get("ranks")).astype(int).tolist()
        names = (["samples", "tokens", "channels"] if kind == "tokens" else
                 ["samples", "channels"] + [f"spatial {i + 1}" for i in range(len(shape) - 2)])
        energy = _arr(r.values.get("mode_energy")).tolist()
        spectra = {}
        stored = r.values.get("mode_spectra")
        for nm, s in zip(names, [] if stored is None else stored):
            s = _arr(s)
            if s.size:
                spectra[nm] = (np.arange(1, s.size + 1, dtype=float), np.cumsum(s))
        where = f"{r.model} {r.layer}" + (f" on {r.dataset}" if r.dataset else "")
        if spectra:
            charts.append(line_chart(
                spectra, title=f"Energy in each mode's top directions: {where}",
                x_label="directions kept", y_label="fraction of the energy",
                y_range=(0.0, 1.0), width=470, height=320))
        for nm, size, rank, e in zip(names, shape, ranks, energy):
            rows.append([r.model, r.layer, nm, size, rank, e, as_float(r.values.get("fit"))])
    if not rows:
        return "<p>No Tucker decompositions recorded.</p>"
    note = ("Tucker (HOOI) of the layer's activations as a samples x tokens x channels tensor "
            "(token layers, zero-padded) or samples x channels x height x width (maps). "
            "'Energy kept' is the share of the squared norm left when only that mode is "
            "projected onto its rank-r factor; the fit is the share the whole rank-(r1, r2, "
            "...) core keeps.")
    table = html_table(["model", "layer", "mode", "size", "rank", "energy kept", "fit of the core"],
                       rows, digits=3)
    return panels(charts, caption=note) + table
