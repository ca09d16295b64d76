"""The default step budget of ``repscope sae train`` and the warning for too few steps (issue 12,
item 14): the README's example trained 33 steps (one epoch of 33,506 tokens), and its k = 64 SAE
came out worse than its k = 32 one, without a word."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from repscope.cli import cli
from repscope.sae import plan_steps
from repscope.sae._budget import FEW_STEPS, MAX_EPOCHS, MIN_VECTORS


def test_the_default_budget_sees_a_million_vectors_within_one_to_a_hundred_epochs():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plan_steps(33_506, 1024) == math.ceil(MIN_VECTORS / 1024) == 977  # README's data
        assert plan_steps(5_000_000, 1024) == math.ceil(5_000_000 / 1024)  # one epoch
        assert plan_steps(8_000, 256) == MAX_EPOCHS * 8_000 // 256  # capped at 100 epochs
        assert plan_steps(33_506, 1024, n_steps=600) == 600
        assert plan_steps(33_506, 1024, n_epochs=20) == math.ceil(20 * 33_506 / 1024)


@pytest.mark.parametrize(("kwargs", "steps"), [
    ({"n_steps": 33}, 33),
    ({"n_epochs": 1.0}, 33),
    ({}, None),  # 300 vectors: 100 epochs are 30 steps
])
def test_too_few_steps_warn_and_name_the_options(kwargs, steps):
    n = 33_506 if kwargs else 300
    with pytest.warns(RuntimeWarning, match=r"too few for an SAE to converge .*raise --steps or "
                                             r"--epochs"):
        got = plan_steps(n, 1024, names=("--steps", "--epochs"), **kwargs)
    assert got == (steps if steps is not None else 30) < FEW_STEPS


def _train(tmp_path, n: int, *extra: str):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((n, 8)).astype(np.float32))
    return CliRunner().invoke(cli, [
        "--db", str(tmp_path / "r.db"), "sae", "train", str(tmp_path / "x.npy"), "--width", "16",
        "--k", "2", "--batch-size", "1024", "--out", str(tmp_path / "sae"), "--json", *extra])


def test_cli_default_trains_the_budget_without_a_warning(tmp_path):
    res = _train(tmp_path, 6_000)  # 5,400 training vectors: 100 epochs, 528 steps
    assert res.exit_code == 0, res.output
    (v,) = json.loads(res.stdout)
    assert v["n_train"] == 5_400
    assert v["n_steps"] == plan_steps(5_400, 1024) == math.ceil(100 * 5_400 / 1024) == 528
    assert v["epochs"] == pytest.approx(528 * 1024 / 5_400)
    assert "warning" not in res.stderr


def test_cli_warns_in_one_line_when_a_run_has_too_few_steps(tmp_path):
    res = _train(tmp_path, 6_000, "--steps", "40")
    assert res.exit_code == 0, res.output
    (v,) = json.loads(res.stdout)  # the warning stays off stdout
    assert v["n_steps"] == 40
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == [
        "warning: 40 optimiser steps (7.59 epochs of 5,400 training vectors) are too few for an "
        f"SAE to converge (fewer than {FEW_STEPS}); raise --steps or --epochs."
    ]


def test_help_documents_the_rule():
    out = CliRunner().invoke(cli, ["sae", "train", "--help"]).output
    text = " ".join(out.split())
    assert "enough epochs to see 1,000,000 training vectors, at most 100 epochs and at least" in text
