"""Input checks and row-chunked pair loops shared by the O(n^2)-time geometry measures.

Those measures (uniformity, TwoNN, MLE intrinsic dimension, ...) take ``O(n^2 d)`` time but
keep at most ``block x n`` distances in memory, and refuse more than ``max_samples`` rows with
a message suggesting a subsample (or :func:`repscope.geometry.dpp_subset` to choose one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from repscope._array import as_float64_numpy
from repscope._validation import check_features, check_labels
from repscope.exceptions import RepscopeValueError

__all__ = [
    "DEFAULT_MAX_SAMPLES",
    "check_max_samples",
    "features64",
    "l2_normalize",
    "labels_for",
    "sq_distance_blocks",
]

#: The largest ``n`` an O(n^2)-time measure accepts by default (about a minute on 2 cores).
DEFAULT_MAX_SAMPLES = 50_000

#: Rows of distances computed at a time (``block x n`` float64 in memory).
BLOCK = 1024


def features64(X: Any, *, name: str = "X", caller: str, min_samples: int = 2) -> np.ndarray:
    """``X`` checked (2-D, finite, at least ``min_samples`` rows) as float64 numpy."""
    X = check_features(X, name=name, min_samples=min_samples)
    return as_float64_numpy(X, name=name)


def check_max_samples(n: int, max_samples: int | None, *, caller: str, cost: str) -> None:
    """Refuse ``n > max_samples`` for a measure that costs ``cost`` (e.g. "O(n^2) time")."""
    if max_samples is not None and n > max_samples:
        raise RepscopeValueError(
            f"{caller} takes {cost} and accepts at most max_samples={max_samples} samples; got "
            f"{n}. Pass a subsample of the rows (uniform, or chosen with "
            "repscope.geometry.dpp_subset), or raise max_samples."
        )


def labels_for(y: Any, n: int, *, caller: str, min_classes: int = 1) -> np.ndarray:
    """Labels checked against ``n`` rows, as integer codes ``0..K-1``."""
    if y is None:
        raise RepscopeValueError(f"{caller} needs labels (y); got None.")
    arr = check_labels(y, n_samples=n, name="y", min_classes=min_classes)
    return np.unique(arr, return_inverse=True)[1].astype(np.int64)


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm; all-zero rows stay zero (no NaN)."""
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    return X / np.where(norms > 0, norms, 1.0)[:, None]


def sq_distance_blocks(
    X: np.ndarray, *, block: int = BLOCK
) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, D)`` with ``D[i, j] = ||x_rows[i] - x_j||^2`` (clipped at 0), ``block`` rows at
    a time, so at most ``block x n`` values are held."""
    sq = np.einsum("ij,ij->i", X, X)
    n = X.shape[0]
    for s in range(0, n, block):
        sl = slice(s, min(s + block, n))
        D = sq[sl, None] + sq[None, :] - 2.0 * (X[sl] @ X.T)
        np.maximum(D, 0.0, out=D)
        yield sl, D
