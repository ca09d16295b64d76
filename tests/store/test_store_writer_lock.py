"""One writer at a time: a store opened for writing stays locked until its writer closes, is
garbage-collected or dies; a second writer stops at once (or waits up to ``lock_timeout``)
naming the holder's pid, and readers are never blocked.

The other writers are real processes (``_lock_writer.py``) ordered by handshake files.
"""

from __future__ import annotations

import gc
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from repscope.exceptions import RepscopeValueError
from repscope.store import FeatureStore

CHILD = Path(__file__).with_name("_lock_writer.py")
MODEL_ID = "lock-test-model"  # _lock_writer.MODEL_ID


class Writer:
    """A ``_lock_writer.py`` process: it appends chunk 0, signals READY, waits for GO."""

    def __init__(self, root: Path, tag: str, *, go_now: bool = False) -> None:
        self.ready = root.parent / f"{tag}.ready"
        self.go = root.parent / f"{tag}.go"
        if go_now:
            self.go.touch()
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(root), str(self.ready), str(self.go)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"writer exited early: {self.stderr()}")
            assert time.monotonic() < deadline, "the writer never signalled READY"
            time.sleep(0.01)

    def finish(self) -> tuple[int, str]:
        self.go.touch()
        self.proc.wait(timeout=120)
        return self.proc.returncode, self.stderr()

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Writer]:
    """A writer process that created the store, appended samples 0-3 and holds it open."""
    w = Writer(tmp_path / "store", "a")
    try:
        w.wait_ready()
        yield w
    finally:
        w.kill()


def _busy(pid: int) -> str:
    return re.escape(
        f"another process (pid {pid}) is writing to this store; wait for it or write elsewhere"
    )


def _ids(root: Path) -> list[int]:
    return [int(i) for i in FeatureStore.open(root, verify="full").metadata()["id"]]


def _chunk(ids: list[int]) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    return {"h": np.array(ids, dtype=np.float32)[:, None].repeat(3, axis=1)}, {"id": ids}


def test_second_writer_process_fails_and_every_sample_is_stored_once(
    holder: Writer, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    second = Writer(root, "b", go_now=True)  # the same job, started while the first one runs
    try:
        assert second.proc.wait(timeout=120) == 3
        err = second.stderr()
    finally:
        second.kill()
    assert not second.ready.exists()
    assert str(root) in err
    assert re.search(_busy(holder.proc.pid), err), err
    assert len(err.strip().splitlines()) == 1, err
    assert holder.finish() == (0, "")
    assert _ids(root) == list(range(8))


def test_in_process_writers_fail_fast_while_readers_read(holder: Writer, tmp_path: Path) -> None:
    root = tmp_path / "store"
    pid = holder.proc.pid
    with pytest.raises(RepscopeValueError, match=_busy(pid)) as err:
        FeatureStore.create(root, MODEL_ID, exist_ok=True)
    assert str(root) in str(err.value)
    reader = FeatureStore.open(root)  # readers are never blocked
    np.testing.assert_array_equal(reader.read("h")[:, 0], [0, 1, 2, 3])
    with pytest.raises(RepscopeValueError, match=_busy(pid)):
        reader.append(*_chunk([4, 5, 6, 7]))  # a reader that appends becomes a writer
    assert holder.finish() == (0, "")
    assert _ids(root) == list(range(8))


def test_waiting_writer_times_out_then_resumes_from_the_holders_n_samples(
    holder: Writer, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    t0 = time.monotonic()
    with pytest.raises(RepscopeValueError, match=_busy(holder.proc.pid)):
        FeatureStore.create(root, MODEL_ID, exist_ok=True, lock_timeout=0.3)
    assert time.monotonic() - t0 >= 0.3
    holder.go.touch()  # the holder appends samples 4-7 and exits; we wait for its lock
    store = FeatureStore.create(root, MODEL_ID, exist_ok=True, lock_timeout=120)
    assert store.n_samples == 8  # read under the lock, after the holder's last chunk
    store.append(*_chunk([8, 9]))
    store.close()
    assert holder.proc.wait(timeout=120) == 0
    assert _ids(root) == list(range(10))


def test_sigkilled_writer_does_not_leave_the_store_locked(holder: Writer, tmp_path: Path) -> None:
    root = tmp_path / "store"
    with pytest.raises(RepscopeValueError, match=_busy(holder.proc.pid)):
        FeatureStore.create(root, MODEL_ID, exist_ok=True)
    holder.proc.send_signal(signal.SIGKILL)
    assert holder.proc.wait(timeout=30) == -signal.SIGKILL
    with FeatureStore.create(root, MODEL_ID, exist_ok=True) as store:
        assert store.n_samples == 4
        store.append(*_chunk([4, 5]))
    assert _ids(root) == list(range(6))


def test_one_writer_object_per_store_in_a_process_until_close_exit_or_collection(
    tmp_path: Path,
) -> None:
    root = tmp_path / "s"
    first = FeatureStore.create(root, "m")
    first.append(*_chunk([0, 1]))
    same_process = re.escape(f"another FeatureStore of this process (pid {os.getpid()})")
    with pytest.raises(RepscopeValueError, match=same_process):
        FeatureStore.create(root, "m", exist_ok=True)
    with pytest.raises(RepscopeValueError, match=same_process):
        FeatureStore.open(root).append(*_chunk([2]))
    clone = pickle.loads(pickle.dumps(first))  # a copy for a DataLoader worker reads only
    np.testing.assert_array_equal(clone.read("h")[:, 0], [0, 1])
    with pytest.raises(RepscopeValueError, match=same_process):
        clone.append(*_chunk([2]))
    first.close()  # close() releases the lock; the store stays readable
    np.testing.assert_array_equal(first.read("h")[:, 0], [0, 1])
    with FeatureStore.create(root, "m", exist_ok=True) as second:
        second.append(*_chunk([2]))
    third = FeatureStore.open(root)
    third.append(*_chunk([3]))  # a reader takes the lock on its first append and keeps it
    with pytest.raises(RepscopeValueError, match=same_process):
        FeatureStore.create(root, "m", exist_ok=True)
    del third
    gc.collect()
    fourth = FeatureStore.create(root, "m", exist_ok=True)
    assert fourth.n_samples == 4
    first.refresh()
    assert first.n_samples == 4
    fourth.close()
    assert _ids(root) == [0, 1, 2, 3]


def test_lock_timeout_is_checked(tmp_path: Path) -> None:
    with pytest.raises(RepscopeValueError, match="'lock_timeout' parameter"):
        FeatureStore.create(tmp_path / "s", "m", lock_timeout=-1)
    assert not (tmp_path / "s").exists()
