"""Iterative Feature Merging: fold functionally equivalent units of a ReLU stack into one.

Paper: Chen, Zhou, Yan, ICLR'24, arXiv 2310.06756 (details reconstructed from the paper's
description). For a ReLU unit, ``relu(c · w·x) = c · relu(w·x)`` for
``c > 0``, so two units whose incoming weights (bias included) point the same way compute the
same feature up to a positive scale. Per hidden layer, in order from the input:

1. each unit's incoming vector ``w_i = [W_i, b_i]`` (BatchNorm folded in when present) is
   normalised, ``u_i = w_i / ||w_i||``;
2. the closest pair ``(i, j)`` of live units by ``||u_i - u_j||`` is found;
3. if that distance is below ``beta``, unit ``j`` is deleted and its outgoing weights, times
   ``c = ||w_j|| / ||w_i||``, are added to unit ``i``'s; repeat until no pair is below ``beta``.

Choices the recipe leaves open, made here: of a pair, the unit with the *smaller* incoming norm is
the one deleted (the error of the replacement is ``||w_j|| · ||u_j - u_i||``, so this is the
cheaper side; ties keep the lower index); a unit with an all-zero incoming vector is dead (it
always outputs ``relu(0) = 0``) and is deleted at any ``beta > 0``. Merging keeps the
surviving units' incoming weights, so the distances among live units never change: repeatedly
taking the closest live pair is the same as walking the pairs below ``beta`` once in increasing
distance and skipping those with a deleted end — one GEMM and one sort per layer instead of an
O(n³) loop. Merging layer ``l`` changes the incoming weights of layer ``l + 1`` (its columns),
which are normalised after.

**Feature complexity** at ``beta``: the number of units left per layer (optionally as a
fraction of the width); :func:`feature_complexity_curve` gives it over a grid of ``beta``.

Supported models: ``nn.Sequential`` of ``Linear``, optional ``BatchNorm1d`` after a ``Linear``
(folded into it in the returned model), positively homogeneous activations (``ReLU``,
``LeakyReLU``) and shape-preserving no-ops (``Dropout``, ``Identity``). Anything else is a named
error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import RecordedResult

if TYPE_CHECKING:
    import torch

__all__ = ["RedundancyResult", "feature_complexity_curve", "merge_equivalent_units"]


@dataclass(frozen=True)
class RedundancyResult(RecordedResult):
    """A ReLU stack with its functionally equivalent units merged at one threshold.

    Records (analysis ``"weights_redundancy"``, one per merged hidden layer, layer = the name of
    the ``Linear`` whose outputs are merged) keys, exactly: ``beta``, ``units_before``,
    ``units_after``, ``fraction_removed``, ``accuracy_before``, ``accuracy_after``,
    ``loss_before``, ``loss_after``, ``curve_betas``, ``curve_units``.

    Attributes
    ----------
    beta : float
    layers : tuple of str
        The merged hidden layers (names of their ``Linear`` in the input model).
    units_before, units_after : tuple of int
        Width of each layer before and after merging.
    accuracy_before, accuracy_after, loss_before, loss_after : float
        On the data given (NaN without); the same for every layer's record.
    curve_betas : tuple of float
        The thresholds of the feature-complexity curve (empty when not asked for).
    curve_units : tuple of tuple of int
        ``curve_units[l][k]``: units left in layer ``l`` at ``curve_betas[k]``.
    model : nn.Sequential
        The smaller model (BatchNorm folded into the preceding ``Linear``), in eval mode; not
        part of the records or of ``to_dict()``.
    """

    analysis: ClassVar[str] = "weights_redundancy"

    beta: float
    layers: tuple[str, ...]
    units_before: tuple[int, ...]
    units_after: tuple[int, ...]
    accuracy_before: float
    accuracy_after: float
    loss_before: float
    loss_after: float
    curve_betas: tuple[float, ...] = ()
    curve_units: tuple[tuple[int, ...], ...] = ()
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def fraction_removed(self) -> float:
        """Share of the merged layers' units that were deleted, all layers together."""
        before = sum(self.units_before)
        return (before - sum(self.units_after)) / before if before else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("model", None)
        return out

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``weights_redundancy`` record per merged layer."""
        rows = []
        for i, name in enumerate(self.layers):
            before, after = int(self.units_before[i]), int(self.units_after[i])
            rows.append((name, {
                "beta": float(self.beta), "units_before": before, "units_after": after,
                "fraction_removed": (before - after) / before if before else 0.0,
                "accuracy_before": float(self.accuracy_before),
                "accuracy_after": float(self.accuracy_after),
                "loss_before": float(self.loss_before), "loss_after": float(self.loss_after),
                "curve_betas": [float(b) for b in self.curve_betas],
                "curve_units": [int(u) for u in self.curve_units[i]] if self.curve_units else []}))
        return rows


# ------------------------------------------------------------------------------- the stack


_ACTIVATIONS = ("ReLU", "LeakyReLU")
_NOOPS = ("Dropout", "Identity")


def _parse(model: Any) -> tuple[list[tuple[str, Any, Any]], list[int]]:
    """The linear layers of ``model`` as ``(name, Linear, BatchNorm1d or None)`` (float64
    copies not yet made) and the positions of the hidden ones (followed by an activation)."""
    import torch

    if not isinstance(model, torch.nn.Sequential):
        raise RepscopeTypeError(
            "model must be an nn.Sequential of Linear, BatchNorm1d, ReLU/LeakyReLU, Dropout; "
            f"got {type(model).__name__}.")
    linears: list[tuple[str, Any, Any]] = []
    hidden: list[int] = []
    expect_act = False
    for name, mod in model.named_children():
        kind = type(mod).__name__
        if isinstance(mod, torch.nn.Linear):
            if expect_act:
                raise RepscopeValueError(
                    f"model: Linear {name!r} follows Linear {linears[-1][0]!r} without an "
                    "activation between; merge the two linear maps first.")
            linears.append((name, mod, None))
            expect_act = True
        elif isinstance(mod, torch.nn.BatchNorm1d):
            if not linears or not expect_act or linears[-1][2] is not None:
                raise RepscopeValueError(
                    f"model: BatchNorm1d {name!r} must directly follow a Linear.")
            if mod.running_mean is None or mod.running_var is None:
                raise RepscopeValueError(
                    f"model: BatchNorm1d {name!r} keeps no running statistics, so it cannot be "
                    "folded into the preceding Linear.")
            linears[-1] = (linears[-1][0], linears[-1][1], mod)
        elif kind in _ACTIVATIONS:
            if not expect_act:
                raise RepscopeValueError(f"model: activation {name!r} does not follow a Linear.")
            hidden.append(len(linears) - 1)
            expect_act = False
        elif kind in _NOOPS:
            continue
        else:
            raise RepscopeValueError(
                f"model: module {name!r} ({kind}) is not supported by unit merging; expected "
                "Linear, BatchNorm1d, ReLU, LeakyReLU, Dropout or Identity.")
    if not linears:
        raise RepscopeValueError("model has no Linear layer.")
    hidden = [h for h in hidden if h + 1 < len(linears)]
    return linears, hidden


def _folded(linears: list[tuple[str, Any, Any]]) -> list[tuple[Any, Any]]:
    """(W, b) in float64 of each Linear with its BatchNorm (eval statistics) folded in."""
    import torch

    out = []
    for name, lin, bn in linears:
        W = lin.weight.detach().to(torch.float64).clone()
        b = (lin.bias.detach().to(torch.float64).clone() if lin.bias is not None
             else torch.zeros(W.shape[0], dtype=torch.float64))
        if bn is not None:
            scale = 1.0 / torch.sqrt(bn.running_var.detach().to(torch.float64) + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight.detach().to(torch.float64)
            shift = -bn.running_mean.detach().to(torch.float64) * scale
            if bn.bias is not None:
                shift = shift + bn.bias.detach().to(torch.float64)
            W, b = W * scale[:, None], b * scale + shift
        for what, t in (("weight", W), ("bias", b)):
            if not bool(torch.isfinite(t).all()):
                raise RepscopeValueError(f"model: Linear {name!r} has NaN or inf in its {what}.")
        out.append((W, b))
    return out


def _merge_layer(W: torch.Tensor, b: torch.Tensor, W_next: torch.Tensor,
                 beta: float) -> tuple[np.ndarray, torch.Tensor]:
    """Merge one layer's units; returns the kept indices and the new ``W_next`` columns."""
    import torch

    inc = torch.cat([W, b[:, None]], dim=1)
    norms = inc.norm(dim=1)
    n = len(norms)
    alive = np.ones(n, dtype=bool)
    W_next = W_next.clone()
    dead = (norms == 0).numpy()
    if beta > 0 and dead.any():
        alive &= ~dead
    if beta <= 0 or alive.sum() < 2:
        return np.flatnonzero(alive), W_next[:, torch.as_tensor(alive)]
    u = inc / torch.where(norms > 0, norms, 1.0)[:, None]
    d2 = (2.0 - 2.0 * (u @ u.T)).clamp_min(0.0)
    iu, ju = np.triu_indices(n, k=1)
    dist = torch.sqrt(d2).numpy()[iu, ju]
    below = np.flatnonzero(dist < beta)
    if below.size:
        order = below[np.argsort(dist[below], kind="stable")]
        norm_np = norms.numpy()
        for e in order:
            i, j = int(iu[e]), int(ju[e])
            if not (alive[i] and alive[j]):
                continue
            if norm_np[j] > norm_np[i]:  # delete the smaller-norm unit
                i, j = j, i
            c = norm_np[j] / norm_np[i]
            W_next[:, i] += c * W_next[:, j]
            alive[j] = False
    keep = np.flatnonzero(alive)
    return keep, W_next[:, torch.as_tensor(keep)]


