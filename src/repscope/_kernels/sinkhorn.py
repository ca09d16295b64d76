r"""Symmetric Sinkhorn projection onto doubly stochastic matrices, in the log domain.

Given a symmetric kernel :math:`K = \exp(S/\eta)` (``S`` a similarity matrix), the symmetric
Sinkhorn–Knopp iteration finds the scaling ``u > 0`` with :math:`\Gamma = \mathrm{diag}(u)\,K\,
\mathrm{diag}(u)` doubly stochastic (rows and columns sum to 1). In log space, with
:math:`f = \log u`, the damped fixed point is
:math:`f \leftarrow \tfrac12\big(f - \mathrm{logsumexp}_j(S_{ij}/\eta + f_j)\big)`, which is
stable for small :math:`\eta` (no overflow of :math:`\exp(S/\eta)`).

This is the membership of MLC (Ding et al., ICCV 2023): :math:`\Gamma =
\mathrm{SinkhornProject}(\exp(Z Z^\top/\eta))`. The result is an ``n x n`` matrix by nature;
callers check ``n`` (memory ``8 n^2`` bytes).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from repscope._validation import check_positive_int, check_scalar
from repscope.exceptions import RepscopeValueError

__all__ = ["SinkhornResult", "sinkhorn_affinity", "sinkhorn_symmetric"]


class SinkhornResult(NamedTuple):
    """A doubly stochastic matrix and how the iteration ended.

    Attributes
    ----------
    matrix : ndarray of shape (n, n)
        Symmetric, non-negative, rows and columns summing to 1 (up to ``tol``).
    n_iter : int
    error : float
        Largest absolute deviation of a row sum from 1 at the end.
    """

    matrix: np.ndarray
    n_iter: int
    error: float


def sinkhorn_symmetric(log_kernel: Any, *, max_iter: int = 1000, tol: float = 1e-6
                       ) -> SinkhornResult:
    """Doubly stochastic ``diag(u) exp(L) diag(u)`` for a symmetric log-kernel ``L``.

    Parameters
    ----------
    log_kernel : array-like of shape (n, n)
        Symmetric, finite or ``-inf`` (a zero kernel entry); every row needs a finite entry.
    max_iter : int, default=1000
    tol : float, default=1e-6
        Stop when every row sum is within ``tol`` of 1.

    Returns
    -------
    SinkhornResult

    Examples
    --------
    >>> r = sinkhorn_symmetric(np.log([[2.0, 1.0], [1.0, 2.0]]))
    >>> np.allclose(r.matrix.sum(axis=1), 1.0)
    True
    """
    from scipy.special import logsumexp

    L = np.asarray(log_kernel, dtype=np.float64)
    if L.ndim != 2 or L.shape[0] != L.shape[1]:
        raise RepscopeValueError(f"log_kernel must be a square matrix; got shape {L.shape}.")
    if np.isnan(L).any() or np.isposinf(L).any() or not np.isfinite(L).any(axis=1).all():
        raise RepscopeValueError(
            "log_kernel must have no NaN or +inf entries and a finite entry in every row.")
    if not np.allclose(L[np.isfinite(L)], L.T[np.isfinite(L)], rtol=1e-10, atol=1e-12):
        raise RepscopeValueError("log_kernel must be symmetric.")
    max_iter = check_positive_int(max_iter, "max_iter", caller="sinkhorn_symmetric")
    check_scalar(tol, "tol", caller="sinkhorn_symmetric", min_value=0.0, include_min=False)
    shift = float(L[np.isfinite(L)].max())
    if float(shift - L[np.isfinite(L)].min()) < 600.0:  # exp cannot underflow: plain scaling
        K = np.exp(L - shift)
        u = 1.0 / np.sqrt(K.sum(axis=1))
        err = np.inf
        it = 0
        for it in range(1, max_iter + 1):  # noqa: B007  (it is returned)
            Ku = K @ u
            err = float(np.abs(u * Ku - 1.0).max())
            if err < tol:
                break
            u = np.sqrt(u / Ku)
        G = K * u[:, None] * u[None, :]
        return SinkhornResult((G + G.T) / 2, it, err)
    f = -0.5 * logsumexp(L, axis=1)
    err = np.inf
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007  (it is returned)
        lse = logsumexp(L + f[None, :], axis=1)
        err = float(np.abs(np.exp(f + lse) - 1.0).max())
        if err < tol:
            break
        f = 0.5 * (f - lse)
    G = np.exp(L + f[:, None] + f[None, :])
    return SinkhornResult((G + G.T) / 2, it, err)


def sinkhorn_affinity(Z: Any, *, eta: float = 0.1, exclude_self: bool = False,
                      max_iter: int = 1000, tol: float = 1e-6) -> SinkhornResult:
    r"""MLC's doubly stochastic membership :math:`\Gamma = \mathrm{SinkhornProject}(\exp(\hat Z
    \hat Z^\top / \eta))` of the L2-normalised rows :math:`\hat Z`.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_features)
    eta : float, default=0.1
        Temperature: smaller concentrates each row on fewer neighbours.
    exclude_self : bool, default=False
        Zero the diagonal (a point is not its own neighbour).
    max_iter, tol
        See :func:`sinkhorn_symmetric` (defaults 1000 and 1e-6).

    Returns
    -------
    SinkhornResult
    """
    from repscope._array import to_numpy
    from repscope._validation import check_features

    check_scalar(eta, "eta", caller="sinkhorn_affinity", min_value=0.0, include_min=False)
    A = np.asarray(to_numpy(check_features(Z, name="Z", min_samples=2)), dtype=np.float64)
    norms = np.linalg.norm(A, axis=1, keepdims=True)
    U = A / np.where(norms > 0, norms, 1.0)
    L = (U @ U.T) / float(eta)
    if exclude_self:
        np.fill_diagonal(L, -np.inf)
    return sinkhorn_symmetric(L, max_iter=max_iter, tol=tol)
