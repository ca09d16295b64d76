"""Analyses of a store record the store's dataset when --dataset is not given (it was "",
which split one model into two series: one with the dataset named, one without)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from repscope.cli import cli
from repscope.db import ResultsDB
from repscope.extract import extract_to_store
from repscope.store import FeatureStore


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real extraction of a small network on 60 inputs of three classes."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    X = (rng.standard_normal((60, 6)) + y[:, None]).astype(np.float32)
    path = tmp_path_factory.mktemp("stores") / "toy"
    extract_to_store(net, X, path, layers=["0", "2"], progress=False, dataset="toy-set",
                     metadata={"label": y.tolist(), "id": [f"s{i}" for i in range(60)]})
    return path


def _datasets(db) -> list[str]:
    with ResultsDB(db) as rdb:
        return sorted({r.dataset for r in rdb.query()})


def test_extraction_keeps_the_dataset_in_the_store(store):
    assert FeatureStore.open(store).attrs["dataset"] == "toy-set"


@pytest.mark.parametrize("command", [
    ["analyze", "spectrum", "{store}"],
    ["probe", "{store}", "--labels", "label", "--probe", "ridge", "--folds", "3"],
    ["similarity", "{store}", "{store}", "--measure", "linear_cka"],
], ids=["spectrum", "probe", "similarity"])
def test_analyses_of_a_store_record_its_dataset(tmp_path, store, command):
    db = str(tmp_path / "results.db")
    args = [a.format(store=store) for a in command]
    res = CliRunner().invoke(cli, ["--db", db, *args])
    assert res.exit_code == 0, res.output
    assert _datasets(db) == ["toy-set"]
    with ResultsDB(db) as rdb:
        assert {r.dataset for r in rdb.runs()} == {"toy-set"}
    # an explicit --dataset still wins
    res = CliRunner().invoke(cli, ["--db", db, *args, "--dataset", "other"])
    assert res.exit_code == 0, res.output
    assert _datasets(db) == ["other", "toy-set"]


def test_features_that_are_not_a_store_record_no_dataset(tmp_path):
    np.save(tmp_path / "X.npy", np.random.default_rng(0).standard_normal((40, 5)))
    db = str(tmp_path / "results.db")
    res = CliRunner().invoke(cli, ["--db", db, "analyze", "spectrum", str(tmp_path / "X.npy")])
    assert res.exit_code == 0, res.output
    assert _datasets(db) == [""]