def _merged_weights(model: Any, beta: float, layers: Sequence[str] | None
                    ) -> tuple[list[tuple[str, Any, Any]], list[int], list[tuple[Any, Any]],
                               list[int], list[int]]:
    import torch

    linears, hidden = _parse(model)
    names = [n for n, _, _ in linears]
    if layers is not None:
        wanted = [str(x) for x in layers]
        hidden_names = {names[h] for h in hidden}
        unknown = [x for x in wanted if x not in hidden_names]
        if unknown:
            raise RepscopeValueError(
                f"layers: {unknown[0]!r} is not a hidden Linear of the model; hidden layers: "
                f"{sorted(hidden_names)}.")
        hidden = [h for h in hidden if names[h] in set(wanted)]
    weights = _folded(linears)
    before, after = [], []
    for h in hidden:
        W, b = weights[h]
        W_next, b_next = weights[h + 1]
        keep, W_next_new = _merge_layer(W, b, W_next, float(beta))
        idx = torch.as_tensor(keep)
        weights[h] = (W[idx], b[idx])
        weights[h + 1] = (W_next_new, b_next)
        before.append(len(b))
        after.append(len(keep))
    return linears, hidden, weights, before, after


def _build(model: Any, linears: list[tuple[str, Any, Any]], weights: list[tuple[Any, Any]]) -> Any:
    """A new ``nn.Sequential`` with the same names, the merged Linear layers and no
    BatchNorm1d (folded)."""
    from collections import OrderedDict

    import torch

    by_name = {n: i for i, (n, _, _) in enumerate(linears)}
    folded_bn = {id(bn) for _, _, bn in linears if bn is not None}
    mods: OrderedDict[str, torch.nn.Module] = OrderedDict()
    for name, mod in model.named_children():
        if id(mod) in folded_bn:
            continue
        if name in by_name:
            W, b = weights[by_name[name]]
            dtype = mod.weight.dtype
            lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=True, dtype=dtype,
                                  device=mod.weight.device)
            with torch.no_grad():
                lin.weight.copy_(W.to(dtype))
                lin.bias.copy_(b.to(dtype))
            mods[name] = lin
        else:
            import copy

            mods[name] = copy.deepcopy(mod)
    return torch.nn.Sequential(mods).eval()


