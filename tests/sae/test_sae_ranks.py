"""SAE training on two ranks equals one process with the same global batch: the library (each
rank reading only its piece of every batch from a real store) and ``repscope sae train`` under
torchrun (one SAE and one record, equal to the one-process launch's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from repscope._testing import cli_env, run_cli_ranks, run_distributed

STEPS, BATCH, SEED = 50, 64, 5
#: Numbers of a record that are wall times or where the SAE was saved (differ between launches).
_UNEQUAL = {"seconds", "seconds_eval", "path"}


def _library_worker(rank: int, world: int, store: str, layer: str) -> dict[str, Any]:
    from repscope.sae import LayerVectors, TopKConfig, TopKSAE, TrainSettings, fit
    from repscope.sae.training import RowReader

    train, _ = LayerVectors(store, layer).split(0.1, seed=SEED)
    taken: list[np.ndarray] = []
    if world == 1:
        data: Any = train.data  # the one-process path: the store's rows in memory
    else:
        reader = train.reader()

        def take(rows: np.ndarray) -> np.ndarray:
            taken.append(np.asarray(rows).copy())
            return reader.take(rows)

        data = RowReader(reader.n, take)
    # dead_after of 400 vectors: latents die within 50 steps, so AuxK runs on both sides
    sae = TopKSAE(TopKConfig(d_in=train.d, d_sae=256, k=8, dead_after=400, seed=1))
    st = TrainSettings(n_steps=STEPS, batch_size=BATCH // world, lr=2e-3, seed=SEED,
                       check_every=10, log_every=5, optimizer="adam")
    res = fit(data, sae, st)
    state = {k: v.detach().clone() for k, v in res.sae.state_dict().items() if v.numel()}
    assert res.state is not None
    return {"state": state, "fire_count": res.state.fire_count.clone(),
            "history": res.history, "taken": taken, "n": train.n_vectors}


def test_two_ranks_train_the_sae_of_one_process(minilm_austen: Any) -> None:
    args = (str(minilm_austen.store), minilm_austen.layers[-1])
    two = run_distributed(_library_worker, *args, world_size=2, timeout=240)
    one = run_distributed(_library_worker, *args, world_size=1, timeout=240)[0]
    assert len(one["history"]["auxk"]) and max(one["history"]["auxk"]) > 0  # AuxK was active
    # each rank read the initialisation sample, then only its half of every global batch
    # (an epoch's last batch holds n mod BATCH vectors; 1,080 training vectors give 56, 28 each)
    n = one["n"]
    per_epoch = [BATCH] * (n // BATCH) + ([n % BATCH] if n % BATCH else [])
    halves = [(per_epoch * STEPS)[j] // 2 for j in range(STEPS)]
    assert n % BATCH % 2 == 0 and halves.count(BATCH // 2) < STEPS
    for r in two:
        assert [len(t) for t in r["taken"][1:]] == halves
    for a, b in zip(two[0]["taken"][1:], two[1]["taken"][1:]):
        assert not set(a.tolist()) & set(b.tolist())
    assert sum(len(t) for t in two[0]["taken"][1:]) == sum(halves)
    assert torch.equal(two[0]["fire_count"], one["fire_count"])
    for k, v in one["state"].items():
        torch.testing.assert_close(two[0]["state"][k], v, rtol=1e-5, atol=1e-5, msg=k)
        torch.testing.assert_close(two[1]["state"][k], two[0]["state"][k], rtol=0, atol=0)
    for k in ("loss", "fvu", "l0", "auxk", "dead_in_training", "never_fired"):
        np.testing.assert_allclose(two[0]["history"][k], one["history"][k], rtol=1e-5,
                                   atol=1e-7, err_msg=k)


def _close(a: Any, b: Any, where: str) -> None:
    """``a`` equals ``b``: numbers to a relative 1e-5, everything else exactly."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            if k not in _UNEQUAL:
                _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple, np.ndarray)) and not isinstance(a, str):
        if len(a) and all(isinstance(x, (int, float, np.number)) for x in np.ravel(a)):
            np.testing.assert_allclose(np.asarray(b, dtype=float), np.asarray(a, dtype=float),
                                       rtol=1e-5, atol=1e-7, err_msg=where)
        else:
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b)):
                _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(a, bool):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-7, nan_ok=True), where
    else:
        assert a == b, where


def test_sae_train_under_torchrun_equals_one_process(smollm2_austen: Any, tmp_path: Path) -> None:
    from _realdata import SMOL_TOKEN_LAYER
    from repscope.db import ResultsDB
    from repscope.sae.io import load_sae

    args = ["--seed", "3", "sae", "train", str(smollm2_austen.store), "--layer",
            SMOL_TOKEN_LAYER, "--skip-first", "--width", "256", "--k", "16", "--steps", "50",
            "--batch-size", "128", "--out", "sae"]
    runs = {}
    for world in (1, 2):
        cwd = tmp_path / f"w{world}"
        cwd.mkdir()
        proc = run_cli_ranks(args, world, cli_env(cwd / "results.db"), cwd=cwd)
        assert proc.returncode == 0, proc.stderr[-3000:]
        db = ResultsDB(cwd / "results.db")
        runs[world] = (db.runs(), db.query(analysis="sae"), load_sae(cwd / "sae"))
        db.close()
    (_, recs1, sae1), (runs2, recs2, sae2) = runs[1], runs[2]
    assert len(runs2) == len(recs2) == 1 and len(recs1) == 1  # rank 1 recorded nothing
    assert recs2[0].layer == recs1[0].layer == SMOL_TOKEN_LAYER
    assert recs2[0].values["n_train"] == recs1[0].values["n_train"] > 10_000
    _close(dict(recs1[0].values), dict(recs2[0].values), "values")
    _close(dict(recs1[0].params), dict(recs2[0].params), "params")
    one, two = sae1.state_dict(), sae2.state_dict()
    assert set(one) == set(two)
    for k in one:  # relative to each tensor's norm: b_dec holds the residual stream's scale
        diff = float((two[k].double() - one[k].double()).norm())
        assert diff <= 1e-5 * float(one[k].double().norm()), k
