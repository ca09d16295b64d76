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

``U`` is a complete orthonormal basis of the space the centred targets live in (all of
:math:`R^n`, or the complement of ``1`` with an intercept), so :math:`T_c = U Q` with
:math:`Q = U^T T_c`, and with :math:`g_j = a f_j = a / (s_j + a)` the residuals and the
leverages come without a difference of near-equal terms:

.. math:: T_c - H T_c = U \\mathrm{diag}(g) Q, \\qquad 1 - h_i = \\sum_j g_j U_{ij}^2 .

GCV needs ``values`` and ``Q`` only (:meth:`DualProblem.gcv`), exact leave-one-out
(:meth:`DualProblem.loo_sq`) one pass over ``U``: every alpha costs ``O(n t)`` (``O(n^2 t)`` for
LOO) after one ``eigh`` of an ``n x n`` matrix instead of a ``d x d`` one. Held-out folds come
from the same Gram: a fold's training rows, re-centred on their own mean, and the held-out rows'
products with them are entries of ``K`` corrected by row means (no second pass over ``X``).

GCV and a single alpha do not need ``U`` at all (:class:`TridiagonalProblem`): ``sytrd``
reduces the Gram to a tridiagonal ``T``; every residual is one tridiagonal solve,
``a (T + a I)^{-1} H^T T_c``, whose ``LDL^T`` factors also give ``m - df = a tr (T + a I)^{-1}``;
only the spectrum's two ends are computed (bisection), for the precision checks. That skips
the half of the ``eigh`` that computes and back-transforms eigenvectors.

Cost at n = 1,000, d = 4,096 (float32, one core): the Gram (one ``syrk``) and the ``eigh``
(divide and conquer) are about 90% of a fit; the rest is ``O(n^2 (A + t))``. The ``eigh`` of a
Gram of at most :data:`ONE_THREAD_MAX` rows runs on one BLAS thread: its tridiagonal reduction
is memory-bound, and a second thread mostly spin-waits (on a busy machine it multiplied the
CPU time several times).

Precision: float64 throughout, except for float32 input, whose Gram, ``eigh`` and per-alpha
products run in float32 (sums of squares accumulated in float64): ``eigh`` is backward stable,
so the computed eigenpairs are exact for a Gram perturbed by about float32 rounding of ``K``
(``eps32 * lambda_max``), the order of the rounding already in float32 features. That
perturbation moves :math:`(K + a I)^{-1}` by about ``eps32 * lambda_max / (lambda_min + a)``
of itself, so the float32 result is kept only when ``lambda_min + alpha`` is at least
:data:`SINGLE_SAFE` ``* lambda_max`` for every alpha on the grid
(:meth:`DualProblem.single_ok`, from the float32 spectrum itself); otherwise the Gram is
recomputed and decomposed in float64 (:meth:`DualGram.in_float64`). Full-rank features (noise
in every direction, as in most n < d probing) pass at any alpha; a rank-deficient Gram with a
small alpha (real Lite0 features at alpha = 0.01: 4% off in float32) pays the float32 ``eigh``
and then the float64 one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from repscope._array import is_torch, to_numpy
from repscope._kernels.eigenpath import EigenBasis, ridge_filters

__all__ = ["ONE_THREAD_MAX", "SINGLE_SAFE", "DualGram", "DualProblem", "TridiagonalProblem",
           "dual_problem", "fold_decisions", "tridiagonal_problem"]

#: smallest alpha / lambda_max for which a float32 Gram and eigh are kept (64 float32 eps)
SINGLE_SAFE = 64 * float(np.finfo(np.float32).eps)
#: largest Gram whose ``eigh`` runs on one BLAS thread (about 0.5 s on one core at this size)
ONE_THREAD_MAX = 2048

_CONTROLLER: list[Any] = []  # one threadpoolctl controller per process (finding the pools ~6 ms)


@contextlib.contextmanager
def _one_blas_thread(m: int) -> Iterator[None]:
    """One BLAS thread for an ``eigh`` of ``m`` rows when ``m <= ONE_THREAD_MAX`` (nothing to
    do when the environment already pins BLAS to one thread)."""
    env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if m > ONE_THREAD_MAX or env == "1":
        yield
        return
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    with _CONTROLLER[0].limit(limits=1, user_api="blas"):
        yield


