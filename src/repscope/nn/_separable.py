r"""CP-separable networks: a rank-:math:`R` sum of products of univariate networks, and the
separability-rank probe of a function from samples.

.. math::

    f(x) = \sum_{r=1}^{R} \prod_{d=1}^{D} g_{r,d}(x_d),

with every :math:`g_{r,d}: \mathbb R \to \mathbb R^{m}` a small MLP (the product taken entry
by entry over the :math:`m` outputs). This is the full-order, rank-:math:`R` (CP /
tensor-decomposed) member of the separable neural architectures: order 1 would be additive
(neural-additive), order 2 factorisation-machine style. A function is CP-separable of rank
:math:`R` when :math:`R` such products represent it; :func:`separability_rank` fits ranks
:math:`1, \dots, R_{\max}` and reports the held-out error per rank and the smallest rank
that reaches a tolerance.

References
----------
.. [1] Batley, Sarker, Mostakim, Klichine and Saha, "Separable Neural Architectures as a
   primitive for unified predictive and generative intelligence", 2026, arXiv:2603.12244.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from repscope._validation import check_positive_int, check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.nn._common import check_last_axis
from repscope.results import Result

__all__ = ["CPSeparable", "SeparabilityRankResult", "fit_separable", "separability_rank"]


class CPSeparable(nn.Module):
    r"""A rank-``rank`` sum over :math:`r` of products over the inputs of univariate MLPs.

    :math:`f(x) = \sum_{r=1}^{R} \prod_{d=1}^{D} g_{r,d}(x_d)`: the :math:`R D` univariate
    MLPs (``1 -> hidden -> ... -> out_features``, ``depth`` hidden layers, tanh) run as one
    batched matrix product. Each :math:`g_{r,d}` starts near the constant 1 (last layer's bias
    1, its weights small), so every product starts near 1 rather than near 0.

    Parameters
    ----------
    in_features : int
        :math:`D`, the number of input coordinates.
    rank : int
        :math:`R`.
    out_features : int, default=1
    hidden : int, default=32
    depth : int, default=2
        Hidden layers per univariate MLP.
    device, dtype
        Of the parameters (float32 by default).
    generator : torch.Generator, optional
        For the initialisation.

    Shapes
    ------
    - input: ``(*, in_features)``;
    - output: ``(*, out_features)``.

    Raises
    ------
    RepscopeValueError
        In ``forward``, if the input's last axis is not ``in_features``.

    Examples
    --------
    >>> f = CPSeparable(3, rank=2)
    >>> f(torch.randn(10, 3)).shape
    torch.Size([10, 1])

    References
    ----------
    .. [1] Batley, Sarker, Mostakim, Klichine and Saha, "Separable Neural Architectures as a
       primitive for unified predictive and generative intelligence", 2026, arXiv:2603.12244.
    """

    def __init__(self, in_features: int, rank: int, *, out_features: int = 1, hidden: int = 32,
                 depth: int = 2, device: Any = None, dtype: torch.dtype | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        caller = "CPSeparable"
        self.in_features = check_positive_int(in_features, "in_features", caller=caller)
        self.rank = check_positive_int(rank, "rank", caller=caller)
        self.out_features = check_positive_int(out_features, "out_features", caller=caller)
        self.hidden = check_positive_int(hidden, "hidden", caller=caller)
        self.depth = check_positive_int(depth, "depth", caller=caller)
        dtype = torch.float32 if dtype is None else dtype
        g = self.rank * self.in_features
        sizes = [1] + [self.hidden] * self.depth + [self.out_features]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            last = i == len(sizes) - 2
            # inputs of the first layer are raw coordinates: unit-variance weights; later layers
            # 1/sqrt(fan-in); the last layer starts small, with bias 1
            std = (0.1 if last else 1.0) / math.sqrt(a)
            w = torch.randn((g, a, b), dtype=dtype, device=device, generator=generator) * std
            bias = (torch.ones((g, 1, b), dtype=dtype, device=device) if last else
                    torch.randn((g, 1, b), dtype=dtype, device=device, generator=generator) * 0.5)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(bias))

    def components(self, x: Tensor) -> Tensor:
        """Every :math:`g_{r,d}(x_d)`.

        Parameters
        ----------
        x : Tensor of shape (n, in_features)

        Returns
        -------
        Tensor of shape (n, rank, in_features, out_features)
        """
        n = x.shape[0]
        # (R*D, n, 1): coordinate d of every row, repeated for every rank r
        h = x.T.unsqueeze(-1).repeat(self.rank, 1, 1)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < len(self.weights) - 1:
                h = torch.tanh(h)
        return h.reshape(self.rank, self.in_features, n, self.out_features).permute(2, 0, 1, 3)

    def forward(self, x: Tensor) -> Tensor:
        """Evaluate :math:`f`.

        Parameters
        ----------
        x : Tensor of shape (*, in_features)

        Returns
        -------
        Tensor of shape (*, out_features)

        Raises
        ------
        RepscopeValueError
            If the last axis of ``x`` is not ``in_features``.
        """
        check_last_axis(x, self.in_features, "CPSeparable")
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).to(self.weights[0].dtype)
        out = self.components(flat).prod(dim=2).sum(dim=1)
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, rank={self.rank}, "
                f"out_features={self.out_features}, hidden={self.hidden}, depth={self.depth}")


def _as_tensor(a: Any, name: str, dtype: torch.dtype) -> Tensor:
    t = a.detach() if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a))
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise RepscopeValueError(f"{name} must hold real numbers; got dtype {t.dtype}.")
    t = t.to(dtype)
    if not torch.isfinite(t).all():
        raise RepscopeValueError(f"{name} must be finite; it holds NaN or infinite values.")
    return t


def fit_separable(X: Any, y: Any, rank: int, *, hidden: int = 32, depth: int = 2,
                  steps: int = 2000, lr: float = 1e-2, seed: int = 0,
                  dtype: torch.dtype = torch.float32) -> CPSeparable:
    """Fit a :class:`CPSeparable` of rank ``rank`` to samples by full-batch Adam on the mean
    squared error (cosine learning-rate decay from ``lr`` to 0 over ``steps``).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
    rank : int
    hidden, depth
        See :class:`CPSeparable`.
    steps : int, default=2000
    lr : float, default=1e-2
    seed : int, default=0
    dtype : torch.dtype, default=torch.float32

    Returns
    -------
    CPSeparable
        Fitted; it outputs shape (n, n_outputs) (n_outputs = 1 for a 1-D ``y``).

    Raises
    ------
    RepscopeValueError
        If ``X`` is not 2-D, ``y`` has another number of rows, or either is not finite.

    Examples
    --------
    >>> X = torch.rand(256, 2)
    >>> model = fit_separable(X, X[:, 0] * X[:, 1], rank=1, hidden=8, steps=300)
    >>> float(((model(X)[:, 0] - X[:, 0] * X[:, 1]) ** 2).mean().detach()) < 1e-3
    True
    """
    caller = "fit_separable"
    rank = check_positive_int(rank, "rank", caller=caller)
    steps = check_positive_int(steps, "steps", caller=caller)
    check_scalar(lr, "lr", caller=caller, min_value=0.0, include_min=False)
    Xt, Y = _check_xy(X, y, dtype)
    gen = torch.Generator(device=Xt.device).manual_seed(int(seed))
    model = CPSeparable(Xt.shape[1], rank, out_features=Y.shape[1], hidden=hidden, depth=depth,
                        dtype=dtype, device=Xt.device, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = (model(Xt) - Y).pow(2).mean()
        loss.backward()
        opt.step()
        sched.step()
    return model


def _check_xy(X: Any, y: Any, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    Xt = _as_tensor(X, "X", dtype)
    Y = _as_tensor(y, "y", dtype)
    if Xt.ndim != 2 or Xt.shape[0] < 2:
        raise RepscopeValueError(
            f"X must be a 2-D array of shape (n_samples, n_features) with at least 2 rows; got "
            f"shape {tuple(Xt.shape)}.")
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != Xt.shape[0]:
        raise RepscopeValueError(
            f"y must have one row per row of X ({Xt.shape[0]}); got shape {tuple(Y.shape)}.")
    return Xt, Y.to(Xt.device)


@dataclass(frozen=True)
class SeparabilityRankResult(Result):
    """The rank–error curve of CP-separable fits (:func:`separability_rank`).

    Attributes
    ----------
    ranks : tuple of int
        The ranks fitted, 1 to ``max_rank``.
    mse : tuple of float
        Held-out mean squared error per rank (over all outputs).
    fvu : tuple of float
        Held-out fraction of variance unexplained per rank (``mse`` over the held-out
        targets' variance).
    train_mse : tuple of float
        Mean squared error on the fitting rows per rank.
    tol : float
        The tolerance on ``mse``.
    rank : int or None
        The smallest rank whose held-out MSE is at most ``tol``; None if no rank reached it.
    """

    ranks: tuple[int, ...]
    mse: tuple[float, ...]
    fvu: tuple[float, ...]
    train_mse: tuple[float, ...]
    tol: float
    rank: int | None


def separability_rank(X: Any, y: Any, *, max_rank: int = 4, tol: float = 1e-3,
                      holdout: float = 0.2, hidden: int = 32, depth: int = 2,
                      steps: int = 2000, lr: float = 1e-2, seed: int = 0,
                      dtype: torch.dtype = torch.float32) -> SeparabilityRankResult:
    """How many separable products a function needs: fit CP-separable models of ranks 1 to
    ``max_rank`` to samples and report the held-out error per rank.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Inputs (a few coordinates: the product runs over all of them).
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        The function's values.
    max_rank : int, default=4
    tol : float, default=1e-3
        The held-out MSE a rank must reach to count.
    holdout : float, default=0.2
        Fraction of rows held out (a seeded random split).
    hidden, depth, steps, lr, dtype
        See :func:`fit_separable`.
    seed : int, default=0
        Seeds the split and every fit (the same seed per rank).

    Returns
    -------
    SeparabilityRankResult

    Raises
    ------
    RepscopeValueError
        For bad shapes or parameters (``holdout`` outside (0, 1), too few rows to split).

    Examples
    --------
    >>> X = torch.rand(200, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    >>> res = separability_rank(X, X[:, 0] + X[:, 1], max_rank=2, hidden=8, steps=1000)
    >>> res.rank
    2
    """
    caller = "separability_rank"
    max_rank = check_positive_int(max_rank, "max_rank", caller=caller)
    check_scalar(tol, "tol", caller=caller, min_value=0.0, include_min=False)
    check_scalar(holdout, "holdout", caller=caller, min_value=0.0, max_value=1.0,
                 include_min=False, include_max=False)
    Xt, Y = _check_xy(X, y, dtype)
    n = Xt.shape[0]
    n_test = round(holdout * n)
    if n_test < 1 or n - n_test < 2:
        raise RepscopeValueError(
            f"holdout={holdout} leaves {n - n_test} fitting and {n_test} held-out rows of "
            f"{n}; separability_rank needs at least 2 and 1.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).to(Xt.device)
    test, train = order[:n_test], order[n_test:]
    var = float(Y[test].var(dim=0, unbiased=False).mean())
    mse: list[float] = []
    train_mse: list[float] = []
    for r in range(1, max_rank + 1):
        model = fit_separable(Xt[train], Y[train], r, hidden=hidden, depth=depth, steps=steps,
                              lr=lr, seed=seed, dtype=dtype)
        with torch.no_grad():
            mse.append(float((model(Xt[test]) - Y[test]).pow(2).mean()))
            train_mse.append(float((model(Xt[train]) - Y[train]).pow(2).mean()))
    found = next((r for r, e in zip(range(1, max_rank + 1), mse) if e <= tol), None)
    fvu = tuple(e / var if var > 0 else float("nan") for e in mse)
    return SeparabilityRankResult(ranks=tuple(range(1, max_rank + 1)), mse=tuple(mse), fvu=fvu,
                                  train_mse=tuple(train_mse), tol=float(tol), rank=found)
