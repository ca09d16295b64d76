"""Permutation alignment of two (or more) networks: weight matching and activation matching.

**Weight matching** is Git Re-Basin's coordinate descent (Ainsworth, Hayase and Srinivasa 2023,
``samuela/git-re-basin`` ``src/weight_matching.py``, MIT): it
maximises the inner product of the two models' weights over the permutations of a
:class:`~repscope.weights._spec.PermutationSpec`,

.. math:: \\max_\\pi \\sum_k \\langle A_k, \\pi(B)_k \\rangle_F ,

one permutation at a time. For permutation ``P`` with every other permutation held fixed and
already applied to ``B`` (``B~``), the objective is linear in ``P`` with the cost

.. math:: C = \\sum_{(k, ax) \\in P} A_k^{(ax \\to 0)} \\, (\\tilde B_k^{(ax \\to 0)})^\\top ,

each term a ``(size, rest)`` matrix (the tensor with axis ``ax`` moved first and the others
flattened; blocks of ``block`` entries form one item's row, so attention heads are scored as
whole heads), and the best ``P`` is a linear assignment problem
(:func:`repscope._kernels.assignment.linear_assignment`, maximising; solved per group when the
permutation has ``groups``). The permutations are visited in a random order (``seed``) each
iteration until an iteration changes none of them (or ``max_iter``).

**Activation matching** (Ainsworth et al.'s other data-dependent method; Li et al. 2016) matches
the units each permutation moves by the correlation of their activations on the same inputs,
one Hungarian assignment per permutation (:func:`repscope.similarity.match_units`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from repscope._progress import ProgressLike
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import Result

if TYPE_CHECKING:
    import torch

    from repscope.weights._spec import PermutationSpec

__all__ = [
    "ActivationMatchingResult",
    "MultiAlignmentResult",
    "WeightMatchingResult",
    "activation_matching",
    "align_to_reference",
    "weight_matching",
]


@dataclass(frozen=True)
class WeightMatchingResult(Result):
    """The permutations that align model B to model A by weight matching.

    Attributes
    ----------
    perms : dict of str to ndarray of int64
        ``perms[name][i]`` = the item of B that goes to position ``i``
        (:func:`~repscope.weights._spec.apply_permutation`'s convention).
    aligned : dict of str to Tensor
        B's state dict with the permutations applied: ``apply_permutation(spec, perms, b)``
        (computes the same function as B).
    n_iter : int
        Iterations run (one iteration visits every permutation once).
    converged : bool
        True when the last iteration changed no permutation (a fixed point of the coordinate
        descent, not necessarily the global optimum); False when ``max_iter`` stopped it.
    objective : ndarray of float64, shape (n_iter + 1,)
        :math:`\\sum_k \\langle A_k, \\pi(B)_k \\rangle_F` over the keys of the spec, before the
        first iteration (entry 0, the starting permutations) and after each iteration;
        non-decreasing.
    n_changed : ndarray of int64, shape (n_iter,)
        Permutations changed in each iteration.
    method : str
        ``"weight"``.
    details : dict
        ``seed``, ``max_iter``, ``order`` (the visiting order of the first iteration).
    """

    perms: dict[str, np.ndarray]
    aligned: dict[str, Any] = field(repr=False)
    n_iter: int
    converged: bool
    objective: np.ndarray
    n_changed: np.ndarray
    method: str = "weight"
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the aligned tensors are left out)."""
        from repscope.results import to_jsonable

        return {"type": type(self).__name__, "perms": to_jsonable(self.perms),
                "n_iter": self.n_iter, "converged": self.converged,
                "objective": to_jsonable(self.objective),
                "n_changed": to_jsonable(self.n_changed), "method": self.method,
                "details": to_jsonable(self.details)}


@dataclass(frozen=True)
class ActivationMatchingResult(Result):
    """The permutations that align model B to model A by activation correlation.

    Attributes
    ----------
    perms : dict of str to ndarray of int64
        As in :class:`WeightMatchingResult`.
    aligned : dict of str to Tensor
        B's state dict with the permutations applied.
    layers : dict of str to str
        The module whose output feeds each permutation's matching.
    mean_corr : dict of str to float
        Mean correlation of the matched units (after matching) per permutation.
    mean_corr_identity : dict of str to float
        Mean correlation of unit ``i`` of A with unit ``i`` of B (before matching).
    n_samples : int
        Activation rows each correlation was computed on (per block entry for ``block > 1``).
    method : str
        ``"activation"``.
    """

    perms: dict[str, np.ndarray]
    aligned: dict[str, Any] = field(repr=False)
    layers: dict[str, str]
    mean_corr: dict[str, float]
    mean_corr_identity: dict[str, float]
    n_samples: int
    method: str = "activation"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the aligned tensors are left out)."""
        from repscope.results import to_jsonable

        return {"type": type(self).__name__, "perms": to_jsonable(self.perms),
                "layers": dict(self.layers), "mean_corr": to_jsonable(self.mean_corr),
                "mean_corr_identity": to_jsonable(self.mean_corr_identity),
                "n_samples": self.n_samples, "method": self.method}


@dataclass(frozen=True)
class MultiAlignmentResult(Result):
    """Several models aligned to one reference (each matched to the reference on its own).

    Attributes
    ----------
    reference : dict of str to Tensor
        The reference state dict (unchanged).
    results : tuple of WeightMatchingResult or ActivationMatchingResult
        One per other model, in the order given.
    """

    reference: dict[str, Any] = field(repr=False)
    results: tuple[Any, ...]

    @property
    def aligned(self) -> list[dict[str, Any]]:
        """The aligned state dict of each other model, in the order given."""
        return [r.aligned for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: each alignment's summary (no tensors)."""
        return {"type": type(self).__name__, "results": [r.to_dict() for r in self.results]}


