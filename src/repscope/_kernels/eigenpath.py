"""Regularization paths from one symmetric eigendecomposition (ridge, shrunk LDA, encoding).

Every estimator here solves, for a whole grid of regularization values, a system
``(G + a I) W = B`` (ridge, :math:`G = X_c^T X_c`) or ``((1 - s) S + s \\mu I) W = M^T``
(shrinkage LDA). Both matrices share the eigenvectors of ``G = V diag(lam) V^T``, so

.. math::

    W_a = V \\, \\mathrm{diag}(f_a(\\lambda)) \\, V^T B,

with the *spectral filter* :math:`f_a(\\lambda) = 1 / (\\lambda + a)` (ridge) or
:math:`1 / ((1 - s) \\lambda + s \\mu)` (shrinkage). One ``eigh`` of the ``d x d`` matrix
plus ``C = V^T B`` therefore gives the whole path; each extra path value costs ``O(d t)``
(or ``O(d^2 t)`` to materialise its coefficients), never a new factorisation.

The module also holds the selection criteria that only need sufficient statistics:

* :func:`ridge_gcv_path` — generalized cross-validation per target from moments alone;
* :func:`heldout_sse_path` — held-out squared error of every path value from the held-out
  fold's moments (k-fold without touching the data again);
* :func:`loo_sq_errors` — exact efficient leave-one-out residuals on a chunk of rows
  (needs the rows: a second pass over the data).

All computations are float64 numpy on ``d x d`` / ``d x t`` matrices; only
:func:`loo_sq_errors` and :func:`path_decision` touch ``n``-sized data, chunk by chunk, and
they work on numpy arrays and torch tensors (on the tensor's device) alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ClassSums",
    "EigenBasis",
    "eigh_psd",
    "heldout_sse_path",
    "loo_sq_errors",
    "path_coefs",
    "path_decision",
    "ridge_filters",
    "ridge_gcv_path",
    "shrinkage_filters",
]


@dataclass(frozen=True)
class EigenBasis:
    """Eigendecomposition ``G = V diag(values) V^T`` of a symmetric PSD ``d x d`` matrix.

    Attributes
    ----------
    values : ndarray of shape (d,)
        Eigenvalues, ascending, clipped at 0.
    vectors : ndarray of shape (d, d)
        Orthonormal eigenvectors in columns.
    """

    values: np.ndarray
    vectors: np.ndarray


def eigh_psd(G: np.ndarray) -> EigenBasis:
    """Eigendecomposition of a symmetric positive semi-definite matrix in float64.

    Parameters
    ----------
    G : ndarray of shape (d, d)
        Symmetric PSD (a Gram, scatter or covariance matrix). It is symmetrised first.

    Returns
    -------
    EigenBasis
        Eigenvalues clipped at 0 (rounding can make tiny ones negative).
    """
    G = np.asarray(G, dtype=np.float64)
    vals, vecs = np.linalg.eigh((G + G.T) * 0.5)
    return EigenBasis(np.clip(vals, 0.0, None), vecs)


def ridge_filters(values: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Ridge spectral filters ``f[a, j] = 1 / (values[j] + alphas[a])``, shape (A, d).

    A zero alpha on a zero eigenvalue gives the pseudo-inverse (filter 0), as ``lstsq``.
    """
    den = values[None, :] + np.asarray(alphas, dtype=np.float64)[:, None]
    tol = max(float(values.max(initial=0.0)), 1.0) * values.size * np.finfo(np.float64).eps
    return np.where(den > tol, 1.0 / np.where(den > tol, den, 1.0), 0.0)


def shrinkage_filters(values: np.ndarray, shrinkages: np.ndarray, mu: float) -> np.ndarray:
    """Shrinkage filters ``1 / ((1 - s) values + s mu)`` of ``(1-s) S + s mu I``, shape (A, d).

    ``mu`` is usually ``trace(S) / d``. Eigenvalues that vanish (``s = 0`` on a singular
    ``S``) get filter 0: the pseudo-inverse, as scikit-learn's ``lstsq`` solver.
    """
    s = np.asarray(shrinkages, dtype=np.float64)[:, None]
    den = (1.0 - s) * values[None, :] + s * mu
    tol = max(float(values.max(initial=0.0)), 1e-300) * values.size * np.finfo(np.float64).eps
    return np.where(den > tol, 1.0 / np.where(den > tol, den, 1.0), 0.0)


