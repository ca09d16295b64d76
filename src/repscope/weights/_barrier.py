"""Loss barriers on the linear path between two weight vectors (Landscaping LMC, Singh et al.
2024; layer-wise LMC, Adilova et al. 2024).

With ``L(alpha) = L((1 - alpha) theta_A + alpha theta_B)`` on a grid of alphas (0 and 1
included), the barrier is the standard

    B = max_alpha [ L(alpha) - ((1 - alpha) L(0) + alpha L(1)) ],

which is >= 0 because the endpoints contribute 0. The accuracy barrier uses the sign that makes
a drop in accuracy positive:

    B_acc = max_alpha [ ((1 - alpha) A(0) + alpha A(1)) - A(alpha) ].

**Evaluation API.** ``loss_fn(model)`` is called with a model that holds the weights of one
alpha (in eval mode, under ``torch.no_grad()``) and returns the loss as a float (or a 0-d
tensor), a pair ``(loss, accuracy)`` (what :func:`repscope.weights._toy.evaluate` returns), or a
mapping with ``"loss"`` and optionally ``"accuracy"``. ``metric_fn(model) -> float`` adds an
accuracy when ``loss_fn`` gives none. The model passed in is never modified: a copy holds the
interpolated weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from repscope._progress import ProgressLike, progress_for
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import RecordedResult, Result
from repscope.weights._state import (
    as_state_dict,
    check_compatible,
    check_keys,
    is_float,
    lerp_tensor,
    tensor_meta,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "BarrierResult",
    "LayerBarrierResult",
    "TaylorBarrierResult",
    "barrier_curve",
    "default_blocks",
    "layerwise_barriers",
    "reset_batchnorm",
    "taylor_barrier",
]


def _jsonable_float(x: float | None) -> float | None:
    return None if x is None else float(x)


@dataclass(frozen=True)
class BarrierResult(RecordedResult):
    """The loss (and accuracy) along the linear path between two state dicts, and its barrier.

    Record keys (analysis ``"weights_barrier"``, one record): ``alphas``, ``loss``,
    ``accuracy``, ``excess``, ``barrier``, ``barrier_alpha``, ``midpoint_excess``,
    ``accuracy_barrier``, ``loss_a``, ``loss_b``, ``accuracy_a``, ``accuracy_b``, ``label``,
    ``n_alphas``, ``reset_bn``. ``accuracy``, ``accuracy_barrier``, ``accuracy_a`` and
    ``accuracy_b`` are null without an accuracy; ``midpoint_excess`` is null when 0.5 is not on
    the grid.

    Attributes
    ----------
    alphas : tuple of float
        The grid, increasing, from 0 to 1.
    loss : tuple of float
        ``L(alpha)`` at each alpha.
    accuracy : tuple of float or None
        ``A(alpha)`` at each alpha, when the evaluation gives one.
    label : str
        What the pair is ("naive", "weight matching", ...).
    reset_bn : bool
        Whether BatchNorm statistics were recomputed at the interior alphas.
    """

    analysis: ClassVar[str] = "weights_barrier"

    alphas: tuple[float, ...]
    loss: tuple[float, ...]
    accuracy: tuple[float, ...] | None = None
    label: str = ""
    reset_bn: bool = False

    @property
    def n_alphas(self) -> int:
        return len(self.alphas)

    @property
    def loss_a(self) -> float:
        """``L(0)``."""
        return self.loss[0]

    @property
    def loss_b(self) -> float:
        """``L(1)``."""
        return self.loss[-1]

    @property
    def accuracy_a(self) -> float | None:
        return None if self.accuracy is None else self.accuracy[0]

    @property
    def accuracy_b(self) -> float | None:
        return None if self.accuracy is None else self.accuracy[-1]

    @property
    def excess(self) -> tuple[float, ...]:
        """``L(alpha) - ((1 - alpha) L(0) + alpha L(1))`` at each alpha (0 at the ends)."""
        la, lb = self.loss_a, self.loss_b
        return tuple(x - ((1.0 - a) * la + a * lb) for a, x in zip(self.alphas, self.loss))

    @property
    def barrier(self) -> float:
        """``max_alpha excess(alpha)``, >= 0."""
        return max(self.excess)

    @property
    def barrier_alpha(self) -> float:
        """The alpha where the barrier is reached."""
        ex = self.excess
        return self.alphas[max(range(len(ex)), key=ex.__getitem__)]

    @property
    def midpoint_excess(self) -> float | None:
        """``excess(0.5)`` (what :func:`taylor_barrier` estimates), None when 0.5 is off the
        grid; negative when the midpoint is better than the chord."""
        for a, e in zip(self.alphas, self.excess):
            if abs(a - 0.5) < 1e-12:
                return e
        return None

    @property
    def accuracy_barrier(self) -> float | None:
        """``max_alpha [((1 - alpha) A(0) + alpha A(1)) - A(alpha)]``: positive when accuracy
        drops below the chord; None without an accuracy."""
        if self.accuracy is None:
            return None
        aa, ab = self.accuracy[0], self.accuracy[-1]
        return max((1.0 - a) * aa + a * ab - acc for a, acc in zip(self.alphas, self.accuracy))

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        values = {
            "alphas": list(self.alphas),
            "loss": list(self.loss),
            "accuracy": None if self.accuracy is None else list(self.accuracy),
            "excess": list(self.excess),
            "barrier": self.barrier,
            "barrier_alpha": self.barrier_alpha,
            "midpoint_excess": _jsonable_float(self.midpoint_excess),
            "accuracy_barrier": _jsonable_float(self.accuracy_barrier),
            "loss_a": self.loss_a,
            "loss_b": self.loss_b,
            "accuracy_a": _jsonable_float(self.accuracy_a),
            "accuracy_b": _jsonable_float(self.accuracy_b),
            "label": self.label,
            "n_alphas": self.n_alphas,
            "reset_bn": bool(self.reset_bn),
        }
        return [("", values)]


@dataclass(frozen=True)
class LayerBarrierResult(RecordedResult):
    """Layer-wise barriers: for each block, the barrier of the path on which only that block
    moves from ``a`` to ``b`` and every other tensor stays at ``a``.

    Record keys (analysis ``"weights_layer_barrier"``, one record per block, its layer the
    block name): ``block``, ``keys``, ``barrier``, ``accuracy_barrier``, ``loss_a``,
    ``loss_end``, ``label``, ``n_alphas``. ``loss_end`` is the loss at the block's end point
    (``a`` with this block from ``b``); ``accuracy_barrier`` is null without an accuracy.

    Attributes
    ----------
    blocks : tuple of str
        Block names, in state-dict order.
    keys : tuple of tuple of str
        The state-dict keys of each block.
    curves : tuple of BarrierResult
        The path of each block.
    label : str
    """

    analysis: ClassVar[str] = "weights_layer_barrier"

    blocks: tuple[str, ...]
    keys: tuple[tuple[str, ...], ...]
    curves: tuple[BarrierResult, ...]
    label: str = ""

    @property
    def barriers(self) -> dict[str, float]:
        """Block name -> barrier."""
        return {blk: c.barrier for blk, c in zip(self.blocks, self.curves)}

    @property
    def max_barrier(self) -> float:
        return max(c.barrier for c in self.curves)

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        return [(blk, {
            "block": blk,
            "keys": list(keys),
            "barrier": curve.barrier,
            "accuracy_barrier": _jsonable_float(curve.accuracy_barrier),
            "loss_a": curve.loss_a,
            "loss_end": curve.loss_b,
            "label": self.label,
            "n_alphas": curve.n_alphas,
        }) for blk, keys, curve in zip(self.blocks, self.keys, self.curves)]


@dataclass(frozen=True)
class TaylorBarrierResult(Result):
    """The second-order estimate of the midpoint excess (see :func:`taylor_barrier`).

    Attributes
    ----------
    estimate : float
        ``gradient_term + curvature_term``.
    gradient_term : float
        ``1/4 (g_A - g_B) . Delta``.
    curvature_term : float
        ``1/16 Delta^T (H_A + H_B) Delta``.
    loss_a, loss_b : float
        The loss at the two ends of the path (with ``keys``, ``loss_b`` is at ``a`` with those
        tensors from ``b``).
    n_keys : int
        How many tensors moved.
    """

    estimate: float
    gradient_term: float
    curvature_term: float
    loss_a: float
    loss_b: float
    n_keys: int

    def __float__(self) -> float:
        return float(self.estimate)


# ---------------------------------------------------------------------------------------------
# helpers


def _check_alphas(alphas: int | Sequence[float]) -> list[float]:
    if isinstance(alphas, bool):
        raise RepscopeTypeError(f"alphas: expected a number of points or a sequence; got {alphas!r}.")
    if isinstance(alphas, int):
        if alphas < 3:
            raise RepscopeValueError(
                f"alphas: expected at least 3 points (0, 1 and one between); got {alphas}.")
        return [i / (alphas - 1) for i in range(alphas)]
    try:
        values = [float(a) for a in alphas]
    except (TypeError, ValueError):
        raise RepscopeTypeError(
            f"alphas: expected a number of points or a sequence of numbers; got {alphas!r}."
        ) from None
    bad = [a for a in values if not (math.isfinite(a) and 0.0 <= a <= 1.0)]
    if bad:
        raise RepscopeValueError(f"alphas: expected values in [0, 1]; got {bad[:3]}.")
    grid = sorted({0.0, 1.0, *values})
    if len(grid) < 3:
        raise RepscopeValueError(
            f"alphas: expected at least one value strictly between 0 and 1; got {values}.")
    return grid


def _evaluate(loss_fn: Callable[[Any], Any], metric_fn: Callable[[Any], Any] | None,
              model: Any) -> tuple[float, float | None]:
    import torch

    with torch.no_grad():
        out = loss_fn(model)
        acc: Any = None
        if isinstance(out, Mapping):
            if "loss" not in out:
                raise RepscopeValueError(
                    f"loss_fn: a mapping it returns needs a 'loss' entry; got keys {sorted(out)}.")
            loss, acc = out["loss"], out.get("accuracy")
        elif isinstance(out, (tuple, list)):
            if len(out) != 2:
                raise RepscopeValueError(
                    f"loss_fn: expected a loss, (loss, accuracy) or a mapping; got a sequence of "
                    f"{len(out)}.")
            loss, acc = out
        else:
            loss = out
        if metric_fn is not None:
            if acc is not None:
                raise RepscopeValueError(
                    "metric_fn: loss_fn already returns an accuracy; give one of the two.")
            acc = metric_fn(model)
    try:
        return float(loss), None if acc is None else float(acc)
    except (TypeError, ValueError):
        raise RepscopeTypeError(
            f"loss_fn: expected numbers (a float or 0-d tensor); got {type(loss).__name__}"
            + ("" if acc is None else f" and {type(acc).__name__}") + ".") from None


def _batches_list(batches: Any) -> Any:
    import torch

    if batches is None:
        return None
    if isinstance(batches, (torch.Tensor, Mapping)):
        return [batches]
    if iter(batches) is batches:  # a one-shot iterator: keep it for every alpha
        return list(batches)
    return batches


class _Working:
    """A private copy of ``model`` whose tensors are overwritten with one point of a path."""

    def __init__(self, model: Any, a: Mapping[str, torch.Tensor]) -> None:
        import torch

        if not isinstance(model, torch.nn.Module):
            raise RepscopeTypeError(
                f"model: expected a torch.nn.Module (the architecture of the two state dicts); "
                f"got a {type(model).__name__}.")
        self.model = copy.deepcopy(model).eval()
        self.targets = self.model.state_dict()
        only_model = [k for k in self.targets if k not in a]
        only_a = [k for k in a if k not in self.targets]
        if only_model or only_a:
            raise RepscopeValueError(
                f"model and a differ in keys: {len(only_a)} only in a"
                + (f" (first: {only_a[0]!r})" if only_a else "")
                + f", {len(only_model)} only in the model"
                + (f" (first: {only_model[0]!r})" if only_model else "")
                + "; expected state dicts of this model.")
        bad = [k for k in a if tuple(self.targets[k].shape) != tensor_meta(a, k)[0]]
        if bad:
            k = bad[0]
            raise RepscopeValueError(
                f"model and a differ in the shapes of {len(bad)} tensors (first: {k!r} "
                f"{list(self.targets[k].shape)} in the model vs {list(tensor_meta(a, k)[0])}).")

    def load(self, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float,
             moving: set[str]) -> None:
        import torch

        with torch.no_grad():
            for key, target in self.targets.items():
                ta = a[key]
                if key in moving and is_float(ta.dtype):
                    target.copy_(lerp_tensor(ta, b[key], alpha))
                else:
                    target.copy_(ta)


def _path(work: _Working, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
          moving: set[str], grid: list[float], loss_fn: Callable[[Any], Any],
          metric_fn: Callable[[Any], Any] | None, batches: Any,
          advance: Callable[[int], None]) -> tuple[list[float], list[float | None]]:
    losses: list[float] = []
    accs: list[float | None] = []
    for alpha in grid:
        work.load(a, b, alpha, moving)
        if batches is not None and 0.0 < alpha < 1.0:
            reset_batchnorm(work.model, batches)
        loss, acc = _evaluate(loss_fn, metric_fn, work.model)
        losses.append(loss)
        accs.append(acc)
        advance(1)
    if any(acc is None for acc in accs) and not all(acc is None for acc in accs):
        raise RepscopeValueError(
            "loss_fn: it returned an accuracy at some alphas and none at others.")
    return losses, accs


def _result(grid: list[float], losses: list[float], accs: list[float | None], label: str,
            reset: bool) -> BarrierResult:
    accuracy = None if accs[0] is None else tuple(float(x) for x in accs)  # type: ignore[arg-type]
    return BarrierResult(alphas=tuple(grid), loss=tuple(losses), accuracy=accuracy,
                         label=str(label), reset_bn=reset)


# ---------------------------------------------------------------------------------------------
# public functions


def barrier_curve(
    model: Any, a: Any, b: Any, loss_fn: Callable[[Any], Any], *,
    alphas: int | Sequence[float] = 11, metric_fn: Callable[[Any], Any] | None = None,
    reset_bn: Any = None, label: str = "", progress: ProgressLike = True,
) -> BarrierResult:
    """Loss (and accuracy) along ``(1 - alpha) a + alpha b`` and the barrier.

    Parameters
    ----------
    model : nn.Module
        The architecture of ``a`` and ``b`` (its own weights are not used, and it is not
        modified: a copy holds the interpolated weights).
    a, b : nn.Module, mapping or path
        The two state dicts (anything :func:`~repscope.weights._state.as_state_dict` takes),
        checked by :func:`~repscope.weights._state.check_compatible`.
    loss_fn : callable
        ``loss_fn(model)`` -> loss, ``(loss, accuracy)`` or ``{"loss": ..., "accuracy": ...}``
        (see the module docstring); called in eval mode under ``torch.no_grad()``.
    alphas : int or sequence of float, default=11
        The number of evenly spaced points from 0 to 1, or the points themselves (0 and 1 are
        added when missing).
    metric_fn : callable, optional
        ``metric_fn(model) -> accuracy`` when ``loss_fn`` returns only a loss.
    reset_bn : batches, optional
        Inputs for :func:`reset_batchnorm` at every interior alpha (the endpoints keep their
        own statistics): a tensor (one batch) or a re-iterable of batches.
    label : str, default=""
        What the pair is ("naive", "weight matching", ...), stored with the record.
    progress : bool or callable, default=True
        A bar over the alphas (drawn only on a terminal), or a caller's ``advance(k)``.

    Returns
    -------
    BarrierResult
    """
    sa, sb = as_state_dict(a, name="a"), as_state_dict(b, name="b")
    check_compatible(sa, sb)
    grid = _check_alphas(alphas)
    work = _Working(model, sa)
    batches = _batches_list(reset_bn)
    with progress_for(progress, "barrier alphas", len(grid), prefix="weights") as advance:
        losses, accs = _path(work, sa, sb, set(sa), grid, loss_fn, metric_fn, batches, advance)
    return _result(grid, losses, accs, label, batches is not None)


def default_blocks(sd: Any) -> dict[str, list[str]]:
    """Group the keys of ``sd`` by module prefix (``"0"`` for ``"0.weight"`` and ``"0.bias"``),
    in state-dict order, keeping groups that hold a floating-point tensor."""
    s = as_state_dict(sd, name="sd")
    groups: dict[str, list[str]] = {}
    for key in s:
        groups.setdefault(key.rpartition(".")[0] or key, []).append(key)
    return {name: keys for name, keys in groups.items()
            if any(is_float(tensor_meta(s, k)[1]) for k in keys)}


def _resolve_blocks(blocks: Any, sd: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    if blocks is None:
        return default_blocks(sd)
    if isinstance(blocks, str):
        blocks = [blocks]
    out: dict[str, list[str]] = {}
    if isinstance(blocks, Mapping):
        for name, keys in blocks.items():
            out[str(name)] = check_keys(keys, sd, name=f"blocks[{name!r}]")
    else:
        for prefix in blocks:
            keys = [k for k in sd if k == prefix or k.startswith(f"{prefix}.")]
            if not keys:
                raise RepscopeValueError(
                    f"blocks: the prefix {prefix!r} matches no key of the state dict; expected "
                    f"module prefixes such as {sorted(default_blocks(sd))[:3]}.")
            out[str(prefix)] = keys
    if not out:
        raise RepscopeValueError("blocks: expected at least one block; got none.")
    return out


def layerwise_barriers(
    model: Any, a: Any, b: Any, loss_fn: Callable[[Any], Any], *,
    blocks: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    alphas: int | Sequence[float] = 11, metric_fn: Callable[[Any], Any] | None = None,
    reset_bn: Any = None, label: str = "", progress: ProgressLike = True,
) -> LayerBarrierResult:
    """The barrier of each block's path: only that block's tensors move from ``a`` to ``b``,
    all others stay at ``a`` (so the end point is ``a`` with that block from ``b``).

    Parameters
    ----------
    model, a, b, loss_fn, alphas, metric_fn, reset_bn, label, progress
        As in :func:`barrier_curve`.
    blocks : mapping of name to keys, sequence of module prefixes, or None
        The blocks; by default the keys grouped by module prefix (:func:`default_blocks`).

    Returns
    -------
    LayerBarrierResult
    """
    sa, sb = as_state_dict(a, name="a"), as_state_dict(b, name="b")
    check_compatible(sa, sb)
    grid = _check_alphas(alphas)
    groups = _resolve_blocks(blocks, sa)
    work = _Working(model, sa)
    batches = _batches_list(reset_bn)
    curves = []
    with progress_for(progress, "layer-wise barrier alphas", len(grid) * len(groups),
                      prefix="weights") as advance:
        for keys in groups.values():
            losses, accs = _path(work, sa, sb, set(keys), grid, loss_fn, metric_fn, batches,
                                 advance)
            curves.append(_result(grid, losses, accs, label, batches is not None))
    return LayerBarrierResult(blocks=tuple(groups), keys=tuple(tuple(k) for k in groups.values()),
                              curves=tuple(curves), label=str(label))


def reset_batchnorm(model: Any, batches: Any, *, progress: ProgressLike = False) -> Any:
    """Recompute the running statistics of every BatchNorm module of ``model`` from ``batches``
    (the REPAIR-free "reset" after interpolation), in place.

    Each BatchNorm's statistics are zeroed and its momentum set to None (a cumulative average
    over the batches, each batch weighted equally); only the BatchNorm modules are in train
    mode during the forward passes (dropout and the rest stay as they were), under
    ``torch.no_grad()``. Momenta and train/eval flags are restored afterwards.

    Parameters
    ----------
    model : nn.Module
        Modified in place.
    batches : tensor or iterable of batches
        Each batch a tensor (``model(x)``), a tuple or list (``model(batch[0])``) or a mapping
        (``model(**batch)``); tensors are moved to the model's device.
    progress : bool or callable, default=False

    Returns
    -------
    nn.Module
        ``model``.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise RepscopeTypeError(f"model: expected a torch.nn.Module; got a {type(model).__name__}.")
    norms = [m for m in model.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        raise RepscopeValueError(
            "model: expected BatchNorm modules with running statistics to reset; it has none.")
    batches = _batches_list(batches)
    total = len(batches) if hasattr(batches, "__len__") else None
    if total == 0:
        raise RepscopeValueError("batches: expected at least one batch; got none.")
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    flags = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    n = 0
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad(), progress_for(progress, "BatchNorm batches", total,
                                           prefix="weights") as advance:
            for batch in batches:
                _forward(model, batch, device)
                n += 1
                advance(1)
    finally:
        for norm, momentum in momenta.items():
            norm.momentum = momentum
        for module, flag in flags.items():
            module.training = flag
    if n == 0:
        raise RepscopeValueError("batches: expected at least one batch; got none.")
    return model


def _forward(model: Any, batch: Any, device: Any) -> None:
    import torch

    def move(x: Any) -> Any:
        return x.to(device) if isinstance(x, torch.Tensor) else x

    if isinstance(batch, torch.Tensor):
        model(move(batch))
    elif isinstance(batch, Mapping):
        model(**{k: move(v) for k, v in batch.items()})
    elif isinstance(batch, (tuple, list)) and batch:
        model(move(batch[0]))
    else:
        raise RepscopeTypeError(
            f"batches: expected tensors, (inputs, ...) tuples or mappings of model inputs; got "
            f"a {type(batch).__name__}.")


def taylor_barrier(
    model: Any, a: Any, b: Any, loss_on_batch: Callable[[Any], Any], *,
    keys: Sequence[str] | str | None = None,
) -> TaylorBarrierResult:
    """The second-order estimate of the midpoint excess
    ``L(1/2) - (L(0) + L(1)) / 2`` from two gradients and two Hessian-vector products.

    [reconstructed] in the recipe (cluster C §1, Landscaping LMC): a second-order Taylor
    expansion of the loss around each end point, evaluated at the midpoint, averaged,

        B^ = 1/4 (g_A - g_B) . Delta + 1/16 Delta^T (H_A + H_B) Delta,   Delta = theta_B - theta_A.

    It is faithful only for near pairs (aligned, or spawned late in training): the recipe
    measured -0.040 predicted vs -0.042 actual after weight matching, but -0.035 vs +0.170 for
    an unaligned pair. Compare it with :attr:`BarrierResult.midpoint_excess` (which can be
    negative), not with the clipped barrier.

    Parameters
    ----------
    model : nn.Module
        The architecture (not modified; evaluated in eval mode).
    a, b : nn.Module, mapping or path
        The two state dicts.
    loss_on_batch : callable
        ``loss_on_batch(model) -> 0-d tensor``: the loss on a fixed batch, differentiable in
        the model's weights (the gradients and HVPs use double backward).
    keys : str or sequence of str, optional
        Restrict Delta to these tensors (one layer): the path is then the layer-wise one of
        :func:`layerwise_barriers`, from ``a`` to ``a`` with these tensors from ``b``, and the
        second expansion point is that end point.

    Returns
    -------
    TaylorBarrierResult
    """
    import torch
    from torch.func import functional_call

    sa, sb = as_state_dict(a, name="a"), as_state_dict(b, name="b")
    check_compatible(sa, sb)
    chosen = [k for k in (check_keys(keys, sa) if keys is not None else list(sa))
              if is_float(tensor_meta(sa, k)[1])]
    if not chosen:
        raise RepscopeValueError("keys: expected at least one floating-point tensor; got none.")
    work = _Working(model, sa)

    class _Call(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self) -> Any:
            return loss_on_batch(self.inner)

    wrapper = _Call(work.model)
    moving = set(chosen)
    end_b = {k: (sb[k] if k in moving else sa[k]) for k in sa}
    delta = {k: (sb[k].to(torch.float64) - sa[k].to(torch.float64)) for k in chosen}

    def at(point: Mapping[str, torch.Tensor]) -> tuple[float, float, float]:
        tensors = {}
        for key, target in work.targets.items():
            t = point[key].detach().to(device=target.device, dtype=target.dtype, copy=True)
            tensors[key] = t.requires_grad_(key in moving)
        loss = functional_call(wrapper, {f"inner.{k}": v for k, v in tensors.items()}, ())
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
            raise RepscopeTypeError(
                "loss_on_batch: expected a scalar tensor that depends on the weights (computed "
                f"with gradients); got {type(loss).__name__}"
                + (f" of shape {list(loss.shape)}" if isinstance(loss, torch.Tensor) else "") + ".")
        leaves = [tensors[k] for k in chosen]
        grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
        d = [delta[k].to(tensors[k].dtype) for k in chosen]
        g_dot = sum(((g * dk).sum() for g, dk in zip(grads, d) if g is not None),
                    torch.zeros((), dtype=loss.dtype))
        g_delta = float(sum(float(torch.sum(g.detach().to(torch.float64) * delta[k]))
                            for g, k in zip(grads, chosen) if g is not None))
        curv = 0.0
        if isinstance(g_dot, torch.Tensor) and g_dot.requires_grad:
            hvps = torch.autograd.grad(g_dot, leaves, allow_unused=True)
            curv = float(sum(float(torch.sum(h.to(torch.float64) * delta[k]))
                             for h, k in zip(hvps, chosen) if h is not None))
        return float(loss.detach()), g_delta, curv

    loss_a, g_a, h_a = at(sa)
    loss_b, g_b, h_b = at(end_b)
    grad_term = 0.25 * (g_a - g_b)
    curv_term = (h_a + h_b) / 16.0
    return TaylorBarrierResult(estimate=grad_term + curv_term, gradient_term=grad_term,
                               curvature_term=curv_term, loss_a=loss_a, loss_b=loss_b,
                               n_keys=len(chosen))