def _betas(betas: Any) -> tuple[float, ...]:
    out = tuple(float(b) for b in np.atleast_1d(np.asarray(betas, dtype=np.float64)))
    if not out or not all(math.isfinite(b) and b >= 0 for b in out):
        raise RepscopeValueError(f"betas must be finite numbers >= 0; got {betas!r}.")
    return out


def feature_complexity_curve(model: Any, betas: Any, *, layers: Sequence[str] | None = None,
                             normalize: bool = False, progress: bool = True
                             ) -> tuple[tuple[str, ...], np.ndarray]:
    """Units left per hidden layer after merging at each threshold (the feature complexity).

    Parameters
    ----------
    model : nn.Sequential
    betas : sequence of float
        Thresholds on ``||u_i - u_j||`` (0 merges nothing; 2 is the largest distance of unit
        vectors).
    layers : sequence of str or None
        Hidden layers to merge (names of their ``Linear``); None: all.
    normalize : bool, default=False
        Divide by each layer's width.
    progress : bool, default=True

    Returns
    -------
    layers : tuple of str
    units : ndarray, shape (n_layers, n_betas)
        int counts, or float fractions with ``normalize``.
    """
    from repscope._progress import progress_for

    grid = _betas(betas)
    cols = []
    names: tuple[str, ...] = ()
    before: list[int] = []
    with progress_for(progress, "feature-merging thresholds", len(grid)) as advance:
        for beta in grid:
            linears, hidden, _, before, after = _merged_weights(model, beta, layers)
            names = tuple(linears[h][0] for h in hidden)
            cols.append(after)
            advance(1)
    units = np.asarray(cols, dtype=np.int64).T.reshape(len(names), len(grid))
    if normalize:
        return names, units / np.asarray(before, dtype=np.float64)[:, None]
    return names, units


