"""Report sections of the weight-space analyses (found through
:mod:`repscope.weights._capability`).

* ``weights_barrier``: the loss along each linear path (its excess over the chord, so the
  barrier is the curve's maximum) for every pair and label (naive, after weight matching, ...),
  and a table of barriers.
* ``weights_layer_barrier``: one barrier per block and label.
* ``weights_alignment``: per weight, the distance ratio, singular values and singular-vector
  alignment before/after, CKA and unit correlations.
* ``weights_task_vectors``: the task-vector cosine matrix, norms and sign-conflict rate.
* ``weights_merge``: every merge method on every task, against the task's own fine-tune and
  the base.
* ``weights_redundancy``: units before/after iterative feature merging and the
  feature-complexity curve.
* ``weights_atlas``: learned block-wise coefficients against the best single coefficient.

Renderers only format stored records; nothing is recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._common import as_float, by_series, cell, floats, latest_by_values, missing
from repscope.report._sections import esc, figure, html_table, ordered_unique
from repscope.report._svg import heatmap, line_chart

__all__ = [
    "render_atlas",
    "render_barrier",
    "render_layer_barrier",
    "render_merge",
    "render_redundancy",
    "render_task_vectors",
    "render_weights_alignment",
]


def _label(r: RecordLike) -> str:
    return str(r.values.get("label") or "(unlabelled)")


def render_barrier(records: Sequence[RecordLike]) -> str:
    """Loss along the linear path of each pair (excess over the chord) and the barriers."""
    parts: list[str] = []
    for name, rs in by_series(latest_by_values(records, "label")).items():
        series = {}
        rows = []
        for r in rs:
            v = r.values
            series[_label(r)] = (floats(v.get("alphas")), floats(v.get("excess")))
            rows.append([_label(r), cell(r, "barrier"), cell(r, "barrier_alpha"),
                         cell(r, "midpoint_excess", "0.5 not on the grid"),
                         cell(r, "accuracy_barrier", "no accuracy"), cell(r, "loss_a"),
                         cell(r, "loss_b"), cell(r, "accuracy_a", "no accuracy"),
                         cell(r, "accuracy_b", "no accuracy"),
                         "yes" if v.get("reset_bn") else "no"])
        parts.append(f"<h4>{esc(name)}</h4>")
        parts.append(figure(line_chart(
            series, title=f"Loss above the chord along the linear path: {name}",
            x_label="alpha (0 = model A, 1 = model B)",
            y_label="L(alpha) - [(1-alpha) L(A) + alpha L(B)]"),
            "The barrier is the maximum of each curve; 0 at both ends. Below 0: the "
            "interpolated model is better than the chord."))
        parts.append(html_table(
            ["pair", "loss barrier", "at alpha", "excess at 0.5", "accuracy barrier",
             "loss A", "loss B", "accuracy A", "accuracy B", "BatchNorm reset"],
            rows, caption=f"Barriers of {name} (accuracy barrier: the largest drop of accuracy "
            "below the chord)", digits=4))
    return "\n".join(parts)


def render_layer_barrier(records: Sequence[RecordLike]) -> str:
    """One barrier per block (only that block interpolated), per pair label."""
    parts: list[str] = []
    for name, rs in by_series(latest_by_values(records, "label")).items():
        labels = ordered_unique(_label(r) for r in rs)
        blocks = ordered_unique(r.layer for r in rs)
        at = {(_label(r), r.layer): r for r in rs}
        rows = []
        for blk in blocks:
            row: list[Any] = [blk]
            for lab in labels:
                r = at.get((lab, blk))
                row.append(cell(r, "barrier") if r is not None else missing(None, "not run"))
            rows.append(row)
        parts.append(html_table(
            ["block", *labels], rows, digits=4,
            caption=f"{name}: loss barrier when only one block moves from A to B (the "
            "others stay at A)"))
    return "\n".join(parts)


def render_weights_alignment(records: Sequence[RecordLike]) -> str:
    """Per weight: what the alignment changed and what it could not."""
    keys = [("distance_ratio", "distance ratio"), ("sv_alignment_before", "SV alignment before"),
            ("sv_alignment_after", "SV alignment after"),
            ("max_sigma_diff_before", "max |Δσ| before"),
            ("max_sigma_diff_after", "max |Δσ| after"),
            ("unit_corr_before", "unit corr. before"), ("unit_corr_after", "unit corr. after"),
            ("cka_before", "CKA before"), ("cka_after", "CKA after")]
    parts: list[str] = []
    for name, rs in by_series(latest_by_values(records)).items():
        rows = [[r.layer, *(cell(r, k, "not measured") for k, _ in keys)] for r in rs]
        parts.append(html_table(
            ["weight", *(h for _, h in keys)], rows, digits=4,
            caption=f"{name}: distance ratio ||A - π(B)|| / ||A - B||; singular values are "
            "unchanged by a permutation (the two max |Δσ| columns agree); σ-weighted top-k "
            "singular-vector alignment and unit correlations rise; linear CKA is "
            "permutation-invariant (a check)"))
    return "\n".join(parts)


def render_task_vectors(records: Sequence[RecordLike]) -> str:
    """The cosine matrix of task vectors, their norms and the sign-conflict rate."""
    parts: list[str] = []
    for name, rs in by_series(latest_by_values(records)).items():
        r = rs[-1]
        names = [str(n) for n in r.values.get("names") or []]
        cos = np.asarray([floats(row) for row in r.values.get("cosines") or []])
        norms = floats(r.values.get("norms"))
        if cos.size:
            parts.append(figure(heatmap(cos, title="Task-vector cosines",
                                        row_labels=names, col_labels=names, vmin=-1, vmax=1,
                                        colour_label="cosine", max_width=520)))
        rows = [[n, *(cos[i] if cos.size else []), norms[i] if i < norms.size else np.nan]
                for i, n in enumerate(names)]
        parts.append(html_table(
            ["task vector", *names, "L2 norm"], rows, digits=3,
            caption=f"{name}: cosines between task vectors (0 = orthogonal); sign-conflict "
            f"rate {as_float(r.values.get('sign_conflict_rate')):.3f} (share of coordinates "
            "where the non-zero entries disagree in sign)"))
    return "\n".join(parts)


def render_merge(records: Sequence[RecordLike]) -> str:
    """Each merge method on each task, beside the task's fine-tune and the base."""
    parts: list[str] = []
    for name, rs in by_series(latest_by_values(records, "task")).items():
        rows = [[str(r.values.get("method", r.layer)), str(r.values.get("task", "")),
                 cell(r, "accuracy_after"), cell(r, "accuracy_before"),
                 cell(r, "accuracy_base", "no base"), cell(r, "loss_after"),
                 cell(r, "loss_before"), cell(r, "loss_base", "no base"),
                 str(r.values.get("params", ""))] for r in rs]
        parts.append(html_table(
            ["method", "task", "accuracy merged", "accuracy fine-tune", "accuracy base",
             "loss merged", "loss fine-tune", "loss base", "parameters"], rows, digits=4,
            caption=f"{name}: one merged model per method, evaluated on every task's "
            "held-out data"))
    return "\n".join(parts)


