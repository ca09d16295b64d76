"""The one benchmark harness: every measured run in its own child process, and the tables.

Parent side (the driver script):

* :func:`run_child` runs a command (usually this interpreter or an anchor's venv on a driver
  script in ``--child`` mode) in a fresh process, optionally under a memory cap
  (``prlimit --as`` when the tool exists, else ``RLIMIT_AS`` set in the child before it
  starts) and a timeout, and returns a :class:`ChildRun`: the status (``"ok"``,
  ``"out of memory"``, ``"timeout (> N s)"``, ``"not installed"`` or ``"error: <last stderr
  line>"``), the payload the child printed with :func:`emit`, the child's own CPU-seconds
  (user + sys, from ``wait4``: imports and data loading included), its wall seconds and its
  peak RSS (``ru_maxrss``). The child is started by a small launcher process (this file with
  ``--spawn``), so that its peak RSS is its own and not the driver's (Linux carries a
  process's peak resident size across fork and exec).
* :func:`median_run` and :func:`medians` reduce repeated runs; :func:`format_table` prints rows
  with a ratio column against a baseline row.

Child side: :func:`timed` measures one call (``time.process_time`` over all the child's
threads, wall time, resident size before and peak after), :func:`emit` prints the result line
the parent reads, :func:`thread_env` pins BLAS/OpenMP to a thread count.

Case modules (``benchmarks/_sim_cases_*.py``, the contract in ``benchmarks/similarity.py``)
run through this file's own child mode::

    python benchmarks/_harness.py --case MODULE:NAME [--no-torch]

which imports ``MODULE`` from ``benchmarks/``, runs ``MODULE.PREPARE[NAME](data)`` (untimed)
and times ``MODULE.CASES[NAME](data)``.

Only the standard library is imported at module level: anchors' venvs run this file too.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MARKER = "@@RESULT "
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
_OOM = ("MemoryError", "Cannot allocate", "bad_alloc", "can't allocate memory",
        "Unable to allocate", "out of memory")


# --------------------------------------------------------------------------- child side
def thread_env(threads: int = 1) -> dict[str, str]:
    """Environment variables that pin OpenMP / BLAS pools to ``threads`` threads."""
    return dict.fromkeys(_THREAD_VARS, str(threads))


def rss_bytes() -> int:
    """This process's resident size now (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's peak resident size so far (``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, dict[str, float]]:
    """Call ``fn`` once and measure it.

    Returns
    -------
    out : object
        What ``fn`` returned.
    stats : dict
        ``cpu`` (``time.process_time`` seconds, all threads), ``wall`` (seconds), ``base``
        (resident bytes just before the call), ``peak_before`` (``ru_maxrss`` bytes just
        before) and ``peak`` (``ru_maxrss`` bytes after).
    """
    base, peak_before = rss_bytes(), peak_rss_bytes()
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return out, {"cpu": cpu, "wall": wall, "base": base, "peak_before": peak_before,
                 "peak": peak_rss_bytes()}


def emit(payload: Any) -> None:
    """Print the child's JSON result on the line :func:`run_child` reads."""
    print(MARKER + json.dumps(payload), flush=True)


