"""``repscope probe`` under torchrun: two ranks give the records of one process.

Three launches in all (ridge and logistic on two ranks, one refusal); the one-process
references run in this process through click's runner (the same code path as
``python -m repscope``).
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from repscope._testing import cli_env, run_cli_ranks
from repscope._threads import single_thread
from repscope.cli import cli
from repscope.db import ResultsDB
from repscope.store import open_layers

RIDGE_ARGS = ["--probe", "ridge", "--layer", "embeddings", "--layer", "encoder.layer.5"]
LOGISTIC_ARGS = ["--probe", "logistic", "--layer", "encoder.layer.5", "--folds", "2"]
KEYS = ("accuracy", "ci_low", "ci_high", "accuracy_std", "chance", "n_features")


def _records(db) -> dict[str, dict]:
    with ResultsDB(db) as d:
        return {r.layer: {**r.values, "params": r.params} for r in d.query(analysis="probe")}


def _one_process(store, args, db) -> dict[str, dict]:
    with single_thread():  # as the launched ranks (OMP_NUM_THREADS=1); fast on a busy machine
        res = CliRunner().invoke(cli, ["--db", str(db), "probe", str(store), "--labels",
                                       "label", *args])
    assert res.exit_code == 0, res.output
    return _records(db)


def _two_ranks(store, args, db):
    proc = run_cli_ranks(["probe", str(store), "--labels", "label", *args], 2, cli_env(db))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, _records(db)


@pytest.fixture(scope="module")
def launches(minilm_austen, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probe_ranks")
    store = minilm_austen.store
    out = {}
    for name, args in (("ridge", RIDGE_ARGS), ("logistic", LOGISTIC_ARGS)):
        ref = _one_process(store, args, tmp / f"{name}_1.db")
        proc, two = _two_ranks(store, args, tmp / f"{name}_2.db")
        out[name] = (ref, two, proc)
    return out


def _assert_same(ref, two, rel):
    assert set(ref) == set(two) and ref
    for layer, values in ref.items():
        assert two[layer]["params"] == values["params"]
        for key in KEYS:
            np.testing.assert_allclose(two[layer][key], values[key], rtol=rel, atol=0,
                                       err_msg=f"{layer} {key}")


def test_ridge_on_two_ranks_equals_one_process(launches):
    ref, two, proc = launches["ridge"]
    _assert_same(ref, two, 1e-10)
    assert ref["encoder.layer.5"]["accuracy"] > 2 * ref["encoder.layer.5"]["chance"]
    # only rank 0 prints: one table, not one per rank
    assert proc.stdout.count("ridge probe:") == 1


def test_logistic_on_two_ranks_equals_one_process(launches):
    ref, two, _ = launches["logistic"]
    _assert_same(ref, two, 1e-6)
    assert ref["encoder.layer.5"]["accuracy"] > 2 * ref["encoder.layer.5"]["chance"]


def test_few_shot_refused_on_two_ranks(minilm_austen, tmp_path):
    db = tmp_path / "r.db"
    proc = run_cli_ranks(["probe", str(minilm_austen.store), "--labels", "label",
                          "--layer", "embeddings", "--few-shot", "1"], 2, cli_env(db))
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert errors and all(
        line.startswith("Error: --few-shot runs on one process; launch without torchrun")
        for line in errors)
    assert "repscope/" not in proc.stderr.split("ChildFailedError")[0]  # no repscope traceback
    assert not db.exists() or not _records(db)


def test_rank_path_in_one_process_equals_probe_layers(minilm_austen):
    """The rank path's fold bookkeeping and moment fits (here with one rank) give exactly
    the numbers of probe_layers for the other closed-form kinds; kNN is refused."""
    from repscope.exceptions import RepscopeValueError
    from repscope.probe._kinds import make_probe
    from repscope.probe._layerwise import probe_layers, probe_layers_ranks
    from repscope.probe._protocols import KFold

    src = open_layers(minilm_austen.store, ["encoder.layer.5"])
    labels = src.metadata(["label"])["label"]
    for kind in ("lda", "nb"):
        factory = make_probe(kind, seed=0)
        with single_thread():
            a = probe_layers(src.read_all(), labels, probe=factory, protocol=KFold(5, 0))
            b = probe_layers_ranks(src, labels, probe=factory, protocol=KFold(5, 0))
        assert a == b, kind
    with pytest.raises(RepscopeValueError, match="needs every row on one process"):
        probe_layers_ranks(src, labels, probe=make_probe("knn"), protocol=KFold(5, 0))
