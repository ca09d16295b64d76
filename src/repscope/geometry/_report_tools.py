"""Report sections of the geometry tools: leakage heat map, feature-weighting curves, InfoNCE
hardness curves, extractor diagnostics (Lipschitz ratio, translation sensitivity), subsets
and the availability probe. Renderers only format stored records; nothing is recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._common import as_float, by_series, floats, latest_by_values
from repscope.report._sections import esc, figure, html_table, ordered_unique, series_labels
from repscope.report._svg import heatmap, line_chart

__all__ = [
    "render_availability",
    "render_feature_weighting",
    "render_hardness",
    "render_leakage",
    "render_lipschitz",
    "render_subset",
]


def render_leakage(records: Sequence[RecordLike]) -> str:
    """Cross-probe matrix: a heat map of chance-normalised accuracy (groups x attributes) per
    (model, dataset, layer), and the accuracies with their intervals."""
    recs = latest_by_values(records, "group", "attribute")
    parts = []
    for name, rs in by_series(recs).items():
        for layer in ordered_unique(r.layer for r in rs):
            cell = [r for r in rs if r.layer == layer]
            groups = ordered_unique(str(r.values.get("group")) for r in cell)
            attrs = ordered_unique(str(r.values.get("attribute")) for r in cell)
            M = np.full((len(groups), len(attrs)), np.nan)
            for r in cell:
                M[groups.index(str(r.values.get("group"))),
                  attrs.index(str(r.values.get("attribute")))] = as_float(r.values.get("normalized"))
            title = f"{name}{' · ' + layer if layer else ''}: probe accuracy above chance"
            parts.append(figure(heatmap(M, title=title, row_labels=groups, col_labels=attrs,
                                        row_title="feature group", col_title="attribute",
                                        vmin=0.0, vmax=1.0, colour_label="(acc - chance)/(1 - chance)"),
                                "Block-diagonal = a clean split; off-diagonal cells are leakage."))
            parts.append(html_table(
                ["group", "attribute", "accuracy", "95% interval", "chance", "above chance"],
                [[r.values.get("group"), r.values.get("attribute"), r.values.get("accuracy"),
                  f"{as_float(r.values.get('ci_low')):.3f} – {as_float(r.values.get('ci_high')):.3f}",
                  r.values.get("chance"), "yes" if r.values.get("above_chance") else "no"]
                 for r in cell], digits=3))
    return "\n".join(parts)


def render_feature_weighting(records: Sequence[RecordLike]) -> str:
    """Per-layer curves: spread of chance-normalised attribute accuracies and normalised
    spectral entropy."""
    recs = latest_by_values(records)
    parts = []
    for name, rs in by_series(recs).items():
        layers = [r.layer for r in rs]
        series = {
            "accuracy spread": (np.arange(len(rs)), floats([r.values.get("accuracy_spread")
                                                             for r in rs])),
            "spectral entropy / log d": (np.arange(len(rs)), floats(
                [r.values.get("normalized_spectral_entropy") for r in rs])),
        }
        attrs = [str(a) for a in (rs[0].values.get("attributes") or [])]
        acc = np.array([floats(r.values.get("normalized_accuracy")) for r in rs])
        for j, a in enumerate(attrs):
            if acc.ndim == 2 and acc.shape[1] > j:
                series[f"{a} (acc above chance)"] = (np.arange(len(rs)), acc[:, j])
        parts.append(figure(line_chart(series, title=f"{name}: feature weighting by layer",
                                       x_label="layer", y_label="value",
                                       x_tick_labels=layers),
                            "Spread = max - min over attributes of (accuracy - chance)/(1 - "
                            "chance); larger = features weighted more unequally."))
    return "\n".join(parts)


def render_hardness(records: Sequence[RecordLike]) -> str:
    """Effective number of negatives of InfoNCE against the temperature."""
    recs = latest_by_values(records)
    series = {}
    labels = series_labels(recs)
    for r in recs:
        key = labels[(r.model, r.dataset)] + (f" · {r.layer}" if r.layer else "")
        series[key] = (floats(r.values.get("temperatures")),
                       floats(r.values.get("effective_negatives")))
    if not series:
        return ""
    return figure(line_chart(series, title="Effective number of negatives vs temperature",
                             x_label="temperature", y_label="exp(entropy of hardness weights)",
                             x_log=True),
                  "One hardest negative counts at low temperature, all of them at high.")


def render_lipschitz(records: Sequence[RecordLike]) -> str:
    """Extractor diagnostics: Lipschitz ratios per layer and translation sensitivity by depth."""
    recs = latest_by_values(records)
    parts = []
    for name, rs in by_series(recs).items():
        shifts = [int(as_float(s)) for s in (rs[0].values.get("shifts") or [])]
        depth = [r for r in rs if not r.layer.startswith("(")]
        sens = np.array([floats(r.values.get("translation_sensitivity")) for r in depth])
        if depth and sens.ndim == 2 and sens.shape[1] == len(shifts):
            series = {f"shift {t} px": (np.arange(len(depth)), sens[:, j])
                      for j, t in enumerate(shifts)}
            parts.append(figure(line_chart(series, title=f"{name}: translation sensitivity",
                                           x_label="layer", y_label="||Φ(T f) - Φ(f)|| / ||Φ(f)||",
                                           x_tick_labels=[r.layer for r in depth]),
                                "Lower = closer to translation invariant."))
        parts.append(html_table(
            ["layer", "Lipschitz ratio (max)", "median", "local (max)"],
            [[r.layer, r.values.get("lipschitz_max"), r.values.get("lipschitz_median"),
              r.values.get("local_lipschitz_max")] for r in rs],
            caption=f"{name}: ||Φ(f) - Φ(h)|| / ||f - h|| over input pairs (a non-expansive "
                    "extractor stays <= 1)", digits=3))
    return "\n".join(parts)


def render_subset(records: Sequence[RecordLike]) -> str:
    """Chosen subsets: method, size, rank and diversity (log volume)."""
    rows = [[r.model, r.dataset, r.layer, r.values.get("method"), r.values.get("k"),
             r.values.get("rank"), r.values.get("n_samples"), r.values.get("log_volume"),
             r.values.get("seed")] for r in records]
    if not rows:
        return ""
    return html_table(["model", "dataset", "layer", "method", "k", "rank", "of n", "log volume",
                       "seed"], rows, digits=3,
                      caption="log det(Q_S^T Q_S) of the chosen rows: larger = more diverse.")


def render_availability(records: Sequence[RecordLike]) -> str:
    """Availability probe: which attribute the probe follows on conflict rows."""
    rows = [[r.model, r.dataset, r.layer, r.values.get("core"), r.values.get("shortcut"),
             r.values.get("core_accuracy"), r.values.get("shortcut_accuracy"),
             r.values.get("shortcut_share"), r.values.get("n_conflict")] for r in latest_by_values(records)]
    if not rows:
        return ""
    return html_table(["model", "dataset", "layer", "core", "shortcut", "core accuracy",
                       "shortcut accuracy", "share following shortcut", "conflict rows"], rows,
                      digits=3, caption=esc("0.5 = no preference on conflict rows; 1 = the "
                                            "shortcut alone decides."))
