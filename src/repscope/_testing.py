"""Helpers for repscope's tests (and for users' tests of code built on repscope).

``REPSCOPE_STRICT_SKIPS=1`` (set by CI) turns skips for missing system data into failures, so
nothing real goes untested in CI while a user's machine without the data still passes.

:func:`run_distributed` runs a function in a fresh ``torch.distributed`` gloo group of several
processes on this machine (the two-process tests of all-reduced statistics, probes and SAE
training).
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from repscope.exceptions import RepscopeError, RepscopeTypeError, RepscopeValueError

__all__ = [
    "DistributedRunError",
    "cli_env",
    "free_port",
    "random_orthogonal",
    "run_cli_ranks",
    "run_distributed",
    "run_on_terminal",
    "skip_or_fail",
    "strict_skips",
]

STRICT_ENV = "REPSCOPE_STRICT_SKIPS"


def strict_skips() -> bool:
    """True when missing system data must fail tests instead of skipping them (CI)."""
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the current test with ``reason``, or fail it when :func:`strict_skips` is on."""
    import pytest

    if strict_skips():
        pytest.fail(f"{reason} ({STRICT_ENV}=1 turns this skip into a failure)", pytrace=False)
    pytest.skip(reason)


def random_orthogonal(d: int, rng: Any = None) -> np.ndarray:
    """A Haar-random orthogonal ``d x d`` matrix (QR of a Gaussian with the sign fix)."""
    rng = np.random.default_rng(rng)
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


class DistributedRunError(RepscopeError, RuntimeError):
    """A rank of :func:`run_distributed` failed or ran past its timeout; the message holds the
    rank's standard error (its traceback)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: What each rank's interpreter runs: argv is (payload file, rank, result file).
_RANK_MAIN = "import sys; from repscope._testing import _rank_main; _rank_main(sys.argv[1:])"
_STDERR_TAIL = 8000


def run_distributed(
    fn: Callable[..., Any],
    *args: Any,
    world_size: int = 2,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` fresh processes joined in one gloo
    process group; return each rank's result, in rank order.

    Each rank is its own Python interpreter (not a fork of this one, whose OpenMP pool may be
    live), started with this process's ``sys.path`` and environment plus
    ``OMP_NUM_THREADS=1`` and ``env``. The group is initialised over TCP on a free port of
    127.0.0.1 before ``fn`` runs and destroyed after it returns, so ``fn`` can use
    ``torch.distributed`` directly (``dist.group.WORLD``, ``all_reduce``). With
    ``world_size=1`` the single rank runs without a process group: the one-process reference
    under the same environment.

    Parameters
    ----------
    fn : callable
        A module-level function (it is pickled by reference and imported again in each rank,
        so not a lambda, a local function or a function of ``__main__``), called as
        ``fn(rank, world_size, *args)``. Its return value must be picklable. With
        ``world_size > 1`` the ranks leave without interpreter finalization (gloo's threads
        can abort it), so ``fn`` closes the files it writes.
    *args
        Picklable arguments (arrays, tensors, paths), sent to every rank.
    world_size : int, default=2
        The number of processes.
    timeout : float, default=120.0
        Seconds for all ranks together; past it every rank still running is killed.
    env : mapping of str to str, optional
        Extra environment variables for the ranks (they win over the defaults).

    Returns
    -------
    list
        ``[fn(0, ...), fn(1, ...), ...]``.

    Raises
    ------
    DistributedRunError
        A rank exited with an error (the message holds its traceback) or the ranks did not
        finish within ``timeout``; the other ranks are killed.
    RepscopeValueError
        ``world_size`` is not a positive int or ``timeout`` is not positive.
    RepscopeTypeError
        ``fn`` or ``args`` cannot be pickled for the ranks.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise RepscopeValueError(f"world_size must be an int >= 1. Got {world_size!r} instead.")
    if not timeout > 0:
        raise RepscopeValueError(f"timeout must be > 0 seconds. Got {timeout!r} instead.")
    if getattr(fn, "__module__", None) == "__main__":
        raise RepscopeTypeError(
            f"fn must be importable by the ranks, not defined in __main__. Got "
            f"{getattr(fn, '__qualname__', fn)!r} instead."
        )
    try:
        call = pickle.dumps((fn, args))
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise RepscopeTypeError(
            f"fn and args must be picklable (a module-level function). Got {err}"
        ) from err
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    with tempfile.TemporaryDirectory(prefix="repscope-dist-") as tmp_dir:
        tmp = Path(tmp_dir)
        payload = tmp / "payload.pkl"
        payload.write_bytes(pickle.dumps({
            "sys_path": list(sys.path), "call": call, "world_size": world_size,
            "port": free_port() if world_size > 1 else 0,
        }))
        errs = [open(tmp / f"rank{r}.stderr", "w+") for r in range(world_size)]  # noqa: SIM115
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for r in range(world_size):
                procs.append(subprocess.Popen(
                    [sys.executable, "-c", _RANK_MAIN, str(payload), str(r), str(tmp / f"{r}.pkl")],
                    env=child_env, stdin=subprocess.DEVNULL, stderr=errs[r],
                ))
            _wait_all(procs, errs, timeout)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for f in errs:
                f.close()
        return [pickle.loads((tmp / f"{r}.pkl").read_bytes()) for r in range(world_size)]


def _stderr_tail(f: Any) -> str:
    f.flush()
    f.seek(0)
    text: str = f.read()
    return text[-_STDERR_TAIL:].rstrip() or "(no output on stderr)"


def _wait_all(procs: list[subprocess.Popen[bytes]], errs: list[Any], timeout: float) -> None:
    """Wait for every rank; raise on the first failure (or at the deadline) with its stderr."""
    deadline = time.monotonic() + timeout
    while True:
        codes = [p.poll() for p in procs]
        failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            time.sleep(0.2)  # let a rank that fails alongside it finish writing its traceback
            report = "\n".join(
                f"--- rank {r} (exit code {procs[r].poll()}) ---\n{_stderr_tail(errs[r])}"
                for r in failed
            )
            raise DistributedRunError(f"rank {failed[0]} of {len(procs)} failed:\n{report}")
        if all(c == 0 for c in codes):
            return
        if time.monotonic() > deadline:
            pending = [r for r, c in enumerate(codes) if c is None]
            report = "\n".join(f"--- rank {r} ---\n{_stderr_tail(errs[r])}" for r in pending)
            raise DistributedRunError(
                f"rank(s) {pending} of {len(procs)} did not finish within {timeout:g} s:\n{report}"
            )
        time.sleep(0.02)


def _rank_main(argv: list[str]) -> None:
    """One rank of :func:`run_distributed` (runs in the child interpreter)."""
    import faulthandler

    faulthandler.enable()  # a hard crash (abort, segfault) still leaves a Python traceback
    payload_file, rank_arg, result_file = argv
    rank = int(rank_arg)
    with open(payload_file, "rb") as f:
        payload = pickle.load(f)
    # the parent's import path first (test modules are importable by their pytest name)
    sys.path[:] = [*payload["sys_path"], *(p for p in sys.path if p not in payload["sys_path"])]
    fn, args = pickle.loads(payload["call"])
    world_size: int = payload["world_size"]
    dist: Any = None
    if world_size > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{payload['port']}",
                                rank=rank, world_size=world_size)
    result = fn(rank, world_size, *args)
    if dist is not None:
        # every rank is done before any tears down: gloo aborts a rank whose peer closed the
        # connection under it ("terminate called without an active exception")
        dist.barrier()
        dist.destroy_process_group()
    part = Path(result_file + ".part")
    part.write_bytes(pickle.dumps(result))
    part.replace(result_file)
    if dist is not None:
        # gloo's worker threads can still abort the interpreter while it finalizes, after the
        # work is done and written: leave without finalizing
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def demo_context(
    db: Any,
    run_id: str,
    *,
    stores: dict[str, Any] | None = None,
    layers: dict[str, list[str]] | None = None,
    labels: Any = None,
    inputs: Any = None,
    dataset: str = "d",
    seed: int = 0,
    log: Any = None,
    out: Any = ".",
) -> Any:
    """A :class:`~repscope.capability.DemoContext` for testing one demo step alone."""
    from pathlib import Path

    import numpy as np

    from repscope.capability import DemoContext

    return DemoContext(stores=dict(stores or {}), layers=dict(layers or {}),
                       labels=np.zeros(0) if labels is None else np.asarray(labels),
                       label_names=[], inputs=inputs, ids=[], dataset=dataset, db=db,
                       run_id=run_id, seed=seed, log=log or (lambda m: None), out=Path(out))


#: Switches a CLI test's child must not inherit: the progress switches, and those the CLI root
#: sets in its own process (an in-process CliRunner test leaves them in ``os.environ``).
_CLI_SWITCHES = ("REPSCOPE_PROGRESS", "REPSCOPE_NO_PROGRESS", "HF_HUB_DISABLE_PROGRESS_BARS",
                 "TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS")


def cli_env(db: str | os.PathLike[str], **extra: str) -> dict[str, str]:
    """The environment for a ``repscope`` child process: this one's, without the progress and
    transformers switches, with ``REPSCOPE_DB=db``, a 120-column terminal and ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _CLI_SWITCHES}
    env.update(REPSCOPE_DB=str(db), COLUMNS="120", **extra)
    return env


