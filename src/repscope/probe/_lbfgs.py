"""Full-batch L-BFGS and the logistic objectives behind :class:`~repscope.probe.LinearProbe`.

The solver works on one flat float64 parameter vector (a numpy array or a torch tensor; the
same code serves both). Its initial inverse Hessian is a *diagonal* ``D`` supplied by the
caller (the eigenbasis preconditioner), scaled every iteration by
``gamma = s^T y / y^T D y``. Curvature pairs are kept across the points of a regularization
path: the L2 penalty is quadratic, so when ``lambda`` changes by ``delta`` every stored pair is
corrected exactly with ``y <- y + delta * mask * s`` (``mask`` selects the penalised entries).

The objectives evaluate ``(1/n) sum_i w_i loss_i + (lambda/2) ||W||_F^2`` and its gradient.
Matrix products run in the compute dtype (float32 for torch, float64 for the numpy fast path);
the sums over samples are accumulated in float64 chunk by chunk, and, with a
``torch.distributed`` group, all-reduced (SUM) so that every rank sees the global objective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["CurvatureMemory", "LbfgsOutcome", "LogisticObjective", "minimize_lbfgs"]

Loss = Literal["softmax", "sigmoid"]


@dataclass
class CurvatureMemory:
    """The last ``size`` L-BFGS pairs ``(s, y)`` plus ``rho = 1 / s^T y``."""

    size: int = 10
    s: list[Any] = field(default_factory=list)
    y: list[Any] = field(default_factory=list)
    rho: list[float] = field(default_factory=list)

    def push(self, s: Any, y: Any) -> None:
        sy = float(s @ y)
        if not sy > 1e-12 * float(y @ y) or not np.isfinite(sy):
            return  # no positive curvature along s: skip the pair (keeps H positive definite)
        if len(self.s) == self.size:
            self.s.pop(0)
            self.y.pop(0)
            self.rho.pop(0)
        self.s.append(s)
        self.y.append(y)
        self.rho.append(1.0 / sy)

    def shift_penalty(self, delta: float, mask: Any) -> None:
        """Correct the pairs for a change ``delta`` of the L2 strength (exact: quadratic term)."""
        s_new: list[Any] = []
        y_new: list[Any] = []
        for s, y in zip(self.s, self.y):
            y2 = y + delta * (mask * s)
            if float(s @ y2) > 1e-12 * float(y2 @ y2):
                s_new.append(s)
                y_new.append(y2)
        self.s, self.y = s_new, y_new
        self.rho = [1.0 / float(s @ y) for s, y in zip(self.s, self.y)]

    def direction(self, g: Any, h0: Any) -> Any:
        """``-H g`` by the two-loop recursion with the scaled diagonal initial matrix ``h0``."""
        q = g.copy() if isinstance(g, np.ndarray) else g.clone()
        alphas = []
        for s, y, rho in zip(reversed(self.s), reversed(self.y), reversed(self.rho)):
            a = rho * float(s @ q)
            alphas.append(a)
            q -= a * y
        if self.s:
            s, y = self.s[-1], self.y[-1]
            gamma = float(s @ y) / float(y @ (h0 * y))
        else:
            gamma = 1.0
        r = gamma * (h0 * q)
        for s, y, rho, a in zip(self.s, self.y, self.rho, reversed(alphas)):
            b = rho * float(y @ r)
            r += (a - b) * s
        return -r


@dataclass(frozen=True)
class LbfgsOutcome:
    """What one L-BFGS run returned (``x``, objective ``f``, gradient ``g`` at ``x``)."""

    x: Any
    f: float
    g: Any
    n_iter: int
    n_evals: int
    grad_max: float
    converged: bool
    status: str


def minimize_lbfgs(
    fg: Callable[[Any], tuple[float, Any]],
    x0: Any,
    *,
    h0: Any,
    grad_max: Callable[[Any], float],
    tol: float,
    max_iter: int,
    memory: CurvatureMemory,
    f_noise: float = 0.0,
    start: tuple[float, Any] | None = None,
) -> LbfgsOutcome:
    """Minimise a smooth convex function by L-BFGS with a backtracking Armijo line search.

    Parameters
    ----------
    fg : callable
        ``x -> (f, grad)``; ``grad`` has the type and shape of ``x``.
    x0 : ndarray or Tensor of shape (p,)
        Starting point (float64).
    h0 : ndarray or Tensor of shape (p,)
        Diagonal initial inverse Hessian (the preconditioner).
    grad_max : callable
        ``grad -> max |gradient|`` in the user's coordinates; convergence is
        ``grad_max(g) <= tol`` (scipy's ``pgtol`` rule, which scikit-learn uses).
    tol, max_iter : float, int
        Tolerance and the most iterations (0 iterations when ``x0`` already meets ``tol``).
    memory : CurvatureMemory
        Pairs carried over from an earlier run (warm start along a path); updated in place.
    f_noise : float
        Objective rounding noise tolerated by the Armijo test (float32 objectives).
    start : (f, grad), optional
        The objective and gradient at ``x0`` if the caller has them.
    """
    f, g = start if start is not None else fg(x0)
    n_evals = 0 if start is not None else 1
    x = x0
    gm = grad_max(g)
    if gm <= tol:
        return LbfgsOutcome(x, f, g, 0, n_evals, gm, True, "tolerance met at the start")
    status = "max_iter reached"
    converged = False
    it = 0
    while it < max_iter:
        it += 1
        d = memory.direction(g, h0)
        gtd = float(g @ d)
        if not gtd < 0:  # not a descent direction: restart from the preconditioned gradient
            memory.s.clear()
            memory.y.clear()
            memory.rho.clear()
            d = -(h0 * g)
            gtd = float(g @ d)
        t = 1.0
        accepted = False
        for _ in range(40):
            x_new = x + t * d
            f_new, g_new = fg(x_new)
            n_evals += 1
            if np.isfinite(f_new) and f_new <= f + 1e-4 * t * gtd + f_noise:
                accepted = True
                break
            # quadratic interpolation of the step, kept within [0.1 t, 0.5 t]
            denom = 2.0 * (f_new - f - t * gtd)
            t_q = -gtd * t * t / denom if np.isfinite(f_new) and denom > 0 else 0.5 * t
            t = min(max(t_q, 0.1 * t), 0.5 * t)
        if not accepted:
            status = "line search failed (objective flat at rounding precision)"
            break
        memory.push(x_new - x, g_new - g)
        f_old = f
        x, f, g = x_new, f_new, g_new
        gm = grad_max(g)
        if gm <= tol:
            converged, status = True, "gradient tolerance met"
            break
        if f_old - f <= 64 * np.finfo(float).eps * max(abs(f_old), abs(f), 1.0) and f_noise == 0:
            status = "relative reduction of the objective below machine precision"
            converged = True
            break
    return LbfgsOutcome(x, f, g, it, n_evals, gm, converged, status)


class LogisticObjective:
    """``(1/n) sum_i w_i loss_i(X W^T + b) + (lam/2) ||W||_F^2`` and its gradient.

    Parameters
    ----------
    X : ndarray or Tensor of shape (n_local, d)
        Raw features in the compute dtype (float64 numpy, or a float32 tensor on any device).
    target : ndarray or Tensor
        ``softmax``: class indices of shape (n_local,); ``sigmoid``: 0/1 matrix (n_local, L).
    weights : ndarray or Tensor of shape (n_local,) or None
        Per-sample weights ``w_i`` (class weights times sample weights).
    n_total : float
        The ``n`` in ``1/n`` (the global number of samples under ``torch.distributed``).
    n_out : int
        Number of heads (classes, or labels for sigmoid).
    loss : {"softmax", "sigmoid"}
    group : torch.distributed process group, optional
        The group to all-reduce over (None: the default group).
    distributed : bool
        All-reduce the loss and gradient sums across the ranks of ``group`` (numpy or torch).
    chunk_size : int
        Rows per chunk for the torch path (bounds the ``chunk x n_out`` logit buffer).
    basis : (V, mu), optional
        Orthogonal ``(d, d)`` eigenbasis and mean (float64, the parameters' backend): the
        solver then works on the head in centred, rotated coordinates (see :meth:`to_user`).
    basis_in_data : bool
        ``X`` is already centred and rotated (``(X - mu) V``: cheaper for small ``n``);
        otherwise ``X`` holds raw features and the parameters are rotated at each evaluation.
    """

    def __init__(
        self,
        X: Any,
        target: Any,
        weights: Any,
        *,
        n_total: float,
        n_out: int,
        loss: Loss,
        group: Any = None,
        chunk_size: int = 8192,
        distributed: bool = False,
        basis: tuple[Any, Any] | None = None,
        basis_in_data: bool = False,
    ) -> None:
        self.X = X
        self.target = target
        self.weights = weights
        self.n_total = float(n_total)
        self.n_out = n_out
        self.d = int(X.shape[1])
        self.loss = loss
        self.group = group
        self.distributed = distributed
        self.chunk_size = chunk_size
        self.lam = 0.0
        self.is_torch = not isinstance(X, np.ndarray)
        self.n_evals = 0
        self.basis = basis
        self.basis_in_data = basis_in_data

    @property
    def n_params(self) -> int:
        return self.n_out * (self.d + 1)

    def penalty_mask(self) -> Any:
        """1 for the weights, 0 for the (unpenalised) intercepts."""
        m = np.concatenate([np.ones(self.n_out * self.d), np.zeros(self.n_out)])
        return self._vec(m)

    def _vec(self, a: np.ndarray) -> Any:
        if not self.is_torch:
            return a
        import torch

        return torch.as_tensor(a, dtype=torch.float64, device=self.X.device)

    def zeros(self) -> Any:
        return self._vec(np.zeros(self.n_params))

    def split(self, theta: Any) -> tuple[Any, Any]:
        """``theta -> (W (n_out, d), b (n_out,))`` views."""
        k, d = self.n_out, self.d
        return theta[: k * d].reshape(k, d), theta[k * d :]

    def to_user(self, theta: Any) -> tuple[Any, Any]:
        """Parameters ``theta`` -> the head ``(W, b)`` acting on the raw features.

        With a ``basis = (V, mu)`` the solver's variables are ``W_s = W V`` and
        ``b_s = b + W mu`` (the head in centred, rotated coordinates), an exact change of
        variables that leaves the objective unchanged (``||W_s|| = ||W||``).
        """
        Ws, bs = self.split(theta)
        if self.basis is None:
            return Ws, bs
        V, mu = self.basis
        W = Ws @ V.T
        return W, bs - W @ mu

    def grad_to_user(self, g: Any) -> tuple[Any, Any]:
        """Gradient in the solver's variables -> gradient with respect to the raw ``(W, b)``."""
        gWs, gb = self.split(g)
        if self.basis is None:
            return gWs, gb
        V, mu = self.basis
        return gWs @ V.T + gb[:, None] * mu[None, :], gb

    def __call__(self, theta: Any) -> tuple[float, Any]:
        self.n_evals += 1
        rotate = self.basis is not None and not self.basis_in_data
        W, b = self.to_user(theta) if rotate else self.split(theta)
        if self.is_torch:
            loss_sum, gW, gb = self._sums_torch(W, b)
        else:
            loss_sum, gW, gb = self._sums_numpy(W, b)
        n = self.n_total
        f = loss_sum / n + 0.5 * self.lam * float((W * W).sum())
        gW = gW / n + self.lam * W
        gb = gb / n
        if rotate:
            assert self.basis is not None
            V, mu = self.basis
            gW = (gW - gb[:, None] * mu[None, :]) @ V
        g = np.concatenate([gW.ravel(), gb]) if not self.is_torch else _cat(gW, gb)
        return f, g

    def _sums_numpy(self, W: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        X = self.X
        Z = X @ W.T + b
        R, per = _residual_numpy(Z, self.target, self.loss)
        if self.weights is not None:
            per = per * self.weights
            R *= self.weights[:, None]
        loss_sum, gW, gb = float(per.sum()), R.T @ X, R.sum(axis=0)
        if self.distributed:
            from repscope.probe._logistic_common import _all_sum_array

            k, d = self.n_out, self.d
            flat = _all_sum_array(np.concatenate([[loss_sum], gW.ravel(), gb]), self.group)
            loss_sum, gW, gb = float(flat[0]), flat[1 : 1 + k * d].reshape(k, d), flat[1 + k * d :]
        return loss_sum, gW, gb

    def _sums_torch(self, W: Any, b: Any) -> tuple[float, Any, Any]:
        import torch

        X = self.X
        W32 = W.to(X.dtype)
        b32 = b.to(X.dtype)
        gW = torch.zeros_like(W)
        gb = torch.zeros_like(b)
        loss_sum = torch.zeros((), dtype=torch.float64, device=X.device)
        n_local = int(X.shape[0])
        for lo in range(0, n_local, self.chunk_size):
            Xc = X[lo : lo + self.chunk_size]
            Z = torch.addmm(b32, Xc, W32.T)
            tc = self.target[lo : lo + self.chunk_size]
            if self.loss == "softmax":
                lse = torch.logsumexp(Z, dim=1)
                per = lse - Z.gather(1, tc[:, None]).squeeze(1)
                R = torch.exp(Z - lse[:, None])
                R[torch.arange(R.shape[0], device=R.device), tc] -= 1.0
            else:
                per = (torch.nn.functional.softplus(Z) - tc * Z).sum(dim=1)
                R = torch.sigmoid(Z) - tc
            if self.weights is not None:
                wc = self.weights[lo : lo + self.chunk_size]
                per = per * wc
                R *= wc[:, None]
            loss_sum += per.sum(dtype=torch.float64)
            gW += (R.T @ Xc).to(torch.float64)
            gb += R.sum(dim=0, dtype=torch.float64)
        if self.distributed:
            import torch.distributed as dist

            flat = torch.cat([loss_sum.reshape(1), gW.ravel(), gb])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
            k, d = self.n_out, self.d
            loss_sum = flat[0]
            gW = flat[1 : 1 + k * d].reshape(k, d)
            gb = flat[1 + k * d :]
        return float(loss_sum), gW, gb


def _cat(a: Any, b: Any) -> Any:
    import torch

    return torch.cat([a.reshape(-1), b.reshape(-1)])


def _residual_numpy(Z: np.ndarray, target: np.ndarray, loss: Loss) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample losses and ``dloss/dZ`` for the numpy path (float64)."""
    if loss == "softmax":
        zmax = Z.max(axis=1, keepdims=True)
        E = np.exp(Z - zmax)
        S = E.sum(axis=1, keepdims=True)
        lse = (np.log(S) + zmax).ravel()
        rows = np.arange(Z.shape[0])
        per = lse - Z[rows, target]
        E /= S
        E[rows, target] -= 1.0
        return E, per
    # log(1 + e^z) - t z, stably
    per = (np.logaddexp(0.0, Z) - target * Z).sum(axis=1)
    R = 0.5 * (1.0 + np.tanh(0.5 * Z)) - target
    return R, per
