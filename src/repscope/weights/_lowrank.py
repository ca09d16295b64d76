"""Reversible model merging for low-rank weights (RMM; Alipour & Amiri, arXiv 2510.14163).

Instead of one merged model, ``p < n`` *basis* factor sets and ``n x p`` coefficients per layer
are kept, from which each task's low-rank delta is reconstructed. The closed form is the one of
the repscope recipe (paper cluster C, section 3), **[reconstructed]** from "closed-form optimal
basis and coefficients, data-free" (no official code was found):

* each task's delta of a layer is ``dW_i = A_i B_i`` with ``A_i`` (m x r) and ``B_i`` (r x d);
  the A- and B-factors are treated separately;
* for the A-factors, every row is a *position*; ``X_pos`` (r x n) holds that row of every task;
  ``min sum_pos ||X_pos - Basis_pos C||_F^2`` over coefficients ``C`` (p x n) shared by the
  positions of the layer is solved by ``C`` = the top-p eigenvectors (as rows) of the task Gram
  ``G = sum_pos X_pos^T X_pos`` (n x n; ``G_ij = <A_i, A_j>_F``), ``Basis_pos = X_pos C^T``;
  likewise the B-factors with columns as positions;
* task ``i`` is rebuilt as ``A_i^ = sum_j C_ji Basis_j`` (and ``B_i^``), ``dW_i^ = A_i^ B_i^``;
* the squared error ``sum_i ||A_i - A_i^||_F^2`` equals the sum of the discarded eigenvalues of
  ``G`` (Eckart-Young), and ``p = n`` is exactly reversible.

It is uncentred PCA over the task axis. Storage: ``p`` factor sets plus ``n p`` numbers per
layer and factor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from repscope.exceptions import RepscopeTypeError, RepscopeValueError

if TYPE_CHECKING:
    import torch

__all__ = ["ReversibleMerge", "lowrank_factors", "reversible_merge", "reversible_merge_dense"]


def _np(x: Any, name: str) -> np.ndarray:
    from repscope._array import is_torch, to_numpy

    arr = to_numpy(x.detach()) if is_torch(x) else np.asarray(x)
    if arr.ndim != 2:
        raise RepscopeValueError(f"{name}: expected a 2-D factor, got shape {arr.shape}.")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise RepscopeValueError(f"{name}: expected finite values, it has NaN or inf.")
    return arr


@dataclass(frozen=True)
class _FactorPCA:
    """One factor (A or B) of one layer: coefficients ``(p, n)``, basis ``(p, *shape)`` and
    every eigenvalue of the task Gram (descending)."""

    coefs: np.ndarray
    basis: np.ndarray
    eigenvalues: np.ndarray

    def rebuild(self, i: int) -> np.ndarray:
        return np.tensordot(self.coefs[:, i], self.basis, axes=1)


def _fit(factors: Sequence[np.ndarray], p: int) -> _FactorPCA:
    from repscope._kernels.eigenpath import eigh_psd

    flat = np.stack([f.reshape(-1) for f in factors])  # n x positions*r
    eig = eigh_psd(flat @ flat.T)
    order = np.argsort(eig.values)[::-1]
    values = eig.values[order]
    coefs = eig.vectors[:, order[:p]].T  # p x n
    basis = (coefs @ flat).reshape(p, *factors[0].shape)
    return _FactorPCA(coefs, basis, values)


@dataclass(frozen=True)
class ReversibleMerge:
    """``p`` basis factor sets and per-task coefficients for every layer (see module docs).

    Attributes
    ----------
    p, n : int
        Basis size and number of tasks.
    layers : tuple of str
        The layers (state-dict keys of 2-D weights).
    error : float
        ``sum over layers, tasks and both factors of ||F_i - F_i^||_F^2`` (the squared factor
        reconstruction error), equal to the discarded eigenvalue mass.
    discarded_eigenvalues : dict of str to dict
        ``{layer: {"A": array, "B": array}}``: the eigenvalues of each task Gram that the basis
        leaves out (descending).
    skipped : tuple of str
        Entries of dense deltas that are not 2-D (biases, norms), not merged here.
    """

    p: int
    n: int
    layers: tuple[str, ...]
    _a: Mapping[str, _FactorPCA] = field(repr=False)
    _b: Mapping[str, _FactorPCA] = field(repr=False)
    skipped: tuple[str, ...] = ()

    @property
    def discarded_eigenvalues(self) -> dict[str, dict[str, np.ndarray]]:
        return {k: {"A": self._a[k].eigenvalues[self.p:], "B": self._b[k].eigenvalues[self.p:]}
                for k in self.layers}

    @property
    def error(self) -> float:
        return float(sum(v["A"].sum() + v["B"].sum()
                         for v in self.discarded_eigenvalues.values()))

    def reconstruct_factors(self, i: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{layer: (A_i^, B_i^)}`` of task ``i`` (float64)."""
        self._check_task(i)
        return {k: (self._a[k].rebuild(i), self._b[k].rebuild(i)) for k in self.layers}

    def reconstruct(self, i: int) -> dict[str, torch.Tensor]:
        """Task ``i``'s delta ``dW_i^ = A_i^ B_i^`` per layer (float32 tensors).

        Add it to the base weights to get the task's model back (exactly at ``p = n``)."""
        import torch

        return {k: torch.from_numpy((a @ b).astype(np.float32))
                for k, (a, b) in self.reconstruct_factors(i).items()}

    def _check_task(self, i: int) -> None:
        if not isinstance(i, (int, np.integer)) or not 0 <= int(i) < self.n:
            raise RepscopeValueError(f"i: expected a task index in [0, {self.n}), got {i!r}.")


