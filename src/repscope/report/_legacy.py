"""Renderers for records of retired analyses, so databases written before they were retired
still render.

``separability`` (a scikit-learn logistic regression per layer, replaced by the ``probe``
analysis of :func:`repscope.probe.probe_layers`) and ``cka`` (a hand-built linear-CKA layer map,
replaced by ``similarity_matrix`` from :func:`repscope.similarity.compare_layers`). Each old
record is shown through the section of the analysis that replaced it, labelled as retired;
nothing is recomputed (the best match per row of an old CKA map is read off its matrix, as the
old section did).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repscope.db._records import RecordLike
from repscope.results import make_record

__all__ = ["render_legacy_cka", "render_legacy_separability"]

#: What replaced each retired analysis (shown in the section and by the retired commands).
RETIRED = {
    "separability": "repscope probe FEATURES --labels label --probe logistic",
    "cka": "repscope similarity FEATURES_A FEATURES_B --measure linear_cka",
}


def _note(analysis: str, replacement: str) -> str:
    from repscope.report._sections import esc

    text = (f"Records of the retired analysis {analysis!r}, shown as {replacement!r} shows "
            f"them. Today: {RETIRED[analysis]}.")
    return f'<p class="note">{esc(text)}</p>'


def render_legacy_cka(records: Sequence[RecordLike]) -> str:
    """Old ``cka`` records through the ``similarity_matrix`` section."""
    from repscope.similarity._report import render_similarity_matrix

    shown = []
    for r in records:
        v = dict(r.values)
        m = np.asarray(v.get("matrix", np.empty((0, 0))), dtype=float)
        cols = [str(c) for c in (v.get("cols") or range(m.shape[1] if m.ndim == 2 else 0))]
        rows = [str(c) for c in (v.get("rows") or range(m.shape[0] if m.ndim == 2 else 0))]
        best = []
        if m.ndim == 2 and m.size:
            for i, name in enumerate(rows):
                if np.isfinite(m[i]).any():
                    j = int(np.nanargmax(m[i]))
                    best.append([name, cols[j], float(m[i, j])])
        v.update(measure="linear_cka", higher_is_better=True, symmetric=False,
                 best_matches=best, stats=[])
        shown.append(make_record("similarity_matrix", v, model=r.model, dataset=r.dataset,
                                 layer=r.layer, run_id=r.run_id,
                                 params={**dict(r.params or {}), "measure": "linear_cka"}))
    return _note("cka", "similarity_matrix") + render_similarity_matrix(shown)


def render_legacy_separability(records: Sequence[RecordLike]) -> str:
    """Old ``separability`` records through the ``probe`` section (as a logistic probe
    without intervals)."""
    from repscope.probe._report import render_probe

    shown = []
    for r in records:
        v = dict(r.values)
        v.setdefault("ci_low", float("nan"))
        v.setdefault("ci_high", float("nan"))
        params = {**dict(r.params or {}), "probe": "logistic (retired separability)"}
        shown.append(make_record("probe", v, model=r.model, dataset=r.dataset, layer=r.layer,
                                 params=params, run_id=r.run_id))
    return _note("separability", "probe") + render_probe(shown)
