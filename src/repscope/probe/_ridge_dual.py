"""The dual (kernel) form of the ridge path, for fewer samples than features (n < d).

With the rows centred on their mean, :math:`X_c = U S^{1/2} V^T` (thin SVD), the primal path of
:class:`~repscope.probe._ridge.RidgeProbe` is written in the eigenbasis of the ``d x d`` Gram
:math:`X_c^T X_c = V S V^T`. The same quantities come from the ``n x n`` Gram
:math:`K = X_c X_c^T = U S U^T`:

* eigenvalues: the nonzero ones are shared (the primal's other ``d - n`` are zero);
* :math:`C = V^T X_c^T T_c = S^{1/2} U^T T_c`;
* row ``i`` in the eigenbasis, :math:`z_i = V^T (x_i - m) = S^{1/2} U^T e_i`, so
  :math:`Z = U S^{1/2}` (``n x n``);
* the coefficients :math:`W_a = X_c^T (K + a I)^{-1} T_c = X_c^T U \\mathrm{diag}(f_a) U^T T_c`.

So GCV (:func:`~repscope._kernels.eigenpath.ridge_gcv_path`) and exact leave-one-out
(:func:`~repscope._kernels.eigenpath.loo_sq_errors`) take the dual values, ``C`` and ``Z``
unchanged, and every alpha again costs ``O(n t)`` (``O(n^2 t)`` for LOO) after one ``eigh`` of
an ``n x n`` matrix instead of a ``d x d`` one. Held-out folds come from the same Gram: a
fold's training rows, re-centred on their own mean, and the held-out rows' products with them
are entries of ``K`` corrected by row means (no second pass over ``X``).

Precision: float64 throughout, except for float32 input, whose Gram and ``eigh`` run in
float32: ``eigh`` is backward stable, so the computed eigenpairs are exact for a Gram perturbed
by about float32 rounding of ``K`` (``eps32 * lambda_max``), the order of the rounding already
in float32 features. That perturbation only matters for alphas near it, so the float32 result
is used only when every alpha on the grid is at least :data:`SINGLE_SAFE` ``* lambda_max``
(estimated by :meth:`DualGram.top_eigenvalue` before the ``eigh``); otherwise the Gram is
recomputed and decomposed in float64 (:meth:`DualGram.in_float64`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from repscope._array import is_torch, to_numpy
from repscope._kernels.eigenpath import EigenBasis, ridge_filters

__all__ = ["SINGLE_SAFE", "DualGram", "DualProblem", "dual_problem", "fold_decisions"]

#: smallest alpha / lambda_max for which a float32 Gram and eigh are kept (64 float32 eps)
SINGLE_SAFE = 64 * float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class DualGram:
    """The rows about their mean and their ``n x n`` Gram.

    Attributes
    ----------
    Xc : ndarray or torch.Tensor of shape (n, d)
        The rows minus ``mean`` (the rows themselves without an intercept), in the input's
        backend and device; float32 for float32 input, else float64.
    K : ndarray of shape (n, n)
        ``Xc Xc^T`` in float64 (computed in ``Xc``'s dtype).
    mean : ndarray of shape (d,)
        The column means (zeros without an intercept), float64.
    single : bool
        Whether the input was float32 (the ``eigh`` then runs in float32 too).
    """

    Xc: Any
    K: np.ndarray
    mean: np.ndarray
    single: bool

    @classmethod
    def of(cls, X: Any, *, center: bool) -> DualGram:
        if is_torch(X):
            import torch

            dt = torch.float32 if X.dtype == torch.float32 else torch.float64
            Xf = X.detach().to(dtype=dt)
            mean = Xf.to(torch.float64).mean(0) if center else torch.zeros(
                Xf.shape[1], dtype=torch.float64, device=Xf.device)
            Xc = Xf - mean.to(dt)
            K = to_numpy(Xc @ Xc.T).astype(np.float64)
            return cls(Xc, K, to_numpy(mean), dt == torch.float32)
        Xa = np.asarray(X)
        single = Xa.dtype == np.float32
        Xf = Xa if single or Xa.dtype == np.float64 else Xa.astype(np.float64)
        mean = Xf.mean(0, dtype=np.float64) if center else np.zeros(Xf.shape[1])
        Xc = Xf - mean.astype(Xf.dtype) if center else Xf
        K = (Xc @ Xc.T).astype(np.float64, copy=False)  # X @ X.T is one syrk
        return cls(Xc, K, mean, single)

    def top_eigenvalue(self, steps: int = 8) -> float:
        """An estimate of ``K``'s largest eigenvalue (power iteration from a fixed start; from
        below, within a few percent after a few steps on a decaying spectrum)."""
        vec = np.random.default_rng(0).standard_normal((self.K.shape[0],))
        lam = 0.0
        for _ in range(steps):
            img = self.K @ vec
            lam = float(np.linalg.norm(img))
            if lam == 0.0:
                return 0.0
            vec = img * (1.0 / lam)
        return lam

    def in_float64(self) -> DualGram:
        """The same rows with the Gram recomputed in float64."""
        if not self.single:
            return self
        if is_torch(self.Xc):
            import torch

            Xc = self.Xc.to(torch.float64)
            return DualGram(Xc, to_numpy(Xc @ Xc.T), self.mean, False)
        Xc64 = self.Xc.astype(np.float64)
        return DualGram(Xc64, Xc64 @ Xc64.T, self.mean, False)

    def coefs(self, M: np.ndarray) -> np.ndarray:
        """``Xc^T M`` in float64, shape (d, t), for dual coefficients ``M`` (n, t)."""
        if is_torch(self.Xc):
            import torch

            Mt = torch.as_tensor(np.ascontiguousarray(M), dtype=self.Xc.dtype,
                                 device=self.Xc.device)
            return to_numpy(self.Xc.T @ Mt).astype(np.float64)
        return np.asarray(self.Xc.T @ M.astype(self.Xc.dtype, copy=False), dtype=np.float64)


@dataclass(frozen=True)
class DualProblem:
    """Eigenbasis of one (centred) ``n x n`` Gram and the targets in it.

    Attributes
    ----------
    basis : EigenBasis
        ``K = U diag(values) U^T``; ``values`` (r,), ``vectors`` ``U`` (m, r), float64
        (``r = m - 1`` for a centred Gram, whose null vector ``1`` is left out, else ``m``).
    Q : ndarray of shape (r, t)
        ``U^T T_c``.
    tbar : ndarray of shape (t,)
        Target means (zeros without an intercept).
    tss : ndarray of shape (t,)
        Sums of squares of ``T_c``.
    Tc : ndarray of shape (m, t)
        The targets minus ``tbar``.
    """

    basis: EigenBasis
    Q: np.ndarray
    tbar: np.ndarray
    tss: np.ndarray
    Tc: np.ndarray

    @property
    def C(self) -> np.ndarray:
        """``V^T X_c^T T_c = S^{1/2} Q``: the primal right-hand side in the shared basis."""
        return np.sqrt(self.basis.values)[:, None] * self.Q

    @property
    def Z(self) -> np.ndarray:
        """The rows in the eigenbasis, ``U S^{1/2}`` (m, r)."""
        return self.basis.vectors * np.sqrt(self.basis.values)[None, :]

    def dual_coefs(self, alpha: float) -> np.ndarray:
        """``(K + alpha I)^+ T_c = U diag(f) Q``, shape (m, t)."""
        f = ridge_filters(self.basis.values, np.array([alpha]))[0]
        return self.basis.vectors @ (f[:, None] * self.Q)


def _eigh(K: np.ndarray, single: bool, *, overwrite: bool = False) -> EigenBasis:
    """Eigendecomposition of a symmetric PSD Gram (divide and conquer, upper triangle read),
    values clipped at 0."""
    from scipy.linalg import eigh

    dt = np.float32 if single else np.float64
    A = K if overwrite and K.dtype == dt else np.array(K, dtype=dt)
    vals, vecs = eigh(A, lower=False, driver="evd", overwrite_a=True, check_finite=False)
    return EigenBasis(np.clip(vals.astype(np.float64), 0.0, None),
                      vecs.astype(np.float64, copy=False))


def _deflated_eigh(K: np.ndarray, single: bool) -> EigenBasis:
    """Eigenbasis of a centred Gram without its known null vector ``1 / sqrt(m)``.

    A Householder reflection ``P = I - 2 v v^T`` maps ``1 / sqrt(m)`` to the first axis; the
    ``eigh`` runs on ``(P K P)[1:, 1:] = K - v w^T - w v^T`` (one rank-2 update,
    ``w = 2 K v - 2 (v^T K v) v``) and the vectors are reflected back, so the centring
    direction is exactly absent (``m - 1`` values and vectors) instead of a rounding-sized
    eigenvalue that small alphas would amplify. ``O(m^2)`` on top of the ``eigh``.
    """
    from scipy.linalg import get_blas_funcs

    m = K.shape[0]
    v = np.full(m, 1.0 / np.sqrt(m))
    v[0] -= 1.0
    v /= np.linalg.norm(v)
    Kv = K @ v
    w = 2.0 * Kv - 2.0 * float(v @ Kv) * v
    R = np.array(K[1:, 1:], dtype=np.float32 if single else np.float64)
    syr2 = get_blas_funcs("syr2", (R,))
    R = syr2(-1.0, v[1:].astype(R.dtype), w[1:].astype(R.dtype), a=R, overwrite_a=True)
    sub = _eigh(R, single, overwrite=True)
    U = np.empty((m, m - 1))
    s = 2.0 * (v[1:] @ sub.vectors)
    U[0] = -v[0] * s
    np.subtract(sub.vectors, np.outer(v[1:], s), out=U[1:])
    return EigenBasis(sub.values, U)


def dual_problem(K: np.ndarray, T: np.ndarray, *, fit_intercept: bool,
                 single: bool = False) -> DualProblem:
    """The dual problem of a Gram ``K`` (already centred when ``fit_intercept``) and targets.

    Parameters
    ----------
    K : ndarray of shape (m, m)
    T : ndarray of shape (m, t)
        The ``±1`` targets of the same rows.
    fit_intercept : bool
        ``K`` is centred: its null vector ``1`` is left out of the basis (``m - 1`` columns).
    single : bool, default=False
        Run the ``eigh`` in float32.
    """
    tbar = T.mean(0) if fit_intercept else np.zeros(T.shape[1])
    Tc = T - tbar
    basis = _deflated_eigh(K, single) if fit_intercept and K.shape[0] > 1 else _eigh(K, single)
    return DualProblem(basis, basis.vectors.T @ Tc, tbar, (Tc * Tc).sum(0), Tc)


def _recentre(K: np.ndarray, train: np.ndarray, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gram of the training rows about their own mean, and the held-out rows' products with
    them about that mean: ``(x_i - mu)^T (x_j - mu) = K_ij - r_i - r_j + c``."""
    Ktt = K[np.ix_(train, train)]
    Kvt = K[np.ix_(held, train)]
    r = Ktt.mean(0)
    rv = Kvt.mean(1)
    c = float(r.mean())
    Ktt = Ktt - r[:, None] - r[None, :] + c
    Kvt = Kvt - rv[:, None] - r[None, :] + c
    return (Ktt + Ktt.T) * 0.5, Kvt


def fold_decisions(K: np.ndarray, T: np.ndarray, train: np.ndarray, held: np.ndarray,
                   alphas: np.ndarray, *, fit_intercept: bool,
                   single: bool = False) -> np.ndarray:
    """Decision values on the held-out rows of the model fitted on the training rows, for
    every alpha, from the full Gram ``K``: shape (n_held, A, t).

    ``K`` is the Gram of all rows (about any common shift when ``fit_intercept``; raw
    otherwise). ``train`` and ``held`` are boolean masks or index arrays.
    """
    if fit_intercept:
        Ktt, Kvt = _recentre(K, train, held)
    else:
        Ktt, Kvt = K[np.ix_(train, train)], K[np.ix_(held, train)]
    prob = dual_problem(Ktt, T[train], fit_intercept=fit_intercept, single=single)
    F = ridge_filters(prob.basis.values, alphas)  # (A, m)
    P = Kvt @ prob.basis.vectors  # (n_held, m)
    return np.einsum("vj,aj,jt->vat", P, F, prob.Q, optimize=True) + prob.tbar
