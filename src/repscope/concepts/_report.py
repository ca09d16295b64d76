"""Report sections of concepts and interventions (found through
:mod:`repscope.concepts._capability`). Renderers only format stored records; nothing is
recomputed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._common import as_float, by_series, cell, floats, latest_by_values
from repscope.report._sections import esc, figure, html_table, ordered_unique
from repscope.report._svg import heatmap, line_chart

__all__ = ["render_attention", "render_cam", "render_das", "render_directions", "render_erasure",
           "render_factorization", "render_layer_updates", "render_local_linear",
           "render_obsprop", "render_steering"]


def _dict_text(value: Any, digits: int = 3) -> str:
    if not isinstance(value, dict):
        return "—"
    return ", ".join(f"{k}: {as_float(v):.{digits}f}" if isinstance(v, (int, float, str))
                     and not isinstance(v, bool) else f"{k}: {v}" for k, v in value.items())


def render_factorization(records: Sequence[RecordLike]) -> str:
    """R², binding, ranks and held-out-combination accuracy per layer."""
    parts = []
    for name, rs in by_series(latest_by_values(records)).items():
        rows = [[r.layer, ", ".join(map(str, r.values.get("concepts") or [])), cell(r, "r2"),
                 cell(r, "r2_whitened"), cell(r, "binding"), cell(r, "cross_abs_cos"),
                 cell(r, "within_abs_cos"), cell(r, "probe_span_r2"),
                 _dict_text(r.values.get("k95"), 0),
                 _dict_text(r.values.get("heldout_accuracy")),
                 _dict_text(r.values.get("chance"))] for r in rs]
        parts.append(html_table(
            ["layer", "concepts", "R²", "R² whitened", "binding", "cross-concept |cos|",
             "within-concept |cos|", "probe-span R²", "k95 ranks",
             "probe accuracy, unseen combinations", "chance"], rows, digits=3,
            caption=f"{name}: linear, orthogonal concepts give R² near 1, cross |cos| near 0 "
            "and held-out-combination accuracy well above chance"))
    return "\n".join(parts)


def render_directions(records: Sequence[RecordLike]) -> str:
    """AUC of each direction, their cosines and the CAV's p-values."""
    parts = []
    for name, rs in by_series(latest_by_values(records, "positive")).items():
        rows = [[r.layer, str(r.values.get("positive", "")), cell(r, "auc_mean_difference"),
                 cell(r, "auc_probe"), cell(r, "auc_cav"), cell(r, "cos_mean_difference_probe"),
                 cell(r, "cos_probe_cav"), cell(r, "p_random_directions"),
                 cell(r, "p_random_concepts"), cell(r, "null_concepts_q95")] for r in rs]
        parts.append(html_table(
            ["layer", "concept", "AUC means", "AUC probe", "AUC CAV", "cos(means, probe)",
             "cos(probe, CAV)", "CAV p (random directions)", "CAV p (random concepts)",
             "null AUC 95th pct"], rows, digits=3,
            caption=f"{name}: held-out AUC of each direction's projection; a CAV is significant "
            "when its p-value against random concept sets is small"))
    return "\n".join(parts)


def render_erasure(records: Sequence[RecordLike]) -> str:
    """Probe accuracy before/after erasure against chance, and the distance moved."""
    parts = []
    for name, rs in by_series(latest_by_values(records, "method")).items():
        rows = [[r.layer, str(r.values.get("method", "")), cell(r, "accuracy_before"),
                 cell(r, "accuracy_after"), cell(r, "chance"), cell(r, "relative_distance"),
                 cell(r, "rank_removed"), cell(r, "n_test")] for r in rs]
        parts.append(html_table(
            ["layer", "method", "probe accuracy before", "after", "chance",
             "relative distance moved", "directions removed", "test samples"], rows, digits=4,
            caption=f"{name}: erasure succeeds when 'after' is at chance; the smaller the "
            "distance moved, the less else changed"))
    return "\n".join(parts)


