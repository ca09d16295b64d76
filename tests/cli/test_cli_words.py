"""Words a user understands, through the CLI entry point: friendly layer names of zoo models,
measure aliases, messages that name CLI options, an idempotent extract, a short datasets
table."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from repscope.cli import cli


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "results.db")


def _ok(res) -> str:
    assert res.exit_code == 0, (res.exit_code, res.output)
    return res.stdout


def _one_line_error(res, *patterns: str) -> str:
    assert res.exit_code == 1, (res.exit_code, res.output)
    err = res.stderr.strip()
    assert err.count("\n") == 0 and err.startswith("Error: "), err
    for p in patterns:
        assert p in err, (p, err)
    return err


# ---------------------------------------------------------------------------- layer names


@pytest.mark.real
def test_layers_lists_the_meaningful_layers_with_shapes_and_all_lists_graph_nodes(runner):
    pytest.importorskip("onnxruntime")
    out = _ok(runner.invoke(cli, ["layers", "minilm-l3-onnx"]))
    lines = out.strip().splitlines()
    assert len(lines) < 20, out  # was 240 graph nodes
    for name in ("embeddings", "encoder.layer.0", "encoder.layer.2", "sentence_embedding"):
        assert name in out
    assert "(tokens, 384)" in out and "(384,)" in out
    assert "onnx::" not in out and "/model/" not in out
    assert "--all" in out
    rows = json.loads(_ok(runner.invoke(cli, ["layers", "minilm-l3-onnx", "--json"])))
    assert [r["layer"] for r in rows] == ["embeddings", "encoder.layer.0", "encoder.layer.1",
                                          "encoder.layer.2", "sentence_embedding"]
    assert rows[-1]["shape"] == [384] and rows[0]["shape"] == ["tokens", 384]
    every = _ok(runner.invoke(cli, ["layers", "minilm-l3-onnx", "--all"])).split()
    assert len(every) > 200
    assert {"onnx::Shape_422", "461", "encoder.layer.2"} <= set(every)


@pytest.mark.real
def test_extract_stores_the_friendly_layer_names(runner, db, tmp_path):
    pytest.importorskip("onnxruntime")
    from repscope.store import FeatureStore

    texts = tmp_path / "texts.txt"
    texts.write_text("The cat sat on the mat.\nStock prices fell.\nHello there.\n")
    out = tmp_path / "l3"
    _ok(runner.invoke(cli, ["--db", db, "extract", "minilm-l3-onnx", "--inputs", str(texts),
                            "--out", str(out), "--no-progress"]))
    assert FeatureStore.open(out).layers == ["embeddings", "encoder.layer.0", "encoder.layer.1",
                                             "encoder.layer.2"]
    # an old internal name still works when passed explicitly
    out2 = tmp_path / "l3-internal"
    _ok(runner.invoke(cli, ["--db", db, "extract", "minilm-l3-onnx", "--inputs", str(texts),
                            "--out", str(out2), "--layer", "onnx::Shape_422",
                            "--layer", "encoder.layer.2", "--no-progress"]))
    fs = FeatureStore.open(out2)
    import numpy as np

    np.testing.assert_array_equal(fs.read("onnx::Shape_422"), fs.read("encoder.layer.2"))
