"""``repscope sae train`` and ``sae eval`` show a progress bar with an ETA (issue 12, item 13:
``sae train --epochs 5`` ran 121 s and ``sae eval --model`` 60 s in silence), through the real
entry point on a pseudo-terminal; ``--no-progress`` hides every bar."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from repscope._testing import cli_env, run_on_terminal

REPSCOPE = [sys.executable, "-m", "repscope"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return cli_env(tmp_path / "results.db", **extra)




def test_train_and_eval_draw_bars_with_eta_and_no_progress_hides_them(tmp_path):
    X = np.random.default_rng(0).standard_normal((3000, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    train = [*REPSCOPE, "sae", "train", "x.npy", "--width", "16", "--k", "2", "--steps", "600",
             "--batch-size", "64", "--out", "sae"]
    rc, out, err = run_on_terminal(train, _env(tmp_path), tmp_path)
    assert rc == 0, err
    assert "sae training steps" in err and "600/600" in err and "eta" in err
    assert "evaluating sae" in err  # the held-out evaluation has its own bar
    assert "step 600/600: loss" in err  # history rows go above the bar
    assert "FVU" in out
    evaluate = [*REPSCOPE, "sae", "eval", "sae", "x.npy"]
    rc, out, err = run_on_terminal(evaluate, _env(tmp_path), tmp_path)
    assert rc == 0, err
    assert "evaluation vectors" in err and "6000/6000" in err and "eta" in err  # two passes

    for args in ([*train[:-1], "sae2", "--no-progress"], [*evaluate, "--no-progress"]):
        rc, out, err = run_on_terminal(args, _env(tmp_path), tmp_path)
        assert rc == 0, err
        for bar in ("training steps", "evaluating", "evaluation vectors", "eta", "step 600"):
            assert bar not in err, (bar, err)
        assert "FVU" in out


def test_json_output_stays_clean_while_the_bar_draws(tmp_path):
    X = np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    args = [*REPSCOPE, "sae", "train", "x.npy", "--width", "16", "--k", "2", "--steps", "50",
            "--out", "sae", "--json"]
    rc, out, err = run_on_terminal(args, _env(tmp_path), tmp_path)
    assert rc == 0, err
    assert "training steps" in err
    assert json.loads(out)[0]["n_steps"] == 50


def test_eval_with_a_model_shows_the_lm_loss_bar(tmp_path, monkeypatch):
    """``sae eval --model``: the LM-loss pass over the texts has its own bar (a tiny LM stands in
    for SmolLM2; REPSCOPE_PROGRESS=1 draws bars off a terminal)."""
    from repscope.cli import cli
    from repscope.sae import TopKConfig, TopKSAE
    from repscope.sae.io import save_sae

    d = 8

    from _tiny_lm import install_tiny_lm

    install_tiny_lm(monkeypatch, d, [f"text number {i}" for i in range(40)])
    from safetensors.numpy import save_file

    save_file({"block": np.random.default_rng(0).standard_normal((50, d)).astype(np.float32)},
              str(tmp_path / "f.safetensors"))
    save_sae(TopKSAE(TopKConfig(d_in=d, d_sae=16, k=2)), tmp_path / "sae")
    args = ["--db", str(tmp_path / "r.db"), "sae", "eval", str(tmp_path / "sae"),
            str(tmp_path / "f.safetensors"), "--layer", "block", "--model", "tiny", "--n-texts",
            "40"]
    monkeypatch.setenv("REPSCOPE_PROGRESS", "1")
    monkeypatch.setenv("COLUMNS", "120")
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "LM loss texts" in res.stderr and "40/40" in res.stderr
    res = CliRunner().invoke(cli, [*args, "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "LM loss texts" not in res.stderr and "evaluation vectors" not in res.stderr