def set_torch_threads(n: int = 1) -> None:
    """``torch.set_num_threads(n)`` when torch is installed (a no-op otherwise)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(n)


def case_child(module: str, name: str, *, torch_threads: bool = True) -> None:
    """Run one case of a ``_sim_cases_*`` module in this process and :func:`emit` it.

    The payload holds the case's ``value`` and ``extra`` and the :func:`timed` measurements.
    """
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = "1"
    if torch_threads:
        set_torch_threads(1)
    sys.path.insert(0, str(HERE))
    import importlib

    m = importlib.import_module(module)
    data: dict[str, Any] = {"seed": 0}
    prep = getattr(m, "PREPARE", {}).get(name)
    if prep is not None:
        prep(data)
    out, stats = timed(m.CASES[name], data)
    emit({"value": float(out["value"]), "extra": out.get("extra", {}), **stats})


# --------------------------------------------------------------------------- parent side
@dataclass
class ChildRun:
    """One child process: what it printed and what it cost.

    ``status`` is ``"ok"`` when the child printed a result line; ``result`` is that payload.
    ``cpu`` is the child's user + sys CPU-seconds, ``wall`` its wall seconds and ``peak_mb``
    its peak RSS in MiB (all measured by the parent, so imports and loading count).
    """

    status: str
    result: Any = None
    cpu: float = float("nan")
    wall: float = float("nan")
    peak_mb: float = float("nan")
    returncode: int | None = None
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _limit_as(mem_bytes: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))

    return preexec


def _spawn_main(usage_file: str, cmd: list[str]) -> None:
    """The launcher between the driver and the measured child (``--spawn``).

    Linux hands a process the parent's peak resident size when it execs (``ru_maxrss`` is
    inherited through fork and exec), so a child started straight from a driver that once held
    gigabytes would report the driver's peak as its own. This small process starts the child
    instead, waits for it, writes its own ``wait4`` usage (CPU, peak RSS) to ``usage_file`` and
    exits with its status (128 + N for signal N).
    """
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    Path(usage_file).write_text(json.dumps({"cpu": usage.ru_utime + usage.ru_stime,
                                            "maxrss_kb": usage.ru_maxrss}))
    sys.exit(128 - code if code < 0 else code)


def _wait(pid: int, timeout: float | None) -> tuple[int, Any] | None:
    """``wait4`` the child; None when ``timeout`` passed first."""
    if timeout is None:
        _, status, usage = os.wait4(pid, 0)
        return status, usage
    deadline = time.monotonic() + timeout
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got:
            return status, usage
        if time.monotonic() > deadline:
            return None
        time.sleep(0.005)


def _classify(stderr: str, returncode: int) -> str:
    if any(s in stderr for s in _OOM) or returncode in (-9, 137):
        return "out of memory"
    if "ModuleNotFoundError" in stderr:
        return "not installed"
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return "error: " + (lines[-1] if lines else f"exit code {returncode}")[:120]


def run_child(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    mem_bytes: int | None = None,
    timeout: float | None = None,
) -> ChildRun:
    """Run ``cmd`` in a fresh process and read its :func:`emit` line.

    Parameters
    ----------
    cmd : sequence of str
        The command; ``cmd[0]`` is the interpreter (a missing one gives ``"not installed"``).
    env : mapping, optional
        The child's whole environment (default: this process's).
    mem_bytes : int, optional
        Address-space cap: ``prlimit --as`` when available, else ``RLIMIT_AS``. A child that
        exceeds it (MemoryError, allocation failure or SIGKILL) is ``"out of memory"``.
    timeout : float, optional
        Seconds; past it the child is killed and the status is ``"timeout (> N s)"``.
    """
    cmd = list(cmd)
    if not (Path(cmd[0]).exists() or shutil.which(cmd[0])):
        return ChildRun(status="not installed")
    preexec = None
    if mem_bytes is not None:
        if shutil.which("prlimit"):
            cmd = ["prlimit", f"--as={int(mem_bytes)}", *cmd]
        else:
            preexec = _limit_as(int(mem_bytes))
    with tempfile.TemporaryDirectory(prefix="repscope-bench-") as tmp:
        usage_file = Path(tmp) / "usage.json"
        launcher = [sys.executable, str(HERE / "_harness.py"), "--spawn", str(usage_file), "--"]
        with open(Path(tmp) / "out", "w+") as out, open(Path(tmp) / "err", "w+") as err:
            w0 = time.perf_counter()
            proc = subprocess.Popen([*launcher, *cmd], env=dict(env) if env is not None else None,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    preexec_fn=preexec, start_new_session=True)
            waited = _wait(proc.pid, timeout)
            if waited is None:  # the launcher and the child share a new session: kill both
                os.killpg(proc.pid, 9)
                _, status, _ = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                return ChildRun(status=f"timeout (> {timeout:.0f} s)", returncode=proc.returncode)
            wall = time.perf_counter() - w0
            proc.returncode = os.waitstatus_to_exitcode(waited[0])
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        usage = json.loads(usage_file.read_text()) if usage_file.exists() else {}
    run = ChildRun(status="ok", cpu=usage.get("cpu", float("nan")), wall=wall,
                   peak_mb=usage.get("maxrss_kb", float("nan")) / 1024,
                   returncode=proc.returncode, stderr=stderr)
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            run.result = json.loads(line[len(MARKER):])
            return run
    run.status = _classify(stderr, proc.returncode)
    return run


def run_case(module: str, name: str, *, python: str = sys.executable, torch_threads: bool = True,
             env: Mapping[str, str] | None = None, mem_bytes: int | None = None,
             timeout: float | None = None) -> ChildRun:
    """One run of case ``name`` of the ``benchmarks/<module>.py`` case module (see
    :func:`case_child`) under ``python``, with one thread."""
    cmd = [python, str(HERE / "_harness.py"), "--case", f"{module}:{name}"]
    if not torch_threads:
        cmd.append("--no-torch")
    child_env = {**os.environ, **thread_env(1), "PYTHONPATH": str(HERE.parent / "src"),
                 **(env or {})}
    return run_child(cmd, env=child_env, mem_bytes=mem_bytes, timeout=timeout)


# --------------------------------------------------------------------------- reductions
def median_run(runs: Sequence[Mapping[str, Any]], key: str = "cpu") -> dict[str, Any]:
    """The run in the middle by ``key`` (the upper one of two), whole; ``runs`` counts them."""
    ordered = sorted(runs, key=lambda r: r[key])
    out = dict(ordered[len(ordered) // 2])
    out["runs"] = len(ordered)
    return out


def medians(runs: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """``statistics.median`` of each of ``keys`` over ``runs``."""
    return {k: statistics.median(r[k] for r in runs) for k in keys}


# --------------------------------------------------------------------------- tables
@dataclass
class Column:
    """A table column: ``header``, the row ``key`` and a format spec (or a callable)."""

    header: str
    key: str
    fmt: str | Callable[[Any], str] = ""
    width: int = 0

    def cell(self, row: Mapping[str, Any]) -> str:
        value = row.get(self.key)
        if value is None:
            return "-"
        return self.fmt(value) if callable(self.fmt) else format(value, self.fmt)


@dataclass
class Ratio:
    """A ratio column: ``row[key] / baseline[key]`` (``inverse``: baseline / row)."""

    header: str
    key: str
    fmt: str = ".2f"
    suffix: str = "x"
    inverse: bool = False
    width: int = 0
    baseline: Callable[[Mapping[str, Any]], Mapping[str, Any] | None] | None = field(
        default=None, repr=False)

    def cell(self, row: Mapping[str, Any]) -> str:
        base = self.baseline(row) if self.baseline else None
        if base is None or row.get(self.key) is None or base.get(self.key) is None:
            return "-"
        a, b = (base[self.key], row[self.key]) if self.inverse else (row[self.key], base[self.key])
        return format(a / b, self.fmt) + self.suffix


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column | Ratio],
    *,
    baseline: Mapping[str, Any] | Callable[[Mapping[str, Any]], Mapping[str, Any] | None]
    | None = None,
    markdown: bool = False,
    error_key: str = "error",
) -> list[str]:
    """The lines of a table of ``rows`` (dicts), one per row.

    ``Ratio`` columns divide by ``baseline``: a row (for instance the first, repscope's) or a
    function giving each row its baseline row (None: "-"). A row holding ``error_key`` shows the
    error instead of its values (in a markdown table: in the last column, after the cells the
    row has). ``markdown=True`` gives a pipe table;
    otherwise columns are padded to their ``width`` (the first left-aligned, others right).
    """
    pick = baseline if callable(baseline) else (lambda _row: baseline)
    for c in columns:
        if isinstance(c, Ratio) and c.baseline is None:
            c.baseline = pick
    lines = []
    if markdown:
        lines.append("| " + " | ".join(c.header for c in columns) + " |")
        lines.append("|" + "---|" * len(columns))
    else:
        lines.append(" ".join(_pad(c.header, c.width, i) for i, c in enumerate(columns)))
    for row in rows:
        if row.get(error_key):
            if markdown:  # the cells the row has, "-" for the others, the error last
                cells = [c.cell(row) if isinstance(c, Column) else "-" for c in columns]
                lines.append("| " + " | ".join([*cells[:-1], str(row[error_key])]) + " |")
            else:
                lines.append(f"{_pad(columns[0].cell(row), columns[0].width, 0)} "
                             f"{row[error_key]}")
            continue
        cells = [c.cell(row) for c in columns]
        if markdown:
            lines.append("| " + " | ".join(cells) + " |")
        else:
            lines.append(" ".join(_pad(s, c.width, i) for i, (s, c) in enumerate(zip(cells,
                                                                                   columns))))
    return lines


def _pad(text: str, width: int, index: int) -> str:
    return f"{text:<{width}}" if index == 0 else f"{text:>{width}}"


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column | Ratio],
                **kwargs: Any) -> None:
    """Print :func:`format_table`."""
    for line in format_table(rows, columns, **kwargs):
        print(line)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--spawn"]:
        if len(argv) < 4 or argv[2] != "--":
            sys.exit("usage: _harness.py --spawn USAGE_FILE -- COMMAND...")
        _spawn_main(argv[1], argv[3:])
        return
    import argparse

    ap = argparse.ArgumentParser(description="Run one benchmark case in this process.")
    ap.add_argument("--case", required=True, help="MODULE:NAME of a benchmarks case module")
    ap.add_argument("--no-torch", action="store_true", help="do not import torch to pin threads")
    a = ap.parse_args(argv)
    module, name = a.case.split(":", 1)
    case_child(module, name, torch_threads=not a.no_torch)


if __name__ == "__main__":
    main(sys.argv[1:])