def _mean(values: Any) -> float:
    """Mean of a stored per-head list, NaN entries left out (NaN when none is finite)."""
    a = floats(values)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def render_attention(records: Sequence[RecordLike]) -> str:
    """Attention metrics per layer (mean over heads), with charts by depth."""
    parts = []
    for name, rs in by_series(latest_by_values(records)).items():
        layers = [r.layer for r in rs]
        x = np.arange(len(rs))
        alloc = []
        for r in rs:
            a = r.values.get("allocation")
            names = r.values.get("group_names") or []
            # share of the second group's attention that goes to the first group, mean over heads
            if a and len(names) >= 2:
                alloc.append(float(np.mean([as_float(h[1][0]) for h in a])))
            else:
                alloc.append(float("nan"))
        unit = str(rs[0].values.get("distance_unit") or "tokens")
        parts.append(figure(line_chart(
            {"mean attention distance": (x, floats([r.values.get("mean_distance") for r in rs]))},
            title=f"Mean attention distance by layer: {name}", x_label="layer",
            y_label=unit, x_tick_labels=layers)))
        parts.append(figure(line_chart(
            {"normalised entropy": (x, np.asarray([_mean(r.values.get("entropy_norm"))
                                                    for r in rs])),
             "query-key NMI": (x, floats([r.values.get("mean_nmi") for r in rs])),
             "2nd half -> 1st half": (x, np.asarray(alloc))},
            title=f"Entropy, query-key NMI and attention allocation: {name}", x_label="layer",
            x_tick_labels=layers, y_range=(0, 1))))
        rows = [[r.layer, cell(r, "mean_distance"), cell(r, "mean_entropy"), cell(r, "mean_nmi"),
                 cell(r, "head_diversity"), cell(r, "head_js"), alloc[i], cell(r, "n_heads"),
                 cell(r, "n_tokens")] for i, r in enumerate(rs)]
        parts.append(html_table(
            ["layer", f"mean distance ({unit})", "mean entropy (nats)", "mean QK NMI",
             "head diversity (std of distance)", "head JS divergence",
             "attention 2nd half -> 1st", "heads", "tokens"], rows, digits=3,
            caption=f"{name}: attention metrics, mean over heads"))
    return "\n".join(parts)


def render_obsprop(records: Sequence[RecordLike]) -> str:
    """Head feature-vector norms (layer x head), the top heads and their DLA overlap."""
    parts = []
    for name, rs in by_series(latest_by_values(records, "observable")).items():
        for obs in ordered_unique(str(r.values.get("observable", "")) for r in rs):
            sub = [r for r in rs if str(r.values.get("observable", "")) == obs]
            norms = [floats(r.values.get("head_norm")) for r in sub]
            width = max((len(n) for n in norms), default=0)
            mat = np.full((len(sub), width), np.nan)
            for i, n in enumerate(norms):
                mat[i, :len(n)] = n
            parts.append(figure(heatmap(
                mat, title=f"ObsProp feature-vector norm per head: {name}, observable {obs}",
                row_labels=[r.layer for r in sub], col_labels=[str(h) for h in range(width)],
                row_title="layer", col_title="head", colour_label="||y||")))
            top = []
            for r in sub:
                for h, rank in enumerate(r.values.get("top_rank") or []):
                    if rank is not None:
                        dr = (r.values.get("dla_rank") or [None] * (h + 1))[h]
                        top.append((int(rank), r.layer, h, as_float(norms[sub.index(r)][h]),
                                    "—" if dr is None else int(dr) + 1))
            top.sort()
            overlap = sub[0].values.get("top_overlap")
            k = sub[0].values.get("top_k")
            parts.append(html_table(
                ["rank", "layer", "head", "||y||", "rank by direct logit attribution"],
                [[rk + 1, layer, h, v, d] for rk, layer, h, v, d in top], digits=4,
                caption=f"{name}: top heads for {esc(obs)}"
                + ("" if overlap is None else f"; {overlap} of the top {k} are also among the "
                   f"top {k} by direct logit attribution on the prompts")))
    return "\n".join(parts)


def render_steering(records: Sequence[RecordLike]) -> str:
    """Target log-prob and KL against the coefficient, beside a random direction."""
    parts = []
    for name, rs in by_series(latest_by_values(records, "coefficient", "target_token")).items():
        for layer in ordered_unique(r.layer for r in rs):
            for target in ordered_unique(str(r.values.get("target_token", "")) for r in rs):
                sub = sorted((r for r in rs if r.layer == layer
                              and str(r.values.get("target_token", "")) == target),
                             key=lambda r: as_float(r.values.get("coefficient")))
                c = floats([r.values.get("coefficient") for r in sub])
                parts.append(figure(line_chart(
                    {"concept direction": (c, floats([r.values.get("target_logprob")
                                                      for r in sub])),
                     "random direction, same norm": (c, floats(
                         [r.values.get("random_target_logprob") for r in sub]))},
                    title=f"Steering {name} at {layer}: log p({target})",
                    x_label="coefficient", y_label="target-token log-probability"),
                    f"Ablating the direction gives "
                    f"{as_float(sub[0].values.get('ablation_target_logprob')):.3f} "
                    f"(unsteered {as_float(sub[0].values.get('clean_target_logprob')):.3f})."))
                rows = [[cell(r, "coefficient"), cell(r, "target_logprob"),
                         cell(r, "random_target_logprob"), cell(r, "kl"), cell(r, "random_kl")]
                        for r in sub]
                parts.append(html_table(
                    ["coefficient", "target log-prob", "random direction", "KL from unsteered",
                     "KL random"], rows, digits=3,
                    caption=f"{name} at {layer}: steering towards {esc(target)}"))
    return "\n".join(parts)


