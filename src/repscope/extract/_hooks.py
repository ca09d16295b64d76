"""Forward hooks, installed only inside a context manager that removes them in ``finally``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from repscope.exceptions import RepscopeTypeError, RepscopeValueError, UnknownNameError
from repscope.registry import closest_names

if TYPE_CHECKING:
    import torch

__all__ = ["StopForward", "capture", "first_tensor", "resolve_modules", "unknown_layer_error"]


class StopForward(Exception):
    """Raised from a hook once every requested layer is captured, to skip the rest of a forward.

    :func:`capture` with ``stop_early=True`` raises it; the caller catches it around the forward
    call. It never escapes :func:`repscope.extract.extract`.
    """


def first_tensor(output: Any) -> torch.Tensor:
    """The hidden-states tensor of a module output.

    Modules return a tensor, a tuple/list whose first element is the hidden states (Hugging Face
    decoder layers return ``(hidden_states, attn_weights, ...)``), a ``ModelOutput`` (whose first
    field is ``last_hidden_state`` or ``logits``) or a dict. The first tensor found is returned.
    """
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        values: Sequence[Any] = [v for v in output.values() if v is not None]
    elif isinstance(output, (tuple, list)):
        values = output
    else:
        to_tuple = getattr(output, "to_tuple", None)
        values = to_tuple() if callable(to_tuple) else ()
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
        if isinstance(v, (tuple, list, Mapping)):
            try:
                return first_tensor(v)
            except RepscopeTypeError:
                continue
    raise RepscopeTypeError(
        f"a hooked module returned {type(output).__name__}, which holds no tensor; repscope "
        "captures module outputs that are tensors (or tuples/dicts whose first entry is one). "
        "Hook a submodule that returns a tensor."
    )


def unknown_layer_error(name: str, known: Sequence[str], where: str) -> UnknownNameError:
    """The error for a layer name that ``where`` does not have, listing close names."""
    close = closest_names(str(name), list(known))
    hint = f" Close names: {', '.join(repr(c) for c in close)}." if close else ""
    shown = ", ".join(repr(k) for k in list(known)[:12]) + (" ..." if len(known) > 12 else "")
    return UnknownNameError(
        f"unknown layer {name!r} in {where}.{hint} Call repscope.extract.list_layers(model) for "
        f"all {len(known)} names (they begin {shown}).",
        name=str(name),
        known=tuple(known),
    )


def resolve_modules(model: torch.nn.Module, layers: Sequence[str]) -> dict[str, torch.nn.Module]:
    """Map module paths (``named_modules`` names) to the modules of ``model``.

    Raises
    ------
    UnknownNameError
        A path is not a submodule of ``model``; the message lists the closest names.
    """
    modules = dict(model.named_modules())
    modules.pop("", None)
    out: dict[str, torch.nn.Module] = {}
    for name in layers:
        if not isinstance(name, str):
            raise RepscopeTypeError(
                f"layer names must be str module paths such as 'encoder.layer.3'; got {name!r} "
                f"({type(name).__name__})."
            )
        if name not in modules:
            raise unknown_layer_error(name, list(modules), f"{type(model).__name__}")
        out[name] = modules[name]
    return out


@contextlib.contextmanager
def capture(
    model: torch.nn.Module,
    layers: Sequence[str],
    *,
    transform: Callable[[str, torch.Tensor], Any] | None = None,
    stop_early: bool = False,
) -> Iterator[dict[str, Any]]:
    """Capture the outputs of ``layers`` during forward passes run inside the ``with`` block.

    Forward hooks are registered on entry and removed in ``finally`` (also when the forward
    raises). Each hook stores ``transform(name, tensor)`` (the detached output tensor when
    ``transform`` is None) in the yielded dict under the layer's name; a module that runs several
    times in one forward pass keeps its **last** call. Tuple/dict outputs are reduced to their
    first tensor (:func:`first_tensor`).

    Parameters
    ----------
    model : torch.nn.Module
        The model; it is not modified apart from the temporary hooks.
    layers : sequence of str
        Module paths as in ``model.named_modules()``, e.g. ``"encoder.layer.3"``.
    transform : callable, optional
        ``transform(name, tensor) -> value``, applied inside the hook (e.g. pooling), so the
        full activation need not outlive the module's forward.
    stop_early : bool, default False
        Raise :class:`StopForward` from the hook that completes the set of requested layers, so
        the rest of the network does not run. The caller must catch it around the forward call.
        Use it only when every requested module runs once per forward.

    Yields
    ------
    dict of str to value
        Filled by the hooks; cleared by the caller between batches if reused.

    Raises
    ------
    UnknownNameError
        A layer is not a module path of ``model``.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    >>> with capture(net, ["0"]) as acts:
    ...     _ = net(torch.ones(2, 3))
    >>> acts["0"].shape
    torch.Size([2, 4])
    >>> len(net[0]._forward_hooks)
    0
    """
    if isinstance(layers, str):
        raise RepscopeValueError(
            f"layers must be a list of module paths; got the single string {layers!r}. Pass "
            f"[{layers!r}]."
        )
    modules = resolve_modules(model, layers)
    captured: dict[str, Any] = {}
    wanted = set(modules)

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_module: Any, _args: Any, output: Any) -> None:
            tensor = first_tensor(output).detach()
            captured[name] = tensor if transform is None else transform(name, tensor)
            if stop_early and wanted.issubset(captured):
                raise StopForward

        return hook

    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield captured
    finally:
        for h in handles:
            h.remove()
