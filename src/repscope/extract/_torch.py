"""Adapter for any ``torch.nn.Module`` that takes a tensor batch."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from repscope._array import is_torch
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.extract._base import OUTPUT, Adapter, Batch, PreparedChunk, RowSource
from repscope.extract._hooks import StopForward, capture, first_tensor
from repscope.extract._pooling import pool

if TYPE_CHECKING:
    import torch

__all__ = ["TorchAdapter", "check_device", "is_raw_images", "model_device"]


def model_device(module: torch.nn.Module) -> torch.device:
    """Device of the first parameter (or buffer) of ``module``; CPU for a stateless module."""
    import torch

    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def _model_float_dtype(module: torch.nn.Module) -> torch.dtype | None:
    for t in module.parameters():
        if t.dtype.is_floating_point:
            return t.dtype
    return None


def is_raw_images(x: Any) -> bool:
    """True for uint8 arrays/tensors (raw images that a zoo ``preprocess`` turns into inputs)."""
    if is_torch(x):
        import torch

        return bool(x.dtype == torch.uint8)
    return bool(getattr(x, "dtype", None) == np.uint8)


def check_device(module: torch.nn.Module, device: Any) -> torch.device:
    """The compute device: the model's own; ``device`` must agree (models are never moved)."""
    import torch

    here = model_device(module)
    if device is None:
        return here
    try:
        want = torch.device(device)
    except (TypeError, RuntimeError) as err:
        raise RepscopeValueError(
            f"The 'device' parameter of extract must be a torch device such as 'cpu' or "
            f"'cuda:0'. Got {device!r} instead ({err})."
        ) from None
    same = want.type == here.type and (want.index is None or want.index == here.index)
    if not same:
        raise RepscopeValueError(
            f"The 'device' parameter of extract asks for {str(want)!r}, but the model's "
            f"parameters are on {str(here)!r}. repscope never moves your model; move it first "
            f"(model.to({str(want)!r})) or pass device=None."
        )
    return here


