"""One thread for small work: on a shared machine a contended torch/OpenMP or BLAS pool spends
several times the CPU of a single thread on small matrices (threads spin-wait for each other).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["single_thread"]


@contextlib.contextmanager
def single_thread(*, blas: bool = True) -> Iterator[None]:
    """Run the block on one torch thread (and, with ``blas``, one BLAS/OpenMP thread through
    ``threadpoolctl``); the previous settings come back on exit, even on error."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if blas:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1):
                yield
        else:
            yield
    finally:
        torch.set_num_threads(threads)
