"""Two extractions into one store at once: the second stops at once naming the running one's
pid, and the store ends with every input exactly once. ``extract_to_store`` holds the store's
writer lock for its whole run (not only around each append) and releases it when it returns."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from repscope.exceptions import RepscopeValueError
from repscope.store import FeatureStore

CHILD = Path(__file__).with_name("_lock_child.py")
_spec = importlib.util.spec_from_file_location("_lock_child", CHILD)
assert _spec is not None
assert _spec.loader is not None
child: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(child)


def test_second_extraction_into_a_store_being_written_stops_and_nothing_is_duplicated(
    tmp_path: Path,
) -> None:
    path, ready, go = tmp_path / "k4", tmp_path / "ready", tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), str(ready), str(go)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the first extraction never reached chunk 2"
            time.sleep(0.01)
        assert FeatureStore.open(path).n_samples == child.CHUNK  # readers are not blocked
        busy = re.escape(f"another process (pid {proc.pid}) is writing to this store")
        with pytest.raises(RepscopeValueError, match=busy):
            child.run(str(path), child.build())  # the same job, while the first one runs
        go.touch()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = FeatureStore.open(path, verify="full")
    assert store.n_samples == child.N
    np.testing.assert_array_equal(store.metadata()["id"], np.arange(child.N))
    ref = FeatureStore.open(path)
    again = tmp_path / "ref"
    child.run(str(again), child.build())
    for layer in child.LAYERS:
        np.testing.assert_array_equal(ref.read(layer), FeatureStore.open(again).read(layer))


def test_extract_to_store_releases_the_lock_when_it_returns_or_fails(tmp_path: Path) -> None:
    X, _ = child.inputs()
    path = tmp_path / "s"
    child.run(str(path), child.build())
    with FeatureStore.create(path, "lock-mlp", exist_ok=True) as writer:  # not blocked
        assert writer.n_samples == child.N
    from repscope.extract import extract_to_store

    with pytest.raises(RepscopeValueError, match="already holds 24 samples but inputs has 8"):
        extract_to_store(child.build(), X[:8], path, child.LAYERS, progress=False,
                         model_id="lock-mlp")
    FeatureStore.create(path, "lock-mlp", exist_ok=True).close()  # released after the error
    given = FeatureStore.create(tmp_path / "t", "lock-mlp")  # a writer the caller holds
    out = extract_to_store(child.build(), X, given, child.LAYERS, chunk_size=8, progress=False)
    assert out is given and given.n_samples == child.N
    with pytest.raises(RepscopeValueError, match="another FeatureStore of this process"):
        FeatureStore.create(tmp_path / "t", "lock-mlp", exist_ok=True)  # still the caller's
    given.close()
