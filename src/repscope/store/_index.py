"""Mapping global sample indices onto chunks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from repscope._array import is_torch
from repscope.exceptions import RepscopeTypeError, RepscopeValueError

__all__ = ["check_indices", "chunks_in", "group_by_chunk"]


def check_indices(indices: Any, n: int) -> np.ndarray:
    """Sample indices as int64 in [0, n) (negative ones count from the end, as in numpy)."""
    if isinstance(indices, slice):
        return np.arange(n, dtype=np.int64)[indices]
    if is_torch(indices):
        indices = indices.detach().cpu().numpy()
    if isinstance(indices, (int, np.integer)):
        raise RepscopeTypeError(
            f"indices must be a 1-D sequence of sample indices; got the integer {indices}. "
            f"Pass [{indices}] for one sample."
        )
    arr = np.asarray(indices)
    if arr.size == 0 and arr.ndim == 1:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind == "b":
        raise RepscopeTypeError(
            "indices must be integer sample indices; got a boolean mask. Pass "
            "np.flatnonzero(mask) instead."
        )
    if arr.dtype.kind not in "iu":
        raise RepscopeTypeError(f"indices must be integers; got dtype {arr.dtype}.")
    if arr.ndim != 1:
        raise RepscopeValueError(f"indices must be 1-D; got shape {arr.shape}.")
    bad = (arr < -n) | (arr >= n)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise RepscopeValueError(
            f"indices must lie in [0, n_samples={n}) (or [-{n}, 0) from the end); got "
            f"{int(arr[pos])} at position {pos}."
        )
    return np.where(arr < 0, arr + n, arr).astype(np.int64)


def chunks_in(
    starts: np.ndarray, stops: np.ndarray, a: int, b: int
) -> Iterator[tuple[int, int, int]]:
    """(chunk index, local start, local stop) of every chunk overlapping samples [a, b)."""
    ci = int(np.searchsorted(stops, a, side="right"))
    while ci < len(starts) and starts[ci] < b:
        s = int(starts[ci])
        yield ci, max(a, s) - s, min(b, int(stops[ci])) - s
        ci += 1


def group_by_chunk(
    starts: np.ndarray, stops: np.ndarray, idx: np.ndarray
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(chunk index, positions in ``idx``, local row indices) for each chunk ``idx`` touches."""
    ci = np.searchsorted(stops, idx, side="right")
    order = np.argsort(ci, kind="stable")
    bounds = np.flatnonzero(np.diff(ci[order])) + 1
    for sel in np.split(order, bounds):
        if sel.size:
            c = int(ci[sel[0]])
            yield c, sel, idx[sel] - starts[c]
