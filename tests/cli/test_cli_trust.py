"""First contact with the command line: empty input, unknown runs, the database from the
environment, ambiguous --labels, and results listed and compared the way their help says."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from repscope.cli import cli
from repscope.db import Record, ResultsDB


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "results.db")


def _one_line_error(res, *patterns: str) -> str:
    assert res.exit_code == 1, (res.exit_code, res.output)
    err = res.stderr.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in res.output
    assert err.startswith("Error: ")
    for pattern in patterns:
        assert pattern in err, err
    return err


def test_spectrum_of_empty_features_is_refused_and_records_nothing(runner, db, tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 5), np.float32))
    res = runner.invoke(cli, ["--db", db, "analyze", "spectrum", str(tmp_path / "empty.npy")])
    _one_line_error(res, "no samples", "0 rows")
    assert "effective rank" not in res.stdout
    with ResultsDB(db) as rdb:
        assert rdb.count() == 0
        assert rdb.runs() == []


def test_report_of_unknown_run_fails_naming_it_and_the_newest_runs(runner, db, tmp_path):
    with ResultsDB(db) as rdb:
        ids = [rdb.start_run("probe", {}, model=f"m{i}") for i in range(7)]
    out = tmp_path / "r.html"
    res = runner.invoke(cli, ["--db", db, "report", "--run", "no-such-run", "--out", str(out)])
    err = _one_line_error(res, "unknown run 'no-such-run'", ids[-1], ids[-2])
    assert ids[0] not in err  # only the newest few
    assert not out.exists()
    res = runner.invoke(cli, ["--db", str(tmp_path / "empty.db"), "report", "--run", "x",
                              "--out", str(out)])
    _one_line_error(res, "unknown run 'x'", "no runs")


def _records_db(path: str) -> tuple[str, str]:
    """Two runs; each holds two models with the same layer names."""
    with ResultsDB(path) as rdb:
        runs = []
        for r, base in enumerate((0.5, 0.6)):
            run = rdb.start_run("probe", {}, dataset="d")
            runs.append(run)
            rdb.add_many(Record("probe", {"accuracy": base + 0.1 * m + 0.01 * i + 1e-5 * r / 3,
                                          "curve": [0.1, 0.2, 0.3],
                                          "ci": np.arange(6.0).reshape(2, 3)},
                                model=f"m{m}", dataset="d", layer=f"l{i}", run_id=run)
                         for m in range(2) for i in range(3))
            rdb.finish_run(run)
    return runs[0], runs[1]


def test_results_list_is_newest_first(runner, db):
    _records_db(db)
    res = runner.invoke(cli, ["--db", db, "results", "list", "--json"])
    ids = [r["id"] for r in json.loads(res.stdout)]
    assert ids == sorted(ids, reverse=True)
    res = runner.invoke(cli, ["--db", db, "results", "list", "--json", "--limit", "2"])
    assert [r["id"] for r in json.loads(res.stdout)] == ids[:2]  # the two newest
    res = runner.invoke(cli, ["--db", db, "results", "list"])
    assert res.exit_code == 0, res.output
    shown = [int(ln.split()[1]) for ln in res.stdout.splitlines() if ln[:1] in "│|"
             and ln.split()[1].isdigit()]
    assert shown == ids
    # runs are newest first too
    res = runner.invoke(cli, ["--db", db, "results", "runs", "--json"])
    created = [r["created"] for r in json.loads(res.stdout)]
    assert created == sorted(created, reverse=True)


def test_results_compare_keys_by_model_dataset_layer_with_readable_cells(runner, db):
    run_a, run_b = _records_db(db)
    res = runner.invoke(cli, ["--db", db, "results", "compare", "probe", "--runs", run_a,
                              "--runs", run_b, "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert len(rows) == 6  # 2 models x 3 layers, none overwritten
    assert {(r["model"], r["dataset"], r["layer"]) for r in rows} == {
        (f"m{m}", "d", f"l{i}") for m in range(2) for i in range(3)}
    m1_l2 = next(r for r in rows if r["model"] == "m1" and r["layer"] == "l2")
    assert m1_l2[run_a]["accuracy"] == pytest.approx(0.62)
    assert m1_l2[run_b]["accuracy"] == pytest.approx(0.72 + 1e-5 / 3)
    res = runner.invoke(cli, ["--db", db, "results", "compare", "probe", "--runs", run_a,
                              "--runs", run_b])
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert "{" not in text and '"' not in text  # no raw JSON
    assert "accuracy=0.72" in text  # 0.7200033... to 4 significant digits
    assert "0.720003" not in text
    # one value, arrays and lists summarised
    for name, cell in (("accuracy", "0.6"), ("curve", "[3 items]"), ("ci", "<array 2x3>")):
        res = runner.invoke(cli, ["--db", db, "results", "compare", "probe", "--runs", run_a,
                                  "--runs", run_b, "--value", name])
        assert res.exit_code == 0, res.output
        assert cell in res.stdout, res.stdout
        assert "[0.1, 0.2" not in res.stdout and "[[" not in res.stdout


def test_repscope_db_env_is_the_default_database(runner, tmp_path, monkeypatch, rng):
    monkeypatch.setenv("REPSCOPE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REPSCOPE_DB", str(tmp_path / "env.db"))
    np.save(tmp_path / "x.npy", rng.standard_normal((20, 3)))
    res = runner.invoke(cli, ["analyze", "spectrum", str(tmp_path / "x.npy")])
    assert res.exit_code == 0, res.output
    with ResultsDB(tmp_path / "env.db") as rdb:
        assert rdb.count(analysis="pca_spectrum") == 1
    assert not (tmp_path / "home" / "results.db").exists()


def _labelled_store(tmp_path, rng):
    from repscope.store import FeatureStore

    X = rng.standard_normal((40, 4))
    y = (X[:, 0] > 0).astype(int)
    store = FeatureStore.create(tmp_path / "feats", "m")
    store.append({"layer": X}, {"label": y.tolist()})
    return y


def test_probe_labels_file_named_like_a_column_is_refused(runner, db, tmp_path, rng,
                                                          monkeypatch):
    y = _labelled_store(tmp_path, rng)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "label").write_text("\n".join(str(1 - v) for v in y))  # a different file
    args = ["--db", db, "probe", str(tmp_path / "feats"), "--probe", "ridge", "--json"]
    res = runner.invoke(cli, [*args, "--labels", "label"])
    _one_line_error(res, "'label'", "./label", "column:label")
    for spec in ("./label", "column:label"):
        res = runner.invoke(cli, [*args, "--labels", spec])
        assert res.exit_code == 0, (spec, res.output)
