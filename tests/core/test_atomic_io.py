"""The one atomic-write helper (repscope._io): old or new content, never debris."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import repscope._io as aio
from repscope._io import TMP_PREFIX, atomic_dir, atomic_path, atomic_write, atomic_write_bytes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_write_bytes_replaces_content_with_plain_file_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.bin"
    assert atomic_write_bytes(target, b"old") == target  # creates the folder
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]


def test_failed_write_leaves_old_content_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old content")

    def half_then_fail(fh) -> None:
        fh.write(b"new co")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]

    def write_then_fail() -> None:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert target.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_failed_rename_leaves_old_content_and_no_temp_file(tmp_path, monkeypatch) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def no_rename(src, dst) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(aio.os, "replace", no_rename)
    with pytest.raises(OSError, match="rename failed"):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_concurrent_reader_sees_old_or_new_content_only(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    a, b = b"a" * 200_000, b"b" * 300_000
    atomic_write_bytes(target, a)
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(target.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(30):
            atomic_write_bytes(target, b if i % 2 == 0 else a, sync_dir=False)
    finally:
        stop.set()
        reader.join()
    assert seen <= {a, b}
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*"))


def test_atomic_dir_swaps_a_directory_or_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "d"
    with atomic_dir(target) as tmp:
        (tmp / "x.txt").write_text("one")
    assert (target / "x.txt").read_text() == "one"
    assert target.stat().st_mode & 0o777 == 0o777 & ~_umask()  # not a private temp dir
    def fill_then_fail() -> None:
        with atomic_dir(target) as tmp:
            (tmp / "x.txt").write_text("two")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        fill_then_fail()
    assert (target / "x.txt").read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    with atomic_dir(target) as tmp:
        (tmp / "y.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["y.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