def _syrk(A: np.ndarray) -> np.ndarray:
    """``A A^T`` (n, n) in ``A``'s dtype, Fortran order, upper triangle only (one ``syrk``)."""
    from scipy.linalg import get_blas_funcs

    syrk = get_blas_funcs("syrk", (A,))
    At = A.T if A.flags.c_contiguous else np.asfortranarray(A).T  # F-ordered (d, n)
    return syrk(1.0, At, trans=1, lower=0)


def _symmetric(K: np.ndarray) -> np.ndarray:
    """A full symmetric float64 copy of a matrix whose upper triangle holds the values."""
    U = np.triu(np.asarray(K, dtype=np.float64))
    return U + np.triu(U, 1).T


@dataclass(frozen=True)
class DualGram:
    """The rows about their mean and their ``n x n`` Gram.

    Attributes
    ----------
    Xc : ndarray or torch.Tensor of shape (n, d)
        The rows minus ``mean`` (the rows themselves without an intercept), in the input's
        backend and device; float32 for float32 input, else float64.
    K : ndarray of shape (n, n)
        ``Xc Xc^T`` in ``Xc``'s dtype; only its upper triangle is read (a numpy ``Xc`` fills
        only that one, with one ``syrk``). :meth:`full` is the symmetric float64 matrix.
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
            return cls(Xc, to_numpy(Xc @ Xc.T), to_numpy(mean), dt == torch.float32)
        Xa = np.asarray(X)
        single = Xa.dtype == np.float32
        Xf = Xa if single or Xa.dtype == np.float64 else Xa.astype(np.float64)
        mean = Xf.mean(0, dtype=np.float64) if center else np.zeros(Xf.shape[1])
        Xc = Xf - mean.astype(Xf.dtype) if center else np.ascontiguousarray(Xf)
        return cls(Xc, _syrk(Xc), mean, single)

    def full(self) -> np.ndarray:
        """``K`` as a symmetric float64 matrix."""
        return _symmetric(self.K)

    def in_float64(self) -> DualGram:
        """The same rows with the Gram recomputed in float64."""
        if not self.single:
            return self
        if is_torch(self.Xc):
            import torch

            Xc = self.Xc.to(torch.float64)
            return DualGram(Xc, to_numpy(Xc @ Xc.T), self.mean, False)
        Xc64 = self.Xc.astype(np.float64)
        return DualGram(Xc64, _syrk(Xc64), self.mean, False)

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

    The basis is ``U = P [0; V]`` with a centred Gram (``P`` the Householder reflection that
    maps ``1 / sqrt(m)`` to the first axis, ``V`` the eigenvectors of the deflated Gram), else
    ``U = V``; it is formed only when asked for (:attr:`U`, :attr:`basis`).

    Attributes
    ----------
    values : ndarray of shape (r,)
        Eigenvalues, ascending, clipped at 0, float64 (``r = m - 1`` for a centred Gram,
        whose null vector ``1`` is left out, else ``m``).
    V : ndarray of shape (r, r) or (m, m)
        Eigenvectors of the deflated Gram (of the Gram itself without ``house``), in the
        working dtype (float32 for a float32 ``eigh``, else float64).
    house : ndarray of shape (m,) or None
        The unit Householder vector ``v`` of ``P = I - 2 v v^T`` (None: no deflation).
    Q : ndarray of shape (r, t)
        ``U^T T_c``, float64.
    tbar : ndarray of shape (t,)
        Target means (zeros without an intercept).
    tss : ndarray of shape (t,)
        Sums of squares of ``T_c``.
    Tc : ndarray of shape (m, t)
        The targets minus ``tbar``.
    """

    values: np.ndarray
    V: np.ndarray
    house: np.ndarray | None
    Q: np.ndarray
    tbar: np.ndarray
    tss: np.ndarray
    Tc: np.ndarray

    def to_rows(self, Y: np.ndarray) -> np.ndarray:
        """``U Y`` for ``Y`` of shape (r, k): shape (m, k), float64."""
        V = self.V
        return _undeflate(self.house, V @ np.asarray(Y, dtype=V.dtype))

    def from_rows(self, T: np.ndarray) -> np.ndarray:
        """``U^T T`` for ``T`` of shape (m, k): shape (r, k), float64."""
        return _in_basis(self.V, self.house, T)

    @cached_property
    def U(self) -> np.ndarray:
        """The basis ``U`` (m, r) in the working dtype."""
        V = self.V
        if self.house is None:
            return V
        from scipy.linalg import get_blas_funcs

        v = self.house.astype(V.dtype)
        s = 2.0 * (v[1:] @ V)
        U = np.empty((v.size, V.shape[1]), dtype=V.dtype)
        U[0] = -v[0] * s
        U[1:] = V
        ger = get_blas_funcs("ger", (U,))
        rest = ger(-1.0, s, v[1:], a=U[1:].T, overwrite_a=1)  # U[1:] -= v[1:] s^T, in place
        if not np.shares_memory(rest, U):
            U[1:] = rest.T
        return U

    @cached_property
    def basis(self) -> EigenBasis:
        """``K = U diag(values) U^T`` with ``U`` in float64."""
        return EigenBasis(self.values, self.U.astype(np.float64, copy=False))

    @property
    def C(self) -> np.ndarray:
        """``V^T X_c^T T_c = S^{1/2} Q``: the primal right-hand side in the shared basis."""
        return np.sqrt(self.values)[:, None] * self.Q

    @property
    def Z(self) -> np.ndarray:
        """The rows in the eigenbasis, ``U S^{1/2}`` (m, r)."""
        return self.basis.vectors * np.sqrt(self.values)[None, :]

    def residual_filters(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ridge filters ``f`` (A, r) and residual filters ``g = 1 - s f`` (``a f`` where
        ``f > 0``; 1 where the pseudo-inverse drops a direction)."""
        a = np.asarray(alphas, dtype=np.float64)
        F = ridge_filters(self.values, a)
        return F, np.where(F > 0.0, a[:, None] * F, 1.0)

    def single_ok(self, alpha_min: float) -> bool:
        """Whether a float32 ``eigh`` serves a grid whose smallest alpha is ``alpha_min``:
        ``values.min() + alpha_min >= SINGLE_SAFE * values.max()``, so that a perturbation of
        the Gram by float32 rounding (``~ eps32 * lambda_max``) moves no filter
        ``1 / (s_j + a)`` by more than about 1/64 of itself."""
        if self.values.size == 0:
            return True
        return float(self.values[0]) + alpha_min >= SINGLE_SAFE * float(self.values[-1])

    def dual_coefs(self, alpha: float) -> np.ndarray:
        """``(K + alpha I)^+ T_c = U diag(f) Q``, shape (m, t)."""
        f = ridge_filters(self.values, np.array([alpha]))[0]
        return self.to_rows(f[:, None] * self.Q)

    def gcv(self, alphas: np.ndarray, *, fit_intercept: bool) -> np.ndarray:
        """Generalized cross-validation error of every alpha and target, shape (A, t):
        ``(RSS / m) / (1 - df / m)^2`` with ``RSS = sum_j g_j^2 Q_j^2`` and
        ``m - df = m - [intercept] - sum_j s_j f_j = sum_j g_j`` (the basis is complete), both
        sums of positive terms. ``fit_intercept`` is implied by the basis (kept for the
        signature of :func:`~repscope._kernels.eigenpath.ridge_gcv_path`)."""
        m = self.Tc.shape[0]
        _, G = self.residual_filters(alphas)
        rss = (G * G) @ (self.Q * self.Q)
        den = np.clip(G.sum(1) / m, 1e-12, None) ** 2
        return rss / m / den[:, None]

    def loo_sq(self, alphas: np.ndarray) -> np.ndarray:
        """Sums over the rows of the squared exact leave-one-out residuals, shape (A, t):
        row ``i``'s residual ``(U diag(g) Q)_i`` over ``1 - h_i = sum_j g_j U_ij^2``."""
        _, G = self.residual_filters(alphas)
        U = self.U
        A, (r, t) = G.shape[0], self.Q.shape
        S = (U * U) @ G.T.astype(U.dtype)  # (m, A): 1 - leverage
        P = (G[:, :, None] * self.Q[None]).transpose(1, 0, 2).reshape(r, A * t)
        R = (U @ P.astype(U.dtype)).reshape(-1, A, t)
        with np.errstate(divide="ignore", invalid="ignore"):
            E = R / S[:, :, None]
        return np.einsum("iat,iat->at", E, E, dtype=np.float64)


def _undeflate(house: np.ndarray | None, Y: np.ndarray) -> np.ndarray:
    """``P [0; Y]`` (float64, shape (m, k)) for rows ``Y`` of the deflated space (``Y`` itself
    without a deflation): the inverse of :func:`_deflate`'s change of basis."""
    if house is None:
        return np.asarray(Y).astype(np.float64, copy=False)
    v = house
    out = np.empty((v.size, Y.shape[1]))
    out[0] = 0.0
    out[1:] = Y
    out -= np.outer(2.0 * v, v[1:] @ out[1:])
    return out


def _in_basis(V: np.ndarray, house: np.ndarray | None, T: np.ndarray) -> np.ndarray:
    """``U^T T`` (float64) for ``U = P [0; V]`` (``U = V`` when ``house`` is None)."""
    T = np.asarray(T, dtype=np.float64)
    if house is not None:
        T = (T - np.outer(2.0 * house, house @ T))[1:]
    return (V.T @ T.astype(V.dtype, copy=False)).astype(np.float64, copy=False)


def _eigh(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (float64, clipped at 0) and vectors (``A``'s dtype) of a symmetric PSD
    matrix whose upper triangle holds the values (divide and conquer; ``A`` is overwritten)."""
    from scipy.linalg import eigh

    with _one_blas_thread(A.shape[0]):
        vals, vecs = eigh(A, lower=False, driver="evd", overwrite_a=True, check_finite=False)
    return np.clip(vals.astype(np.float64), 0.0, None), vecs


def _deflated_eigh(K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenpairs of a centred Gram without its known null vector ``1 / sqrt(m)``
    (:func:`_deflate`). Returns the values, the deflated vectors ``V`` (``U = P [0; V]``) and
    ``v``."""
    R, v = _deflate(K)
    vals, V = _eigh(R)
    return vals, V, v


def _deflate(K: np.ndarray, *, lower: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A centred Gram without its known null vector ``1 / sqrt(m)``.

    A Householder reflection ``P = I - 2 v v^T`` maps ``1 / sqrt(m)`` to the first axis; the
    decompositions run on ``(P K P)[1:, 1:] = K - v w^T - w v^T`` (one rank-2 update,
    ``w = 2 K v - 2 (v^T K v) v``), so the centring direction is exactly absent (``m - 1``
    values and vectors) instead of a rounding-sized eigenvalue that small alphas would
    amplify. ``O(m^2)``; ``K``'s upper triangle is read, in its dtype.

    Returns the deflated matrix (Fortran order, values in its upper triangle, or in its
    lower one with ``lower``) and ``v``.
    """
    from scipy.linalg import get_blas_funcs

    m = K.shape[0]
    v = np.full(m, 1.0 / np.sqrt(m))
    v[0] -= 1.0
    v /= np.linalg.norm(v)
    Kf = np.asfortranarray(K)
    symv = get_blas_funcs("symv", (Kf,))
    Kv = symv(1.0, Kf, v.astype(Kf.dtype), lower=0).astype(np.float64)
    w = 2.0 * Kv - 2.0 * float(v @ Kv) * v
    # K's upper triangle is the lower one of its transpose: one copy either way
    R = np.array(Kf[1:, 1:].T if lower else Kf[1:, 1:], order="F")
    syr2 = get_blas_funcs("syr2", (R,))
    R = syr2(-1.0, v[1:].astype(R.dtype), w[1:].astype(R.dtype), a=R, lower=int(lower),
             overwrite_a=1)
    return R, v


def dual_problem(K: np.ndarray, T: np.ndarray, *, fit_intercept: bool,
                 single: bool = False) -> DualProblem:
    """The dual problem of a Gram ``K`` (already centred when ``fit_intercept``) and targets.

    Parameters
    ----------
    K : ndarray of shape (m, m)
        Symmetric; only its upper triangle is read.
    T : ndarray of shape (m, t)
        The ``±1`` targets of the same rows.
    fit_intercept : bool
        ``K`` is centred: its null vector ``1`` is left out of the basis (``m - 1`` columns).
    single : bool, default=False
        Run the ``eigh`` and the per-alpha products in float32.
    """
    dt = np.float32 if single else np.float64
    Kw = np.asarray(K, dtype=dt)
    T = np.asarray(T, dtype=np.float64)
    tbar = T.mean(0) if fit_intercept else np.zeros(T.shape[1])
    Tc = T - tbar
    if fit_intercept and K.shape[0] > 1:
        vals, V, house = _deflated_eigh(Kw)
    else:
        vals, V = _eigh(np.array(Kw, order="F"))
        house = None
    return DualProblem(vals, V, house, _in_basis(V, house, Tc), tbar, (Tc * Tc).sum(0), Tc)


@dataclass(frozen=True)
class TridiagonalProblem:
    """One (centred) ``n x n`` Gram in tridiagonal form, for GCV and the coefficients of one
    alpha without eigenvectors.

    ``sytrd`` reduces the (deflated) Gram to ``K = H T H^T`` with ``T`` tridiagonal and ``H``
    a product of Householder reflections kept in factored form. GCV needs, for every alpha,
    ``RSS = a^2 ||(K + a I)^{-1} T_c||^2 = a^2 ||(T + a I)^{-1} H^T T_c||^2`` (one ``O(m t)``
    tridiagonal solve) and ``m - df = sum_j a / (s_j + a) = a tr (T + a I)^{-1}`` (from the
    same ``LDL^T`` factors as the solve: the diagonal of the inverse by one recurrence of
    positive terms, ``O(m)``); the dual coefficients of the chosen alpha are
    ``H (T + a I)^{-1} H^T T_c``. That skips the eigenvectors and their back-transformation,
    about half the cost of an ``eigh`` (at m = 1,000 in float32: 33 ms of 67), and everything
    ``O(m^2 A)`` after it. Exact leave-one-out needs the leverages, hence the eigenvectors
    (:class:`DualProblem`).

    The solves run in float64 on ``T + a I``, which must be safely positive definite:
    :meth:`solvable` asks ``lambda_min + alpha_min >= 64 eps lambda_max`` in the working
    precision; otherwise the caller takes the ``eigh`` (pseudo-inverse filters).

    Attributes
    ----------
    bounds : tuple of float
        The smallest (clipped at 0) and the largest eigenvalue of ``T`` (bisection,
        ``stebz``).
    diag, off : ndarray of shape (r,) and (r - 1,)
        ``T``'s diagonal and off-diagonal, float64.
    reflectors, tau : ndarray
        ``sytrd``'s Householder vectors and scalars, in the working dtype: the trailing
        ``(r - 1) x (r - 1)`` block of its lower storage, in QR form (Fortran order).
    house : ndarray of shape (m,) or None
        The unit Householder vector of the deflation (as :class:`DualProblem`).
    B : ndarray of shape (r, t)
        ``H^T`` of the deflated targets, float64.
    tbar, tss, Tc
        As in :class:`DualProblem`.
    """

    bounds: tuple[float, float]
    diag: np.ndarray
    off: np.ndarray
    reflectors: np.ndarray
    tau: np.ndarray
    house: np.ndarray | None
    B: np.ndarray
    tbar: np.ndarray
    tss: np.ndarray
    Tc: np.ndarray

    def single_ok(self, alpha_min: float) -> bool:
        """Float32 is kept on the same condition as :meth:`DualProblem.single_ok`."""
        lo, hi = self.bounds
        return lo + alpha_min >= SINGLE_SAFE * hi

    def solvable(self, alpha_min: float) -> bool:
        """Whether ``T + a I`` is safely positive definite for every alpha of the grid:
        ``lambda_min + alpha_min >= 64 eps lambda_max`` in the working precision, and its
        ``LDL^T`` factorisation at ``alpha_min`` succeeds (larger alphas only add to the
        diagonal)."""
        if self.diag.size == 0:
            return True
        from scipy.linalg import lapack

        lo, hi = self.bounds
        if lo + alpha_min < 64 * float(np.finfo(self.reflectors.dtype).eps) * hi:
            return False
        return int(lapack.dpttrf(self.diag + alpha_min, self.off)[2]) == 0

    def _factor(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """``T + alpha I = L D L^T``: ``D`` and ``L``'s subdiagonal (``dpttrf``)."""
        from scipy.linalg import lapack

        dd, ee, info = lapack.dpttrf(self.diag + alpha, self.off)
        if info != 0:
            raise np.linalg.LinAlgError(
                f"T + {alpha:g} I is not positive definite (dpttrf info {info}).")
        return dd, ee

    def _solve(self, alpha: float,
               factors: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """``(T + alpha I)^{-1} B`` in float64, shape (r, t)."""
        from scipy.linalg import lapack

        if self.diag.size == 0:
            return np.zeros_like(self.B)
        dd, ee = self._factor(alpha) if factors is None else factors
        z, info = lapack.dpttrs(dd, ee, self.B)
        if info != 0:  # pragma: no cover - dpttrs fails only on bad arguments
            raise np.linalg.LinAlgError(f"dpttrs failed (info {info}).")
        return np.asarray(z, dtype=np.float64).reshape(self.B.shape)

    def _apply_h(self, Y: np.ndarray, trans: str) -> np.ndarray:
        """``H Y`` (``trans="N"``) or ``H^T Y`` (``"T"``) for ``Y`` of shape (r, k), float64:
        ``H = diag(1, Q)`` with ``Q`` the QR-stored reflections of ``sytrd`` (``ormtr``
        with lower storage is ``ormqr`` on the trailing block)."""
        out = np.array(Y, dtype=np.float64)
        r = out.shape[0]
        if r <= 1 or out.shape[1] == 0:
            return out
        from scipy.linalg import lapack

        dt = self.reflectors.dtype
        ormqr = lapack.sormqr if dt == np.float32 else lapack.dormqr
        A = self.reflectors
        C = np.asfortranarray(out[1:], dtype=dt)
        lwork = max(1, int(ormqr("L", trans, A, self.tau, C, lwork=-1)[1][0]))
        cq, _, info = ormqr("L", trans, A, self.tau, C, lwork=lwork, overwrite_c=1)
        if info != 0:  # pragma: no cover - ormqr fails only on bad arguments
            raise np.linalg.LinAlgError(f"ormqr failed (info {info}).")
        out[1:] = cq
        return out

    def gcv(self, alphas: np.ndarray, *, fit_intercept: bool) -> np.ndarray:
        """Generalized cross-validation error of every alpha and target, shape (A, t), as
        :meth:`DualProblem.gcv` (the same formula; the residuals from a solve)."""
        m = self.Tc.shape[0]
        a = np.asarray(alphas, dtype=np.float64)
        out = np.empty((a.size, self.B.shape[1]))
        for i, alpha in enumerate(a):
            if self.diag.size == 0:
                out[i] = 0.0
                continue
            factors = self._factor(float(alpha))
            z = self._solve(float(alpha), factors)
            rss = alpha * alpha * np.einsum("jt,jt->t", z, z)
            g = alpha * _inverse_trace(*factors) if alpha > 0 else 0.0
            out[i] = rss / m / max(g / m, 1e-12) ** 2
        return out

    def dual_coefs(self, alpha: float) -> np.ndarray:
        """``(K + alpha I)^{-1} T_c``, shape (m, t)."""
        return _undeflate(self.house, self._apply_h(self._solve(alpha), "N"))


def _inverse_trace(dd: np.ndarray, ee: np.ndarray) -> float:
    """``tr M^{-1}`` of a positive definite tridiagonal ``M = L D L^T`` from its ``dpttrf``
    factors: the diagonal of the inverse is ``x_r = 1 / D_r``,
    ``x_i = 1 / D_i + l_i^2 x_{i+1}`` (sums of positive terms, ``O(r)``)."""
    D, sub = dd.tolist(), ee.tolist()
    x = 1.0 / D[-1]
    total = x
    for i in range(len(D) - 2, -1, -1):
        li = sub[i]
        x = 1.0 / D[i] + li * li * x
        total += x
    return total


def _tridiagonalize(Rl: np.ndarray) -> tuple[np.ndarray, ...]:
    """``sytrd`` (lower storage, overwritten) of a symmetric Fortran-ordered matrix whose
    lower triangle holds the values: the Householder vectors, diagonal, off-diagonal and
    scalars."""
    from scipy.linalg import lapack

    r = Rl.shape[0]
    single = Rl.dtype == np.float32
    sytrd, query = ((lapack.ssytrd, lapack.ssytrd_lwork) if single
                    else (lapack.dsytrd, lapack.dsytrd_lwork))
    lwork = max(1, int(query(r, lower=1)[0]))
    with _one_blas_thread(r):
        c, d, e, tau, info = sytrd(Rl, lower=1, lwork=lwork, overwrite_a=1)
    if info != 0:  # pragma: no cover - sytrd fails only on bad arguments
        raise np.linalg.LinAlgError(f"sytrd failed (info {info}).")
    return c, d, e, tau


def tridiagonal_problem(K: np.ndarray, T: np.ndarray, *, fit_intercept: bool,
                        single: bool = False) -> TridiagonalProblem:
    """The problem of :func:`dual_problem` in tridiagonal form (no eigenvectors); the same
    parameters."""
    from scipy.linalg import lapack

    dt = np.float32 if single else np.float64
    Kw = np.asarray(K, dtype=dt)
    T = np.asarray(T, dtype=np.float64)
    tbar = T.mean(0) if fit_intercept else np.zeros(T.shape[1])
    Tc = T - tbar
    house: np.ndarray | None
    if fit_intercept and K.shape[0] > 1:
        R, house = _deflate(Kw, lower=True)
        Td = (Tc - np.outer(2.0 * house, house @ Tc))[1:]
    else:
        R, house, Td = np.array(Kw.T, order="F"), None, Tc  # upper values, lower storage
    c, d, e, tau = _tridiagonalize(R)
    d64, e64 = np.asarray(d, dtype=np.float64), np.asarray(e, dtype=np.float64)
    bounds = (0.0, 0.0)
    if d64.size:
        ends = []
        for i in (1, d64.size):  # the smallest and the largest eigenvalue, by bisection
            got, w, _, _, info = lapack.dstebz(d64, e64, 2, 0.0, 0.0, i, i, 0.0, "E")
            if info != 0 or got != 1:  # pragma: no cover - bisection does not fail
                raise np.linalg.LinAlgError(f"stebz failed (info {info}).")
            ends.append(float(w[0]))
        bounds = (max(ends[0], 0.0), max(ends[1], 0.0))
    prob = TridiagonalProblem(bounds, d64, e64, np.asfortranarray(c[1:, :-1]), tau, house,
                              np.empty((0, 0)), tbar, (Tc * Tc).sum(0), Tc)
    return dataclasses.replace(prob, B=prob._apply_h(Td, "T"))


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

    ``K`` is the symmetric Gram of all rows (about any common shift when ``fit_intercept``;
    raw otherwise). ``train`` and ``held`` are boolean masks or index arrays.
    """
    if fit_intercept:
        Ktt, Kvt = _recentre(K, train, held)
    else:
        Ktt, Kvt = K[np.ix_(train, train)], K[np.ix_(held, train)]
    prob = dual_problem(Ktt, T[train], fit_intercept=fit_intercept, single=single)
    F = ridge_filters(prob.values, alphas)  # (A, r)
    P = prob.from_rows(Kvt.T).T  # (n_held, r): Kvt U
    return np.einsum("vj,aj,jt->vat", P, F, prob.Q, optimize=True) + prob.tbar
