"""Projection DPP and volume sampling of rows, leverage scores, weighted least squares.

For a feature matrix ``H`` of shape ``(n, m)`` with orthonormal basis ``Q`` of its column space
(``Q^T Q = I_r``, ``r = rank H``):

* the leverage score of row ``i`` is ``l_i = ||Q_i||^2`` (``sum_i l_i = r``); in the function
  approximation setting of Nouy & Michel (2023) with ``N`` grid points, ``k_m(x_i) = N l_i`` is
  the Christoffel function and ``w_i = m / k_m(x_i)`` the optimal weights;
* the projection DPP with kernel ``K = Q Q^T`` draws exactly ``r`` rows, ``P(S) = det(Q_S
  Q_S^T) = det(K_S)``, by the chain rule (Hough et al., 2006): pick a row with probability
  proportional to its remaining squared norm, project that direction out of every row, repeat.
  ``O(n r^2)`` time, ``O(n r)`` memory;
* volume sampling of ``k >= r`` rows, ``P(S) ∝ det(Q_S^T Q_S)``, is a projection DPP of size ``r``
  together with ``k - r`` rows drawn uniformly without replacement from the rest (Dereziński &
  Warmuth, 2017).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from repscope.exceptions import RepscopeValueError

__all__ = [
    "leverage_scores",
    "orthonormal_basis",
    "projection_dpp",
    "volume_sampling",
    "weighted_lstsq",
]


def orthonormal_basis(H: np.ndarray, *, rtol: float = 1e-10) -> np.ndarray:
    """An orthonormal basis ``Q`` (n, r) of the column space of ``H`` (thin SVD; directions
    with singular value below ``rtol * s_max`` dropped)."""
    U, s, _ = np.linalg.svd(np.asarray(H, dtype=np.float64), full_matrices=False)
    if s.size == 0 or s[0] == 0:
        raise RepscopeValueError("the feature matrix is zero: it spans no directions to sample.")
    r = int((s > rtol * s[0]).sum())
    return U[:, :r]


def leverage_scores(Q: np.ndarray) -> np.ndarray:
    """Squared row norms of an orthonormal basis (they sum to its rank)."""
    return np.einsum("ij,ij->i", Q, Q)


def projection_dpp(Q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw of the projection DPP with kernel ``Q Q^T``: ``Q.shape[1]`` distinct row
    indices, in the order drawn."""
    V = np.array(Q, dtype=np.float64, copy=True)
    n, r = V.shape
    norms = np.einsum("ij,ij->i", V, V)
    out = np.empty(r, dtype=np.int64)
    for t in range(r):
        p = np.clip(norms, 0.0, None)
        total = p.sum()
        if not total > 0:
            raise RepscopeValueError(
                "projection DPP ran out of directions: the basis is not orthonormal.")
        i = int(rng.choice(n, p=p / total))
        out[t] = i
        v = V[i] / np.sqrt(norms[i])
        proj = V @ v
        V -= np.outer(proj, v)
        norms -= proj**2
        norms[i] = 0.0
    return out


def volume_sampling(Q: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k >= rank`` row indices with ``P(S) ∝ det(Q_S^T Q_S)``: a projection DPP plus
    ``k - rank`` uniform rows from the rest."""
    n, r = Q.shape
    if not r <= k <= n:
        raise RepscopeValueError(
            f"volume sampling draws between the rank ({r}) and the number of rows ({n}); "
            f"got k={k}.")
    S = projection_dpp(Q, rng)
    if k == r:
        return S
    rest = np.setdiff1d(np.arange(n), S)
    return np.concatenate([S, rng.choice(rest, size=k - r, replace=False)])


def weighted_lstsq(Phi: Any, f: Any, weights: Any | None = None) -> np.ndarray:
    """``argmin_c sum_i w_i (f_i - Phi_i c)^2`` (minimum-norm solution when rank-deficient)."""
    A = np.asarray(Phi, dtype=np.float64)
    b = np.asarray(f, dtype=np.float64)
    if weights is not None:
        sw = np.sqrt(np.asarray(weights, dtype=np.float64))
        A = A * sw[:, None]
        b = b * (sw if b.ndim == 1 else sw[:, None])
    return np.linalg.lstsq(A, b, rcond=None)[0]
