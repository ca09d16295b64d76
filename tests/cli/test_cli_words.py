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


# ---------------------------------------------------------------------------- measure aliases


@pytest.fixture
def pair(tmp_path) -> tuple[str, str]:
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((80, 6)).astype(np.float32)
    b = (a @ np.linalg.qr(rng.standard_normal((6, 6)))[0]).astype(np.float32)
    pa, pb = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(pa, a)
    np.save(pb, b)
    return str(pa), str(pb)


def test_similarity_accepts_cka_and_records_linear_cka(runner, db, pair):
    from repscope.db import ResultsDB

    out = json.loads(_ok(runner.invoke(cli, ["--db", db, "similarity", *pair, "--measure", "cka",
                                             "--measure", "Kernel-CKA", "--json"])))
    assert [o["measure"] for o in out] == ["linear_cka", "rbf_cka"]
    assert out[0]["best_matches"][0][2] == pytest.approx(1.0)
    with ResultsDB(db) as rdb:
        assert {r.values["measure"] for r in rdb.query(analysis="similarity_matrix")} == {
            "linear_cka", "rbf_cka"}


def test_similarity_list_shows_the_aliases_and_unknown_names_get_a_suggestion(runner, db, pair):
    listing = _ok(runner.invoke(cli, ["similarity", "--list"]))
    row = next(ln for ln in listing.splitlines() if " linear_cka " in ln)
    assert " cka " in row
    assert "kernel_cka" in listing
    _one_line_error(runner.invoke(cli, ["--db", db, "similarity", *pair, "--measure", "ckaa"]),
                    "unknown measure 'ckaa'", "Did you mean 'linear_cka'?")


# ---------------------------------------------------------------------------- extract again


@pytest.mark.real
def test_extract_again_says_complete_or_how_many_it_added(runner, db, tmp_path):
    pytest.importorskip("onnxruntime")
    from repscope.db import ResultsDB
    from repscope.store import FeatureStore

    texts = tmp_path / "texts.txt"
    texts.write_text("The cat sat.\nStock prices fell.\nHello there.\nA long quiet day.\n")
    out = str(tmp_path / "s")
    base = ["--db", db, "extract", "minilm-l3-onnx", "--inputs", str(texts), "--out", out,
            "--layer", "461", "--no-progress"]
    first = _ok(runner.invoke(cli, [*base, "--n", "2"]))
    assert first.strip().startswith("wrote 2 samples x 1 layer")
    resumed = _ok(runner.invoke(cli, base))
    assert resumed.strip() == (f"resumed {out}: added 2 samples to the 2 already there "
                               "(4 samples x 1 layer)")
    again = _ok(runner.invoke(cli, base))
    assert again.strip() == (f"{out}: already complete, 4 samples x 1 layer; nothing to do "
                             "(use a new --out to extract again)")
    assert "wrote" not in again
    assert FeatureStore.open(out).n_samples == 4
    with ResultsDB(db) as rdb:  # the run that did nothing records nothing
        assert len(rdb.runs(command="extract")) == 2


@pytest.mark.real
def test_extract_into_another_runs_store_names_the_cli_options(runner, db, tmp_path):
    pytest.importorskip("onnxruntime")
    texts = tmp_path / "texts.txt"
    texts.write_text("The cat sat.\nStock prices fell.\nHello there.\n")
    out = str(tmp_path / "s")
    base = ["--db", db, "extract", "minilm-l3-onnx", "--inputs", str(texts), "--out", out,
            "--no-progress"]
    _ok(runner.invoke(cli, [*base, "--layer", "461", "--n", "2"]))
    for extra, want in [
        (["--layer", "onnx::Shape_422"], "pass the same --layer options to resume it"),
        (["--layer", "461", "--pooling", "cls"], "--pooling mean, not cls"),
    ]:
        err = _one_line_error(runner.invoke(cli, [*base, *extra]), f"--out {out}", want,
                              "new --out")
        assert "=" not in err, err  # no Python argument syntax (layers=, pooling=, model_id=)
    err = _one_line_error(
        runner.invoke(cli, ["--db", db, "extract", "minilm-l6", "--inputs", str(texts), "--out",
                            out, "--no-progress"]),
        "holds features of model 'minilm-l3-onnx', not 'minilm-l6'")
    assert "model_id" not in err


def test_analyze_import_into_an_existing_store_names_out_not_exist_ok(runner, tmp_path):
    import numpy as np

    arr = tmp_path / "emb.npy"
    np.save(arr, np.ones((4, 3), np.float32))
    out = str(tmp_path / "feats")
    _ok(runner.invoke(cli, ["analyze", "import", str(arr), "--out", out]))
    err = _one_line_error(runner.invoke(cli, ["analyze", "import", str(arr), "--out", out]),
                          f"--out {out} already holds a FeatureStore", "new --out")
    assert "exist_ok" not in err and "=True" not in err


# ---------------------------------------------------------------------------- datasets table


def test_datasets_table_has_a_short_status_and_the_fix_once_below(runner, tmp_path,
                                                                   monkeypatch):
    from repscope.zoo import _data, _paths

    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("REPSCOPE_DATA", str(root))
    monkeypatch.setattr(_paths, "data_roots", lambda: [root])
    _data._read_fashion.cache_clear()
    out = _ok(runner.invoke(cli, ["datasets"]))
    table, _, below = out.partition("└")
    cells = _table_cells(table)
    assert cells["austen"][2] == "no: not installed: run scripts/fetch_system_data.sh --austen"
    assert cells["fashion-mnist"][2] == "no: not installed (Debian package dataset-fashion-mnist)"
    assert "apt-get" not in table and "dpkg-deb" not in table  # the fix is not in the table
    assert len(table.splitlines()) < 25  # about a line per dataset (the austen row took ~10)
    fixes = [ln for ln in below.splitlines() if ln.startswith("austen: ")]
    assert len(fixes) == 1 and "apt-get download r-cran-janeaustenr" in fixes[0]
    assert "fashion-mnist: " in below and "apt-get install -y dataset-fashion-mnist" in below
    assert json.loads(_ok(runner.invoke(cli, ["datasets", "--json"])))  # JSON keeps every field


def _table_cells(table: str) -> dict[str, list[str]]:
    """The rows of a rich table as {first cell: [cells]}, wrapped lines joined."""
    rows: dict[str, list[list[str]]] = {}
    key = ""
    for line in table.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        key = cells[0] or key
        rows.setdefault(key, []).append(cells)
    return {k: [" ".join(p for p in parts if p) for parts in zip(*v)] for k, v in rows.items()}