# ----------------------------------------------------------------------------- helpers


def _state_pair(spec: PermutationSpec, a: Any, b: Any,
                names: tuple[str, str] = ("a", "b")) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """Both inputs as state dicts, checked compatible (keys, shapes, dtypes, finite) and
    against the spec."""
    from repscope.weights._spec import PermutationSpec
    from repscope.weights._state import as_state_dict, check_compatible

    if not isinstance(spec, PermutationSpec):
        raise RepscopeTypeError(f"spec: expected a PermutationSpec, got {type(spec).__name__}.")
    sa, sb = as_state_dict(a, name=names[0]), as_state_dict(b, name=names[1])
    check_compatible(sa, sb, names=names)
    spec.check(sa, argument=names[0])
    return sa, sb


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    import torch

    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _entry_index(perm: np.ndarray, block: int) -> np.ndarray:
    if block == 1:
        return perm
    return (perm[:, None] * block + np.arange(block)[None, :]).reshape(-1)


def _solve(C: np.ndarray, groups: tuple[tuple[int, ...], ...] | None) -> np.ndarray:
    """Maximising assignment of rows to columns of ``C``, inside each group when given."""
    from repscope._kernels.assignment import linear_assignment

    if groups is None:
        return np.asarray(linear_assignment(C, maximize=True).cols, dtype=np.int64)
    out = np.empty(C.shape[0], dtype=np.int64)
    for g in groups:
        gi = np.asarray(g, dtype=np.int64)
        out[gi] = gi[linear_assignment(C[np.ix_(gi, gi)], maximize=True).cols]
    return out