def merge_equivalent_units(model: Any, beta: float, *, layers: Sequence[str] | None = None,
                           data: Any = None, curve: Any = None,
                           progress: bool = True) -> RedundancyResult:
    """Merge functionally equivalent units of a ReLU ``nn.Sequential`` at threshold ``beta``.

    Parameters
    ----------
    model : nn.Sequential
        Linear / BatchNorm1d / ReLU / LeakyReLU / Dropout / Identity layers (not changed).
    beta : float
        Pairs of units with ``||u_i - u_j|| < beta`` (normalised incoming weights with bias) are
        merged; ``0`` merges nothing. Exact duplicates up to a positive scale are at distance 0
        and merge at any ``beta > 0`` with no change of the function.
    layers : sequence of str or None
        Hidden layers to merge (names of their ``Linear``); None: every hidden layer.
    data : (X, y) or None
        Labelled data for accuracy and cross-entropy before and after.
    curve : sequence of float or None
        Thresholds for the feature-complexity curve stored in the result.
    progress : bool, default=True
        A bar over the curve's thresholds.

    Returns
    -------
    RedundancyResult
        With ``model``, the smaller network.
    """
    import torch

    beta = float(beta)
    if not (math.isfinite(beta) and beta >= 0):
        raise RepscopeValueError(f"beta must be a finite number >= 0; got {beta!r}.")
    linears, hidden, weights, before, after = _merged_weights(model, beta, layers)
    small = _build(model, linears, weights)
    acc_b = acc_a = loss_b = loss_a = math.nan
    if data is not None:
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise RepscopeTypeError(
                f"data must be a pair (inputs, integer labels); got {type(data).__name__}.")
        X = torch.as_tensor(np.asarray(data[0]) if not isinstance(data[0], torch.Tensor)
                            else data[0])
        y = torch.as_tensor(np.asarray(data[1]) if not isinstance(data[1], torch.Tensor)
                            else data[1]).long()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                X = X.to(linears[0][1].weight.dtype)
                for net, which in ((model, "before"), (small, "after")):
                    logits = net(X)
                    loss = float(torch.nn.functional.cross_entropy(logits, y))
                    acc = float((logits.argmax(-1) == y).float().mean())
                    if which == "before":
                        loss_b, acc_b = loss, acc
                    else:
                        loss_a, acc_a = loss, acc
        finally:
            model.train(was_training)
    curve_betas: tuple[float, ...] = ()
    curve_units: tuple[tuple[int, ...], ...] = ()
    if curve is not None:
        _, units = feature_complexity_curve(model, curve, layers=layers, progress=progress)
        curve_betas = _betas(curve)
        curve_units = tuple(tuple(int(v) for v in row) for row in units)
    return RedundancyResult(
        beta=beta, layers=tuple(linears[h][0] for h in hidden),
        units_before=tuple(before), units_after=tuple(after),
        accuracy_before=acc_b, accuracy_after=acc_a, loss_before=loss_b, loss_after=loss_a,
        curve_betas=curve_betas, curve_units=curve_units, model=small)