def reversible_merge(factors: Sequence[Mapping[str, tuple[Any, Any]]], p: int) -> ReversibleMerge:
    """Reversible merge of LoRA-style factors.

    Parameters
    ----------
    factors : sequence of mappings
        ``factors[i][layer] = (A_i, B_i)`` with ``dW_i = A_i @ B_i`` (A: m x r, B: r x d; with
        peft's names, ``A = lora_B`` and ``B = scaling * lora_A``). Every task has the same
        layers and shapes.
    p : int
        Basis size, 1 <= p <= n.

    Returns
    -------
    ReversibleMerge
    """
    n = len(factors)
    if n < 1:
        raise RepscopeValueError("factors: expected at least one task's factors, got none.")
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not 1 <= p <= n:
        raise RepscopeValueError(f"p: expected an integer in [1, {n}] (the tasks), got {p!r}.")
    for i, f in enumerate(factors):
        if not isinstance(f, Mapping):
            raise RepscopeTypeError(
                f"factors[{i}]: expected a mapping of layer to (A, B), got {type(f).__name__}.")
    layers = tuple(factors[0])
    for i, f in enumerate(factors):
        if set(f) != set(layers):
            diff = sorted(set(f) ^ set(layers))
            raise RepscopeValueError(
                f"factors[{i}]: expected the layers of factors[0]; {diff[0]!r} is in one only.")
    fa: dict[str, _FactorPCA] = {}
    fb: dict[str, _FactorPCA] = {}
    for layer in layers:
        A = [_np(f[layer][0], f"factors[{i}][{layer!r}] A") for i, f in enumerate(factors)]
        B = [_np(f[layer][1], f"factors[{i}][{layer!r}] B") for i, f in enumerate(factors)]
        for i in range(n):
            if A[i].shape != A[0].shape or B[i].shape != B[0].shape or A[i].shape[1] != B[i].shape[0]:
                raise RepscopeValueError(
                    f"factors[{i}][{layer!r}]: expected A {A[0].shape} and B {B[0].shape} "
                    f"(inner sizes equal), got A {A[i].shape} and B {B[i].shape}.")
        fa[layer], fb[layer] = _fit(A, int(p)), _fit(B, int(p))
    return ReversibleMerge(int(p), n, layers, fa, fb)


def lowrank_factors(delta: Any, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` with ``A @ B`` the best rank-``rank`` approximation of ``delta`` (SVD; the
    singular values split evenly, ``A = U_r sqrt(S_r)``, ``B = sqrt(S_r) V_r^T``)."""
    d = _np(delta, "delta")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise RepscopeValueError(f"rank: expected a positive integer, got {rank!r}.")
    u, s, vt = np.linalg.svd(d, full_matrices=False)
    r = min(int(rank), s.size)
    root = np.sqrt(s[:r])
    return u[:, :r] * root, root[:, None] * vt[:r]


def reversible_merge_dense(deltas: Sequence[Any], p: int, *, rank: int) -> ReversibleMerge:
    """Reversible merge of dense deltas (task vectors), each 2-D entry first truncated by SVD
    to rank ``rank`` (:func:`lowrank_factors`).

    Parameters
    ----------
    deltas : sequence of state dicts
        Task vectors (``weights._taskvec.task_vector``) with the same keys and shapes.
    p : int
        Basis size.
    rank : int
        The truncation rank.

    Returns
    -------
    ReversibleMerge
        Entries that are not 2-D are listed in ``skipped``.
    """
    from repscope.weights._taskvec import _check_pair, _state

    sds = [_state(d, f"deltas[{i}]") for i, d in enumerate(deltas)]
    if not sds:
        raise RepscopeValueError("deltas: expected at least one task vector, got none.")
    for i in range(1, len(sds)):
        _check_pair(sds[0], sds[i], ("deltas[0]", f"deltas[{i}]"))
    keys = [k for k in sds[0] if sds[0][k].ndim == 2 and sds[0][k].is_floating_point()]
    skipped = tuple(k for k in sds[0] if k not in keys)
    factors = [{k: lowrank_factors(sd[k], rank) for k in keys} for sd in sds]
    merged = reversible_merge(factors, p)
    return ReversibleMerge(merged.p, merged.n, merged.layers, merged._a, merged._b, skipped)
