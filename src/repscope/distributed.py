"""One process or many: the rank, the world size and the collectives repscope uses.

repscope scales out on ``torch.distributed`` and nothing home-made: launch the same command
under ``torchrun`` and every rank runs it on its share of the data::

    torchrun --nproc-per-node 2 -m repscope extract minilm-l6 --data austen --out feats
    torchrun --nproc-per-node 2 -m repscope probe feats --labels label

:func:`launch` reads the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) and initialises the default process group (gloo on CPU,
NCCL when ``--device cuda``), or joins one the caller already initialised; without that
environment it is a one-process context and costs nothing (torch is not even imported).
:func:`context` gives the current one.

Conventions every rank-aware part of repscope follows:

- **Shares are contiguous blocks.** Rank ``r`` of ``W`` takes items
  ``[r * n // W, (r + 1) * n // W)`` (:meth:`DistContext.share`), so concatenating the ranks'
  shares in rank order gives back the input order, whatever ``n`` and ``W`` (a world size that
  does not divide the work gives shares that differ by at most one item, or one chunk).
- **Sums are all-reduced in float64**; every rank ends with the same global state and runs
  the same code on it, so every rank computes the same numbers.
- **Rank 0 is the writer**: it alone writes result records, reports and top-level manifests
  (:attr:`DistContext.is_writer`).
- **Failures are errors, not hangs.** Every collective runs under the process group's timeout
  (``REPSCOPE_DIST_TIMEOUT`` seconds, default 600); a rank that dies or stops answering makes
  the others raise :class:`DistributedError` naming what they were doing, before anything is
  recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from repscope.exceptions import RepscopeError, RepscopeValueError

__all__ = [
    "DistContext",
    "DistributedError",
    "context",
    "launch",
    "rows_of",
    "share",
    "shutdown",
    "torchrun_env",
]

#: Seconds a collective waits for the other ranks before failing (env REPSCOPE_DIST_TIMEOUT).
DEFAULT_TIMEOUT = 600.0


class DistributedError(RepscopeError, RuntimeError):
    """A collective failed: another rank stopped, or did not answer within the timeout, or the
    ranks disagree on something they must share (code version, arguments)."""


def share(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous block ``[start, stop)`` of ``n`` items that rank ``rank`` of
    ``world_size`` takes: ``[rank * n // world_size, (rank + 1) * n // world_size)``.

    The blocks cover ``range(n)`` in rank order without gaps or overlap; their sizes differ by
    at most one.

    Examples
    --------
    >>> [share(10, r, 3) for r in range(3)]
    [(0, 3), (3, 6), (6, 10)]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise RepscopeValueError(
            f"rank must be in [0, world_size) with world_size >= 1; got rank={rank}, "
            f"world_size={world_size}.")
    if n < 0:
        raise RepscopeValueError(f"n must be >= 0; got {n}.")
    return rank * n // world_size, (rank + 1) * n // world_size


def torchrun_env() -> dict[str, int] | None:
    """``{"rank", "world_size", "local_rank"}`` from a ``torchrun`` environment (``RANK`` and
    ``WORLD_SIZE`` set, ``WORLD_SIZE > 1``), else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank = int(os.environ["RANK"])
        world = int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise RepscopeValueError(
            f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun); got "
            f"RANK={os.environ.get('RANK')!r}, WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}, "
            f"LOCAL_RANK={os.environ.get('LOCAL_RANK')!r}.") from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise RepscopeValueError(f"RANK must be in [0, WORLD_SIZE={world}); got {rank}.")
    return {"rank": rank, "world_size": world, "local_rank": local}


