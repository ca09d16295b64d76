"""Spectral co-clustering of a non-negative bipartite weight matrix (Dhillon, 2001).

Rows and columns of ``W`` (e.g. units of network A x units of network B, weighted by
``|correlation|``) are clustered jointly: with degree matrices ``D_r``, ``D_c``, the normalised
matrix :math:`A_n = D_r^{-1/2} W D_c^{-1/2}` is decomposed by SVD, the singular vectors
``2 .. 1 + ceil(log2 k)`` are rescaled by ``D^{-1/2}`` and stacked, and k-means on the stacked
rows gives one label per row and per column. This wraps scikit-learn's
:class:`~sklearn.cluster.SpectralCoclustering` (which implements exactly that) with input checks.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from repscope._array import to_numpy
from repscope.exceptions import RepscopeValueError

__all__ = ["Coclusters", "spectral_cluster", "spectral_cocluster"]


class Coclusters(NamedTuple):
    """Cluster labels of the rows and columns of a bipartite matrix.

    Attributes
    ----------
    row_labels : ndarray of int64, shape (n_rows,)
    col_labels : ndarray of int64, shape (n_cols,)
        Labels in ``0 .. n_clusters - 1``; a row and a column with the same label form a
        co-cluster.
    """

    row_labels: np.ndarray
    col_labels: np.ndarray


def spectral_cocluster(
    weights: Any, n_clusters: int, *, random_state: int | None = 0, n_init: int = 10
) -> Coclusters:
    """Spectral co-clustering of a non-negative ``(n_rows, n_cols)`` matrix.

    Parameters
    ----------
    weights : array-like of shape (n_rows, n_cols)
        Non-negative weights (e.g. ``|corr|``). Rows or columns that are all zero get a tiny
        uniform weight (``1e-12``) so the degree normalisation is defined.
    n_clusters : int
        Number of co-clusters, ``2 <= n_clusters <= min(n_rows, n_cols)``.
    random_state : int or None, default=0
        Seed of the k-means step.
    n_init : int, default=10
        k-means restarts.

    Returns
    -------
    Coclusters

    Raises
    ------
    RepscopeValueError
        Negative or non-finite weights, or ``n_clusters`` out of range.
    """
    from sklearn.cluster import SpectralCoclustering

    W = to_numpy(weights).astype(np.float64, copy=True)
    if W.ndim != 2:
        raise RepscopeValueError(f"weights must be 2-D (n_rows, n_cols); got shape {W.shape}.")
    if not np.all(np.isfinite(W)) or (W < 0).any():
        raise RepscopeValueError(
            "weights must be finite and non-negative (e.g. the absolute correlation); got "
            f"min={np.nanmin(W)!r} and {int((~np.isfinite(W)).sum())} non-finite entries."
        )
    k = int(n_clusters)
    if not 2 <= k <= min(W.shape):
        raise RepscopeValueError(
            f"The 'n_clusters' parameter of spectral_cocluster must be in [2, {min(W.shape)}] "
            f"(the smaller side of weights.shape={W.shape}). Got {n_clusters!r} instead."
        )
    W += 1e-12
    model = SpectralCoclustering(n_clusters=k, random_state=random_state, n_init=n_init)
    model.fit(W)
    return Coclusters(
        np.asarray(model.row_labels_, dtype=np.int64),
        np.asarray(model.column_labels_, dtype=np.int64),
    )


def spectral_cluster(
    affinity: Any, n_clusters: int, *, random_state: int | None = 0, n_init: int = 10
) -> np.ndarray:
    """Normalised spectral clustering of a symmetric non-negative ``(n, n)`` affinity.

    The ``n_clusters`` leading eigenvectors of :math:`D^{-1/2} W D^{-1/2}` (Ng, Jordan & Weiss,
    2001), then k-means on their rows; this wraps scikit-learn's
    :func:`~sklearn.cluster.spectral_clustering` with input checks. Used by subspace clustering
    (``|C| + |C|^T``) and by the doubly stochastic (Sinkhorn) membership.

    Parameters
    ----------
    affinity : array-like of shape (n, n)
        Symmetric (it is symmetrised as ``(W + W^T)/2``), finite, non-negative.
    n_clusters : int
        ``2 <= n_clusters <= n``.
    random_state : int or None, default=0
    n_init : int, default=10
        k-means restarts.

    Returns
    -------
    ndarray of int64, shape (n,)
        Labels in ``0 .. n_clusters - 1``.

    Raises
    ------
    RepscopeValueError
        A non-square, negative or non-finite affinity, or ``n_clusters`` out of range.
    """
    from sklearn.cluster import spectral_clustering

    W = to_numpy(affinity).astype(np.float64, copy=True)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise RepscopeValueError(f"affinity must be a square (n, n) matrix; got shape {W.shape}.")
    if not np.all(np.isfinite(W)) or (W < 0).any():
        raise RepscopeValueError(
            "affinity must be finite and non-negative; got "
            f"min={np.nanmin(W)!r} and {int((~np.isfinite(W)).sum())} non-finite entries.")
    k = int(n_clusters)
    if not 2 <= k <= W.shape[0]:
        raise RepscopeValueError(
            f"The 'n_clusters' parameter of spectral_cluster must be in [2, {W.shape[0]}] (the "
            f"number of points). Got {n_clusters!r} instead.")
    W = (W + W.T) / 2 + 1e-12
    labels = spectral_clustering(W, n_clusters=k, random_state=random_state, n_init=n_init,
                                 assign_labels="kmeans")
    return np.asarray(labels, dtype=np.int64)
