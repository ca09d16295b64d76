"""One-line messages for the failures the command line reports without a traceback.

:func:`one_line` turns an exception into the message ``repscope`` prints (``Error: ...``,
exit code 1): repscope's own errors as they are, and the failures that come from the machine
rather than from repscope: a file system that refuses a write (permissions, read-only, full),
a results database that stays locked or cannot be opened, memory running out, and numpy's
refusal to unpickle an object array. Anything else keeps its traceback (a bug to report).
:func:`hoist_debug` lets ``--debug`` appear anywhere on the command line.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from repscope._io import TMP_PREFIX
from repscope.exceptions import RepscopeError, RepscopeValueError

__all__ = ["DEBUG_FLAG", "check_labels_file", "hoist_debug", "one_line"]

DEBUG_FLAG = "--debug"

#: errno -> (problem, what to do), for the file-system failures a user can fix.
_OS_PROBLEMS: dict[int, tuple[str, str]] = {
    errno.EACCES: ("permission denied", "choose a folder you can write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to"),
    errno.EROFS: ("read-only file system", "write to a folder on a writable file system"),
    errno.ENOSPC: ("no space left on the device", "free some space or write elsewhere"),
    getattr(errno, "EDQUOT", -1): ("disk quota exceeded", "free some space or write elsewhere"),
}
#: numpy's message when ``np.load(..., allow_pickle=False)`` meets an object array.
_PICKLE_REFUSAL = "allow_pickle=False"


def hoist_debug(args: Sequence[str]) -> list[str]:
    """``args`` with every ``--debug`` (before a ``--`` separator) moved to the front, where
    the root group's option reads it: ``repscope probe x --labels y --debug`` works."""
    args = list(args)
    end = args.index("--") if "--" in args else len(args)
    head = [a for a in args[:end] if a != DEBUG_FLAG]
    if len(head) == end:
        return args
    return [DEBUG_FLAG, *head, *args[end:]]


def _db_hint(path: Path, db: Path | None) -> str:
    """A hint to pass ``--db`` when ``path`` belongs to the results database ``db``."""
    if db is None:
        return ""
    folder = db.parent
    mine = {db, folder, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")}
    if path in mine or folder / "arrays" in (path, *path.parents):
        return f"; or pass --db PATH to use another results database than {db}"
    return ""


def _os_message(err: OSError, db: Path | None) -> str:
    problem, fix = _OS_PROBLEMS.get(
        err.errno or 0, ((err.strerror or type(err).__name__).lower(), "")
    )
    if err.filename is None:
        return f"{problem}." + (f" {fix[:1].upper()}{fix[1:]}." if fix else "")
    path = Path(os.fsdecode(err.filename))
    where = str(path)
    if path.name.startswith(TMP_PREFIX):  # an atomic write's temporary: name its folder
        where = f"cannot write in {path.parent}"
    elif err.filename2 is not None:
        where += f" -> {os.fsdecode(err.filename2)}"
    hint = _db_hint(path.absolute(), db)
    tail = f" ({fix}{hint})" if fix or hint else ""
    return f"{problem}: {where}{tail}."


def _sqlite_message(err: sqlite3.Error, db: Path | None) -> str:
    name = str(db) if db is not None else "the results database"
    text = str(err)
    if "locked" in text or "busy" in text:
        return (
            f"the results database {name} is locked: another process kept writing to it past "
            f"the wait timeout. Wait for it to finish, or pass --db PATH to use another "
            f"database."
        )
    if "readonly" in text or "read-only" in text:
        return (
            f"the results database {name} is read-only ({text}). Make it and its folder "
            f"writable, or pass --db PATH to use a database in a writable folder."
        )
    if "unable to open" in text:
        return (
            f"cannot open the results database {name} ({text}): is its folder writable? Pass "
            f"--db PATH to use a database elsewhere."
        )
    return f"the results database {name} failed: {text}. Pass --db PATH to use another database."


def _memory_message(err: MemoryError) -> str:
    detail = " ".join(str(err).split())
    return (
        f"out of memory{': ' + detail if detail else ''}. The data does not fit in this "
        f"machine's memory: analyse a subset of layers (--layer) or reduce the width with PCA "
        f"first."
    )


def one_line(err: BaseException, *, db: Path | None = None) -> str | None:
    """The one-line message for ``err``, or None when it should keep its traceback.

    Parameters
    ----------
    err : BaseException
        What a command raised.
    db : Path, optional
        The results database in use (named in database errors and hints).
    """
    if isinstance(err, RepscopeError):
        text = str(err)
    elif isinstance(err, OSError):
        text = _os_message(err, db)
    elif isinstance(err, sqlite3.Error):
        text = _sqlite_message(err, db)
    elif isinstance(err, MemoryError):
        text = _memory_message(err)
    elif isinstance(err, RuntimeError) and _lost_rank(err):
        from repscope.distributed import context

        ctx = context()
        detail = " ".join(str(err).split())[:300]
        text = (f"rank {ctx.rank} of {ctx.world_size}: a collective failed: another rank stopped "
                f"or did not answer within {ctx.timeout:g} s ({detail}). Nothing was recorded; "
                "run the same command again.")
    elif isinstance(err, ValueError) and _PICKLE_REFUSAL in str(err):
        text = (
            "a .npy file holds Python objects (dtype=object), which repscope never unpickles; "
            "save it as numbers (labels: integers or strings, e.g. "
            "np.save(path, np.asarray(labels, dtype=str)))."
        )
    else:
        return None
    return " ".join(text.split())


#: What gloo and NCCL say when a peer process is gone or a collective timed out.
_LOST_RANK = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
              "Timed out", "timed out", "NCCL error", "ProcessGroupGloo", "ProcessGroupNCCL",
              "gloo/transport")


def _lost_rank(err: BaseException) -> bool:
    """A torch.distributed error of a launch of several ranks whose peer went away."""
    import sys

    if "torch.distributed" not in sys.modules:
        return False
    from repscope.distributed import context

    return context().is_distributed and any(s in str(err) for s in _LOST_RANK)


def check_labels_file(source: str) -> None:
    """Refuse a labels ``.npy`` that is not a 1-D array of numbers or strings, naming it.

    Only the file's header is read. Other sources (text files, metadata columns, missing
    files) are left to :func:`repscope.store.load_labels`.
    """
    path = Path(source)
    if path.suffix.lower() != ".npy" or not path.is_file():
        return
    import numpy as np

    fmt = np.lib.format
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    try:
        with open(path, "rb") as fh:
            reader = readers.get(fmt.read_magic(fh))
            if reader is None:  # a newer format: load_labels reads it
                return
            shape, _, dtype = reader(fh)
    except (OSError, ValueError) as err:
        raise RepscopeValueError(f"labels {path} is not a readable .npy file: {err}.") from None
    if dtype.hasobject:
        raise RepscopeValueError(
            f"labels {path} hold Python objects (dtype={dtype}), which repscope never "
            f"unpickles; save them as integers or strings, e.g. "
            f"np.save(path, np.asarray(labels, dtype=str))."
        )
    if len(shape) != 1:
        raise RepscopeValueError(
            f"labels {path} must be 1-D with one label per sample; got shape {tuple(shape)}."
            + (" Save labels.ravel()." if len(shape) == 2 and 1 in shape else "")
        )
