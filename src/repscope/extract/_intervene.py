"""Write hooks: replace module outputs during forwards inside a ``with`` block.

:func:`intervene` is the writing counterpart of :func:`repscope.extract.capture`: each named
module's output (the first tensor of a tuple/list/dict output) is replaced by ``edit(output)``
for every forward run inside the block, and the hooks are removed in ``finally``.
:func:`add_direction` and :func:`ablate_direction` build the two common edits (steering by a
vector, projecting a direction out).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.extract._hooks import resolve_modules

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["ablate_direction", "add_direction", "intervene"]

Edit = Callable[["torch.Tensor"], "torch.Tensor"]


def _replace_first_tensor(output: Any, edit: Callable[[Any], Any], name: str) -> Any:
    """``output`` with its first tensor replaced by ``edit(tensor)`` (same container type)."""
    import torch

    if isinstance(output, torch.Tensor):
        new = edit(output)
        _check_edited(name, output, new)
        return new
    if isinstance(output, (tuple, list)):
        for i, v in enumerate(output):
            if isinstance(v, torch.Tensor):
                new = edit(v)
                _check_edited(name, v, new)
                items = list(output)
                items[i] = new
                return type(output)(items) if isinstance(output, list) else tuple(items)
        raise RepscopeTypeError(
            f"intervene: module {name!r} returned a {type(output).__name__} holding no tensor; "
            "edit a submodule that returns a tensor."
        )
    if isinstance(output, Mapping):
        for k, v in output.items():
            if isinstance(v, torch.Tensor):
                new = edit(v)
                _check_edited(name, v, new)
                output[k] = new  # type: ignore[index]  # ModelOutput / dict: set in place
                return output
    raise RepscopeTypeError(
        f"intervene: module {name!r} returned {type(output).__name__}, which holds no tensor to "
        "edit; edit a submodule that returns a tensor (or a tuple whose first entry is one)."
    )


def _check_edited(name: str, old: Any, new: Any) -> None:
    import torch

    if not isinstance(new, torch.Tensor):
        raise RepscopeTypeError(
            f"intervene: the edit for {name!r} must return a torch.Tensor; got "
            f"{type(new).__name__}."
        )
    if new.shape != old.shape:
        raise RepscopeValueError(
            f"intervene: the edit for {name!r} must keep the output shape {tuple(old.shape)}; "
            f"got {tuple(new.shape)}."
        )


@contextlib.contextmanager
def intervene(
    model: torch.nn.Module, edits: Mapping[str, Callable[[torch.Tensor], torch.Tensor]]
) -> Iterator[None]:
    """Replace the outputs of named modules by ``edit(output)`` during forwards in the block.

    For each ``name -> edit`` in ``edits`` a forward hook on ``model``'s submodule ``name``
    returns the module's output with its first tensor (the whole output when it is a tensor; the
    hidden states of a Hugging Face decoder layer's tuple) replaced by ``edit(tensor)``, so every
    later module sees the edited value. Hooks are registered on entry and removed in
    ``finally`` (also when the forward raises). The model is otherwise untouched.

    Parameters
    ----------
    model : torch.nn.Module
        The model (a zoo ``LoadedModel`` is unwrapped to its ``.model``).
    edits : mapping of str to callable
        Module paths as in ``model.named_modules()`` (e.g. ``"model.layers.14"``) to
        ``edit(tensor) -> tensor`` of the same shape. An edit may modify its input in place.

    Raises
    ------
    UnknownNameError
        A name is not a module path of ``model`` (the message lists the closest names).
    RepscopeTypeError
        ``edits`` is not a mapping, an edit is not callable, or (during a forward) an edit
        returned something other than a tensor.
    RepscopeValueError
        An edit changed the output's shape (raised during the forward).

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    >>> with intervene(net, {"0": lambda h: h * 0}):
    ...     y = net(torch.ones(2, 3))
    >>> float(y.abs().sum()), len(net[0]._forward_hooks)
    (0.0, 0)
    """
    model = _unwrap(model)
    if not isinstance(edits, Mapping):
        raise RepscopeTypeError(
            f"intervene: edits must be a mapping of module path to edit function; got "
            f"{type(edits).__name__}."
        )
    for name, fn in edits.items():
        if not callable(fn):
            raise RepscopeTypeError(
                f"intervene: the edit for {name!r} must be callable (tensor -> tensor); got "
                f"{type(fn).__name__}."
            )
    modules = resolve_modules(model, list(edits))

    def make_hook(name: str, fn: Callable[[Any], Any]) -> Callable[..., Any]:
        def hook(_module: Any, _args: Any, output: Any) -> Any:
            return _replace_first_tensor(output, fn, name)

        return hook

    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name, edits[name])))
        yield
    finally:
        for h in handles:
            h.remove()


def _unwrap(model: Any) -> Any:
    if hasattr(model, "model") and hasattr(model, "kind") and not _is_module(model):
        return model.model  # a zoo LoadedModel
    return model


def _is_module(obj: Any) -> bool:
    import torch

    return isinstance(obj, torch.nn.Module)


def _as_vector(direction: Any, arg: str) -> torch.Tensor:
    import numpy as np
    import torch

    if isinstance(direction, torch.Tensor):
        v = direction.detach()
    else:
        try:
            v = torch.as_tensor(np.asarray(direction, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise RepscopeTypeError(
                f"{arg}: expected a 1-D vector (numpy array or torch tensor); got "
                f"{type(direction).__name__}."
            ) from err
    if v.ndim != 1 or v.shape[0] == 0:
        raise RepscopeValueError(
            f"{arg}: expected a non-empty 1-D vector; got shape {tuple(v.shape)}."
        )
    if not bool(torch.isfinite(v).all()):
        raise RepscopeValueError(f"{arg}: the vector holds NaN or infinite values.")
    return v


def _check_width(h: torch.Tensor, v: torch.Tensor, what: str) -> None:
    if h.shape[-1] != v.shape[0]:
        raise RepscopeValueError(
            f"{what}: the direction has width {v.shape[0]} but the edited output has "
            f"{h.shape[-1]} features (last axis of shape {tuple(h.shape)}); pass a direction "
            f"of width {h.shape[-1]}."
        )


def add_direction(
    direction: torch.Tensor | np.ndarray | Sequence[float],
    coefficient: float = 1.0,
    *,
    positions: int | Sequence[int] | slice | None = None,
) -> Edit:
    """An edit that adds ``coefficient * direction`` to an output's last axis (steering).

    Parameters
    ----------
    direction : 1-D tensor or array
        Added as it is (not normalised): scale it yourself or through ``coefficient``.
    coefficient : float, default 1.0
    positions : int, sequence of int or slice, optional
        Sequence positions (axis 1 of a ``(batch, seq, width)`` output) to edit; None edits
        every position. Negative indices count from the end (``-1``: the last token).

    Returns
    -------
    callable
        ``edit(h) -> h + coefficient * direction`` for :func:`intervene`; the addition is done
        in ``h``'s dtype and device. A width other than ``h.shape[-1]`` raises
        :class:`~repscope.exceptions.RepscopeValueError` when the edit runs.
    """
    v = _as_vector(direction, "add_direction direction")
    try:
        c = float(coefficient)
    except (TypeError, ValueError) as err:
        raise RepscopeTypeError(
            f"add_direction: coefficient must be a number; got {type(coefficient).__name__}."
        ) from err
    if positions is not None and not isinstance(positions, (int, slice)):
        positions = list(positions)

    def edit(h: torch.Tensor) -> torch.Tensor:
        _check_width(h, v, "add_direction")
        delta = (c * v).to(device=h.device, dtype=h.dtype)
        if positions is None:
            return h + delta
        if h.ndim < 3:
            raise RepscopeValueError(
                f"add_direction: positions needs a (batch, seq, width) output; got shape "
                f"{tuple(h.shape)}."
            )
        out = h.clone()
        out[:, positions] = out[:, positions] + delta
        return out

    return edit


def ablate_direction(direction: torch.Tensor | np.ndarray | Sequence[float]) -> Edit:
    """An edit that projects ``direction`` out of an output's last axis.

    ``h -> h - (h . u) u`` with ``u = direction / |direction|``, at every position: afterwards
    the output has no component along ``direction``.

    Returns
    -------
    callable
        The edit for :func:`intervene` (computed in float32 or wider, returned in ``h``'s dtype).
    """
    import torch

    v = _as_vector(direction, "ablate_direction direction")
    norm = float(torch.linalg.vector_norm(v.double()))
    if norm == 0.0:
        raise RepscopeValueError("ablate_direction: direction is the zero vector.")
    u = v.double() / norm

    def edit(h: torch.Tensor) -> torch.Tensor:
        _check_width(h, v, "ablate_direction")
        work = h.float() if h.dtype in (torch.float16, torch.bfloat16) else h
        uu = u.to(device=h.device, dtype=work.dtype)
        out = work - (work @ uu).unsqueeze(-1) * uu
        return out.to(h.dtype)

    return edit
