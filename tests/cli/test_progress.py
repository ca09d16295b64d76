"""Long steps show a progress bar with an ETA, through the real entry point (issue: silent long
steps): on a terminal by default, in logs only when ``REPSCOPE_PROGRESS=1``, never with
``--no-progress`` (on the command or the root group) or ``REPSCOPE_NO_PROGRESS=1``; ``--json``
output on stdout stays parseable while bars draw on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from repscope._testing import cli_env, run_on_terminal

REPSCOPE = [sys.executable, "-m", "repscope"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return cli_env(tmp_path / "results.db", **extra)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((120, 6))
    b = a @ rng.standard_normal((6, 5)) + 0.1 * rng.standard_normal((120, 5))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    return str(tmp_path / "a.npy"), str(tmp_path / "b.npy")


@pytest.fixture
def labelled(tmp_path: Path) -> tuple[str, str]:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 60)
    X = rng.standard_normal((180, 8)) + y[:, None]
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    return str(tmp_path / "x.npy"), str(tmp_path / "y.npy")




def test_similarity_permutations_draw_a_bar_with_eta_on_a_terminal(tmp_path, pair):
    args = [*REPSCOPE, "similarity", *pair, "--permutations", "300"]
    rc, _, err = run_on_terminal(args, _env(tmp_path), tmp_path)
    assert rc == 0, err
    assert "similarity" in err and "linear_cka permutations" in err
    assert "300/300" in err and "eta" in err

    rc, _, err = run_on_terminal([*args, "--no-progress"], _env(tmp_path), tmp_path)
    assert rc == 0, err
    assert "permutations" not in err and "eta" not in err


def test_root_no_progress_and_the_environment_hide_every_bar(tmp_path, pair):
    rc, _, err = run_on_terminal(
        [*REPSCOPE, "--no-progress", "similarity", *pair, "--bootstrap", "50"],
        _env(tmp_path), tmp_path)
    assert rc == 0 and "bootstrap" not in err, err
    rc, _, err = run_on_terminal([*REPSCOPE, "similarity", *pair, "--bootstrap", "50"],
                                  _env(tmp_path, REPSCOPE_NO_PROGRESS="1"), tmp_path)
    assert rc == 0 and "bootstrap" not in err, err
    rc, _, err = run_on_terminal([*REPSCOPE, "similarity", *pair, "--bootstrap", "50"],
                                  _env(tmp_path), tmp_path)
    assert rc == 0 and "linear_cka bootstrap" in err and "50/50" in err, err


def test_probe_learning_curve_shows_its_fits_and_json_stays_clean(tmp_path, labelled):
    x, y = labelled
    proc = subprocess.run(
        [*REPSCOPE, "probe", x, "--labels", y, "--learning-curve", "--few-shot", "1,5",
         "--json"],
        capture_output=True, text=True, env=_env(tmp_path, REPSCOPE_PROGRESS="1"), cwd=tmp_path,
        timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "learning-curve fits" in proc.stderr
    assert "few-shot fits" in proc.stderr and "layers" in proc.stderr
    out = json.loads(proc.stdout)  # bars never reach stdout
    assert out["learning_curve"]["sizes"]


def test_piped_stderr_gets_no_bar_by_default(tmp_path, labelled):
    x, y = labelled
    proc = subprocess.run([*REPSCOPE, "probe", x, "--labels", y, "--learning-curve"],
                          capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "fits" not in proc.stderr and "eta" not in proc.stderr


def test_library_calls_stay_quiet_unless_asked(capsys):
    from repscope.similarity import permutation_test

    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 3))
    calls: list[int] = []
    res = permutation_test(X, X, n_permutations=40, progress=calls.append)
    assert sum(calls) == 40 and res.n_permutations == 40
    permutation_test(X, X, n_permutations=40)
    assert capsys.readouterr().err == ""


@pytest.mark.real
def test_zoo_text_model_loads_without_transformers_bar(tmp_path):
    code = ("from repscope import zoo; zoo.load_model('minilm-l6');"
            "from transformers.utils import logging as l; print(l.is_progress_bar_enabled())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Loading weights" not in proc.stderr
    assert proc.stdout.strip() == "True"  # the user's own setting comes back


def test_readout_and_library_fits_report_their_steps(tmp_path):
    """The readout's training steps and the point probes' fits advance a caller's bar."""
    from repscope.probe import CrossAttentionReadout, probe_points

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4, 3))
    steps: list[int] = []
    CrossAttentionReadout(dim=4, n_components=3, max_iter=7).fit(X, X[:, 0, 0],
                                                                  progress=steps.append)
    assert sum(steps) == 7
    maps = {"a": rng.standard_normal((12, 2, 4, 4)), "b": rng.standard_normal((12, 2, 2, 2))}
    pts = rng.uniform(0, 1, (12, 5, 2))
    labels = rng.integers(0, 2, (12, 5))
    fits: list[int] = []
    res = probe_points(maps, pts, labels, progress=fits.append)
    assert sum(fits) == len(res.rows) * len(res.probes)