def render_das(records: Sequence[RecordLike]) -> str:
    """IIA per map on the trained model and on its random-init control."""
    parts = []
    for name, rs in by_series(latest_by_values(records, "map", "model", "k")).items():
        rows = [[str(r.values.get("map", "")), str(r.values.get("model", "")), r.layer,
                 cell(r, "k"), cell(r, "iia_heldout"), cell(r, "iia_train"),
                 cell(r, "model_accuracy"), cell(r, "chance")] for r in rs]
        parts.append(html_table(
            ["map", "model", "layer", "k", "IIA held-out", "IIA train", "model task accuracy",
             "chance"], rows, digits=3,
            caption=f"{name}: interchange-intervention accuracy; a map that reaches a high IIA "
            "on the random-init model computes the variable itself (the non-linear "
            "representation dilemma)"))
    return "\n".join(parts)


def render_local_linear(records: Sequence[RecordLike]) -> str:
    """LinearScope: the bias share of piecewise-linear modules."""
    parts = []
    for name, rs in by_series(latest_by_values(records, "method")).items():
        rows = [[r.layer or "(model)", str(r.values.get("method", "")),
                 "yes" if r.values.get("piecewise_linear") else "no",
                 cell(r, "bias_share_median"), cell(r, "bias_fraction_median"),
                 cell(r, "class_bias_share_median"), cell(r, "reconstruction_error"),
                 cell(r, "n_samples")] for r in rs]
        parts.append(html_table(
            ["module", "method", "piecewise linear", "bias share ||c|| / ||f||",
             "||c|| / (||Ax|| + ||c||)", "top-class bias share", "reconstruction error",
             "samples"], rows, digits=4,
            caption=f"{name}: f(x) = A(x) x + c(x) with the gates frozen"))
    return "\n".join(parts)


def render_layer_updates(records: Sequence[RecordLike]) -> str:
    """How well restricted maps predict each layer's update, held out."""
    parts = []
    for name, rs in by_series(latest_by_values(records, "map")).items():
        layers = ordered_unique(r.layer for r in rs)
        maps = ordered_unique(str(r.values.get("map", "")) for r in rs)
        at = {(r.layer, str(r.values.get("map", ""))): r for r in rs}
        x = np.arange(len(layers))
        series = {m: (x, np.asarray([as_float(at[(layer, m)].values.get("cos_median"))
                                     if (layer, m) in at else np.nan for layer in layers]))
                  for m in maps}
        parts.append(figure(line_chart(
            series, title=f"Held-out median cosine of predicted and true layer updates: {name}",
            x_label="layer", x_tick_labels=layers, y_range=(0, 1))))
        rows = [[layer, *(cell(at[(layer, m)], "spearman_median") if (layer, m) in at
                          else np.nan for m in maps)] for layer in layers]
        parts.append(html_table(["layer", *maps], rows, digits=3,
                                caption=f"{name}: held-out median Spearman by map"))
    return "\n".join(parts)


def render_cam(records: Sequence[RecordLike]) -> str:
    """Probe accuracy with the critical region, the same region shifted, or the rest masked."""
    parts = []
    for name, rs in by_series(latest_by_values(records, "method")).items():
        rows = [[r.layer, str(r.values.get("method", "")), cell(r, "area"), cell(r, "accuracy"),
                 cell(r, "accuracy_critical_masked"), cell(r, "accuracy_shifted_masked"),
                 cell(r, "accuracy_noncritical_masked"), cell(r, "n_samples")] for r in rs]
        parts.append(html_table(
            ["layer", "map", "area masked", "accuracy", "critical masked", "same area shifted",
             "non-critical masked", "images"], rows, digits=3,
            caption=f"{name}: a class activation map finds the evidence when masking its "
            "critical region drops accuracy more than masking the same area elsewhere"))
    return "\n".join(parts)
