"""A writer SIGKILLed at any point leaves the store at its last complete chunk; a new writer
resumes from ``n_samples`` and ends with exactly the store an uninterrupted run writes."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from repscope.store import FeatureStore

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("_kill_writer", HERE / "_kill_writer.py")
assert _spec is not None
assert _spec.loader is not None
kw: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kw)


def _store_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _listed(root: Path) -> set[str]:
    m = json.loads((root / "manifest.json").read_text())
    out = {"manifest.json", ".lock"}
    for c in m["chunks"]:
        out |= {s["file"] for s in c["shards"].values()}
        out.add(c["metadata"]["file"])
    return out


def _checksums(root: Path) -> list[tuple[str, str]]:
    m = json.loads((root / "manifest.json").read_text())
    out = []
    for c in m["chunks"]:
        out += [(s["file"], s["sha256"]) for s in c["shards"].values()]
        out.append((c["metadata"]["file"], c["metadata"]["sha256"]))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store an uninterrupted writer produces."""
    root = tmp_path_factory.mktemp("ref") / "store"
    store = FeatureStore.create(root, kw.MODEL_ID, attrs={"seed": 1234})
    kw.append_rest(store, kw.make_dataset())
    return root


MODES = ("loop", "pause-commit", "pause-shard")


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int, bytes]]:
    """Run one writer per mode at once (to share their start-up time) and SIGKILL each one
    mid-way, once it signals its pause point (loop: between chunks, after 2 complete ones), so
    no kill point depends on how fast this process polls.

    Returns mode -> (store root, return code, stderr).
    """
    base = tmp_path_factory.mktemp("killed")
    procs = {}
    for mode in MODES:
        (base / mode).mkdir()
        root, sig = base / mode / "store", base / mode / "paused"
        cmd = [sys.executable, str(HERE / "_kill_writer.py"), str(root), mode, str(sig)]
        procs[mode] = (subprocess.Popen(cmd, stderr=subprocess.PIPE), root, sig)
    out: dict[str, tuple[Path, int, bytes]] = {}
    try:
        deadline = time.monotonic() + 90
        while len(out) < len(MODES) and time.monotonic() < deadline:
            for mode, (proc, root, sig) in procs.items():
                if mode in out:
                    continue
                ready = sig.exists()
                if ready and proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                if ready or proc.poll() is not None:
                    proc.wait(timeout=30)
                    assert proc.stderr is not None
                    out[mode] = (root, proc.returncode, proc.stderr.read())
            time.sleep(0.005)
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()
    return out


@pytest.mark.parametrize("mode", MODES)
def test_killed_writer_resumes_to_uninterrupted_result(
    mode: str, killed: dict[str, tuple[Path, int, bytes]], reference: Path
) -> None:
    assert mode in killed, "the writer never reached its kill point"
    root, returncode, stderr = killed[mode]
    assert returncode == -signal.SIGKILL, stderr.decode(errors="replace")
    total_chunks = -(-kw.N_SAMPLES // kw.CHUNK)

    # The killed store is readable at its last complete chunk.
    killed = FeatureStore.open(root, verify="full")
    assert 2 <= killed.n_chunks < total_chunks
    assert killed.n_samples == killed.n_chunks * kw.CHUNK
    data = kw.make_dataset()
    np.testing.assert_array_equal(killed.read(kw.DENSE), data[kw.DENSE][: killed.n_samples])
    debris = _store_files(root) - _listed(root)
    if mode == "pause-commit":  # complete shards of the uncommitted chunk are on disk
        assert {f"meta/chunk-{kw.PAUSE_CHUNK:06d}.parquet"} <= debris
        assert killed.n_chunks == kw.PAUSE_CHUNK
    if mode == "pause-shard":  # one finished shard and one half-written temp file
        assert any(Path(f).name.startswith(".tmp-") for f in debris)
        assert any(Path(f).name == f"chunk-{kw.PAUSE_CHUNK:06d}.safetensors" for f in debris)
        assert killed.n_chunks == kw.PAUSE_CHUNK

    # A new writer resumes from n_samples and finishes.
    store = FeatureStore.create(root, kw.MODEL_ID, exist_ok=True)
    assert _store_files(root) == _listed(root)  # debris removed on reopen
    kw.append_rest(store, data)

    final = FeatureStore.open(root)
    final.verify()
    assert final.n_samples == kw.N_SAMPLES
    assert final.n_chunks == total_chunks
    np.testing.assert_array_equal(final.read(kw.DENSE), data[kw.DENSE])
    ragged = final.read_ragged(kw.RAGGED)
    np.testing.assert_array_equal(ragged.values, np.concatenate(data[kw.RAGGED]))
    np.testing.assert_array_equal(ragged.lengths, [len(t) for t in data[kw.RAGGED]])
    meta = final.metadata()
    np.testing.assert_array_equal(meta["label"], data["label"])
    np.testing.assert_array_equal(meta["score"], data["score"])
    assert list(meta["text"]) == data["text"]
    # Byte-identical to the uninterrupted run, and nothing unlisted left behind.
    assert _checksums(root) == _checksums(reference)
    assert _store_files(root) == _listed(root)
