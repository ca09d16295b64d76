"""Every CLI failure is one line on stderr and exit code 1, whatever raised it: bad arrays,
unwritable or full folders, a locked database, memory. ``--debug`` (anywhere on the command
line) shows the traceback instead."""

from __future__ import annotations

import builtins
import errno
import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from repscope.cli import cli


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def arrays(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "X.npy", rng.standard_normal((40, 5)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(40) % 2)
    np.save(tmp_path / "zero.npy", np.array(3.0))
    np.save(
        tmp_path / "yobj.npy",
        np.array([{"a": i} for i in range(40)], dtype=object),
        allow_pickle=True,
    )
    return tmp_path


def one_line(res: Result, *patterns: str) -> str:
    """Exit code 1, exactly one line on stderr (``Error: ...``), no traceback anywhere."""
    assert res.exit_code == 1, (res.exit_code, res.output, res.exception)
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), (
        res.exception
    )
    err = res.stderr.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("Error: "), err
    assert "Traceback" not in res.output
    for p in patterns:
        assert p in err, (p, err)
    return err


def debug_traceback(res: Result, kind: type[BaseException]) -> None:
    """With ``--debug`` the original exception escapes (and with it its traceback)."""
    assert res.exit_code == 1, (res.exit_code, res.output)
    assert isinstance(res.exception, kind), res.exception
    assert res.exc_info is not None and res.exc_info[2] is not None


# ---------------------------------------------------------------------------- bad arrays
def test_zero_d_npy_as_features_is_one_line(runner, arrays):
    args = [
        "--db",
        str(arrays / "r.db"),
        "probe",
        str(arrays / "zero.npy"),
        "--labels",
        str(arrays / "y.npy"),
    ]
    one_line(runner.invoke(cli, args), "zero.npy", "2-D")
    debug_traceback(runner.invoke(cli, [*args, "--debug"]), ValueError)


def test_zero_d_npy_as_labels_is_one_line(runner, arrays):
    args = [
        "--db",
        str(arrays / "r.db"),
        "probe",
        str(arrays / "X.npy"),
        "--labels",
        str(arrays / "zero.npy"),
    ]
    one_line(runner.invoke(cli, args), "zero.npy", "1-D", "()")
    debug_traceback(runner.invoke(cli, [*args, "--debug"]), ValueError)


@pytest.mark.parametrize("command", ["probe", "import"])
def test_object_npy_as_labels_is_one_line(runner, arrays, command):
    if command == "probe":
        args = ["probe", str(arrays / "X.npy"), "--labels", str(arrays / "yobj.npy")]
    else:
        args = [
            "analyze",
            "import",
            str(arrays / "X.npy"),
            "--out",
            str(arrays / "s"),
            "--labels",
            str(arrays / "yobj.npy"),
        ]
    args = ["--db", str(arrays / "r.db"), *args]
    one_line(runner.invoke(cli, args), "yobj.npy", "object")
    debug_traceback(runner.invoke(cli, [*args, "--debug"]), ValueError)


def test_numpy_pickle_refusal_is_one_line_wherever_it_comes_from(runner, arrays, monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> Any:
        return np.load(arrays / "yobj.npy", allow_pickle=False)

    monkeypatch.setattr("repscope.store.load_labels", refuse)
    args = [
        "--db",
        str(arrays / "r.db"),
        "probe",
        str(arrays / "X.npy"),
        "--labels",
        str(arrays / "y.npy"),
    ]
    one_line(runner.invoke(cli, args), "Python objects", "unpickle")
    debug_traceback(runner.invoke(cli, [*args, "--debug"]), ValueError)


# ---------------------------------------------------------------------------- file systems
def deny_writes_under(monkeypatch: pytest.MonkeyPatch, root: Path, code: int) -> None:
    """Make every write under ``root`` fail with ``OSError(code)`` (as a read-only, full or
    forbidden folder does; permissions alone do not stop root, which runs CI containers)."""
    root = root.resolve()

    def under(path: Any) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(root)
        except (TypeError, ValueError):
            return False

    def fail(path: Any) -> None:
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    real_open, real_mkdir, real_bopen = os.open, os.mkdir, builtins.open
    real_connect = sqlite3.connect

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(path):
            fail(path)
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if under(path):
            fail(path)
        real_mkdir(path, *args, **kwargs)

    def fake_bopen(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and under(file):
            fail(file)
        return real_bopen(file, mode, *args, **kwargs)

    def fake_connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if under(database):
            raise sqlite3.OperationalError(
                "attempt to write a readonly database"
                if code == errno.EROFS
                else "unable to open database file"
            )
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    monkeypatch.setattr(builtins, "open", fake_bopen)
    monkeypatch.setattr(io, "open", fake_bopen)
    monkeypatch.setattr(sqlite3, "connect", fake_connect)


PROBLEMS = {
    errno.EACCES: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left",
}


@pytest.mark.parametrize("code", list(PROBLEMS), ids=["EACCES", "EROFS", "ENOSPC"])
@pytest.mark.parametrize("target", ["store", "report"])
def test_unwritable_output_folder_is_one_line(runner, arrays, monkeypatch, target, code):
    ro = arrays / "ro"
    if target == "store":
        args = ["analyze", "import", str(arrays / "X.npy"), "--out", str(ro / "store")]
    else:
        args = ["report", "--out", str(ro / "r.html")]
    args = ["--db", str(arrays / "r.db"), *args]
    assert runner.invoke(cli, ["--db", str(arrays / "r.db"), "results", "list"]).exit_code == 0
    deny_writes_under(monkeypatch, ro, code)
    err = one_line(runner.invoke(cli, args), str(ro), PROBLEMS[code])
    assert "Errno" not in err
    debug_traceback(runner.invoke(cli, [*args, "--debug"]), OSError)


@pytest.mark.parametrize("exists", [True, False], ids=["folder", "no-folder"])
@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS], ids=["EACCES", "EROFS"])
def test_unwritable_database_folder_is_one_line(runner, arrays, monkeypatch, code, exists):
    db = arrays / "ro" / "results.db"
    if exists:
        db.parent.mkdir()
    args = ["--db", str(db), "probe", str(arrays / "X.npy"), "--labels", str(arrays / "y.npy")]
    deny_writes_under(monkeypatch, arrays / "ro", code)
    one_line(runner.invoke(cli, args), str(db), "--db")
    debug_traceback(runner.invoke(cli, [*args, "--debug"]), Exception)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions do not stop root")
