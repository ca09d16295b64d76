"""repscope._testing.run_distributed: results in rank order, a real gloo group, a failing rank
reported with its traceback, one rank without a group."""

from __future__ import annotations

import os

import pytest

from repscope._testing import DistributedRunError, run_distributed
from repscope.exceptions import RepscopeTypeError, RepscopeValueError


def _sum_of_ranks(rank: int, world: int, offset: int) -> tuple[int, int, float, str]:
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(rank)])
    dist.all_reduce(t)
    return rank, world + offset, float(t), os.environ["OMP_NUM_THREADS"]


def _fails_on_rank_one(rank: int, world: int) -> int:
    if rank == 1:
        raise ValueError("rank one gives up")
    return rank


def _no_group(rank: int, world: int) -> bool:
    import torch.distributed as dist

    return dist.is_initialized()


def test_ranks_all_reduce_and_return_in_order() -> None:
    out = run_distributed(_sum_of_ranks, 10, world_size=2)
    assert out == [(0, 12, 1.0, "1"), (1, 12, 1.0, "1")]


def test_a_failing_rank_raises_with_its_traceback() -> None:
    with pytest.raises(DistributedRunError, match="rank 1 of 2 failed") as info:
        run_distributed(_fails_on_rank_one, world_size=2, timeout=60)
    assert "ValueError: rank one gives up" in str(info.value)
    assert "_fails_on_rank_one" in str(info.value)


def test_one_rank_runs_without_a_process_group() -> None:
    assert run_distributed(_no_group, world_size=1) == [False]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(RepscopeValueError, match="world_size"):
        run_distributed(_no_group, world_size=0)
    with pytest.raises(RepscopeValueError, match="timeout"):
        run_distributed(_no_group, timeout=0)
    with pytest.raises(RepscopeTypeError, match="picklable"):
        run_distributed(lambda rank, world: rank)
