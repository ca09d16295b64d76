"""Atomic, durable writes: every file and directory repscope writes goes through here.

A write goes to a temporary name beside the target (same directory, hence same filesystem),
is flushed and fsynced, renamed over the target with :func:`os.replace`, and the directory is
fsynced so that the rename itself survives a power cut. Readers see the old content or the new
content, never a mixture; a failure (or a kill) leaves the target untouched and, except for a
kill, no temporary behind. Temporary names start with :data:`TMP_PREFIX`, so a later writer can
recognise and remove the debris of a killed one (the FeatureStore does).

Temporary files are created with mode ``0o666`` and temporary directories with ``0o777``, both
minus the umask, so the result has the permissions a plain ``open``/``mkdir`` would give.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "TMP_PREFIX",
    "atomic_dir",
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "fsync_dir",
    "fsync_file",
    "read_tagged_safetensors",
    "tmp_path_for",
    "write_tagged_safetensors",
]

#: Prefix of every temporary file or directory an atomic write creates.
TMP_PREFIX = ".tmp-"

_ATTEMPTS = 100


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that a rename inside it is durable (a no-op where unsupported)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """fsync an already written file by path."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def tmp_path_for(final: str | os.PathLike[str]) -> Path:
    """A fresh temporary name beside ``final``: ``.tmp-<name>.<pid>.<random hex>``."""
    final = Path(final)
    return final.with_name(f"{TMP_PREFIX}{final.name}.{os.getpid()}.{secrets.token_hex(4)}")


def _create(final: Path, make: Callable[[Path], None]) -> Path:
    """Create a temporary sibling of ``final`` exclusively with ``make`` and return its path."""
    for _ in range(_ATTEMPTS):
        tmp = tmp_path_for(final)
        try:
            make(tmp)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary name beside {final}")  # pragma: no cover


def _new_file(tmp: Path) -> None:
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, sync_dir: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    The temporary file exists (empty) when the block starts; write it by that exact name
    (functions that add a suffix, such as ``np.save`` with a path, must get an open file).
    On an exception the temporary file is removed and ``path`` is untouched.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write. Its directory is created when missing.
    sync_dir : bool, default=True
        fsync the directory after the rename. Pass False when writing many files into one
        directory and call :func:`fsync_dir` once at the end.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> target.read_text()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create(path, _new_file)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync_dir:
        fsync_dir(path.parent)


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[IO[bytes]], None],
    *,
    sync_dir: bool = True,
) -> Path:
    """Write ``path`` atomically through ``write``, which receives the open binary temp file.

    Parameters
    ----------
    path : str or os.PathLike
    write : callable
        ``write(fh)`` writes the whole content to ``fh``.
    sync_dir : bool, default=True
        See :func:`atomic_path`.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    with atomic_path(path, sync_dir=sync_dir) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
    return path


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, sync_dir: bool = True
) -> Path:
    """Write ``data`` to ``path`` atomically and return ``path``."""
    def write(fh: IO[bytes]) -> None:
        fh.write(data)

    return atomic_write(path, write, sync_dir=sync_dir)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fsync_file(Path(dirpath) / name)
        fsync_dir(dirpath)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success swap it in as ``path``.

    On leaving the block every file in the temporary directory is fsynced, whatever is at
    ``path`` is moved aside, the temporary directory is renamed to ``path``, the parent is
    fsynced and the old content is deleted. On an exception (also one during the swap) the
    temporary directory is removed and the old content stays or is put back at ``path``.
    Between the two renames ``path`` is briefly absent; it never holds a partial directory.

    Parameters
    ----------
    path : str or os.PathLike
        The directory to create or replace. Its parent is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create(path, lambda p: p.mkdir(0o777))
    old: Path | None = None
    try:
        yield tmp
        _fsync_tree(tmp)
        if os.path.lexists(path):
            old = tmp_path_for(path)
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and os.path.lexists(old) and not os.path.lexists(path):
            os.replace(old, path)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def write_tagged_safetensors(path: str | os.PathLike[str], arrays: dict[str, Any],
                             meta: dict[str, Any]) -> Path:
    """Write ``arrays`` as one safetensors file with ``meta`` as JSON under the header key
    ``repscope``, atomically; nothing is pickled. The format of saved Moments and detectors."""
    import json

    from safetensors.numpy import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata={"repscope": json.dumps(meta)})
    return path


def read_tagged_safetensors(
    path: str | os.PathLike[str], *, kind: str, fmt: str, version: int, missing: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a file written by :func:`write_tagged_safetensors`: ``(meta, arrays)``.

    ``kind`` names the object in messages ("Moments", "OOD detector"), ``missing`` is the
    message for an absent file; a file that is not safetensors, carries no ``repscope`` header
    or holds another format (or a newer ``version`` of ``fmt``) is a CorruptStoreError.
    """
    import json

    from safetensors import safe_open

    from repscope.exceptions import CorruptStoreError, DataNotFoundError

    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(missing)
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types
        raise CorruptStoreError(f"cannot read {kind} file {path}: {err}") from None
    if "repscope" not in header:
        raise CorruptStoreError(f"{path} is a safetensors file but not a saved {kind}.")
    meta = json.loads(header["repscope"])
    if meta.get("format") != fmt or int(meta.get("format_version", 0)) > version:
        raise CorruptStoreError(
            f"{path} holds format {meta.get('format')!r} v{meta.get('format_version')}; this "
            f"repscope reads {fmt} up to v{version}.")
    return meta, arrays