def test_read_only_report_folder_for_real(runner, arrays):
    ro = arrays / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        res = runner.invoke(
            cli, ["--db", str(arrays / "r.db"), "report", "--out", str(ro / "r.html")]
        )
        one_line(res, str(ro), "permission denied")
    finally:
        ro.chmod(0o755)


def test_database_locked_past_its_timeout_is_one_line(runner, arrays, monkeypatch):
    from repscope.db import ResultsDB

    db = arrays / "results.db"
    ResultsDB(db).close()
    monkeypatch.setitem(ResultsDB.__init__.__kwdefaults__, "timeout", 0.2)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        args = ["--db", str(db), "probe", str(arrays / "X.npy"), "--labels", str(arrays / "y.npy")]
        one_line(runner.invoke(cli, args), str(db), "locked", "--db")
        debug_traceback(runner.invoke(cli, [*args, "--debug"]), sqlite3.OperationalError)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# ---------------------------------------------------------------------------- memory
def test_second_moments_wider_than_memory_are_refused_in_one_line(runner, arrays):
    """d = 200,000: the d x d second moments need ~600 GiB; refused before allocating."""
    np.save(arrays / "wide.npy", np.zeros((3, 200_000), dtype=np.float32))
    args = ["--db", str(arrays / "r.db"), "analyze", "spectrum", str(arrays / "wide.npy")]
    one_line(runner.invoke(cli, args), "200000", "GiB", "PCA", "layer")
    debug_traceback(runner.invoke(cli, [*args, "--debug"]), MemoryError)


def test_memory_error_is_one_line(runner, arrays, monkeypatch):
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError("Unable to allocate 298. GiB for an array with shape (200000, 200000)")

    monkeypatch.setattr("repscope.stats.Moments._accumulate", boom)  # every update path
    args = ["--db", str(arrays / "r.db"), "analyze", "spectrum", str(arrays / "X.npy")]
    one_line(runner.invoke(cli, args), "out of memory", "298. GiB", "PCA", "--layer")
    debug_traceback(runner.invoke(cli, [*args, "--debug"]), MemoryError)


# ---------------------------------------------------------------------------- --debug
@pytest.mark.parametrize("where", ["first", "after-command", "last"])
def test_debug_is_accepted_anywhere(runner, arrays, where):
    tail = [str(arrays / "X.npy"), "--labels", str(arrays / "zero.npy")]
    args = {
        "first": ["--debug", "probe", *tail],
        "after-command": ["probe", "--debug", *tail],
        "last": ["probe", *tail, "--debug"],
    }[where]
    debug_traceback(runner.invoke(cli, ["--db", str(arrays / "r.db"), *args]), ValueError)


def test_debug_after_the_arguments_prints_a_traceback_from_the_real_entry_point(arrays):
    exe = Path(sys.executable).with_name("repscope")
    cmd = [
        str(exe),
        "--db",
        str(arrays / "r.db"),
        "probe",
        str(arrays / "X.npy"),
        "--labels",
        str(arrays / "zero.npy"),
    ]
    env = {**os.environ, "REPSCOPE_HOME": str(arrays / "home")}
    env.pop("REPSCOPE_DEBUG", None)
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert plain.returncode == 1, plain.stderr
    assert plain.stderr.strip().count("\n") == 0 and "Traceback" not in plain.stderr
    debug = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, timeout=300, env=env)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
