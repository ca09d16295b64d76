"""``repscope concepts`` end to end (CliRunner on small feature files), every concepts report
section (result -> records -> database -> HTML) and the demo step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from repscope.capability import section_for
from repscope.cli import cli
from repscope.db import ResultsDB
from repscope.report import fmt, render_report


def _run(args, db):
    return CliRunner().invoke(cli, ["--db", str(db), "--no-progress", "concepts", *args])


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    """Two layers of 600 samples; concept a (2 values) and b (3 values) are planted additively
    in the late layer, the early layer is noise."""
    from safetensors.numpy import save_file

    d = tmp_path_factory.mktemp("feats")
    rng = np.random.default_rng(0)
    n = 600
    a, b = rng.integers(0, 2, n), rng.integers(0, 3, n)
    ua, ub = rng.standard_normal((2, 12)) * 2, rng.standard_normal((3, 12)) * 2
    late = (ua[a] + ub[b] + 0.5 * rng.standard_normal((n, 12))).astype(np.float32)
    early = rng.standard_normal((n, 6)).astype(np.float32)
    save_file({"early": early, "late": late}, str(d / "f.safetensors"))
    np.save(d / "a.npy", a)
    np.save(d / "b.npy", b)
    return d, a, b


def test_erase_command_leace_reaches_chance_and_records(feats, tmp_path):
    d, _, _ = feats
    db = tmp_path / "r.db"
    res = _run(["erase", str(d / "f.safetensors"), "--labels", str(d / "a.npy"), "--layer",
                "late", "--json"], db)
    assert res.exit_code == 0, res.output
    out = {e["method"]: e for e in json.loads(res.output)}
    assert out["leace"]["accuracy_before"] > 0.9
    assert abs(out["leace"]["accuracy_after"] - out["leace"]["chance"]) < 0.05
    with ResultsDB(db) as dbh:
        assert {r.values["method"] for r in dbh.query(analysis="concepts_erasure")} == {
            "leace", "inlp"}


def test_directions_and_factorize_commands(feats, tmp_path):
    d, _, _ = feats
    db = tmp_path / "r.db"
    res = _run(["directions", str(d / "f.safetensors"), "--labels", str(d / "a.npy"),
                "--layer", "late", "--n-random", "10", "--json"], db)
    assert res.exit_code == 0, res.output
    e = json.loads(res.output)[0]
    assert e["auc_probe"] > 0.9 and e["positive"] == "1"
    res = _run(["factorize", str(d / "f.safetensors"), "--concept", f"a={d / 'a.npy'}",
                "--concept", f"b={d / 'b.npy'}", "--layer", "late", "--json"], db)
    assert res.exit_code == 0, res.output
    f = json.loads(res.output)[0]
    assert f["r2"] > 0.9 and f["binding"] < 0.05  # additive by construction
    with ResultsDB(db) as dbh:
        html = render_report(dbh, tmp_path / "r.html").read_text()
    assert 'id="sec-concepts-directions"' in html and 'id="sec-concepts-factorization"' in html
    assert fmt(f["r2"], 3) in html


def test_das_command_small(tmp_path):
    res = _run(["das", "--map", "rotation", "--hidden", "16", "--n-pairs", "1500",
                "--no-control", "--json"], tmp_path / "r.db")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert {r["model"] for r in rows} == {"trained"} and {r["map"] for r in rows} == {"rotation"}
    assert all(0 <= r["iia_heldout"] <= 1 for r in rows)


@pytest.mark.parametrize(("args", "message"), [
    (["erase", "{d}/f.safetensors", "--labels", "{d}/a.npy", "--layer", "lat"], "lat"),
    (["factorize", "{d}/f.safetensors", "--concept", "a={d}/a.npy"],
     "--concept must be given at least twice"),
    (["erase", "{d}/f.safetensors", "--labels", "{d}/missing.npy"], "missing.npy"),
])
def test_concepts_command_errors_are_one_line(feats, tmp_path, args, message):
    d, _, _ = feats
    res = _run([s.format(d=d) for s in args], tmp_path / "r.db")
    assert res.exit_code != 0
    assert message in res.output, res.output
    assert "Traceback" not in res.output


def _results():
    """One result of every concepts analysis, small and fast (the costly ones built directly
    from their fields)."""
    from repscope.concepts._attention import attention_metrics
    from repscope.concepts._cam import CAMResult
    from repscope.concepts._das import DASResult
    from repscope.concepts._directions import concept_directions
    from repscope.concepts._erasure import erasure
    from repscope.concepts._factorization import linear_factorization
    from repscope.concepts._linearscope import linear_scope
    from repscope.concepts._obsprop import ObsPropResult
    from repscope.concepts._steering import SteeringResult
    from repscope.concepts._updates import layer_updates

    rng = np.random.default_rng(1)
    n = 300
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    X = rng.standard_normal((n, 8)) + 2 * np.eye(8)[a] + 2 * np.eye(8)[4 + b]
    T = 6
    att = np.tril(np.ones((T, T)))
    att = np.broadcast_to(att / att.sum(1, keepdims=True), (2, 3, T, T)).copy()
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    h0 = rng.standard_normal((400, 6))
    hidden = {"l0": h0, "l1": h0 + np.tanh(h0 @ rng.standard_normal((6, 6)))}
    return [
        erasure(X, a, random_state=0),
        concept_directions(X, a, n_random=5, n_random_directions=50),
        linear_factorization(X, {"a": a, "b": b}),
        attention_metrics([att, att]),
        linear_scope(mlp, torch.randn(5, 4)),
        layer_updates(hidden, maps=("mean", "global", "diagonal"), rank=4, k=16, pca_k=3),
        SteeringResult("model.layers.3", " she", 42, (0.0, 1.0, 2.0), (-9.0, -6.0, -4.5),
                       (0.0, 0.5, 2.0), (-9.0, -8.9, -8.8), (0.0, 0.4, 1.9), -9.0, -12.0, 0.3,
                       50.0, 4, 3, "all"),
        DASResult(("hidden1",) * 2, ("rotation", "revnet"), ("trained", "random-init"),
                  (32, 32), (0.99, 0.93), (0.98, 0.91), (100, 100), (50, 50), (0.5, 0.5),
                  (0.998, 0.5)),
        CAMResult(**_cam_fields()),
        ObsPropResult(("model.layers.0.self_attn", "model.layers.1.self_attn"), "' she' - ' he'",
                      "", np.array([[1.0, 3.0], [2.5, 0.5]]), np.ones((2, 2)), np.ones((2, 2)),
                      ((0, 1), (1, 0)), None, np.eye(2), np.array([[0.1, 0.9], [0.8, 0.0]]),
                      ((0, 1), (1, 0)), 2, "normalised input"),
    ]


def _cam_fields():
    return {"layer": "_blocks.10", "method": "cam", "area": 0.2, "fill": "min",
            "maps": np.zeros((200, 4, 4)), "accuracy": 0.95, "accuracy_critical_masked": 0.575,
            "accuracy_shifted_masked": 0.83, "accuracy_noncritical_masked": 0.845}


def test_every_concepts_result_round_trips_into_its_report_section(tmp_path):
    results = _results()
    with ResultsDB(tmp_path / "r.db") as db:
        for res in results:
            db.add_many(res.to_records(model="m", dataset="d"))
        html = render_report(db, tmp_path / "r.html").read_text()
    analyses = {type(r).analysis for r in results}
    for analysis in analyses:
        assert section_for(analysis) is not None, analysis
        assert f'id="sec-{analysis.replace("_", "-")}"' in html, analysis
    assert "could not be rendered" not in html
    leace = next(v for _, v in results[0].record_rows() if v["method"] == "leace")
    assert fmt(leace["accuracy_before"], 4) in html
    assert fmt(-4.5, 3) in html  # a steering log-prob
    assert fmt(0.91, 3) in html  # the RevNet IIA of the random-init control
    assert "2 of the top 2 are also among the top 2 by direct logit attribution" in html


def test_demo_step_records_directions_erasure_and_attention(tmp_path, monkeypatch):
    from repscope.capability import DemoContext
    from repscope.concepts import _demo

    rng = np.random.default_rng(2)
    n = 200
    y = np.arange(n) % 10

    class Store:
        def layer_info(self, layer):
            from types import SimpleNamespace

            return SimpleNamespace(shape_tail=(8,) if layer == "b1" else (1000,))

        def read(self, layer):
            width = 8 if layer == "b1" else 1000
            return (rng.standard_normal((n, width)) + (y % 2)[:, None]).astype(np.float32)

    monkeypatch.setattr(_demo, "_attention_records", lambda ctx: [])
    ctx = DemoContext(stores={"toy": Store()}, layers={"toy": ["b0", "b1", "b2"]}, labels=y,
                      label_names=[str(i) for i in range(10)], inputs=None, ids=[],
                      dataset="digits", db=None, run_id="r", seed=0, log=lambda m: None,
                      out=tmp_path)
    recs = _demo.demo_concepts_step(ctx)
    assert {r.layer for r in recs} == {"b1"}  # the deepest layer of at most 512 features
    assert {r.analysis for r in recs} == {"concepts_directions", "concepts_erasure"}
    leace = next(r for r in recs if r.values.get("method") == "leace")
    assert abs(leace.values["accuracy_after"] - leace.values["chance"]) < 0.05


@pytest.mark.real
def test_directions_and_leace_on_smollm2_residual_stream_tokens(smollm2_austen_pairs):
    """Where a token sits in its paragraph (its first 24 tokens or later), in SmolLM2's residual
    stream (layer 14, every token but each paragraph's attention sink): the CAV beats random
    concept sets, and LEACE takes a fresh probe to chance on held-out tokens. (The novel a
    token comes from is barely decodable from one token's residual: probe accuracy under the
    majority share.)"""
    from repscope.concepts._directions import concept_directions
    from repscope.concepts._erasure import erasure

    rag = smollm2_austen_pairs.extra["ragged"]["model.layers.14"]
    off = np.asarray(rag.offsets)
    seq = np.repeat(np.arange(len(off) - 1), np.diff(off))
    pos = np.arange(len(seq)) - off[seq]
    keep = pos > 0  # the attention sink (norm ~2e4) would dominate every fit
    X = np.asarray(rag.values, dtype=np.float64)[keep]
    concept = np.where(pos[keep] < 24, "early", "late")
    d = concept_directions(X, concept, positive="early", n_random=10, n_random_directions=100)
    v = d.record_rows()[0][1]
    print(f"\nSmolLM2 L14 early vs late tokens, {len(X)} tokens: AUC probe {v['auc_probe']:.3f} "
          f"CAV {v['auc_cav']:.3f} p(random concepts) {v['p_random_concepts']:.3f}")
    assert v["auc_cav"] > v["null_concepts_q95"] and v["p_random_concepts"] < 0.1
    e = dict(erasure(X, concept, methods=["leace"]).record_rows())
    leace = next(iter(e.values()))
    print(f"LEACE: probe {leace['accuracy_before']:.3f} -> {leace['accuracy_after']:.3f} "
          f"(chance {leace['chance']:.3f})")
    assert leace["accuracy_before"] > leace["chance"] + 0.05
    assert abs(leace["accuracy_after"] - leace["chance"]) < 0.02