def render_redundancy(records: Sequence[RecordLike]) -> str:
    """Units merged as functionally equivalent, and the feature-complexity curve."""
    parts: list[str] = []
    for name, rs in by_series(latest_by_values(records)).items():
        rows = [[r.layer, cell(r, "beta"), cell(r, "units_before"), cell(r, "units_after"),
                 cell(r, "fraction_removed"), cell(r, "accuracy_before", "no data"),
                 cell(r, "accuracy_after", "no data")] for r in rs]
        parts.append(html_table(
            ["layer", "beta", "units before", "units after", "fraction removed",
             "accuracy before", "accuracy after"], rows, digits=4,
            caption=f"{name}: iterative merging of functionally equivalent ReLU units "
            "(normalised incoming weights closer than beta)"))
        series = {r.layer: (floats(r.values.get("curve_betas")),
                            floats(r.values.get("curve_units"))) for r in rs
                  if r.values.get("curve_betas")}
        if series:
            parts.append(figure(line_chart(series, title=f"Feature complexity: {name}",
                                           x_label="beta", y_label="units left")))
    return "\n".join(parts)


def render_atlas(records: Sequence[RecordLike]) -> str:
    """aTLAS: learned coefficients against the best single coefficient, held out."""
    parts: list[str] = []
    for name, rs in by_series(latest_by_values(records, "mode")).items():
        rows = [[str(r.values.get("mode", "")), cell(r, "learned_acc"), cell(r, "learned_loss"),
                 cell(r, "isotropic_lambda"), cell(r, "isotropic_acc"), cell(r, "isotropic_loss"),
                 cell(r, "base_acc"), cell(r, "n_train"), cell(r, "n_eval")] for r in rs]
        parts.append(html_table(
            ["coefficients", "held-out accuracy", "held-out loss", "best single λ",
             "its accuracy", "its loss", "base accuracy", "trained on", "held out"], rows,
            digits=4, caption=f"{name}: task vectors composed with learned coefficients "
            "(aTLAS) vs the best single coefficient of a grid"))
    return "\n".join(parts)
