"""Filesystem helpers of the FeatureStore: atomic writes, directory fsync, the writer lock,
checksums and filesystem-safe layer directory names."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

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
    "layer_dir_name",
    "sha256_file",
    "writer_lock",
]

#: Prefix of every temporary file a writer creates; anything with it is garbage to a new writer.
TMP_PREFIX = ".tmp-"

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


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename inside it is durable (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def tmp_path_for(final: Path) -> Path:
    """A unique temporary path beside ``final`` (same directory, hence same filesystem)."""
    return final.with_name(f"{TMP_PREFIX}{final.name}.{os.getpid()}.{secrets.token_hex(4)}")


def atomic_write(final: Path, write: Callable[[IO[bytes]], None], *, sync_dir: bool = True) -> None:
    """Write ``final`` atomically: temp file in the same directory, flush, fsync, rename.

    ``write`` receives the open binary temp file. On any error the temp file is removed and
    ``final`` is left untouched. With ``sync_dir=False`` the caller fsyncs the directory later
    (once for many files).
    """
    tmp = tmp_path_for(final)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync_dir:
        fsync_dir(final.parent)


def fsync_file(path: Path) -> None:
    """fsync an already written file by path."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


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
