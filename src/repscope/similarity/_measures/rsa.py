"""Representational similarity analysis (Kriegeskorte et al., 2008).

An RDM holds the dissimilarity of every pair of inputs within one representation; RSA compares
the upper triangles of the two RDMs. This is inherently ``O(n^2)``: the Pearson comparison is
accumulated in row blocks (``O(block * n)`` memory, never the whole RDM); the Spearman
comparison ranks all ``n (n - 1) / 2`` entries and so holds both triangles (``8 n^2`` bytes
each, 400 MB at ``n = 10,000``) -- subsample inputs beyond that.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from repscope._array import as_float64_numpy
from repscope._validation import check_choice, check_features, check_paired
from repscope.exceptions import RepscopeValueError
from repscope.similarity._registry import register_measure

__all__ = ["rdm", "rsa"]

RDMMetric = Literal["correlation", "euclidean", "sqeuclidean"]
_METRICS = ("correlation", "euclidean", "sqeuclidean")
_BLOCK = 1024


def _prepared(X: Any, metric: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    A = as_float64_numpy(X, name=name)
    if metric == "correlation":
        Z = A - A.mean(axis=1, keepdims=True)
        norms = np.sqrt(np.einsum("ij,ij->i", Z, Z))
        if np.any(norms == 0):
            i = int(np.argmin(norms))
            raise RepscopeValueError(
                f"{name} row {i} is constant across features; the correlation distance is "
                "undefined for it. Use metric='euclidean' or drop that input."
            )
        return Z / norms[:, None], np.ones(A.shape[0])
    A = A - A.mean(axis=0)
    return A, np.einsum("ij,ij->i", A, A)


def _rdm_rows(A: np.ndarray, sq: np.ndarray, sl: slice, metric: str) -> np.ndarray:
    G = A[sl] @ A.T
    if metric == "correlation":
        return 1.0 - G
    D = sq[sl, None] + sq[None, :] - 2.0 * G
    np.maximum(D, 0.0, out=D)
    return np.sqrt(D) if metric == "euclidean" else D


def rdm(X: Any, *, metric: RDMMetric = "correlation") -> np.ndarray:
    """Condensed representational dissimilarity matrix (upper triangle, row-major).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    metric : {"correlation", "euclidean", "sqeuclidean"}
        ``1 - Pearson r`` between the two inputs' feature vectors; Euclidean distance; squared
        Euclidean distance (rsatoolbox's "euclidean" also divides by ``n_features``).

    Returns
    -------
    ndarray of shape (n_samples * (n_samples - 1) / 2,)
        Same order as :func:`scipy.spatial.distance.pdist`.
    """
    X = check_features(X, name="X", min_samples=2)
    check_choice(metric, "metric", _METRICS, caller="rdm")
    A, sq = _prepared(X, metric, "X")
    n = A.shape[0]
    out = np.empty(n * (n - 1) // 2)
    pos = 0
    for s in range(0, n, _BLOCK):
        sl = slice(s, min(s + _BLOCK, n))
        D = _rdm_rows(A, sq, sl, metric)
        for r in range(sl.stop - sl.start):
            i = s + r
            row = D[r, i + 1:]
            out[pos:pos + row.size] = row
            pos += row.size
    return out


def _pearson_blocked(A: np.ndarray, sa: np.ndarray, B: np.ndarray, sb: np.ndarray,
                     metric: str) -> float:
    n = A.shape[0]
    s_a = s_b = s_aa = s_bb = s_ab = 0.0
    count = 0
    for s in range(0, n, _BLOCK):
        sl = slice(s, min(s + _BLOCK, n))
        Da, Db = _rdm_rows(A, sa, sl, metric), _rdm_rows(B, sb, sl, metric)
        mask = np.arange(n)[None, :] > np.arange(sl.start, sl.stop)[:, None]
        a, b = Da[mask], Db[mask]
        count += a.size
        s_a += float(a.sum())
        s_b += float(b.sum())
        s_aa += float(a @ a)
        s_bb += float(b @ b)
        s_ab += float(a @ b)
    ca = s_aa - s_a**2 / count
    cb = s_bb - s_b**2 / count
    if not (ca > 0 and cb > 0):
        raise RepscopeValueError("RSA is undefined: an RDM is constant (all dissimilarities equal).")
    return float(np.clip((s_ab - s_a * s_b / count) / np.sqrt(ca * cb), -1.0, 1.0))


def _rsa(X: Any, Y: Any, metric: str, method: str) -> float:
    X, Y = check_paired(X, Y, min_samples=3, reject_constant=True)
    check_choice(metric, "metric", _METRICS, caller="rsa")
    check_choice(method, "method", ("spearman", "pearson"), caller="rsa")
    A, sa = _prepared(X, metric, "X")
    B, sb = _prepared(Y, metric, "Y")
    if method == "pearson":
        return _pearson_blocked(A, sa, B, sb, metric)
    from scipy.stats import rankdata

    # Ranks of Euclidean and squared Euclidean distances agree; skip the square root.
    kind: RDMMetric = "correlation" if metric == "correlation" else "sqeuclidean"
    ra, rb = rankdata(rdm(A, metric=kind)), rankdata(rdm(B, metric=kind))
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt(float(ra @ ra) * float(rb @ rb))
    if not den > 0:
        raise RepscopeValueError("RSA is undefined: an RDM is constant (all dissimilarities equal).")
    return float(np.clip(float(ra @ rb) / den, -1.0, 1.0))


@register_measure(
    "rsa", higher_is_better=True, is_metric=False,
    invariances={"isotropic_scale", "permutation"}, identity=1.0,
    estimator="correlation-distance RDMs, Spearman",
)
def rsa(X: Any, Y: Any, *, metric: RDMMetric = "correlation",
        method: Literal["spearman", "pearson"] = "spearman") -> float:
    """RSA: correlation between the upper triangles of the two RDMs.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    metric : {"correlation", "euclidean", "sqeuclidean"}, default="correlation"
        Dissimilarity inside each representation (see :func:`rdm`).
    method : {"spearman", "pearson"}, default="spearman"
        How the two RDMs are compared (Spearman with average ranks for ties).

    Returns
    -------
    float in [-1, 1]

    Notes
    -----
    With the correlation distance: invariant to isotropic scaling and permutation of features,
    not to rotations or translations (the distance centres each input across features). With
    Euclidean distances (:func:`rsa_euclidean`): invariant to orthogonal maps, isotropic
    scaling, translation and permutation. ``O(n^2 d)`` time; see the module docstring for
    memory.
    """
    return _rsa(X, Y, metric, method)


@register_measure(
    "rsa_euclidean", higher_is_better=True, is_metric=False,
    invariances={"orthogonal", "isotropic_scale", "translation", "permutation"}, identity=1.0,
    estimator="Euclidean-distance RDMs, Spearman",
)
def rsa_euclidean(X: Any, Y: Any, *, method: Literal["spearman", "pearson"] = "spearman") -> float:
    """:func:`rsa` with Euclidean-distance RDMs (rotation and translation invariant)."""
    return _rsa(X, Y, "euclidean", method)
