"""The command line: every --help works; bad input is one line and exit code 1; analyses on
arrays from disk are recorded and listed."""

from __future__ import annotations

import json

import click
import numpy as np
import pytest
from click.testing import CliRunner

from repscope.cli import cli


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path, hidden ones included, as the group lists them (the root's commands
    come from the capabilities, so they are not in ``group.commands``)."""
    out = [prefix]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            out += _all_commands(cmd, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "results.db")


@pytest.mark.parametrize("path", _all_commands(cli), ids=lambda p: " ".join(p) or "repscope")
def test_every_command_has_help(runner, path):
    res = runner.invoke(cli, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output


def test_version(runner):
    from repscope import __version__

    res = runner.invoke(cli, ["--version"])
    assert res.exit_code == 0
    assert __version__ in res.output


def _one_line_error(res, pattern: str) -> None:
    assert res.exit_code == 1, (res.exit_code, res.output)
    err = res.stderr.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in res.output
    assert err.startswith("Error: ")
    assert pattern in err, err


def test_missing_file_is_one_line_error(runner, db, tmp_path):
    res = runner.invoke(cli, ["--db", db, "analyze", "spectrum", str(tmp_path / "nope.npy")])
    _one_line_error(res, "does not exist")


def test_wrong_shape_is_one_line_error(runner, db, tmp_path):
    np.save(tmp_path / "vec.npy", np.arange(10.0))
    res = runner.invoke(cli, ["--db", db, "analyze", "spectrum", str(tmp_path / "vec.npy")])
    _one_line_error(res, "must be 2-D (n_samples, n_features); got shape (10,)")


def test_unknown_layer_is_one_line_error(runner, db, tmp_path):
    from safetensors.numpy import save_file

    save_file({"block.1": np.ones((5, 2)), "block.2": np.ones((5, 3))}, str(tmp_path / "f.safetensors"))
    res = runner.invoke(cli, ["--db", db, "analyze", "spectrum", str(tmp_path / "f.safetensors"),
                              "--layer", "block.3"])
    _one_line_error(res, "unknown layer 'block.3'")
    assert "Did you mean 'block." in res.stderr


def test_unknown_model_is_one_line_error(runner, db, tmp_path):
    res = runner.invoke(cli, ["--db", db, "extract", "efficientnet-lite9", "--dataset", "mnist",
                              "--out", str(tmp_path / "s")])
    _one_line_error(res, "unknown model 'efficientnet-lite9'")
    assert "Did you mean 'efficientnet-lite" in res.stderr


def test_debug_shows_the_traceback(runner, db, tmp_path):
    res = runner.invoke(cli, ["--debug", "--db", db, "analyze", "spectrum", str(tmp_path / "x.npy")])
    assert res.exit_code == 1
    assert isinstance(res.exception, FileNotFoundError)  # the library error propagates


def test_analyses_on_arrays_are_recorded_and_listed(runner, db, tmp_path, rng):
    X = rng.standard_normal((120, 6))
    y = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 0)
    np.save(tmp_path / "layer_a.npy", X)
    np.save(tmp_path / "layer_b.npy", X @ rng.standard_normal((6, 4)))
    np.save(tmp_path / "labels.npy", y)
    res = runner.invoke(cli, ["--db", db, "probe", str(tmp_path / "layer_a.npy"),
                              "--labels", str(tmp_path / "labels.npy"), "--probe", "logistic",
                              "--json"])
    assert res.exit_code == 0, res.output
    acc = json.loads(res.stdout)["layers"]["accuracy"][0]
    assert acc > 0.8
    res = runner.invoke(cli, ["--db", db, "similarity", str(tmp_path / "layer_a.npy"),
                              str(tmp_path / "layer_b.npy"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["measure"] == "linear_cka"
    M = np.array(out["matrix"])
    assert M.shape == (1, 1)
    assert 0.0 < M[0, 0] <= 1.0
    res = runner.invoke(cli, ["--db", db, "results", "list", "--json"])
    recs = json.loads(res.stdout)
    assert sorted(r["analysis"] for r in recs) == ["probe", "similarity_matrix"]
    assert next(r for r in recs if r["analysis"] == "probe")["params"]["probe"] == "logistic"
    out = tmp_path / "export.csv"
    res = runner.invoke(cli, ["--db", db, "results", "export", str(out)])
    assert res.exit_code == 0
    assert out.read_text().count("\n") >= 3
    res = runner.invoke(cli, ["--db", db, "report", "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "r.html").read_text()
    assert "layer_a" in html
    assert "<svg" in html


@pytest.mark.parametrize(("name", "replacement"), [
    ("separability", "repscope probe FEATURES --labels label --probe logistic"),
    ("cka", "repscope similarity FEATURES_A FEATURES_B --measure linear_cka"),
])
def test_retired_analyses_name_their_replacement(runner, db, tmp_path, rng, name, replacement):
    np.save(tmp_path / "layer_a.npy", rng.standard_normal((40, 3)))
    np.save(tmp_path / "labels.npy", np.arange(40) % 2)
    args = {"separability": ["--labels", str(tmp_path / "labels.npy"), "--json"],
            "cka": [str(tmp_path / "layer_a.npy"), "--json"]}[name]
    res = runner.invoke(cli, ["--db", db, "analyze", name, str(tmp_path / "layer_a.npy"), *args])
    _one_line_error(res, f"'repscope analyze {name}' was retired; use: {replacement}")
    res = runner.invoke(cli, ["--db", db, "results", "list", "--json"])
    assert json.loads(res.stdout) == []  # nothing ran, nothing was recorded
    listed = runner.invoke(cli, ["analyze", "--help"]).output
    assert name not in listed.split("Commands:")[1]  # hidden from the help


def test_import_arrays_into_a_store(runner, db, tmp_path, rng):
    X = rng.standard_normal((30, 4)).astype(np.float32)
    np.save(tmp_path / "emb.npy", X)
    (tmp_path / "labels.txt").write_text("\n".join("ab"[i % 2] for i in range(30)))
    res = runner.invoke(cli, ["--db", db, "analyze", "import", str(tmp_path / "emb.npy"),
                              "--out", str(tmp_path / "store"), "--labels", str(tmp_path / "labels.txt")])
    assert res.exit_code == 0, res.output
    from repscope.store import FeatureStore

    s = FeatureStore.open(tmp_path / "store")
    np.testing.assert_array_equal(s.read("emb"), X)
    assert list(s.metadata(["label"])["label"][:3]) == ["a", "b", "a"]