class TorchAdapter(Adapter):
    """Any ``torch.nn.Module`` that takes one tensor batch.

    Layer names are the module paths of ``model.named_modules()``; ``"output"`` names the value
    the forward function returns (unless a module has that path). ``"blocks"`` expands to the
    entries of the model's longest ``ModuleList``/``Sequential``.

    Parameters
    ----------
    model : torch.nn.Module
        The model. Extraction runs it in eval mode under ``torch.inference_mode()`` and restores
        each submodule's training flag afterwards; its device and weights are never changed.
    forward_fn : callable, optional
        Called as ``forward_fn(batch)`` instead of ``model(batch)``, e.g.
        ``model.extract_features``.
    device : str or torch.device, optional
        Must be where the model is (``None``: the model's device). Input batches are copied
        there; pooled activations are copied back to host memory.
    model_id : str, optional
        Identifier recorded in a store; default the class name.
    preprocess : callable, optional
        Applied to each chunk of **uint8** inputs (raw images), e.g. a zoo model's
        ``preprocess``; float inputs are taken to be the model's input batch already.
    """

    kind: str = "torch"
    #: Whether every hookable module runs once per forward (enables stopping a forward early).
    stop_early_safe: ClassVar[bool] = False

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        forward_fn: Callable[..., Any] | None = None,
        device: Any = None,
        model_id: str | None = None,
        preprocess: Callable[[Any], Any] | None = None,
    ) -> None:
        import torch

        if not isinstance(model, torch.nn.Module):
            raise RepscopeTypeError(
                f"TorchAdapter needs a torch.nn.Module; got {type(model).__name__}."
            )
        if forward_fn is not None and not callable(forward_fn):
            raise RepscopeTypeError(
                f"The 'forward_fn' parameter of extract must be callable (e.g. "
                f"model.extract_features). Got {forward_fn!r} instead."
            )
        self.module = model
        self.forward_fn = forward_fn
        self.preprocess = preprocess
        self.device = check_device(model, device)
        self.model_id = model_id or type(model).__name__
        self._modules = [n for n, _ in model.named_modules() if n]

    # ---------------------------------------------------------------- layer names
    def list_layers(self) -> list[str]:
        """Module paths in registration order, then ``"output"`` (the forward's return value)."""
        names = list(self._modules)
        if OUTPUT not in names:
            names.append(OUTPUT)
        return names

    def _default_blocks(self) -> list[str]:
        """Entries of the longest ``ModuleList``/``Sequential`` (ties: the first found)."""
        import torch

        best: tuple[int, str, list[str]] = (1, "", [])
        for name, m in self.module.named_modules():
            if isinstance(m, (torch.nn.ModuleList, torch.nn.Sequential)) and len(m) > best[0]:
                kids = [k for k, _ in m.named_children()]
                best = (len(m), name, [f"{name}.{k}" if name else k for k in kids])
        return best[2]

    # ---------------------------------------------------------------- inputs
    def rows(self, inputs: Any) -> RowSource:
        """Arrays/tensors are sliced; any other iterable is read as batches of rows."""
        batched = not (is_torch(inputs) or isinstance(inputs, np.ndarray))
        if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str):
            raise RepscopeTypeError(
                f"{type(self.module).__name__} takes tensors, but inputs are strings. Pass a "
                "Hugging Face model with its tokenizer (tokenizer=...), a sentence-transformers "
                "model, or a zoo model for text."
            )
        return RowSource(inputs, batched=batched)

    def _to_tensor(self, x: Any) -> torch.Tensor:
        import torch

        t = x if is_torch(x) else torch.from_numpy(np.ascontiguousarray(x))
        dtype = _model_float_dtype(self.module)
        if t.dtype.is_floating_point and dtype is not None and t.dtype != dtype:
            t = t.to(dtype)
        return t.to(self.device)

    def prepare(self, items: Any, batch_size: int) -> PreparedChunk:
        if self.preprocess is not None and is_raw_images(items):
            items = self.preprocess(items)
        n = int(items.shape[0])
        batches = [
            Batch(self._to_tensor(items[i : i + batch_size]), None, min(batch_size, n - i))
            for i in range(0, n, batch_size)
        ]
        return PreparedChunk(batches, None)

    # ---------------------------------------------------------------- forward
    def _forward(self, batch: Batch) -> Any:
        fn = self.forward_fn or self.module
        return fn(batch.inputs)

    def run(self, batch: Batch, poolings: Mapping[str, str]) -> dict[str, Any]:
        """One forward pass with hooks on the requested modules; pooled inside the hooks."""
        want_output = OUTPUT in poolings and OUTPUT not in self._modules
        hooked = [la for la in poolings if not (want_output and la == OUTPUT)]
        mask = batch.mask

        def transform(name: str, h: torch.Tensor) -> Any:
            return pool(h, poolings[name], mask, layer=name)

        stop = self.stop_early_safe and not want_output and bool(hooked)
        out: Any = None
        with capture(self.module, hooked, transform=transform, stop_early=stop) as got:
            try:
                out = self._forward(batch)
            except StopForward:
                out = None
        result = dict(got)
        if want_output:
            result[OUTPUT] = pool(first_tensor(out).detach(), poolings[OUTPUT], mask, layer=OUTPUT)
        missing = [la for la in poolings if la not in result]
        if missing:
            fn = "forward_fn" if self.forward_fn is not None else "forward"
            raise RepscopeValueError(
                f"layers {missing} did not run during the model's {fn} call, so nothing was "
                f"captured for them. Pick modules that the {fn} call uses (with forward_fn="
                "model.extract_features, the classifier head does not run)."
            )
        return result

    @contextlib.contextmanager
    def _eval_inference(self) -> Iterator[None]:
        import torch

        flags = [(m, m.training) for m in self.module.modules()]
        try:
            self.module.eval()
            with torch.inference_mode():
                yield
        finally:
            for m, was in flags:
                m.training = was

    def session(self) -> contextlib.AbstractContextManager[None]:
        """Eval mode and ``torch.inference_mode()``; training flags are restored on exit."""
        return self._eval_inference()

    def describe(self) -> dict[str, Any]:
        return {"adapter": self.kind, "class": type(self.module).__name__}