def _check_init(spec: PermutationSpec, init: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    from repscope.weights._spec import _check_perm, identity_permutation

    perms = identity_permutation(spec)
    if init is None:
        return perms
    if not isinstance(init, Mapping):
        raise RepscopeTypeError(
            f"init: expected a mapping of permutation name -> indices, got {type(init).__name__}.")
    unknown = [n for n in init if n not in spec.perms]
    if unknown:
        raise RepscopeValueError(
            f"init: {len(unknown)} name(s) not in the spec (first: {unknown[0]!r}).")
    for n, arr in init.items():
        perms[n] = _check_perm(spec.perms[n], arr)
    return perms


class _Matcher:
    """The state of one weight-matching run (A's flattened views, B's tensors, the perms)."""

    def __init__(self, spec: PermutationSpec, sa: Mapping[str, Any], sb: Mapping[str, Any],
                 perms: dict[str, np.ndarray]) -> None:
        import torch


        self.spec = spec
        self.perms = perms
        self.keys = [k for k, names in spec.axes.items() if any(n is not None for n in names)]
        self.A = {k: sa[k].detach().to("cpu", _compute_dtype(sa[k])) for k in self.keys}
        self.B = {k: sb[k].detach().to("cpu", self.A[k].dtype) for k in self.keys}
        # keys the spec lists with every axis fixed add a constant to the objective
        self.const = sum(float(torch.sum(sa[k].detach().to(torch.float64)
                                         * sb[k].detach().to(torch.float64)))
                         for k in spec.axes if k not in self.A)
        self.index: dict[str, torch.Tensor] = {}
        for n in spec.perms:
            self._set_index(n)
        # A's (size, rest) matrix per (perm, key, axis), computed once
        self.A_mat: dict[tuple[str, int], torch.Tensor] = {}
        self.deps: dict[str, set[str]] = {}
        for n, p in spec.perms.items():
            deps: set[str] = set()
            for key, ax in spec.perm_axes(n):
                self.A_mat[(key, ax)] = self.A[key].movedim(ax, 0).reshape(p.size, -1)
                names = spec.axes[key]
                deps.update(q for i, q in enumerate(names) if q is not None and i != ax)
            self.deps[n] = deps  # includes n itself when n acts on two axes of one tensor

    def _set_index(self, name: str) -> None:
        import torch

        p = self.spec.perms[name]
        self.index[name] = torch.as_tensor(_entry_index(self.perms[name], p.block))

    def permuted_b(self, key: str, except_axis: int | None = None) -> torch.Tensor:
        w = self.B[key]
        for ax, n in enumerate(self.spec.axes[key]):
            if n is not None and ax != except_axis:
                w = w.index_select(ax, self.index[n])
        return w

    def cost(self, name: str) -> np.ndarray:
        """The float64 cost matrix of permutation ``name`` with the others applied to B."""
        import torch

        p = self.spec.perms[name]
        C = torch.zeros((p.size, p.size), dtype=torch.float64)
        for key, ax in self.spec.perm_axes(name):
            wb = self.permuted_b(key, except_axis=ax).movedim(ax, 0).reshape(p.size, -1)
            C += (self.A_mat[(key, ax)] @ wb.T).to(torch.float64)
        return C.numpy()

    def objective(self, keys: Iterable[str] | None = None) -> float:
        import torch

        total = self.const if keys is None else 0.0
        for k in self.keys if keys is None else keys:
            total += float(torch.sum(self.A[k].to(torch.float64)
                                     * self.permuted_b(k).to(torch.float64)))
        return total

    def set_perm(self, name: str, perm: np.ndarray) -> None:
        self.perms[name] = perm
        self._set_index(name)


# ----------------------------------------------------------------------------- weight matching


def _levels(spec: PermutationSpec, deps: Mapping[str, set[str]]) -> dict[str, int]:
    """Breadth-first distance of each permutation from an anchored one (acting on a tensor
    of two or more axes whose other axes are all fixed); unreachable ones come last."""
    level: dict[str, int] = {}
    frontier = [n for n in spec.perms
                if any(len(spec.axes[k]) > 1
                       and all(q is None for i, q in enumerate(spec.axes[k]) if i != ax)
                       for k, ax in spec.perm_axes(n))]
    depth = 0
    while frontier:
        for n in frontier:
            level[n] = depth
        depth += 1
        frontier = sorted({q for n in frontier for q in deps[n] if q not in level})
    return {n: level.get(n, depth) for n in spec.perms}


def weight_matching(
    spec: PermutationSpec,
    a: Any,
    b: Any,
    *,
    max_iter: int = 100,
    seed: int = 0,
    init: Mapping[str, Any] | None = None,
    first_sweep: str = "anchored",
    progress: ProgressLike = True,
) -> WeightMatchingResult:
    """Permutations of B's hidden units that maximise its weights' inner product with A's.

    Git Re-Basin's coordinate descent (module docstring): each iteration visits the
    permutations in a random order and replaces each by the solution of its linear assignment
    problem when that raises the objective; it stops after an iteration that changes nothing.
    One matrix product per ``(key, axis)`` of a permutation builds its cost, in the weights'
    precision (float32; float64 weights stay float64), summed in float64. A permutation whose
    neighbours (the permutations sharing a tensor with it) have not changed since it was last
    solved is not solved again (its cost would be the same), so the last, confirming iteration
    is cheap. A permutation acting on two axes of one tensor (a square residual-to-residual
    weight) makes the objective quadratic in it; its update is then accepted only if the exact
    objective rises, so the objective never decreases.

    Parameters
    ----------
    spec : PermutationSpec
        Which axes each permutation moves (:func:`~repscope.weights._spec.mlp_spec`,
        ``spec_from_model``, ``llama_spec`` or hand-written).
    a, b : nn.Module, Mapping[str, Tensor] or .safetensors path
        The reference model A and the model B to permute; same keys, shapes and dtypes, finite.
        Not modified.
    max_iter : int, default=100
        Iteration cap (git-re-basin's default).
    seed : int, default=0
        Seed of the visiting order.
    init : Mapping[str, array], optional
        Starting permutations (default: the identity).
    first_sweep : {"random", "anchored"}, default="anchored"
        Order of the first iteration. ``"random"`` is git-re-basin's. ``"anchored"`` (ours)
        visits first the permutations that act on a tensor whose other axes are all fixed (an
        MLP's first and last hidden layer, a residual stream's embedding and head), then their
        neighbours, and so on (random order within a level); later iterations are random.
        In a residual stack the random order can solve the hidden permutations against the
        identity residual permutation first, which then fits that wrong residual order better
        than the true one: a local optimum the anchored sweep avoids.
    progress : bool or callable, default=True
        A progress bar over iterations (drawn on a terminal), or a caller's ``advance(k)``.

    Returns
    -------
    WeightMatchingResult

    Raises
    ------
    RepscopeValueError
        The state dicts differ in keys, shapes or dtypes, hold NaN/inf, or do not fit the
        spec; ``max_iter`` < 1.

    Examples
    --------
    >>> from repscope.weights._spec import mlp_spec, apply_permutation, random_permutation
    >>> from repscope.weights._toy import make_mlp
    >>> a = make_mlp((4, 8, 3), seed=0).state_dict()
    >>> spec = mlp_spec(a)
    >>> b = apply_permutation(spec, random_permutation(spec, seed=1), a)
    >>> r = weight_matching(spec, a, b, progress=False)
    >>> bool(all((r.aligned[k] == a[k]).all() for k in a)), r.converged
    (True, True)
    """
    from repscope._progress import progress_for

    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise RepscopeValueError(f"max_iter must be a positive integer; got {max_iter!r}.")
    if first_sweep not in ("random", "anchored"):
        raise RepscopeValueError(
            f"first_sweep must be 'random' or 'anchored'; got {first_sweep!r}.")
    sa, sb = _state_pair(spec, a, b)
    m = _Matcher(spec, sa, sb, _check_init(spec, init))
    rng = np.random.default_rng(seed)
    names = list(spec.perms)
    repeated = {n for n in names if n in m.deps[n]}
    version = dict.fromkeys(names, 0)
    solved_at: dict[str, dict[str, int]] = {}
    objective = [m.objective()]
    n_changed: list[int] = []
    first_order: list[str] = []
    converged = False
    with progress_for(progress, "weight matching iterations", int(max_iter),
                      prefix="weights") as advance:
        for it in range(int(max_iter)):
            order = [names[i] for i in rng.permutation(len(names))]
            if it == 0 and first_sweep == "anchored":
                level = _levels(spec, m.deps)
                order.sort(key=level.__getitem__)  # stable: random within a level
            if it == 0:
                first_order = order
            changed = 0
            for n in order:
                deps = {q: version[q] for q in m.deps[n]}
                if solved_at.get(n) == deps:
                    continue  # same cost as when last solved: same answer
                C = m.cost(n)
                old = m.perms[n]
                new = _solve(C, spec.perms[n].groups)
                rows = np.arange(C.shape[0])
                gain = float(C[rows, new].sum() - C[rows, old].sum())
                improved = gain > 1e-12 * max(1.0, abs(float(C[rows, old].sum())))
                if improved and n in repeated:
                    keys = sorted({k for k, _ in spec.perm_axes(n)})
                    before = m.objective(keys)
                    m.set_perm(n, new)
                    improved = m.objective(keys) > before
                    if not improved:
                        m.set_perm(n, old)
                elif improved:
                    m.set_perm(n, new)
                if improved:
                    version[n] += 1
                    changed += 1
                solved_at[n] = {q: version[q] for q in m.deps[n]}
            objective.append(m.objective())
            n_changed.append(changed)
            advance(1)
            if changed == 0:
                converged = True
                break
    from repscope.weights._spec import apply_permutation

    perms = {n: m.perms[n].copy() for n in names}
    return WeightMatchingResult(
        perms=perms, aligned=apply_permutation(spec, perms, sb), n_iter=len(n_changed),
        converged=converged, objective=np.asarray(objective, dtype=np.float64),
        n_changed=np.asarray(n_changed, dtype=np.int64),
        details={"seed": int(seed), "max_iter": int(max_iter), "order": first_order})


# ----------------------------------------------------------------------------- activation matching


_ACTIVATIONS = ("ReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "LeakyReLU", "ELU", "Mish",
                "Hardswish", "ReLU6", "Softplus", "GELUTanh")


def _feeding(spec: PermutationSpec, model: torch.nn.Module) -> dict[str, str]:
    """:func:`default_layers` for the permutations that have a feeding module."""
    modules = list(model.named_modules())
    position = {name: i for i, (name, _) in enumerate(modules)}
    out: dict[str, str] = {}
    for n in spec.perms:
        owners = [key[: -len(".weight")] for key, ax in spec.perm_axes(n)
                  if ax == 0 and key.endswith(".weight") and key[: -len(".weight")] in position]
        if not owners:
            continue
        owner = min(owners, key=position.__getitem__)
        i = position[owner]
        if i + 1 < len(modules):
            nxt_name, nxt = modules[i + 1]
            if (type(nxt).__name__ in _ACTIVATIONS
                    and nxt_name.rpartition(".")[0] == owner.rpartition(".")[0]):
                owner = nxt_name
        out[n] = owner
    return out


def default_layers(spec: PermutationSpec, model: torch.nn.Module) -> dict[str, str]:
    """The module whose output feeds each permutation's activation matching.

    For each permutation, the first module (in ``named_modules`` order) whose ``weight`` the
    permutation moves on axis 0 (its output units: a Linear's rows, a Conv's output channels);
    when the module registered right after it is a sibling elementwise activation (ReLU, GELU,
    SiLU, ...), that activation's output is used instead. For an ``nn.Sequential`` MLP,
    permutation ``P<j>`` is fed by the ReLU after Linear ``j`` (``"1"``, ``"3"``, ...). For a
    residual-stream permutation this is the first module writing the stream (the embedding),
    not the stream after every block: pass ``layers`` to pick another module.

    Raises
    ------
    RepscopeValueError
        A permutation moves the output of no module's weight (name it in ``layers``).
    """
    out = _feeding(spec, model)
    missing = [n for n in spec.perms if n not in out]
    if missing:
        raise RepscopeValueError(
            f"activation_matching: permutation {missing[0]!r} moves the output of no module's "
            f"weight ({len(missing)} such); pass layers={{{missing[0]!r}: '<module path>'}}.")
    return out


def _as_batches(batches: Any) -> list[Any]:
    import torch

    if isinstance(batches, (torch.Tensor, np.ndarray)):
        return [batches]
    if isinstance(batches, Mapping) or not isinstance(batches, Iterable):
        raise RepscopeTypeError(
            f"batches: expected a tensor or an iterable of input tensors, got "
            f"{type(batches).__name__}.")
    out = list(batches)
    if not out:
        raise RepscopeValueError("batches: expected at least one batch of inputs, got none.")
    return out


def _units(t: torch.Tensor, width: int, block: int, layer: str) -> np.ndarray:
    """An activation as ``(samples, units)``: the unit axis is axis 1 for 2-D and 4-D outputs
    (N, C[, H, W]), the last axis otherwise (N, T, C); blocks are stacked as extra samples."""
    import torch

    t = t.detach().to(torch.float64)
    ax = 1 if t.ndim in (2, 4) else t.ndim - 1
    if t.ndim < 2 or t.shape[ax] != width:
        raise RepscopeValueError(
            f"activation_matching: the output of {layer!r} has shape {tuple(t.shape)}, "
            f"expected {width} units on axis {ax}; pass layers= with the module that feeds "
            "this permutation.")
    x = t.movedim(ax, -1).reshape(-1, width // block, block)
    return x.transpose(1, 2).reshape(-1, width // block).numpy()


def _run_model(model: torch.nn.Module, state: Mapping[str, Any], batches: Sequence[Any],
               layers: Sequence[str], transform: Callable[[str, Any], Any]) -> dict[str, list[Any]]:
    """Activations of ``model`` run with ``state`` (``torch.func.functional_call``: the
    model's own parameters are not touched) at ``layers`` over ``batches``, in eval mode."""
    import torch

    from repscope.extract import capture

    modes = {mod: mod.training for mod in model.modules()}
    out: dict[str, list[Any]] = {name: [] for name in layers}
    try:
        model.eval()
        with torch.no_grad(), capture(model, list(layers), transform=transform) as acts:
            for x in batches:
                acts.clear()
                torch.func.functional_call(model, dict(state), (torch.as_tensor(x),))
                for name in layers:
                    out[name].append(acts[name])
    finally:
        for mod, mode in modes.items():
            mod.training = mode
    return out


def activation_matching(
    model_a: torch.nn.Module,
    model_b: Any,
    spec: PermutationSpec,
    batches: Any,
    *,
    layers: Mapping[str, str] | None = None,
    model: torch.nn.Module | None = None,
) -> ActivationMatchingResult:
    """Permutations of B's hidden units that maximise their activations' correlation with A's.

    Both models run on the same ``batches`` (eval mode, no gradients); the activations at the
    module that feeds each permutation (:func:`default_layers`: for an MLP the ReLU after
    Linear ``j`` feeds ``P<j>``) are matched one-to-one by
    :func:`repscope.similarity.match_units` (Hungarian on the Pearson correlation matrix), per
    group when the permutation has groups. For ``block > 1`` (heads) the entries of a block are
    stacked as extra samples, so two heads are scored by the pooled correlation of their
    entries at the same position within the head. Each permutation is solved on its own (no
    coordinate descent: activations do not depend on the other permutations of B).

    Parameters
    ----------
    model_a : nn.Module
        Model A (its module paths name the layers).
    model_b : nn.Module, Mapping[str, Tensor] or .safetensors path
        Model B's weights; run through ``model`` (default: ``model_a``'s architecture with B's
        state dict, via ``torch.func.functional_call``; neither model is modified).
    spec : PermutationSpec
    batches : Tensor, ndarray or iterable of them
        Inputs both models are run on.
    layers : Mapping[str, str], optional
        Permutation name -> module path whose output feeds it; default :func:`default_layers`.
    model : nn.Module, optional
        The module to run B's weights in (default ``model_a``).

    Returns
    -------
    ActivationMatchingResult

    Raises
    ------
    RepscopeValueError
        Incompatible state dicts, a permutation with no feeding module, an activation of the
        wrong width, constant activations (correlation undefined).
    """
    import torch

    from repscope.similarity import match_units
    from repscope.weights._spec import apply_permutation

    if not isinstance(model_a, torch.nn.Module):
        raise RepscopeTypeError(
            f"model_a: expected an nn.Module (it is run on the batches), got "
            f"{type(model_a).__name__}.")
    runner = model_a if model is None else model
    sa, sb = _state_pair(spec, model_a, model_b, names=("model_a", "model_b"))
    if layers is not None and not isinstance(layers, Mapping):
        raise RepscopeTypeError(
            f"layers: expected a mapping of permutation name -> module path, got "
            f"{type(layers).__name__}.")
    given = {str(k): str(v) for k, v in (layers or {}).items()}
    unknown = [n for n in given if n not in spec.perms]
    if unknown:
        raise RepscopeValueError(
            f"layers: {len(unknown)} name(s) not in the spec (first: {unknown[0]!r}).")
    rest = [n for n in spec.perms if n not in given]
    feeds = {**(default_layers(_sub_spec(spec, rest), runner) if rest else {}), **given}
    data = _as_batches(batches)
    mods = sorted(set(feeds.values()))
    acts_a = _run_model(runner, sa, data, mods, lambda _n, t: t.detach().clone())
    acts_b = _run_model(runner, sb, data, mods, lambda _n, t: t.detach().clone())
    perms: dict[str, np.ndarray] = {}
    corr: dict[str, float] = {}
    corr_id: dict[str, float] = {}
    n_samples = 0
    for n, layer in feeds.items():
        p = spec.perms[n]
        width = p.size * p.block
        X = np.concatenate([_units(t, width, p.block, layer) for t in acts_a[layer]])
        Y = np.concatenate([_units(t, width, p.block, layer) for t in acts_b[layer]])
        n_samples = X.shape[0]
        perm = np.empty(p.size, dtype=np.int64)
        groups = p.groups if p.groups is not None else (tuple(range(p.size)),)
        matched = np.empty(p.size)
        for g in groups:
            gi = np.asarray(g, dtype=np.int64)
            res = match_units(X[:, gi], Y[:, gi])
            perm[gi[res.rows]] = gi[res.cols]
            matched[gi[res.rows]] = res.matched_corr
        perms[n] = perm
        corr[n] = float(matched.mean())
        corr_id[n] = float(np.mean(_column_corr(X, Y)))
    return ActivationMatchingResult(
        perms=perms, aligned=apply_permutation(spec, perms, sb), layers=dict(feeds),
        mean_corr=corr, mean_corr_identity=corr_id, n_samples=int(n_samples))


def _sub_spec(spec: PermutationSpec, names: Sequence[str]) -> PermutationSpec:
    """The spec restricted to the permutations ``names``."""
    keep = set(names)
    return type(spec)({n: spec.perms[n] for n in names},
                      {k: tuple(x if x in keep else None for x in v)
                       for k, v in spec.axes.items()})


def _column_corr(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Pearson correlation of column ``i`` of X with column ``i`` of Y (0 where constant)."""
    xc, yc = X - X.mean(0), Y - Y.mean(0)
    den = np.sqrt((xc * xc).sum(0) * (yc * yc).sum(0))
    num = (xc * yc).sum(0)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


# ----------------------------------------------------------------------------- several models


def align_to_reference(
    reference: Any,
    others: Sequence[Any],
    spec: PermutationSpec,
    *,
    method: str = "weight",
    progress: ProgressLike = True,
    **kw: Any,
) -> MultiAlignmentResult:
    """Align every model of ``others`` to ``reference`` (each matched to the reference).

    Matching each model to one fixed reference (rather than to each other) puts all of them in
    the reference's unit order, which merging three or more models needs (Ito et al. 2025 find
    weight matching better than STE there).

    Parameters
    ----------
    reference : nn.Module, Mapping[str, Tensor] or .safetensors path
        Model A of every matching (an nn.Module for ``method="activation"``).
    others : sequence of models or state dicts
        At least one; each is aligned independently.
    spec : PermutationSpec
    method : {"weight", "activation"}, default="weight"
        :func:`weight_matching` or :func:`activation_matching` (which needs ``batches=``).
    progress : bool or callable, default=True
        A bar over the other models.
    **kw
        Passed to the matching function (``max_iter``, ``seed``; ``batches``, ``layers``).

    Returns
    -------
    MultiAlignmentResult
    """
    from repscope._progress import progress_for
    from repscope.weights._state import as_state_dict

    if method not in ("weight", "activation"):
        raise RepscopeValueError(f"method must be 'weight' or 'activation'; got {method!r}.")
    if isinstance(others, (Mapping, str)) or not isinstance(others, Sequence) or not others:
        raise RepscopeValueError(
            f"others: expected a non-empty sequence of models or state dicts, got "
            f"{type(others).__name__}"
            + (" (empty)" if isinstance(others, Sequence) and not others else "") + ".")
    results = []
    with progress_for(progress, "models aligned", len(others), prefix="weights") as advance:
        for other in others:
            if method == "weight":
                r: Any = weight_matching(spec, reference, other, progress=False, **kw)
            else:
                if "batches" not in kw:
                    raise RepscopeValueError(
                        "align_to_reference: method 'activation' needs batches= (inputs both "
                        "models run on).")
                r = activation_matching(reference, other, spec, **kw)
            results.append(r)
            advance(1)
    return MultiAlignmentResult(reference=dict(as_state_dict(reference, name="reference")), results=tuple(results))
