"""Shared pieces of the logistic probe: the regularization convention, path records,
stratified splits, validation scores and ``torch.distributed`` sums."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from repscope._array import is_torch, to_numpy
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import Result

__all__ = ["C_from_lambda", "PathPoint",
    "PathPointResult", "lambda_from_C", "stratified_splits"]


def lambda_from_C(C: float, n_samples: int) -> float:
    """repscope's ``lambda`` equivalent to scikit-learn's ``C``: ``lambda = 1 / (C n)``.

    Examples
    --------
    >>> lambda_from_C(1.0, 1000)
    0.001
    """
    C = float(C)
    if not C > 0 or not math.isfinite(C):
        raise RepscopeValueError(f"C must be a positive finite number; got {C!r}.")
    return 1.0 / (C * int(n_samples))


def C_from_lambda(lam: float, n_samples: int) -> float:
    """scikit-learn's ``C`` equivalent to repscope's ``lambda``: ``C = 1 / (lambda n)``.

    Examples
    --------
    >>> C_from_lambda(0.001, 1000)
    1.0
    """
    lam = float(lam)
    if not lam > 0 or not math.isfinite(lam):
        raise RepscopeValueError(f"lambda must be a positive finite number; got {lam!r}.")
    return 1.0 / (lam * int(n_samples))


@dataclass(frozen=True)
class PathPointResult(Result):
    """Convergence record of one regularization value.

    Attributes
    ----------
    lam, C : float
        The L2 strength in repscope's convention and scikit-learn's equivalent ``C``.
    split : str
        The data it was fitted on: ``"all"``, ``"train"`` (holdout), ``"fold<i>"`` or
        ``"refit"``.
    n_iter, n_evals : int
        L-BFGS iterations and objective evaluations at this value.
    grad_max : float
        Final ``max |gradient|`` of the objective in the original coordinates.
    objective : float
        Final objective value.
    converged : bool
        Whether ``grad_max <= tol`` (or the objective stopped decreasing at float64 precision).
    warm_start_met_tol : bool
        The warm start from the previous path value already met the tolerance, so this value
        returned the previous solution unchanged (scikit-learn does this silently).
    weight_norm : float
        ``||W||_F`` of the head.
    val_score : float or None
        Validation score (``scoring``) when a selection was made.
    status : str
        Why L-BFGS stopped.
    """

    lam: float
    C: float
    split: str
    n_iter: int
    n_evals: int
    grad_max: float
    objective: float
    converged: bool
    warm_start_met_tol: bool
    weight_norm: float
    val_score: float | None
    status: str


#: The former name of :class:`PathPointResult` (kept for one release).
PathPoint = PathPointResult


def stratified_splits(
    T: np.ndarray, n: int, selection: str, fraction: float, cv: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(train_rows, val_rows), ...]``: one stratified holdout split or ``cv`` folds.

    Strata are the class indices (or the positive label of a single sigmoid head); multi-label
    targets are split without strata. A class keeps at least one training sample in a
    holdout split; with k folds a class smaller than ``cv`` is missing from some folds'
    validation parts (and a single-sample class from one fold's training part), which is
    allowed: the head of a class absent from a fit is pushed towards low scores.
    """
    rng = np.random.default_rng(seed)
    if T.ndim == 1:
        strata = T
    elif T.shape[1] == 1:
        strata = T[:, 0].astype(np.int64)
    else:
        strata = np.zeros(n, dtype=np.int64)
    k = 1 if selection == "holdout" else cv
    fold_of = np.empty(n, dtype=np.int64)
    val_mask = np.zeros(n, dtype=bool)
    for c in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == c))
        if k == 1:
            n_val = min(round(fraction * members.size), members.size - 1)
            val_mask[members[:n_val]] = True
        else:
            fold_of[members] = (np.arange(members.size) + int(rng.integers(k))) % k
    if k == 1:
        if not val_mask.any():
            raise RepscopeValueError(
                f"the holdout split left no validation samples (n={n}, "
                f"validation_fraction={fraction}); use more data or selection='fixed'."
            )
        return [(np.flatnonzero(~val_mask), np.flatnonzero(val_mask))]
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)
            if np.any(fold_of == f) and np.any(fold_of != f)]


def _mean_variance(X: Any) -> float:
    Xn = to_numpy(X[: min(int(X.shape[0]), 20000)], dtype=np.float64)
    v = float(Xn.var(axis=0).mean())
    return v if v > 0 else 1.0


def _index(arr: Any, rows: np.ndarray) -> Any:
    if is_torch(arr):
        import torch

        return torch.as_tensor(rows, device=arr.device)
    return rows


def _score_sums(Z: np.ndarray, y: np.ndarray, loss: str, scoring: str,
                multilabel: bool) -> tuple[float, float]:
    """``(sum of per-sample scores, count)`` so that shards can be all-reduced."""
    n = Z.shape[0]
    if loss == "softmax":
        if scoring == "accuracy":
            return float((Z.argmax(axis=1) == y).sum()), float(n)
        zmax = Z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(Z - zmax).sum(axis=1)) + zmax[:, 0]
        return float(-(lse - Z[np.arange(n), y]).sum()), float(n)
    Y = y if multilabel else np.asarray(y, dtype=np.float64)[:, None]
    if scoring == "accuracy":
        return float(((Z > 0) == (Y > 0.5)).mean(axis=1).sum()), float(n)
    per = (np.logaddexp(0.0, Z) - Y * Z).mean(axis=1)
    return float(-per.sum()), float(n)


def _all_sum(v: float, group: Any) -> float:
    return float(_all_sum_array(np.array([v]), group)[0])


def _all_sum_array(a: np.ndarray, group: Any) -> np.ndarray:
    import torch
    import torch.distributed as dist

    t = torch.from_numpy(np.asarray(a, dtype=np.float64).copy())
    if dist.get_backend(group) == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t.cpu().numpy()


def _all_union(local: np.ndarray, group: Any) -> np.ndarray:
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, local.tolist(), group=group)
    merged = [v for g in gathered for v in g]
    if any(isinstance(v, str) for v in merged) and not all(isinstance(v, str) for v in merged):
        raise RepscopeTypeError("ranks hold labels of different types (strings and numbers).")
    return np.unique(np.asarray(merged))
