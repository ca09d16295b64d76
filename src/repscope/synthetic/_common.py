"""Shared helpers of the synthetic generators: seeding, validation, sampling, sparse codes."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from repscope._validation import check_positive_int, check_scalar
from repscope.exceptions import RepscopeTypeError, RepscopeValueError

#: Rows drawn at once when a generator needs an (n, m) random matrix (keeps memory bounded).
_CHUNK_ELEMENTS = 1 << 22


def make_rng(seed: Any, *, caller: str) -> np.random.Generator:
    """A numpy Generator from an int seed or an existing Generator (used as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise RepscopeTypeError(
            f"The 'seed' parameter of {caller} must be an int or a numpy.random.Generator. "
            f"Got {seed!r} ({type(seed).__name__}) instead."
        )
    if seed < 0:
        raise RepscopeValueError(
            f"The 'seed' parameter of {caller} must be a non-negative int. Got {seed!r} instead."
        )
    return np.random.default_rng(int(seed))


def positive_int(value: Any, name: str, caller: str) -> int:
    return check_positive_int(value, name, caller=caller)


def non_negative(value: Any, name: str, caller: str) -> float:
    return float(check_scalar(value, name, caller=caller, min_value=0.0))


def magnitude_range(value: Any, name: str, caller: str) -> tuple[float, float]:
    """A magnitude given as one float (constant) or a ``(low, high)`` pair, ``0 <= low <= high``."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        v = non_negative(value, name, caller)
        return v, v
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            for v in value
        )
        and 0 <= float(value[0]) <= float(value[1])
        and np.isfinite(float(value[1]))
    ):
        return float(value[0]), float(value[1])
    raise RepscopeValueError(
        f"The {name!r} parameter of {caller} must be a float >= 0 or a pair (low, high) with "
        f"0 <= low <= high. Got {value!r} instead."
    )


def draw_magnitudes(rng: np.random.Generator, size: Any, lohi: tuple[float, float]) -> np.ndarray:
    """Uniform draws on ``[low, high]`` (float64)."""
    lo, hi = lohi
    if lo == hi:
        return np.full(size, lo, dtype=np.float64)
    return rng.uniform(lo, hi, size=size)


def unit_rows(rng: np.random.Generator, m: int, d: int) -> np.ndarray:
    """``m`` independent uniformly random unit vectors in R^d, float64 (m, d)."""
    w = rng.standard_normal((m, d))
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def orthonormal_rows(rng: np.random.Generator, r: int, d: int) -> np.ndarray:
    """``r <= d`` uniformly random orthonormal rows, float64 (r, d)."""
    q, rr = np.linalg.qr(rng.standard_normal((d, r)))
    q = q * np.sign(np.diag(rr))
    return q.T.copy()


def choose_k(
    rng: np.random.Generator, n: int, m: int, k: int, log_weights: Any = None
) -> np.ndarray:
    """``k`` distinct indices in [0, m) per row, shape (n, k) int64.

    Uniform without replacement, or, with ``log_weights`` (m,), successive sampling without
    replacement proportional to ``exp(log_weights)`` (the Gumbel-top-k trick).
    """
    out = np.empty((n, k), dtype=np.int64)
    rows = max(1, _CHUNK_ELEMENTS // max(m, 1))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        keys = rng.gumbel(size=(stop - start, m))
        if log_weights is not None:
            keys += log_weights
        # largest keys win: argpartition on the negated keys
        part = (
            np.argpartition(-keys, k - 1, axis=1)[:, :k]
            if k < m
            else np.tile(np.arange(m), (stop - start, 1))
        )
        out[start:stop] = part
    return out


def codes_from_indices(indices: np.ndarray, values: np.ndarray, m: int) -> sp.csr_array:
    """CSR (n, m) float32 codes with ``indices[i]`` (distinct) holding ``values[i]``."""
    n, k = indices.shape
    order = np.argsort(indices, axis=1, kind="stable")
    idx = np.take_along_axis(indices, order, axis=1)
    val = np.take_along_axis(values, order, axis=1).astype(np.float32)
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    return sp.csr_array((val.reshape(-1), idx.reshape(-1), indptr), shape=(n, m))


def sparse_matmul(codes: sp.csr_array, dictionary: np.ndarray) -> np.ndarray:
    """``codes @ dictionary`` in float64 (n, d)."""
    return np.asarray(codes.astype(np.float64) @ dictionary, dtype=np.float64)


def add_noise(rng: np.random.Generator, x: np.ndarray, noise: float) -> np.ndarray:
    """``x`` plus isotropic Gaussian noise of standard deviation ``noise`` per coordinate."""
    if noise > 0:
        x = x + noise * rng.standard_normal(x.shape)
    return x
