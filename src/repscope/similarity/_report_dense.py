"""Report section ``dense_com``: the COM agreement table (DiveUp's dense relational measure),
one row per pair of layers, grouped by model pair and dataset. Renders stored records only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from repscope.db._records import RecordLike
from repscope.report._sections import Missing, esc, html_table, ordered_unique

_NO_SHUFFLE = Missing("needs at least two images")


def _num(v: Any, missing: Missing | None = None) -> Any:
    if v is None:
        return missing or Missing()
    return float(v)


def render_dense_com(records: Sequence[RecordLike]) -> str:
    """One table per (model pair, dataset): COM-field agreement, its shuffled-image baseline
    and the linear CKA of the features for each layer pair, with the artifact token counts."""
    out = []
    for model, dataset in ordered_unique((r.model, r.dataset) for r in records):
        mine = [r for r in records if (r.model, r.dataset) == (model, dataset)]
        rows = []
        for r in mine:
            v = r.values
            grid = v.get("grid") or []
            rows.append([
                str(v.get("layer_a", "")), str(v.get("layer_b", "")),
                "×".join(str(int(g)) for g in grid) or "—",
                int(v.get("n_images", 0)), int(v.get("n_positions", 0)),
                _num(v.get("com_agreement")),
                _num(v.get("com_agreement_shuffled"), _NO_SHUFFLE),
                _num(v.get("linear_cka")),
                _num(v.get("linear_cka_shuffled"), _NO_SHUFFLE),
                int(v.get("artifacts_a", 0)), int(v.get("artifacts_b", 0)),
            ])
        side_a, _, side_b = str(model).partition(" vs ")
        side_a, side_b = side_a or "A", side_b or "B"
        v0 = mine[0].values
        settings = (f"window {v0.get('window')}, τ = {v0.get('tau')}, artifact threshold "
                    f"{v0.get('artifact_threshold')}× the window's median norm")
        caption = f"{model}" + (f" on {dataset}" if dataset else "") + f" ({settings})"
        table = html_table(
            [f"{side_a} layer", f"{side_b} layer", "common grid", "images", "positions / image",
             "same images", "shuffled images", "same images", "shuffled images", side_a, side_b],
            rows, caption=caption, digits=3,
            header_groups=[("layers", 5), ("COM agreement", 2), ("linear CKA", 2),
                           ("high-norm tokens", 2)])
        note = ("COM agreement: cosine between the two models' local centre-of-mass fields "
                "(where each patch's look-alikes lie) on interior positions free of high-norm "
                "tokens. Linear CKA compares the features themselves on the same positions, "
                "each a sample. Each measure's shuffled-images column pairs image i of one "
                "model with image i+1 of the other: the level unrelated images reach.")
        out.append(f'<div class="block">{table}<p class="note">{esc(note)}</p></div>')
    return "".join(out)
