"""Exact k-nearest-neighbour search, blocked so memory is O(query_block x index_block).

One kernel for every module that needs neighbours (kNN probes, kNN OOD scores, mutual-kNN
similarity). The index is scanned in blocks; each block's scores are merged into a running
top-k per query, so the full ``n_queries x n_index`` score matrix is never built. Several
``k`` are answered by one search with the largest ``k`` (the result is sorted, so the first
``k'`` columns are the ``k'`` nearest).

``backend="faiss"`` uses a flat (exact) faiss index when faiss is installed; the default torch
path needs nothing else and runs on the inputs' device.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np

from repscope._array import get_namespace, is_torch
from repscope._validation import check_choice, check_features, check_positive_int
from repscope.exceptions import RepscopeValueError

__all__ = ["KNNResult", "Metric", "knn_search"]

Metric = Literal["cosine", "euclidean", "inner_product"]
_METRICS = ("cosine", "euclidean", "inner_product")


class KNNResult(NamedTuple):
    """Neighbours of each query, nearest first.

    Attributes
    ----------
    values : array of shape (n_queries, k)
        Similarities (``cosine``, ``inner_product``: larger is nearer) or Euclidean distances
        (``euclidean``: smaller is nearer), sorted nearest first.
    indices : array of shape (n_queries, k)
        Row indices into the index, int64.
    metric : str
        The metric searched with.
    """

    values: Any
    indices: Any
    metric: str

    @property
    def similarities(self) -> Any:
        """The values when they are similarities (cosine / inner product)."""
        if self.metric == "euclidean":
            raise RepscopeValueError(
                "similarities are not defined for metric='euclidean'; use .distances."
            )
        return self.values

    @property
    def distances(self) -> Any:
        """The values when they are distances (euclidean)."""
        if self.metric != "euclidean":
            raise RepscopeValueError(
                f"distances are not defined for metric={self.metric!r} (values are "
                "similarities); use .similarities."
            )
        return self.values

    def first(self, k: int) -> KNNResult:
        """The ``k`` nearest of a search done with a larger ``k``."""
        return KNNResult(self.values[:, :k], self.indices[:, :k], self.metric)


def knn_search(
    queries: Any,
    index: Any,
    k: int,
    *,
    metric: Metric = "cosine",
    block_size: int = 4096,
    query_block_size: int = 1024,
    exclude_self: bool = False,
    backend: Literal["torch", "faiss"] = "torch",
) -> KNNResult:
    r"""Exact ``k`` nearest neighbours of every query among the rows of ``index``.

    Scores are :math:`s_{ij} = \hat q_i^\top \hat x_j` (cosine, rows L2-normalised),
    :math:`q_i^\top x_j` (inner product) or
    :math:`d_{ij} = \sqrt{\max(0, \|q_i\|^2 + \|x_j\|^2 - 2 q_i^\top x_j)}` (euclidean).

    Parameters
    ----------
    queries : array-like or torch.Tensor of shape (n_queries, n_features)
    index : array-like or torch.Tensor of shape (n_index, n_features)
        Same backend and device as ``queries``.
    k : int
        Neighbours per query, ``1 <= k <= n_index`` (``n_index - 1`` with ``exclude_self``).
    metric : {"cosine", "euclidean", "inner_product"}, default="cosine"
    block_size : int, default=4096
        Index rows scored at a time.
    query_block_size : int, default=1024
        Queries scored at a time; peak extra memory is about
        ``query_block_size x (block_size + k)`` scores.
    exclude_self : bool, default=False
        Query ``i`` is item ``i`` of the index (``queries`` is ``index``): never return it as
        its own neighbour (leave-one-out).
    backend : {"torch", "faiss"}, default="torch"
        ``"faiss"`` needs faiss installed (exact flat index; numpy float32 on CPU).

    Returns
    -------
    KNNResult
        ``values`` and ``indices`` of shape (n_queries, k), nearest first, in the inputs'
        backend and device (values in the inputs' floating dtype, float32 for half inputs).

    Raises
    ------
    RepscopeValueError
        Bad ``k``, mismatched widths, ``exclude_self`` with different numbers of rows, faiss
        requested but missing.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.eye(3)
    >>> knn_search(X, X, 1).indices.ravel().tolist()
    [0, 1, 2]
    """
    import torch

    caller = "knn_search"
    get_namespace(queries, index)
    queries = check_features(queries, name="queries")
    index = check_features(index, name="index")
    metric = check_choice(metric, "metric", _METRICS, caller=caller)  # type: ignore[assignment]
    backend = check_choice(backend, "backend", ("torch", "faiss"), caller=caller)  # type: ignore[assignment]
    k = check_positive_int(k, "k", caller=caller)
    block_size = check_positive_int(block_size, "block_size", caller=caller)
    query_block_size = check_positive_int(query_block_size, "query_block_size", caller=caller)
    nq, d = int(queries.shape[0]), int(queries.shape[1])
    ni = int(index.shape[0])
    if int(index.shape[1]) != d:
        raise RepscopeValueError(
            f"queries and index must have the same number of features; got queries.shape="
            f"{tuple(queries.shape)} and index.shape={tuple(index.shape)}."
        )
    if exclude_self and nq != ni:
        raise RepscopeValueError(
            f"exclude_self=True needs queries to be the index itself (same rows); got "
            f"{nq} queries and {ni} index rows."
        )
    available = ni - 1 if exclude_self else ni
    if k > available:
        raise RepscopeValueError(
            f"The 'k' parameter of {caller} must be at most {available} (the index has {ni} "
            f"rows{', one excluded per query' if exclude_self else ''}). Got {k} instead."
        )
    torch_in = is_torch(queries)
    q = queries if torch_in else torch.as_tensor(_writable(queries))
    x = index if torch_in else torch.as_tensor(_writable(index))
    cdtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    q, x = q.detach().to(cdtype), x.detach().to(cdtype)
    if backend == "faiss":
        vals, idx = _faiss_search(q, x, k, metric, exclude_self)
    else:
        vals, idx = _torch_search(q, x, k, metric, block_size, query_block_size, exclude_self)
    if torch_in:
        out_dtype = queries.dtype if queries.dtype.is_floating_point and queries.dtype in (
            torch.float32, torch.float64) else torch.float32
        return KNNResult(vals.to(device=queries.device, dtype=out_dtype),
                         idx.to(queries.device), metric)
    np_dtype = queries.dtype if queries.dtype in (np.float32, np.float64) else np.float32
    return KNNResult(vals.cpu().numpy().astype(np_dtype, copy=False), idx.cpu().numpy(), metric)


def _writable(a: np.ndarray) -> np.ndarray:
    """A C-contiguous, writable view or copy (torch refuses read-only memory maps)."""
    return a if a.flags.writeable and a.flags.c_contiguous else np.array(a, copy=True)


def _prepare(q: Any, x: Any, metric: str) -> tuple[Any, Any, Any]:
    import torch

    if metric == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
        x = torch.nn.functional.normalize(x, dim=1)
        return q, x, None
    if metric == "euclidean":
        return q, x, (x * x).sum(dim=1)
    return q, x, None


def _torch_search(q: Any, x: Any, k: int, metric: str, block_size: int,
                  query_block_size: int, exclude_self: bool) -> tuple[Any, Any]:
    """Blocked top-k: top-k of each index block, merged into the running top-k. Euclidean ranks
    by ``|x|^2 - 2 q.x`` (the query norm is constant per row) and converts at the end."""
    import torch

    q, x, xsq = _prepare(q, x, metric)
    nq, ni = q.shape[0], x.shape[0]
    largest = metric != "euclidean"
    fill = -torch.inf if largest else torch.inf
    out_v = torch.empty((nq, k), dtype=q.dtype, device=q.device)
    out_i = torch.empty((nq, k), dtype=torch.int64, device=q.device)
    for a in range(0, nq, query_block_size):
        qb = q[a:a + query_block_size]
        m = qb.shape[0]
        best_v = torch.full((m, 0), fill, dtype=q.dtype, device=q.device)
        best_i = torch.empty((m, 0), dtype=torch.int64, device=q.device)
        for b in range(0, ni, block_size):
            xb = x[b:b + block_size]
            s = qb @ xb.T
            if metric == "euclidean":
                s = xsq[b:b + block_size][None, :] - 2.0 * s
            if exclude_self:
                rows = torch.arange(m, device=q.device)
                cols = rows + a - b
                ok = (cols >= 0) & (cols < xb.shape[0])
                s[rows[ok], cols[ok]] = fill
            kb = min(k, s.shape[1])
            blk_v, blk_i = torch.topk(s, kb, dim=1, largest=largest, sorted=True)
            cand_v = torch.cat([best_v, blk_v], dim=1)
            cand_i = torch.cat([best_i, blk_i + b], dim=1)
            kk = min(k, cand_v.shape[1])
            # stable merge: on equal scores the earlier block (lower indices) stays first
            order = torch.sort(cand_v, dim=1, descending=largest, stable=True).indices[:, :kk]
            best_v = torch.gather(cand_v, 1, order)
            best_i = torch.gather(cand_i, 1, order)
        if metric == "euclidean":
            qsq = (qb * qb).sum(dim=1, keepdim=True)
            best_v = torch.sqrt(torch.clamp(best_v + qsq, min=0.0))
        out_v[a:a + m] = best_v
        out_i[a:a + m] = best_i
    return out_v, out_i


def _faiss_search(q: Any, x: Any, k: int, metric: str, exclude_self: bool) -> tuple[Any, Any]:
    import torch

    try:
        import faiss
    except ImportError:
        raise RepscopeValueError(
            "backend='faiss' needs the faiss package; install faiss-cpu (or faiss-gpu) or use "
            "backend='torch' (exact, no extra dependency)."
        ) from None
    q, x, _ = _prepare(q, x, metric)
    qn = np.ascontiguousarray(q.cpu().numpy(), dtype=np.float32)
    xn = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
    idx = faiss.IndexFlatL2(xn.shape[1]) if metric == "euclidean" else faiss.IndexFlatIP(
        xn.shape[1])
    idx.add(xn)
    kk = k + 1 if exclude_self else k
    vals, inds = idx.search(qn, kk)
    if exclude_self:
        keep = inds != np.arange(qn.shape[0])[:, None]
        # drop self where found, else the last (farthest) extra neighbour
        keep[keep.all(axis=1), -1] = False
        vals = vals[keep].reshape(qn.shape[0], k)
        inds = inds[keep].reshape(qn.shape[0], k)
    if metric == "euclidean":
        vals = np.sqrt(np.maximum(vals, 0.0))
    return (torch.from_numpy(vals).to(q.dtype), torch.from_numpy(inds.astype(np.int64)))
