r"""Euclidean minimum spanning tree in O(n) memory (Borůvka over blocked distances).

The 0-dimensional persistence of a Vietoris–Rips filtration is read off the Euclidean MST:
every H0 class is born at 0 and dies at the length of one tree edge. This kernel never builds
the ``n x n`` distance matrix:

1. one blocked pass (``rows x n`` distances at a time, through the Gram expansion
   :math:`\|x_i - x_j\|^2 = \|x_i\|^2 + \|x_j\|^2 - 2 x_i^\top x_j` on centred data) keeps
   each point's ``k`` nearest neighbours;
2. Borůvka rounds: each component's lightest outgoing edge is the lightest over its points of
   "nearest point outside the component". A point whose cached neighbours are all inside its
   component is rescanned (blocked, with its component masked out) only when its lower bound
   (the last cached distance) could still beat its component's best candidate; the rescan
   refills its cache with its ``k`` nearest outside points.

Ties are broken by (length, smaller index, larger index), so the tree is the unique minimum
under that order. Edge lengths are recomputed at the end from the difference vectors, so
duplicate points give exactly zero. Time is O(n^2 d) (a few passes), memory
O(n (d + k) + rows x n).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from repscope._progress import ProgressLike, progress_for
from repscope._validation import check_features, check_positive_int
from repscope.exceptions import RepscopeValueError

__all__ = ["DEFAULT_MAX_SAMPLES", "SpanningTree", "check_max_samples", "euclidean_mst"]

#: Largest n the O(n^2)-time kernels accept by default (O(n) memory; minutes of CPU at most).
DEFAULT_MAX_SAMPLES = 50_000

#: Distances scored per block (rows x n); 4M float64 = 32 MiB.
_BLOCK_ELEMENTS = 1 << 22


class SpanningTree(NamedTuple):
    """The ``n - 1`` edges of a Euclidean minimum spanning tree, shortest first.

    Attributes
    ----------
    u, v : ndarray of int64, shape (n - 1,)
        Endpoints (``u < v``).
    length : ndarray of float64, shape (n - 1,)
        Euclidean edge lengths, ascending (the H0 death times).
    """

    u: np.ndarray
    v: np.ndarray
    length: np.ndarray


def check_max_samples(n: int, max_samples: int, *, what: str, option: str = "max_samples") -> None:
    """Refuse ``n > max_samples`` for an O(n^2)-time computation, suggesting a subsample."""
    if n > max_samples:
        raise RepscopeValueError(
            f"{what} takes O(n^2) time and is limited to {max_samples} samples; got {n}. "
            f"Pass a random subsample of at most {max_samples} rows (or raise {option})."
        )


def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        parent[i], i = root, parent[i]
    return root


def _roots(parent: np.ndarray) -> np.ndarray:
    """Every point's root (pointer jumping until stable)."""
    r = parent.copy()
    while True:
        nxt = r[r]
        if np.array_equal(nxt, r):
            return r
        r = nxt