def _timeout() -> float:
    raw = os.environ.get("REPSCOPE_DIST_TIMEOUT")
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise RepscopeValueError(
            f"REPSCOPE_DIST_TIMEOUT must be a positive number of seconds; got {raw!r}.")
    return value


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the world size and the process group.

    A one-process context (``world_size == 1``) answers every collective locally, so code
    written against a context runs unchanged with or without ``torchrun``.

    Attributes
    ----------
    rank, world_size, local_rank : int
    backend : str or None
        ``"gloo"`` or ``"nccl"``; None in one process.
    group : process group or None
        The group collectives use (None: the default group).
    timeout : float
        Seconds a collective waits for the other ranks.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    group: Any = field(default=None, compare=False)
    timeout: float = DEFAULT_TIMEOUT

    @property
    def is_distributed(self) -> bool:
        """More than one rank."""
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """This rank writes records, reports and manifests (rank 0)."""
        return self.rank == 0

    def share(self, n: int) -> tuple[int, int]:
        """This rank's contiguous block ``[start, stop)`` of ``n`` items (:func:`share`)."""
        return share(int(n), self.rank, self.world_size)

    def shares(self, n: int) -> list[tuple[int, int]]:
        """Every rank's block of ``n`` items, in rank order."""
        return [share(int(n), r, self.world_size) for r in range(self.world_size)]

    # ------------------------------------------------------------------ collectives
    @contextlib.contextmanager
    def collective(self, what: str) -> Iterator[None]:
        """Turn a failed collective into a :class:`DistributedError` that names ``what`` this
        rank was doing and why it usually fails (another rank died or hung)."""
        try:
            yield
        except DistributedError:
            raise
        except RuntimeError as err:  # gloo / NCCL report a lost peer or a timeout this way
            detail = " ".join(str(err).split())[:300]
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: {what} failed: another rank stopped "
                f"or did not answer within {self.timeout:g} s ({detail}). Nothing was "
                "recorded; run the same command again (an extraction resumes where each rank "
                "stopped)."
            ) from err

    def barrier(self, what: str = "waiting for the other ranks") -> None:
        """Wait until every rank gets here."""
        if not self.is_distributed:
            return
        import torch.distributed as dist

        with self.collective(what):
            if self.backend == "gloo":
                dist.monitored_barrier(group=self.group, timeout=timedelta(seconds=self.timeout),
                                       wait_all_ranks=True)
            else:
                dist.barrier(group=self.group)

    def all_sum(self, value: Any, what: str = "summing across ranks") -> np.ndarray:
        """The float64 sum over ranks of ``value`` (an array or scalar of the same shape on
        every rank); every rank gets the result."""
        arr = np.array(value, dtype=np.float64)
        if not self.is_distributed:
            return arr
        import torch
        import torch.distributed as dist

        flat = torch.from_numpy(np.ascontiguousarray(arr).reshape(-1).copy())
        if self.backend == "nccl":
            flat = flat.to(torch.device("cuda", torch.cuda.current_device()))
        with self.collective(what):
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        return np.asarray(flat.cpu().numpy(), dtype=np.float64).reshape(arr.shape)

    def all_gather(self, obj: Any, what: str = "gathering from every rank") -> list[Any]:
        """Every rank's ``obj`` (picklable; small), in rank order."""
        if not self.is_distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        with self.collective(what):
            dist.all_gather_object(out, obj, group=self.group)
        return out

    def broadcast(self, obj: Any, src: int = 0, what: str = "receiving from rank 0") -> Any:
        """Rank ``src``'s ``obj`` on every rank."""
        if not self.is_distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.rank == src else None]
        with self.collective(what):
            dist.broadcast_object_list(box, src=src, group=self.group)
        return box[0]

    def check_same(self, value: Any, what: str) -> None:
        """Refuse to go on unless every rank has the same ``value`` (compared by a SHA-256 of
        its JSON form; e.g. the repscope version and the command's arguments).

        Raises
        ------
        DistributedError
            Naming the ranks that differ from rank 0 and what differs.
        """
        if not self.is_distributed:
            return
        text = json.dumps(value, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        gathered = self.all_gather((digest, text[:500]), what=f"comparing {what}")
        ref_digest = gathered[0][0]
        differ = [r for r, (d, _) in enumerate(gathered) if d != ref_digest]
        if differ:
            shown = "; ".join(f"rank {r}: {gathered[r][1]}" for r in [0, *differ[:3]])
            raise DistributedError(
                f"the ranks disagree on {what}: rank(s) {differ} differ from rank 0 ({shown}). "
                "Every rank must run the same repscope version with the same arguments; "
                "launch them with one torchrun command.")


def context() -> DistContext:
    """The current context: the initialised default process group's rank and size, or a
    one-process context. Never initialises anything (see :func:`launch`)."""
    import sys

    if "torch.distributed" not in sys.modules:  # nothing initialised; keep imports fast
        return DistContext()
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return DistContext()
    world = dist.get_world_size()
    if world <= 1:
        return DistContext()
    env = torchrun_env() or {}
    return DistContext(
        rank=dist.get_rank(), world_size=world, local_rank=env.get("local_rank", 0),
        backend=str(dist.get_backend()), timeout=_timeout(),
    )


def launch(device: str = "cpu") -> DistContext:
    """Join the ranks ``torchrun`` started: initialise the default process group from the
    ``torchrun`` environment (gloo for ``device="cpu"``, NCCL for CUDA; the collective timeout
    from ``REPSCOPE_DIST_TIMEOUT``), or return the group already initialised, or a
    one-process context when neither exists.

    Raises
    ------
    DistributedError
        The other ranks did not join within the timeout.
    RepscopeValueError
        A CUDA device without CUDA, or a malformed torchrun environment.
    """
    env = torchrun_env()
    if env is None:
        return context()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return context()
    timeout = _timeout()
    backend = "gloo"
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RepscopeValueError(
                f"--device {device} under torchrun needs CUDA, which this machine lacks; use "
                "--device cpu (gloo).")
        torch.cuda.set_device(env["local_rank"])
        backend = "nccl"
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise RepscopeValueError(
                f"RANK and WORLD_SIZE are set but {key} is not: launch with torchrun (it sets "
                "all of them) or set MASTER_ADDR and MASTER_PORT yourself.")
    ctx = DistContext(rank=env["rank"], world_size=env["world_size"],
                      local_rank=env["local_rank"], backend=backend, timeout=timeout)
    with ctx.collective("joining the other ranks (init_process_group)"):
        dist.init_process_group(backend=backend, rank=env["rank"],
                                world_size=env["world_size"],
                                timeout=timedelta(seconds=timeout))
    return ctx


def shutdown() -> None:
    """Leave the default process group if this module's :func:`launch` (or anyone) made one."""
    import sys

    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rows_of(ctx: DistContext, n: int, boundaries: Sequence[int] | None = None) -> tuple[int, int]:
    """This rank's block of ``n`` rows, cut at ``boundaries`` when given (e.g. the starts of a
    store's chunks, so that every rank reads whole chunks): the blocks are contiguous runs of
    whole pieces, split as evenly as the pieces allow (:func:`share` of the pieces)."""
    if boundaries is None:
        return ctx.share(n)
    cuts = [0, *[int(b) for b in boundaries if 0 < int(b) < n], int(n)]
    a, b = ctx.share(len(cuts) - 1)
    return cuts[a], cuts[b]
