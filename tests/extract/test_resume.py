"""Resume: a writer SIGKILLed mid-run leaves complete chunks; re-running finishes the store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from repscope.exceptions import RepscopeValueError
from repscope.store import FeatureStore

CHILD = Path(__file__).with_name("_resume_child.py")
N = 480
CHUNK = 48  # _resume_child.CHUNK
LAYERS = ["0", "1", "4"]


def _child(store: Path, data: Path, signal: Path | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(store), str(data), *([str(signal)] if signal else [])],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()


@pytest.mark.slow
def test_sigkilled_extraction_resumes_to_the_uninterrupted_result(tmp_path, mnist) -> None:
    ref_path, path, data = tmp_path / "ref", tmp_path / "killed", tmp_path / "mnist.npz"
    np.savez(data, X=mnist[0][:N], y=mnist[1][:N])
    ref = _child(ref_path, data)
    paused = tmp_path / "paused"
    victim = _child(path, data, paused)  # stops after its first chunk, waiting to be killed
    try:
        deadline = time.monotonic() + 120  # a hang guard, not a timing assumption
        while not paused.exists():
            assert victim.poll() is None, victim.communicate()[1].decode()
            assert time.monotonic() < deadline, "the child never wrote a chunk"
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    _finish(ref)
    killed_at = FeatureStore.open(path).n_samples
    assert victim.returncode == -signal.SIGKILL
    assert killed_at == CHUNK  # killed mid-run, right after its first complete chunk

    _finish(_child(path, data))  # resume
    a, b = FeatureStore.open(path, verify="full"), FeatureStore.open(ref_path, verify="full")
    assert a.n_samples == b.n_samples == N
    assert a.layers == b.layers == LAYERS
    for name in LAYERS:
        assert np.array_equal(a.read(name), b.read(name)), name
    assert a.read("1").shape == (N, 4, 16)
    ma, mb = a.metadata(), b.metadata()
    assert list(ma) == list(mb) == ["label", "id"]
    for col in ma:
        assert np.array_equal(ma[col], mb[col]), col
    np.testing.assert_array_equal(ma["label"], mnist[1][:N])


def test_resume_refuses_other_model_or_shorter_inputs(tmp_path) -> None:
    import torch

    from repscope.extract import extract_to_store

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    X = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    path = tmp_path / "s"
    store = extract_to_store(net, X, path, ["0"], chunk_size=8, progress=False)
    assert store.n_samples == 20
    again = extract_to_store(net, X, path, ["0"], chunk_size=8, progress=False)  # nothing to do
    assert again.n_chunks == 3
    with pytest.raises(RepscopeValueError, match=r"already holds 20 samples but inputs has 10"):
        extract_to_store(net, X[:10], path, ["0"], progress=False)
    with pytest.raises(RepscopeValueError, match=r"model_id='Sequential', not 'other'"):
        extract_to_store(net, X, path, ["0"], model_id="other", progress=False)