def _block_rows(n: int, block_elements: int) -> int:
    return max(1, min(n, block_elements // max(n, 1)))


def _sq_dists(Xq: np.ndarray, sq_q: np.ndarray, X: np.ndarray, sq: np.ndarray) -> np.ndarray:
    D = Xq @ X.T
    D *= -2.0
    D += sq_q[:, None]
    D += sq[None, :]
    np.maximum(D, 0.0, out=D)
    return D


def _top_k(D: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest entries per row of ``D`` (finite ones), sorted by (value, index)."""
    k = min(k, D.shape[1])
    part = np.argpartition(D, k - 1, axis=1)[:, :k] if k < D.shape[1] else np.tile(
        np.arange(D.shape[1]), (D.shape[0], 1))
    vals = np.take_along_axis(D, part, axis=1)
    order = np.lexsort((part, vals), axis=1)
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(part, order, axis=1)


def euclidean_mst(
    X: Any,
    *,
    k: int = 16,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    block_elements: int = _BLOCK_ELEMENTS,
    progress: ProgressLike = False,
) -> SpanningTree:
    r"""The Euclidean minimum spanning tree of the rows of ``X``, in O(n) memory.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Points (numpy or torch; computed in float64 on the CPU).
    k : int, default=16
        Neighbours cached per point (more: fewer rescans, more memory).
    max_samples : int, default=50,000
        Larger inputs are refused (O(n^2) time) with a message suggesting a subsample.
    block_elements : int, default=4,194,304
        Distances scored at once (``rows x n``); the peak extra memory is about
        ``8 * block_elements`` bytes.
    progress : bool or callable, default=False
        A progress bar over the passes (the first pass counts as one, each Borůvka round as
        one).

    Returns
    -------
    SpanningTree
        ``n - 1`` edges, shortest first (ties by index).

    Raises
    ------
    RepscopeValueError
        NaN/inf, fewer than 1 sample, or more than ``max_samples`` samples.

    Examples
    --------
    >>> import numpy as np
    >>> euclidean_mst(np.array([[0.0], [1.0], [3.0]])).length.tolist()
    [1.0, 2.0]
    """
    from repscope._array import to_numpy

    X = check_features(X, name="X")
    k = check_positive_int(k, "k", caller="euclidean_mst")
    block_elements = check_positive_int(block_elements, "block_elements", caller="euclidean_mst")
    X = np.ascontiguousarray(to_numpy(X), dtype=np.float64)
    n = X.shape[0]
    check_max_samples(n, int(max_samples), what="the Euclidean minimum spanning tree")
    empty = np.zeros(0, dtype=np.int64)
    if n == 1:
        return SpanningTree(empty, empty, np.zeros(0))
    X = X - X.mean(axis=0)
    sq = np.einsum("ij,ij->i", X, X)
    k = min(k, n - 1)
    rows = _block_rows(n, block_elements)
    # cache: neighbours (sorted by (distance, index)), their squared distances, a cursor
    nb_idx = np.empty((n, k), dtype=np.int64)
    nb_d = np.empty((n, k), dtype=np.float64)
    parent = np.arange(n, dtype=np.int64)
    tree_u: list[int] = []
    tree_v: list[int] = []
    rounds = max(1, int(np.ceil(np.log2(n)))) + 1
    with progress_for(progress, "MST passes", rounds, prefix="mst") as advance:
        for s in range(0, n, rows):
            e = min(n, s + rows)
            D = _sq_dists(X[s:e], sq[s:e], X, sq)
            D[np.arange(e - s), np.arange(s, e)] = np.inf
            nb_d[s:e], nb_idx[s:e] = _top_k(D, k)
        advance(1)
        cursor = np.zeros(n, dtype=np.int64)
        while len(tree_u) < n - 1:
            comp = _roots(parent)
            _advance_cursors(nb_idx, cursor, comp)
            valid = cursor < nb_idx.shape[1]
            ci = np.minimum(cursor, nb_idx.shape[1] - 1)
            cand_d = np.where(valid, nb_d[np.arange(n), ci], np.inf)
            cand_j = np.where(valid, nb_idx[np.arange(n), ci], -1)
            # exhausted points: every point closer than their last cached distance is inside
            lower = np.where(valid, cand_d, nb_d[:, -1])
            best = _component_best(comp, cand_d, cand_j, n)
            rescan = np.nonzero(~valid & (lower <= best[comp]))[0]
            if rescan.size:
                _rescan(X, sq, comp, rescan, nb_idx, nb_d, cursor, rows, k)
                cand_d[rescan] = nb_d[rescan, 0]
                cand_j[rescan] = nb_idx[rescan, 0]
            _merge(comp, cand_d, cand_j, parent, tree_u, tree_v, n)
            advance(1)
    u = np.asarray(tree_u, dtype=np.int64)
    v = np.asarray(tree_v, dtype=np.int64)
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    length = np.sqrt(np.einsum("ij,ij->i", X[lo] - X[hi], X[lo] - X[hi]))
    order = np.lexsort((hi, lo, length))
    return SpanningTree(lo[order], hi[order], length[order])


def _advance_cursors(nb_idx: np.ndarray, cursor: np.ndarray, comp: np.ndarray) -> None:
    """Move each cursor past cached neighbours that are now in the point's own component."""
    k = nb_idx.shape[1]
    active = np.nonzero(cursor < k)[0]
    while active.size:
        j = nb_idx[active, cursor[active]]
        inside = comp[j] == comp[active]
        active = active[inside]
        cursor[active] += 1
        active = active[cursor[active] < k]


def _component_best(comp: np.ndarray, cand_d: np.ndarray, cand_j: np.ndarray,
                    n: int) -> np.ndarray:
    best = np.full(n, np.inf)
    np.minimum.at(best, comp, cand_d)
    return best


def _rescan(X: np.ndarray, sq: np.ndarray, comp: np.ndarray, points: np.ndarray,
            nb_idx: np.ndarray, nb_d: np.ndarray, cursor: np.ndarray, rows: int,
            k: int) -> None:
    """Refill the caches of ``points`` with their ``k`` nearest points outside their component
    (blocked; the component is masked out)."""
    for s in range(0, points.size, rows):
        p = points[s:s + rows]
        D = _sq_dists(X[p], sq[p], X, sq)
        D[comp[p][:, None] == comp[None, :]] = np.inf
        vals, idx = _top_k(D, k)
        kk = vals.shape[1]
        nb_d[p, :kk], nb_idx[p, :kk] = vals, idx
        if kk < nb_idx.shape[1]:  # fewer points than k outside: pad with the last one
            nb_d[p, kk:], nb_idx[p, kk:] = vals[:, -1:], idx[:, -1:]
        cursor[p] = 0


def _merge(comp: np.ndarray, cand_d: np.ndarray, cand_j: np.ndarray, parent: np.ndarray,
           tree_u: list[int], tree_v: list[int], n: int) -> None:
    """Add each component's lightest outgoing edge (ties by index), skipping repeats."""
    has = np.nonzero(np.isfinite(cand_d) & (cand_j >= 0))[0]
    i, j = has, cand_j[has]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    order = np.lexsort((hi, lo, cand_d[has], comp[has]))
    first = np.ones(order.size, dtype=bool)
    cs = comp[has][order]
    first[1:] = cs[1:] != cs[:-1]
    pick = order[first]
    pick = pick[np.lexsort((hi[pick], lo[pick], cand_d[has][pick]))]
    for a, b in zip(lo[pick].tolist(), hi[pick].tolist()):
        ra, rb = _find(parent, a), _find(parent, b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
            tree_u.append(a)
            tree_v.append(b)
    if not pick.size and len(tree_u) < n - 1:  # cannot happen on finite data; never loop
        raise RepscopeValueError("the minimum spanning tree did not progress (non-finite data?).")
