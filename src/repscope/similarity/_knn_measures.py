r"""Neighbourhood similarity measures: mutual kNN overlap, Jaccard of kNN sets, CKNNA.

All three compare the ``k``-nearest-neighbour graphs of paired representations ``X`` and ``Y``
(row ``i`` of both is the same input). Neighbours come from the shared exact blocked search
:func:`repscope._kernels.knn.knn_search` (self excluded), so memory is ``O(n k)`` plus one
score block, never ``n x n``; the measures are then ``O(n k)`` (CKNNA) or ``O(n k^2)`` (set
overlaps) on the neighbour lists.

With :math:`N_X(i)` the ``k`` nearest neighbours of sample ``i`` in ``X`` (cosine by default):

.. math::

    \mathrm{mKNN} = \frac{1}{n} \sum_i \frac{|N_X(i) \cap N_Y(i)|}{k}, \qquad
    \mathrm{Jaccard} = \frac{1}{n} \sum_i \frac{|N_X(i) \cap N_Y(i)|}{|N_X(i) \cup N_Y(i)|}

CKNNA (Huh, Cheung, Wang & Isola, 2024, "The Platonic Representation Hypothesis") is CKA whose
kernels are restricted to mutual-neighbour pairs: with kernels ``K`` (cosine similarity of X
rows), ``L`` (of Y rows) and the directed mask :math:`M_{ij} = [j \in N_X(i)][j \in N_Y(i)]`,

.. math::

    \mathrm{CKNNA} = \frac{\mathrm{HSIC}(M \circ K, M \circ L)}
        {\sqrt{\mathrm{HSIC}(M_X \circ K, M_X \circ K)\,\mathrm{HSIC}(M_Y \circ L, M_Y \circ L)}}

where :math:`M_X`, :math:`M_Y` are the masks of ``X`` and ``Y`` alone and HSIC is the
unbiased estimator (Song et al. 2012) as in the authors' ``platonic-rep`` code: with zero
diagonals, :math:`[\mathrm{tr}(AB) + \frac{1^\top A 1\, 1^\top B 1}{(m-1)(m-2)}
- \frac{2}{m-2} 1^\top A B 1] / (m(m-3))` (or the biased :math:`\mathrm{tr}(AHBH)`). The
sparse matrices are never densified: every term is a sparse sum. Unlike ``platonic-rep`` we do
not add ``1e-6`` to the denominator (that shifts values by up to ~1e-3 at typical HSIC scales).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from repscope._array import is_torch, to_numpy
from repscope._kernels.knn import KNNResult, knn_search
from repscope._validation import check_choice, check_paired, check_positive_int
from repscope.exceptions import RepscopeValueError
from repscope.similarity._registry import register_measure

__all__ = ["cknna", "knn_jaccard", "mutual_knn"]

KnnMetric = Literal["cosine", "euclidean", "inner_product"]
_METRICS = ("cosine", "euclidean", "inner_product")


# --------------------------------------------------------------------------- neighbour graphs
def _check_k(k: int | None, n: int, caller: str, *, min_k: int = 1) -> int:
    if k is None:
        return max(min(10, n - 1), min_k)
    k = check_positive_int(k, "k", caller=caller)
    if k < min_k or k > n - 1:
        raise RepscopeValueError(
            f"The 'k' parameter of {caller} must be in [{min_k}, {n - 1}] (n_samples - 1, self "
            f"excluded). Got {k} instead."
        )
    return k


def _graph(X: Any, k: int, metric: str, block_size: int) -> KNNResult:
    """k-NN graph of the rows of ``X`` among themselves (self excluded), as numpy.

    For cosine the rows are L2-normalised once here (one copy) and searched by inner product,
    so the search does not normalise queries and index separately (two more copies).
    """
    if metric == "cosine":
        X = _normalize_rows(X)
        metric = "inner_product"
    r = knn_search(X, X, k, metric=metric, block_size=block_size,  # type: ignore[arg-type]
                   exclude_self=True)
    return KNNResult(to_numpy(r.values), to_numpy(r.indices).astype(np.int64), r.metric)


def _normalize_rows(X: Any) -> Any:
    """Rows divided by ``max(||x||, 1e-12)`` (as ``torch.nn.functional.normalize``)."""
    if is_torch(X):
        import torch

        if not X.dtype.is_floating_point or X.dtype in (torch.float16, torch.bfloat16):
            X = X.float()
        return torch.nn.functional.normalize(X, dim=1)
    A = np.asarray(X)
    if A.dtype not in (np.float32, np.float64):
        A = A.astype(np.float32 if A.dtype == np.float16 else np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", A, A, dtype=np.float64))
    return A / np.maximum(norms, 1e-12).astype(A.dtype)[:, None]


def _overlap_counts(ia: np.ndarray, ib: np.ndarray, *, max_elems: int = 1 << 22) -> np.ndarray:
    """``|N_A(i) & N_B(i)|`` per row of two ``(n, k)`` neighbour lists (no duplicates per row)."""
    n, ka = ia.shape
    kb = ib.shape[1]
    step = max(1, max_elems // max(ka * kb, 1))
    out = np.empty(n, dtype=np.int64)
    for a in range(0, n, step):
        eq = ia[a:a + step, :, None] == ib[a:a + step, None, :]
        out[a:a + step] = eq.any(axis=2).sum(axis=1)
    return out


def _prep(X: Any, Y: Any, k: int | None, metric: str, caller: str, min_k: int = 1) -> tuple[Any, Any, int]:
    X, Y = check_paired(X, Y, min_samples=3, reject_constant=True)
    metric = check_choice(metric, "metric", _METRICS, caller=caller)
    k = _check_k(k, int(X.shape[0]), caller, min_k=min_k)
    return X, Y, k


def _mutual_knn_from(ga: KNNResult, gb: KNNResult) -> float:
    k = ga.indices.shape[1]
    return float(_overlap_counts(ga.indices, gb.indices).mean() / k)


def _jaccard_from(ga: KNNResult, gb: KNNResult) -> float:
    k = ga.indices.shape[1]
    c = _overlap_counts(ga.indices, gb.indices).astype(np.float64)
    return float(np.mean(c / (2 * k - c)))


_KNN_INV = {"orthogonal", "isotropic_scale", "permutation"}


@register_measure(
    "mutual_knn", higher_is_better=True, is_metric=False, invariances=_KNN_INV, identity=1.0,
    estimator="exact blocked kNN, cosine",
)
def mutual_knn(
    X: Any, Y: Any, *, k: int | None = None, metric: KnnMetric = "cosine", block_size: int = 4096
) -> float:
    """Mutual k-nearest-neighbour overlap of paired representations.

    The mean, over samples, of the fraction of a sample's ``k`` nearest neighbours in ``X``
    that are also among its ``k`` nearest neighbours in ``Y`` (Huh et al., 2024).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        Representations of the same inputs (any widths); numpy or torch.
    k : int, optional
        Neighbours per sample, ``1 <= k <= n_samples - 1`` (a sample is never its own
        neighbour). Default ``min(10, n_samples - 1)`` (platonic-rep uses 10).
    metric : {"cosine", "euclidean", "inner_product"}, default="cosine"
    block_size : int, default=4096
        Index rows scored at a time by the blocked search (memory ``O(block_size x 1024)``).

    Returns
    -------
    float in [0, 1]; 1 when both neighbour graphs agree.

    Notes
    -----
    With ``metric="cosine"``: invariant to orthogonal transforms and isotropic scaling of either
    input (not to translation or anisotropic scaling). Symmetric in ``X`` and ``Y``. Exact
    (ties are broken towards the lower index); memory ``O(n k)``.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((50, 4))
    >>> mutual_knn(X, 2 * X, k=5)
    1.0
    """
    X, Y, k = _prep(X, Y, k, metric, "mutual_knn")
    return _mutual_knn_from(_graph(X, k, metric, block_size), _graph(Y, k, metric, block_size))


@register_measure(
    "knn_jaccard", higher_is_better=True, is_metric=False, invariances=_KNN_INV, identity=1.0,
    estimator="exact blocked kNN, cosine",
)
def knn_jaccard(
    X: Any, Y: Any, *, k: int | None = None, metric: KnnMetric = "cosine", block_size: int = 4096
) -> float:
    """Mean Jaccard index of the ``k``-nearest-neighbour sets of each sample in ``X`` and ``Y``.

    ``|N_X(i) & N_Y(i)| / |N_X(i) | N_Y(i)| = c / (2k - c)`` with ``c`` the overlap count.

    Parameters
    ----------
    X, Y, k, metric, block_size
        As in :func:`mutual_knn`.

    Returns
    -------
    float in [0, 1].

    Notes
    -----
    Invariant to orthogonal transforms, isotropic scaling and permutations of the samples (the
    invariances of :func:`mutual_knn`); a monotone per-sample transform of its overlap.
    """
    X, Y, k = _prep(X, Y, k, metric, "knn_jaccard")
    return _jaccard_from(_graph(X, k, metric, block_size), _graph(Y, k, metric, block_size))


# --------------------------------------------------------------------------- CKNNA
def _masked_kernel(g: KNNResult, keep: np.ndarray | None, n: int) -> Any:
    """Sparse ``(M o K)`` with rows ``i``, columns ``N(i)`` (where ``keep``), values ``K_ij``."""
    from scipy.sparse import csr_matrix

    idx, val = g.indices, g.values.astype(np.float64)
    rows = np.repeat(np.arange(n), idx.shape[1])
    if keep is None:
        return csr_matrix((val.ravel(), (rows, idx.ravel())), shape=(n, n))
    m = keep.ravel()
    return csr_matrix((val.ravel()[m], (rows[m], idx.ravel()[m])), shape=(n, n))


def _hsic_sparse(A: Any, B: Any, unbiased: bool) -> float:
    """HSIC of two sparse kernels with zero diagonals (the platonic-rep estimators)."""
    m = A.shape[0]
    t1 = float(A.multiply(B.T).sum())
    ra, ca = np.asarray(A.sum(axis=1)).ravel(), np.asarray(A.sum(axis=0)).ravel()
    rb, cb = np.asarray(B.sum(axis=1)).ravel(), np.asarray(B.sum(axis=0)).ravel()
    sa, sb = float(ra.sum()), float(rb.sum())
    if unbiased:
        t3 = float(ca @ rb)  # 1^T A B 1
        return (t1 + sa * sb / ((m - 1) * (m - 2)) - 2.0 * t3 / (m - 2)) / (m * (m - 3))
    # tr(A H B H) with H = I - 11^T / m
    return t1 - (float(cb @ ra) + float(ca @ rb)) / m + sa * sb / (m * m)


def _cknna_self(g: KNNResult, n: int, unbiased: bool) -> float:
    A = _masked_kernel(g, None, n)
    return _hsic_sparse(A, A, unbiased)


def _cknna_cross(ga: KNNResult, gb: KNNResult, n: int, unbiased: bool) -> float:
    """HSIC of both kernels restricted to pairs that are neighbours in both graphs.

    For row ``i`` the shared neighbours are found on the sorted index lists; ``K_ij`` comes
    from ``ga``'s values and ``L_ij`` from ``gb``'s.
    """
    keep_a = np.zeros(ga.indices.shape, dtype=bool)
    keep_b = np.zeros(gb.indices.shape, dtype=bool)
    step = max(1, (1 << 22) // max(ga.indices.shape[1] * gb.indices.shape[1], 1))
    for a in range(0, n, step):
        eq = ga.indices[a:a + step, :, None] == gb.indices[a:a + step, None, :]
        keep_a[a:a + step] = eq.any(axis=2)
        keep_b[a:a + step] = eq.any(axis=1)
    A = _masked_kernel(ga, keep_a, n)
    B = _masked_kernel(gb, keep_b, n)
    return _hsic_sparse(A, B, unbiased)


def _cknna_from(
    ga: KNNResult, gb: KNNResult, n: int, unbiased: bool,
    self_a: float | None = None, self_b: float | None = None,
) -> float:
    sa = _cknna_self(ga, n, unbiased) if self_a is None else self_a
    sb = _cknna_self(gb, n, unbiased) if self_b is None else self_b
    if not (sa > 0 and sb > 0):
        raise RepscopeValueError(
            f"CKNNA is undefined here: the self-similarity terms HSIC(M_X o K, M_X o K)={sa:.3g} "
            f"and HSIC(M_Y o L, M_Y o L)={sb:.3g} must both be positive. Increase k or check "
            "that neither input is (nearly) constant."
        )
    return float(_cknna_cross(ga, gb, n, unbiased) / np.sqrt(sa * sb))


@register_measure(
    "cknna", higher_is_better=True, is_metric=False, invariances=_KNN_INV, identity=1.0,
    symmetric=False, estimator="unbiased HSIC on mutual-kNN pairs (platonic-rep)",
)
def cknna(
    X: Any,
    Y: Any,
    *,
    k: int | None = None,
    metric: Literal["cosine", "inner_product"] = "cosine",
    unbiased: bool = True,
    block_size: int = 4096,
) -> float:
    """CKNNA: CKA restricted to mutual nearest-neighbour pairs (Huh et al., 2024).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    k : int, optional
        Neighbours per sample, ``2 <= k <= n_samples - 1``; default ``min(10, n_samples - 1)``
        (at least 2).
    metric : {"cosine", "inner_product"}, default="cosine"
        Kernel and neighbour ranking: cosine similarity (rows L2-normalised, as platonic-rep
        normalises features first) or the raw inner product.
    unbiased : bool, default=True
        Unbiased HSIC (platonic-rep's default) or the biased ``tr(AHBH)``.
    block_size : int, default=4096

    Returns
    -------
    float; 1 when the representations agree up to rotation and scale, about 0 for unrelated
    ones. Needs ``n_samples >= 4`` for the unbiased estimator.

    Raises
    ------
    RepscopeValueError
        ``k`` out of range, too few samples, or a non-positive self term.

    Notes
    -----
    With ``metric="cosine"``: invariant to orthogonal transforms and isotropic scaling of
    either input. Not exactly symmetric in ``X`` and ``Y``: the masked kernels are directed
    (``j`` in ``N(i)`` does not imply ``i`` in ``N(j)``), so the term ``1^T A B 1`` of the
    unbiased HSIC differs from ``1^T B A 1`` (by ~1e-3 relative on random data). Memory
    ``O(n k)``.
    """
    caller = "cknna"
    metric = check_choice(metric, "metric", ("cosine", "inner_product"),  # type: ignore[assignment]
                          caller=caller)
    X, Y, k = _prep(X, Y, k, metric, caller, min_k=2)
    n = int(X.shape[0])
    if unbiased and n < 4:
        raise RepscopeValueError(
            f"cknna with unbiased=True needs at least 4 samples; got X.shape={tuple(X.shape)}."
        )
    return _cknna_from(_graph(X, k, metric, block_size), _graph(Y, k, metric, block_size), n,
                       bool(unbiased))
