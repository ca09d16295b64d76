"""Filesystem helpers of the FeatureStore: the one-writer lock, paths confined to the store,
checksums and filesystem-safe layer directory names. Atomic writes and fsync come from
:mod:`repscope._io` (re-exported here)."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from repscope._io import TMP_PREFIX, atomic_write, fsync_dir, fsync_file, tmp_path_for
from repscope.exceptions import CorruptStoreError, RepscopeValueError

try:  # POSIX advisory locks; on other platforms writers are not kept apart across processes.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_FILE",
    "TMP_PREFIX",
    "StoreLock",
    "acquire_store_lock",
    "atomic_write",
    "check_listed_file",
    "fsync_dir",
    "fsync_file",
    "is_plain_name",
    "is_real_dir",
    "layer_dir_name",
    "sha256_file",
    "store_path",
    "tmp_path_for",
]

#: Name of the lock file inside a store; it holds the pid of the writer that last took it.
LOCK_FILE = ".lock"
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


_PID_BYTES = 24  # the pid record is fixed-width, so a reader never sees it half-written
_POLL_S = 0.05


class StoreLock:
    """The exclusive lock of one store writer: an ``flock`` on ``<root>/.lock``.

    Held from :func:`acquire_store_lock` until :meth:`release`, until this object is
    garbage-collected, or until the process dies (the kernel drops the lock with the file
    descriptor, so a killed writer never leaves the store locked).
    """

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self._pid = os.getpid()  # a forked child inherits the descriptor, not the lock's use
        self.path = path

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd is not None and self._pid == os.getpid()

    def release(self) -> None:
        """Release the lock (closing the descriptor releases the ``flock``); idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self.release()


def _holder_pid(path: Path) -> int | None:
    """The pid the current holder wrote into the lock file, or None if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def _busy_error(root: Path, pid: int | None, waited: float | None) -> RepscopeValueError:
    if pid is not None and pid == os.getpid():
        who = (
            f"another FeatureStore of this process (pid {pid}) is writing to this store; close() "
            "it or write elsewhere"
        )
    else:
        holder = f"another process (pid {pid})" if pid is not None else "another process"
        who = f"{holder} is writing to this store; wait for it or write elsewhere"
    after = f" (waited {waited:g} s)" if waited else ""
    return RepscopeValueError(f"cannot write to the FeatureStore at {root}: {who}{after}.")


def acquire_store_lock(root: Path, *, timeout: float | None = 0.0) -> StoreLock:
    """Take the one-writer lock of the store at ``root``.

    Parameters
    ----------
    root : Path
        The store directory (it must exist).
    timeout : float or None, default 0.0
        Seconds to wait for another writer to finish: 0 fails at once, None waits forever.

    Raises
    ------
    RepscopeValueError
        Another writer (another process, or another FeatureStore object of this process)
        holds the lock; the message names the store and the holder's pid.
    CorruptStoreError
        ``root/.lock`` is a symbolic link.
    """
    path = root / LOCK_FILE
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise CorruptStoreError(
                f"corrupt store {root}: its lock file {LOCK_FILE} is a symbolic link; remove it."
            ) from None
        raise
    try:
        if fcntl is not None:
            _flock(fd, root, path, timeout)
        record = f"{os.getpid()}\n".rjust(_PID_BYTES).encode("ascii")
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, record)
        os.ftruncate(fd, _PID_BYTES)
    except BaseException:
        os.close(fd)
        raise
    return StoreLock(fd, path)


def _flock(fd: int, root: Path, path: Path, timeout: float | None) -> None:
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _busy_error(root, _holder_pid(path), timeout) from None
            time.sleep(min(_POLL_S, left))


def is_plain_name(name: Any) -> bool:
    """Whether ``name`` is one plain path component: a non-empty str, not ``.`` or ``..``,
    without ``/``, ``\\`` or NUL (so it can never leave the directory it is joined to)."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in name for c in "/\\\x00")
    )


def is_real_dir(path: Path) -> bool:
    """Whether ``path`` is a directory and not a symbolic link (to one)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def store_path(root: Path, rel: str, what: str) -> Path:
    """``root / rel`` for a store-relative path, checked to stay inside the store.

    ``rel`` must be a normalised relative POSIX path (plain components joined by ``/``: no
    leading ``/``, no ``.``, ``..`` or empty parts) and no part of it that exists may be a
    symbolic link, so the result lies inside ``root`` whatever the manifest or the tree says.

    Raises
    ------
    CorruptStoreError
        Naming ``what`` (the manifest entry) and ``rel``; never anything about the file an
        escaping path points at.
    """
    parts = rel.split("/") if isinstance(rel, str) else []
    if not parts or not all(is_plain_name(p) for p in parts):
        raise CorruptStoreError(
            f"corrupt store {root}: {what} is {rel!r:.200}, not a relative path inside the store "
            "(absolute paths, '..', '.' and empty parts are refused)."
        )
    path = root
    for i, part in enumerate(parts):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            break
        except OSError as err:  # e.g. a part that is a file: report it, do not follow it
            raise CorruptStoreError(
                f"corrupt store {root}: {what} {rel!r:.200} cannot be reached ({err.strerror})."
            ) from None
        if stat.S_ISLNK(mode):
            link = "/".join(parts[: i + 1])
            raise CorruptStoreError(
                f"corrupt store {root}: {what} is {rel!r:.200}, but {link} is a symbolic link; a "
                "store's files must lie inside it. Remove the link (or re-extract the store)."
            )
    return root / rel


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