def path_coefs(basis: EigenBasis, filters: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Coefficients of every path value, ``W[a] = V diag(filters[a]) C``, shape (A, d, t).

    Parameters
    ----------
    basis : EigenBasis
    filters : ndarray of shape (A, d)
    C : ndarray of shape (d, t)
        The right-hand side in the eigenbasis, ``V^T B``.
    """
    return np.einsum("ij,aj,jt->ait", basis.vectors, filters, C, optimize=True)


def path_decision(Xb: Any, shift: np.ndarray, W_all: np.ndarray, offset: np.ndarray) -> Any:
    """Decision values of every path value on a chunk, ``(Xb - shift) W + offset``.

    Parameters
    ----------
    Xb : ndarray or torch.Tensor of shape (b, d)
    shift : ndarray of shape (d,)
    W_all : ndarray of shape (d, A * t)
        The path's coefficients side by side (``W.transpose(1, 0, 2).reshape(d, -1)``).
    offset : ndarray of shape (A * t,)

    Returns
    -------
    ndarray or torch.Tensor of shape (b, A * t), in ``Xb``'s backend and device; float32
    for float32 input (the products are only compared or summed per chunk), else float64.
    """
    Xf = _float(Xb)
    return (Xf - _like(shift, Xf)) @ _like(W_all, Xf) + _like(offset, Xf)


def ridge_gcv_path(
    values: np.ndarray,
    C: np.ndarray,
    target_ss: np.ndarray,
    n_samples: int,
    alphas: np.ndarray,
    *,
    fit_intercept: bool = True,
) -> np.ndarray:
    """Generalized cross-validation error of every alpha and target, from moments only.

    .. math::

        \\mathrm{GCV}_t(a) = \\frac{\\mathrm{RSS}_t(a) / n}{(1 - \\mathrm{df}(a) / n)^2},\\quad
        \\mathrm{RSS}_t(a) = \\|y_t - \\bar y_t\\|^2 - \\sum_j (2 f_j - \\lambda_j f_j^2) C_{jt}^2,

    with :math:`f_j = 1/(\\lambda_j + a)` and
    :math:`\\mathrm{df}(a) = [\\text{intercept}] + \\sum_j \\lambda_j f_j`.

    Parameters
    ----------
    values : ndarray of shape (d,)
        Eigenvalues of the centred Gram ``X_c^T X_c``.
    C : ndarray of shape (d, t)
        ``V^T X_c^T Y_c``.
    target_ss : ndarray of shape (t,)
        Centred sums of squares of the targets.
    n_samples : int
    alphas : ndarray of shape (A,)

    Returns
    -------
    ndarray of shape (A, t)
        GCV estimate of the mean squared prediction error (lower is better).
    """
    F = ridge_filters(values, alphas)
    shrink = 2.0 * F - values[None, :] * F**2
    rss = np.clip(target_ss[None, :] - shrink @ (C**2), 0.0, None)
    df = (values[None, :] * F).sum(1) + (1.0 if fit_intercept else 0.0)
    den = np.clip(1.0 - df / n_samples, 1e-12, None) ** 2
    return rss / n_samples / den[:, None]


def heldout_sse_path(
    filters: np.ndarray, C: np.ndarray, M: np.ndarray, Q: np.ndarray, e2: np.ndarray
) -> np.ndarray:
    """Held-out sum of squared errors of every path value and target, from moments.

    With ``u = V^T (x - m_train)`` and ``e = y - ybar_train`` over the held-out rows,
    ``M = sum u u^T``, ``Q = sum u e^T`` and ``e2 = sum e^2`` (per target), the prediction
    ``u^T diag(f_a) C`` has

    .. math:: \\mathrm{SSE}_t(a) = p_t^T M p_t - 2 p_t^T Q_{:t} + e2_t,
              \\quad p_t = \\mathrm{diag}(f_a) C_{:t}.

    Cost ``O(A d^2 t)``, independent of the number of held-out rows.

    Returns
    -------
    ndarray of shape (A, t)
    """
    out = np.empty((filters.shape[0], C.shape[1]))
    for a, f in enumerate(filters):
        P = f[:, None] * C
        out[a] = (P * (M @ P)).sum(0) - 2.0 * (P * Q).sum(0) + e2
    return np.clip(out, 0.0, None)


def loo_sq_errors(
    Zb: Any, Tb: Any, filters: np.ndarray, C: np.ndarray, n_samples: int, *, fit_intercept: bool
) -> np.ndarray:
    """Exact leave-one-out squared errors of a chunk of rows, for every path value.

    For ridge with an unpenalised intercept the leave-one-out residual of row ``i`` is
    ``r_i / (1 - h_i)`` with the leverage
    ``h_i = 1/n + z_i^T diag(f_a) z_i`` (``z_i = V^T (x_i - mean)``), computed in
    ``O(d)`` per row and alpha from the eigenbasis: no ``n x n`` hat matrix.

    Parameters
    ----------
    Zb : ndarray or torch.Tensor of shape (b, d)
        Centred rows in the eigenbasis (float32 or float64; the chunk is computed in that
        dtype and its sums returned in float64).
    Tb : ndarray or torch.Tensor of shape (b, t)
        Centred targets of those rows, same dtype.
    filters : ndarray of shape (A, d)
    C : ndarray of shape (d, t)
    n_samples : int
        Size of the full training set.

    Returns
    -------
    ndarray of shape (A, t)
        Sums over the chunk's rows of squared LOO residuals.
    """
    A, t = filters.shape[0], C.shape[1]
    Fl = _like(filters, Zb)
    lev = (Zb * Zb) @ Fl.T + (1.0 / n_samples if fit_intercept else 0.0)  # (b, A)
    P = _like((filters[:, :, None] * C[None]).transpose(1, 0, 2).reshape(C.shape[0], A * t), Zb)
    R = (Zb @ P).reshape(Zb.shape[0], A, t)
    R = (Tb[:, None, :] - R) / (1.0 - lev)[:, :, None]
    out = (R * R).sum(0)
    return _np(out).astype(np.float64)


@dataclass
class ClassSums:
    """Additive per-class sums about a fixed shift: what ridge and LDA need from the data.

    ``n``, ``s1 = sum(x - c)``, ``s2 = sum((x-c)(x-c)^T)``, ``nk`` (per class counts) and
    ``s1k`` (per class sums of ``x - c``). Instances subtract exactly (``total - fold`` is the
    training set of a fold), which :class:`repscope.stats.Moments` does not offer.
    """

    shift: np.ndarray
    n: float
    s1: np.ndarray
    s2: np.ndarray
    nk: np.ndarray
    s1k: np.ndarray

    @classmethod
    def from_moments(cls, m: Any, classes: np.ndarray, shift: np.ndarray) -> ClassSums:
        """Sums of a labelled :class:`~repscope.stats.Moments` about ``shift``, with rows for
        ``classes`` (a superset of ``m.classes``; absent classes get zeros)."""
        d = shift.shape[0]
        if m.n == 0:
            return cls(shift, 0.0, np.zeros(d), np.zeros((d, d)), np.zeros(len(classes)),
                       np.zeros((len(classes), d)))
        delta = m.mean - shift
        s1 = m.n * delta
        s2 = m.scatter() + m.n * np.outer(delta, delta)
        nk = np.zeros(len(classes))
        s1k = np.zeros((len(classes), d))
        pos = np.searchsorted(classes, m.classes)
        cnt = m.class_counts.astype(np.float64)
        nk[pos] = cnt
        s1k[pos] = cnt[:, None] * (m.class_means - shift)
        return cls(shift, float(m.n), s1, s2, nk, s1k)

    def __sub__(self, other: ClassSums) -> ClassSums:
        return ClassSums(self.shift, self.n - other.n, self.s1 - other.s1, self.s2 - other.s2,
                         self.nk - other.nk, self.s1k - other.s1k)

    @property
    def mean(self) -> np.ndarray:
        """Mean of x, shape (d,)."""
        return self.shift + self.s1 / self.n

    def scatter(self) -> np.ndarray:
        """Centred scatter ``sum (x - mean)(x - mean)^T``."""
        s = self.s2 - np.outer(self.s1, self.s1) / self.n
        return (s + s.T) * 0.5

    def class_cross(self) -> np.ndarray:
        """``sum_i (x_i - mean) onehot_i^T = n_k (m_k - mean)``, shape (d, K)."""
        return (self.s1k - self.nk[:, None] * (self.s1 / self.n)[None, :]).T

    def class_means(self) -> np.ndarray:
        """Per-class means, shape (K, d); classes without samples get the overall mean."""
        safe = np.where(self.nk > 0, self.nk, 1.0)[:, None]
        return np.where(self.nk[:, None] > 0, self.shift + self.s1k / safe, self.mean)

    def within_scatter(self) -> np.ndarray:
        """Pooled within-class scatter ``sum_k sum_{i in k} (x_i - m_k)(x_i - m_k)^T``."""
        safe = np.where(self.nk > 0, self.nk, 1.0)
        s = self.s2 - (self.s1k.T / safe) @ self.s1k
        return (s + s.T) * 0.5


def _float(x: Any) -> Any:
    """``x`` as float32 if it is float32, else float64 (same backend and device)."""
    if hasattr(x, "detach"):
        import torch

        dt = torch.float32 if x.dtype == torch.float32 else torch.float64
        return x.detach().to(dtype=dt)
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def _like(v: np.ndarray, like: Any) -> Any:
    """``v`` in ``like``'s backend, device and floating dtype."""
    if hasattr(like, "detach"):
        import torch

        return torch.as_tensor(np.ascontiguousarray(v), dtype=like.dtype, device=like.device)
    return np.asarray(v, dtype=like.dtype)


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