def run_cli_ranks(
    args: list[str],
    world_size: int,
    env: Mapping[str, str],
    *,
    timeout: float = 240.0,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``repscope ARGS`` as a user launches it on ``world_size`` processes:
    ``torchrun --standalone --nproc-per-node W -m repscope ARGS`` (``world_size=1``: plain
    ``python -m repscope ARGS``, the one-process reference). One torch thread per rank
    (``OMP_NUM_THREADS=1``), so the two launches compute the same batches the same way.

    Returns the completed process (``returncode``, ``stdout``, ``stderr`` as text); a launch
    that runs past ``timeout`` seconds is killed and raises ``subprocess.TimeoutExpired``.
    """
    if world_size == 1:
        cmd = [sys.executable, "-m", "repscope", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={world_size}", "-m", "repscope", *args]
    child_env = {**env, "OMP_NUM_THREADS": "1", "REPSCOPE_NO_PROGRESS": "1"}
    return subprocess.run(cmd, env=child_env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def run_on_terminal(args: list[str], env: Mapping[str, str], cwd: str | os.PathLike[str],
                    timeout: float = 300.0) -> tuple[int, str, str]:
    """Run ``args`` with stderr on a pseudo-terminal, as a user at a shell sees it.

    Returns the exit code, stdout, and stderr without colour and cursor escape sequences.
    """
    import pty
    import re

    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, env=dict(env), cwd=cwd)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closes when the child exits
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read().decode() if proc.stdout else ""
    rc = proc.wait(timeout=timeout)
    os.close(master)
    err = b"".join(chunks).decode(errors="replace")
    return rc, out, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", err)
