"""Filesystem helpers of the FeatureStore: the writer lock, checksums and filesystem-safe layer
directory names. Atomic writes and fsync come from :mod:`repscope._io` (re-exported here)."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from repscope._io import TMP_PREFIX, atomic_write, fsync_dir, fsync_file, tmp_path_for
from repscope.exceptions import CorruptStoreError

try:  # POSIX advisory locks; on other platforms appends are not serialised across processes.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "TMP_PREFIX",
    "atomic_write",
    "check_listed_file",
    "fsync_dir",
    "fsync_file",
    "layer_dir_name",
    "sha256_file",
    "tmp_path_for",
    "writer_lock",
]

_BUF = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BUF):
            h.update(block)
    return h.hexdigest()


def check_listed_file(path: Path, entry: Mapping[str, Any], *, checksum: bool) -> None:
    """Check a file against its manifest entry (``bytes`` always, ``sha256`` if asked).

    Raises
    ------
    CorruptStoreError
        The file is missing, has another size (truncated) or another checksum; the message
        names the path and the expected and actual values.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CorruptStoreError(
            f"missing file {path}: the manifest lists it but it does not exist."
        ) from None
    if size != entry["bytes"]:
        what = "truncated" if size < entry["bytes"] else "wrong-sized"
        raise CorruptStoreError(
            f"{what} file {path}: the manifest expects {entry['bytes']} bytes, the file has "
            f"{size} bytes. The store is damaged; re-extract this chunk."
        )
    if checksum:
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise CorruptStoreError(
                f"checksum mismatch in {path}: the manifest records sha256 {entry['sha256']}, "
                f"the file has {actual}. The file was modified or corrupted; re-extract this "
                "chunk."
            )


@contextlib.contextmanager
def writer_lock(root: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``root/.lock`` held while one writer appends.

    The kernel releases it when the process dies, so a killed writer never blocks the next one.
    """
    lock_path = root / ".lock"
    with open(lock_path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def layer_dir_name(layer: str, taken: Iterable[str]) -> str:
    """A filesystem-safe directory name for ``layer``, unique (case-insensitively) in ``taken``.

    Module paths such as ``model.layers.6.mlp`` are kept as they are; other characters become
    ``_`` and a short hash of the real name is appended when the name had to change or would
    collide. The manifest records the mapping, so the name never has to be reversed.
    """
    safe = _UNSAFE.sub("_", layer)[:120]
    if not safe or safe.startswith("."):
        safe = "_" + safe
    used = {t.lower() for t in taken}
    if safe != layer or safe.lower() in used:
        digest = hashlib.sha1(layer.encode("utf-8")).hexdigest()[:8]
        safe = f"{safe}-{digest}"
        i = 1
        base = safe
        while safe.lower() in used:
            safe = f"{base}-{i}"
            i += 1
    return safe
