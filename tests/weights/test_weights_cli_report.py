"""``repscope weights`` end to end (CliRunner on checkpoints trained here), the weight-space
report sections (result -> records -> database -> HTML) and the demo step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from repscope.capability import section_for
from repscope.cli import cli
from repscope.db import ResultsDB
from repscope.report import fmt, render_report


def _run(args, db):
    return CliRunner().invoke(cli, ["--db", str(db), "--no-progress", "weights", *args])


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Two digits MLPs 64-32-32-10 (seeds 1, 2) written by ``train-digits``."""
    d = tmp_path_factory.mktemp("ck")
    res = _run(["train-digits", "--out", str(d), "--width", "32", "--epochs", "8"], d / "r.db")
    assert res.exit_code == 0, res.output
    a, b = d / "digits-mlp-32-seed1.safetensors", d / "digits-mlp-32-seed2.safetensors"
    assert a.is_file() and b.is_file()
    return a, b


def _mlp(path):
    from repscope.weights._toy import mlp_from_state_dict

    return mlp_from_state_dict(load_file(str(path)))


def test_barrier_command_records_naive_and_aligned_curves(ckpts, tmp_path):
    a, b = ckpts
    db = tmp_path / "r.db"
    res = _run(["barrier", str(a), str(b), "--alphas", "5", "--json"], db)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    curves = {c["label"]: c for c in out["curves"]}
    assert set(curves) == {"naive", "weight matching"}
    assert curves["naive"]["barrier"] > 0.05  # two seeds: a real barrier
    assert curves["weight matching"]["barrier"] < curves["naive"]["barrier"] / 2
    assert curves["naive"]["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert set(curves["naive"]["layerwise"]) == {"0", "2", "4"}
    with ResultsDB(db) as d:
        assert len(d.query(analysis="weights_barrier")) == 2
        assert len(d.query(analysis="weights_layer_barrier")) == 6
        html = render_report(d, tmp_path / "r.html").read_text()
    assert 'id="sec-weights-barrier"' in html and 'id="sec-weights-layer-barrier"' in html
    assert fmt(curves["naive"]["barrier"], 4) in html


def test_align_command_writes_b_permuted_computing_the_same_function(ckpts, tmp_path):
    a, b = ckpts
    out = tmp_path / "aligned.safetensors"
    res = _run(["align", str(a), str(b), "--out", str(out), "--json"], tmp_path / "r.db")
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["converged"] and np.all(np.diff(info["objective"]) >= -1e-6)
    x = torch.randn(50, 64)
    with torch.no_grad():
        torch.testing.assert_close(_mlp(out)(x), _mlp(b)(x), rtol=1e-5, atol=1e-5)
    diag = info["diagnostics"]
    assert diag["0.weight"]["max_sigma_diff_before"] == pytest.approx(
        diag["0.weight"]["max_sigma_diff_after"], abs=1e-6)
    assert diag["(all tensors)"]["distance_ratio"] < 1
    sb, so = load_file(str(b)), load_file(str(out))
    assert not torch.equal(sb["0.weight"], so["0.weight"])  # it did permute


def test_merge_command_equals_the_naive_average_and_evaluates_each_task(ckpts, tmp_path):
    a, b = ckpts
    from repscope.weights._toy import digits_data

    d = digits_data()
    for name, keep in (("low", d.y_test < 5), ("high", d.y_test >= 5)):
        np.savez(tmp_path / f"{name}.npz", X=d.X_test[keep], y=d.y_test[keep])
    db = tmp_path / "r.db"
    res = _run(["merge", "linear", str(a), str(b), "--out", str(tmp_path / "m"), "--eval",
                f"low={tmp_path / 'low.npz'}", "--eval", f"high={tmp_path / 'high.npz'}",
                "--json"], db)
    assert res.exit_code == 0, res.output
    merged = load_file(str(tmp_path / "m" / "model.safetensors"))
    sa, sb = load_file(str(a)), load_file(str(b))
    for k in sa:
        torch.testing.assert_close(merged[k], (sa[k] + sb[k]) / 2, rtol=0, atol=1e-6)
    ev = json.loads(res.output)["evaluation"]
    assert [e["task"] for e in ev] == ["low", "high"]
    assert all(0 <= e["accuracy_after"] <= 1 for e in ev)
    with ResultsDB(db) as dbh:
        assert len(dbh.query(analysis="weights_merge")) == 2


def test_diagnose_command_cosines_match_the_in_memory_task_vectors(ckpts, tmp_path):
    a, b = ckpts
    from repscope.weights._taskvec import task_vector_cosines

    base = tmp_path / "base.safetensors"
    from safetensors.torch import save_file

    sa = load_file(str(a))
    save_file({k: v * 0.5 for k, v in sa.items()}, str(base))
    res = _run(["diagnose", str(a), str(b), "--base", str(base), "--json"], tmp_path / "r.db")
    assert res.exit_code == 0, res.output
    got = np.asarray(json.loads(res.output)["cosines"], dtype=float)
    sb, s0 = load_file(str(b)), load_file(str(base))
    want = task_vector_cosines([{k: sa[k] - s0[k] for k in sa}, {k: sb[k] - s0[k] for k in sb}])
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_redundancy_command_writes_a_smaller_model(ckpts, tmp_path):
    a, _ = ckpts
    out = tmp_path / "small.safetensors"
    res = _run(["redundancy", str(a), "--beta", "1.2", "--out", str(out), "--json"],
               tmp_path / "r.db")
    assert res.exit_code == 0, res.output
    recs = json.loads(res.output)["records"]
    small = load_file(str(out))
    assert small["0.weight"].shape[0] == recs[0]["units_after"] <= recs[0]["units_before"]


@pytest.mark.parametrize(("args", "message"), [
    (["barrier", "{a}", "{wide}"], "shape"),
    (["align", "{a}", "{b}", "--out", "{t}/x.safetensors", "--spec", "conv"],
     "--spec must be 'mlp', 'llama'"),
    (["merge", "ties", "{a}", "{b}", "--out", "{t}/m", "--param", "density"],
     "--param must be KEY=VALUE"),
    (["merge", "lineer", "{a}", "{b}", "--out", "{t}/m"], "unknown merge method 'lineer'"),
    (["merge", "linear", "{a}", "{b}", "--out", "{t}/m", "--eval", "x={t}/no.npz"],
     "--eval must be given once per input"),
    (["barrier", "{a}", "{b}", "--data", "{t}/bad.npz"], "must be an .npz file with arrays"),
    (["barrier", "{a}", "{t}/missing.safetensors"], "does not exist"),
])
def test_weights_command_errors_are_one_line(ckpts, tmp_path, args, message):
    a, b = ckpts
    from safetensors.torch import save_file

    from repscope.weights._toy import make_mlp

    save_file(make_mlp((64, 48, 32, 10)).state_dict(), str(tmp_path / "wide.safetensors"))
    np.savez(tmp_path / "bad.npz", features=np.zeros((3, 64)))
    fill = {"a": a, "b": b, "t": tmp_path, "wide": tmp_path / "wide.safetensors"}
    res = _run([s.format(**fill) for s in args], tmp_path / "r.db")
    assert res.exit_code != 0
    assert message in res.output, res.output
    assert "Traceback" not in res.output


@pytest.fixture(scope="module")
def demo_results():
    from repscope.weights._demo import run_weights_demo

    torch.set_num_threads(1)
    return run_weights_demo(log=lambda m: None, widths=(64, 48, 48, 10))


def test_demo_results_round_trip_into_every_weights_section(demo_results, tmp_path):
    """Each weight-space result's records land in the database and its report section shows
    the numbers (seven sections, one per analysis)."""
    seen = set()
    with ResultsDB(tmp_path / "r.db") as db:
        for kind, items in demo_results.items():
            for res in items:
                db.add_many(res.to_records(model=f"demo {kind}", dataset="digits"))
                seen.add(type(res).analysis)
        html = render_report(db, tmp_path / "r.html").read_text()
    assert seen == {"weights_barrier", "weights_layer_barrier", "weights_alignment",
                    "weights_task_vectors", "weights_merge", "weights_atlas",
                    "weights_redundancy"}
    for analysis in seen:
        assert section_for(analysis) is not None
        assert f'id="sec-{analysis.replace("_", "-")}"' in html, analysis
    assert "could not be rendered" not in html
    naive, aligned = demo_results["barrier"]
    assert naive.label == "naive" and aligned.label == "weight matching"
    assert aligned.barrier < naive.barrier
    assert fmt(naive.barrier, 4) in html
    tv = demo_results["task_vectors"][0]
    assert fmt(float(tv.cosines[0, 1]), 3) in html
    red = demo_results["redundancy"][0]
    assert fmt(red.units_after[0], 4) in html


def test_demo_step_returns_records_with_its_context(demo_results, tmp_path, monkeypatch):
    from repscope.capability import DemoContext
    from repscope.weights import _demo

    monkeypatch.setattr(_demo, "run_weights_demo", lambda **kw: demo_results)
    ctx = DemoContext(stores={}, layers={}, labels=np.zeros(0), label_names=[], inputs=None,
                      ids=[], dataset="mnist", db=None, run_id="run-1", seed=0,
                      log=lambda m: None, out=tmp_path)
    recs = _demo.demo_weights_step(ctx)
    assert {r.run_id for r in recs} == {"run-1"}
    assert {r.dataset for r in recs} == {_demo.DEMO_DATASET}
    barrier = [r for r in recs if r.analysis == "weights_barrier"]
    assert [r.values["label"] for r in barrier] == ["naive", "weight matching"]


@pytest.mark.real
def test_barrier_command_on_causal_lm_folders_uses_the_llama_spec(tmp_path):
    """Two tiny Llama decoders (SmolLM2's tokenizer, random inits from two seeds) as
    Hugging Face folders: the LM loss path, the Llama spec and weight matching from the CLI."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    import repscope.zoo
    from repscope.zoo._text import smollm2_cache_dir

    repscope.zoo.load_model("smollm2-135m")  # makes sure the tokenizer cache exists
    tok = AutoTokenizer.from_pretrained(str(smollm2_cache_dir()), local_files_only=True)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, tie_word_embeddings=True)
    dirs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
        d = tmp_path / f"lm{seed}"
        model.save_pretrained(d)
        tok.save_pretrained(d)
        dirs.append(d)
    text = tmp_path / "text.txt"
    text.write_text("It is a truth universally acknowledged, that a single man in possession "
                    "of a good fortune, must be in want of a wife. " * 4)
    res = _run(["barrier", str(dirs[0]), str(dirs[1]), "--text", str(text), "--alphas", "3",
                "--no-layerwise", "--json"], tmp_path / "r.db")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["weight_matching"]["n_iter"] >= 1
    curves = {c["label"]: c for c in out["curves"]}
    # Random inits: both ends at about log(vocab); the aligned B is the same function as B.
    assert curves["naive"]["loss_b"] == pytest.approx(curves["weight matching"]["loss_b"],
                                                      rel=1e-4)
    assert abs(curves["naive"]["loss_a"] - np.log(len(tok))) < 1.0
    res = _run(["barrier", str(dirs[0]), str(dirs[1])], tmp_path / "r.db")
    assert res.exit_code != 0 and "give --text FILE" in res.output


def test_task_vector_diagnostics_take_a_mapping_of_modules():
    """A mapping of names to modules is several fine-tunes (it was refused as 'not state
    dicts'); a single state dict is refused with a message that says so."""
    from repscope.exceptions import RepscopeValueError
    from repscope.weights._taskvec import diagnose_task_vectors
    from repscope.weights._toy import make_mlp

    base = make_mlp((4, 5, 3), seed=0)
    tunes = {"x": make_mlp((4, 5, 3), seed=1), "y": make_mlp((4, 5, 3), seed=2)}
    by_module = diagnose_task_vectors(tunes, base, progress=False)
    by_dict = diagnose_task_vectors({k: m.state_dict() for k, m in tunes.items()}, base,
                                    progress=False)
    assert by_module.names == ("x", "y")
    np.testing.assert_allclose(by_module.cosines, by_dict.cosines)
    with pytest.raises(RepscopeValueError, match="got a single state dict"):
        diagnose_task_vectors(base.state_dict(), base, progress=False)
