"""The ``alignment`` and ``similarity_matrix`` report sections, and the demo step's record
(with extraction stubbed out, so it runs in a second)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from repscope.align import evaluate_alignment
from repscope.db import Record

HOSTILE = "<script>alert(1)</script>"


def _alignment_record(model_b: str = "minilm-l3") -> Record:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 12))
    Y = X @ np.linalg.qr(rng.standard_normal((12, 12)))[0] + 0.3 * rng.standard_normal((200, 12))
    ev = evaluate_alignment(X, Y, sweep_ks=(1, 2, 4, 12), retrieval_ks=(1, 5))
    values = {**ev.record_values(), "model_a": "minilm-l6", "model_b": model_b,
              "layer_a": "encoder.layer.5", "layer_b": "461"}
    return Record("alignment", values, model=f"minilm-l6 vs {model_b}", dataset="austen",
                  params=ev.params)


def test_alignment_section_renders_metrics_gap_and_sweep() -> None:
    from repscope.report import render_html

    html = render_html([_alignment_record(HOSTILE)])
    assert "Maps between spaces (alignment)" in html
    assert "retrieval top-1" in html and "orthogonality gap" in html
    assert "Held-out retrieval against the subspace size k" in html
    assert "top-1, full orthogonal map" in html and "top-1, unmapped" in html
    assert HOSTILE not in html and "&lt;script&gt;" in html


def test_similarity_matrix_section_renders_heatmap_and_stats() -> None:
    from repscope.report import render_html

    values = {"matrix": np.array([[0.9, 0.2], [0.1, 0.7]]), "rows": ["l0", HOSTILE],
              "cols": ["m0", "m1"], "model_a": "A", "model_b": "B", "measure": "linear_cka",
              "higher_is_better": True, "n_samples": 100,
              "best_matches": [["l0", "m0", 0.9], [HOSTILE, "m1", 0.7]],
              "stats": [{"row": "l0", "col": "m0", "p_value": 0.001, "ci_low": 0.85,
                         "ci_high": 0.95}]}
    html = render_html([Record("similarity_matrix", values, model="A vs B", dataset="d",
                               params={"measure": "linear_cka"})])
    assert "Layer-to-layer similarity" in html
    assert "[0.85, 0.95]" in html and "permutation p" in html
    assert "<svg" in html and HOSTILE not in html


def test_fixed_sentences_are_distinct_and_deterministic() -> None:
    from repscope.align._demo import fixed_sentences

    a, b = fixed_sentences(400), fixed_sentences(400)
    assert a == b and len(set(a)) == 400
    assert len({s.split()[1] for s in a}) > 4  # varied subjects, not one template repeated


def test_demo_step_records_alignment_with_fallback_sentences(tmp_path, monkeypatch) -> None:
    import repscope.extract
    import repscope.zoo
    from repscope.db import ResultsDB
    from repscope.exceptions import DataNotFoundError

    rng = np.random.default_rng(1)
    base = rng.standard_normal((400, 16))
    q = np.linalg.qr(rng.standard_normal((16, 16)))[0]

    class Info:
        extra: ClassVar[dict[str, str]] = {"pooled_output": "461"}

    class Loaded:
        def __init__(self, name: str) -> None:
            self.name, self.info = name, Info()

    def fake_dataset(*_a, **_k):
        raise DataNotFoundError("austen is not installed")

    def fake_extract(model, texts, *, layers, **_k):
        assert len(texts) == 400
        feats = base if model.name == "minilm-l6" else base @ q + 0.1 * rng.standard_normal((400, 16))
        return {layers[0]: feats.astype(np.float32)}

    monkeypatch.setattr(repscope.zoo, "load_dataset", fake_dataset)
    monkeypatch.setattr(repscope.zoo, "load_model", Loaded)
    monkeypatch.setattr(repscope.extract, "extract", fake_extract)
    from repscope.align._demo import demo_alignment_step

    logs: list[str] = []
    with ResultsDB(tmp_path / "r.db") as db:
        run = db.start_run("demo", {}, model="m", dataset="d")
        from repscope._testing import demo_context

        db.add_many(demo_alignment_step(demo_context(db, run, seed=0, log=logs.append)))
        recs = list(db.query(analysis="alignment"))
    assert len(recs) == 1
    r = recs[0]
    assert r.dataset == "fixed sentences" and "not installed" in r.values["note"]
    # the note names the package, never a shell command (it is shown in the report)
    assert "r-cran-janeaustenr" in r.values["note"] and "apt-get" not in r.values["note"]
    assert r.values["retrieval"]["1"] > 0.95 > r.values["retrieval_unmapped"]["1"]
    assert r.values["sweep"]["ks"] == [4, 8, 16]  # k above the width (16) is dropped
    assert any("fixed template sentences" in m for m in logs)
    assert r.layer == "encoder.layer.5 -> sentence_embedding"
    assert pytest.approx(r.values["n_train"]) == 250
