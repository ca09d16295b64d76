"""The adapter contract and the row sources that cut inputs into chunks and batches."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from repscope._array import is_torch
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.extract._hooks import unknown_layer_error

__all__ = ["BLOCKS", "OUTPUT", "Adapter", "Batch", "PreparedChunk", "RowSource"]

#: Shorthand for the residual-stream blocks of a model (see :meth:`Adapter.block_layers`).
BLOCKS = "blocks"
#: Name of the value returned by a torch model's forward function (when no module has that path).
OUTPUT = "output"


@dataclass
class Batch:
    """One forward pass worth of prepared inputs.

    Attributes
    ----------
    inputs : Any
        What the adapter's forward consumes (a tensor, a dict of tensors or of numpy arrays).
    mask : torch.Tensor of bool, shape (b, t), or None
        Real (non-padding) tokens for text models.
    size : int
        Number of samples ``b``.
    """

    inputs: Any
    mask: Any
    size: int


@dataclass
class PreparedChunk:
    """The batches of one chunk, in the order they run.

    ``order[k]`` is the chunk position of the ``k``-th sample across the batches (``None``: the
    batches hold the chunk in its own order). Text adapters sort by length to cut padding.
    """

    batches: list[Batch]
    order: np.ndarray | None


class RowSource:
    """Cuts the user's ``inputs`` into consecutive runs of rows.

    ``inputs`` is a sequence that supports slicing (list, tuple, numpy array, torch tensor) or,
    when ``batched`` is False, any iterable of single items, or, when ``batched`` is True, an
    iterable of batches (arrays/tensors, or tuples/lists whose first entry is one), which are
    re-cut into runs of exactly the requested size so chunking never depends on how the
    iterable was batched.
    """

    def __init__(self, inputs: Any, *, batched: bool) -> None:
        self._pos = 0
        self._stop: int | None = None  # set by restrict() on an iterable
        self._buffer: list[Any] = []
        self._buffered = 0
        if is_torch(inputs) or isinstance(inputs, np.ndarray):
            if inputs.ndim < 1:
                raise RepscopeValueError(
                    f"inputs must have a leading sample dimension; got shape {tuple(inputs.shape)}."
                )
            self._seq: Any = inputs
            self.n: int | None = int(inputs.shape[0])
            self._iter: Iterator[Any] | None = None
        elif isinstance(inputs, (list, tuple)) and not batched:
            self._seq, self.n, self._iter = inputs, len(inputs), None
        elif isinstance(inputs, Iterable) and not isinstance(inputs, (str, bytes, Mapping)):
            self._seq, self._iter = None, iter(inputs)
            n = getattr(inputs, "__len__", None)
            self.n = None if batched or n is None else int(n())
        else:
            raise RepscopeTypeError(
                f"inputs must be a list, an array/tensor or an iterable; got "
                f"{type(inputs).__name__}."
                + (" Wrap a single string in a list: [text]." if isinstance(inputs, str) else "")
            )
        self._batched = batched

    def restrict(self, start: int, stop: int) -> None:
        """Keep only rows ``start:stop`` of the inputs (one rank's share): afterwards ``n`` is
        ``stop - start`` and :meth:`take`/:meth:`skip` count from ``start``."""
        if self._seq is not None:
            self._seq = self._seq[start:stop]
            self.n, self._pos = _len(self._seq), 0
            return
        self.skip(start)
        self._pos, self.n, self._stop = 0, stop - start, stop - start

    def take(self, k: int) -> Any | None:
        """The next ``k`` rows (fewer at the end), or None when exhausted."""
        if self._stop is not None:
            k = min(k, self._stop - self._pos)
            if k <= 0:
                return None
        if self._seq is not None:
            if self._pos >= _len(self._seq):
                return None
            out = self._seq[self._pos : self._pos + k]
            self._pos += _len(out)
            return out
        it = self._iter
        if it is None:
            return None
        if not self._batched:
            items = [x for _, x in zip(range(k), it)]
            self._pos += len(items)
            return items or None
        while self._buffered < k:
            try:
                b = next(it)
            except StopIteration:
                break
            if isinstance(b, (tuple, list)):
                if not b:
                    raise RepscopeValueError("inputs yielded an empty tuple; expected a batch.")
                b = b[0]
            if not (is_torch(b) or isinstance(b, np.ndarray)):
                b = np.asarray(b)
            if b.ndim < 1:
                raise RepscopeValueError(
                    f"every batch of inputs must have a leading sample dimension; got shape "
                    f"{tuple(b.shape)}."
                )
            self._buffer.append(b)
            self._buffered += int(b.shape[0])
        if self._buffered == 0:
            return None
        whole = self._buffer[0] if len(self._buffer) == 1 else _concat(self._buffer)
        out, rest = whole[:k], whole[k:]
        self._buffer = [rest] if int(rest.shape[0]) else []
        self._buffered = int(rest.shape[0])
        self._pos += int(out.shape[0])
        return out

    def skip(self, k: int) -> int:
        """Drop the next ``k`` rows; return how many were dropped."""
        if self._seq is not None:
            before = self._pos
            self._pos = min(self._pos + k, self.n or 0)
            return self._pos - before
        dropped = 0
        while dropped < k:
            got = self.take(min(k - dropped, 4096))
            if got is None:
                break
            dropped += _len(got)
        return dropped


def _len(x: Any) -> int:
    return int(x.shape[0]) if hasattr(x, "shape") else len(x)


def _concat(parts: list[Any]) -> Any:
    if is_torch(parts[0]):
        import torch

        return torch.cat([p if is_torch(p) else torch.as_tensor(p) for p in parts])
    return np.concatenate([np.asarray(p) for p in parts])


class Adapter(ABC):
    """Runs one kind of model on batches of inputs and returns pooled activations.

    Subclasses implement layer naming (:meth:`list_layers`, :meth:`block_layers`), input
    preparation (:meth:`prepare`) and one forward pass (:meth:`run`);
    :func:`repscope.extract.extract` does chunking, ordering, storing and resuming.
    """

    #: Name of the adapter family (recorded in a store's attrs).
    kind: str = "adapter"
    #: Whether the adapter's inputs are token sequences with a padding mask.
    has_mask: bool = False
    #: Identifier recorded in a store (``FeatureStore.model_id``).
    model_id: str = "model"
    #: Overrides what ``"blocks"`` expands to (a zoo model's ``info.layers``).
    blocks: Sequence[str] | None = None

    @abstractmethod
    def list_layers(self) -> list[str]:
        """Every layer name :meth:`run` accepts, in forward order where known."""

    def block_layers(self) -> list[str]:
        """The layers ``"blocks"`` expands to (the residual stream); empty when undefined."""
        if self.blocks is not None:
            return list(self.blocks)
        return self._default_blocks()

    def _default_blocks(self) -> list[str]:
        return []

    def default_layers(self) -> list[str]:
        """Layers used when ``layers=None``."""
        blocks = self.block_layers()
        if not blocks:
            raise RepscopeValueError(
                f"{type(self).__name__} has no default layers; pass layers=[...] with names from "
                "repscope.extract.list_layers(model)."
            )
        return blocks

    def shorthands(self) -> dict[str, list[str]]:
        """Shorthand names and what they expand to."""
        blocks = self.block_layers()
        return {BLOCKS: blocks} if blocks else {}

    def resolve_layers(self, layers: str | Sequence[str] | None) -> list[str]:
        """Expand shorthands and check every name; return the unique names in request order.

        Raises
        ------
        UnknownNameError
            A name is not one of :meth:`list_layers` nor a shorthand.
        """
        if layers is None:
            requested: list[str] = self.default_layers()
        elif isinstance(layers, str):
            requested = [layers]
        elif isinstance(layers, Iterable):
            requested = list(layers)
        else:
            raise RepscopeTypeError(
                f"The 'layers' parameter of extract must be a str, a list of str or None. Got "
                f"{layers!r} ({type(layers).__name__}) instead."
            )
        if not requested:
            raise RepscopeValueError("The 'layers' parameter of extract is empty; name a layer.")
        known = self.list_layers()
        known_set = set(known)
        short = self.shorthands()
        out: list[str] = []
        for name in requested:
            if not isinstance(name, str):
                raise RepscopeTypeError(
                    f"layer names must be str; got {name!r} ({type(name).__name__})."
                )
            expanded = [name] if name in known_set else short.get(name)
            if expanded is None:
                raise unknown_layer_error(name, [*short, *known], f"{self.kind} model {self.model_id!r}")
            out.extend(e for e in expanded if e not in out)
        return out

    def n_inputs(self, inputs: Any) -> int | None:
        """Number of samples in ``inputs`` when known without consuming it."""
        return self.rows(inputs).n

    @abstractmethod
    def rows(self, inputs: Any) -> RowSource:
        """Wrap ``inputs`` for chunking (checks its type)."""

    @abstractmethod
    def prepare(self, items: Any, batch_size: int) -> PreparedChunk:
        """Turn one chunk of raw inputs into batches."""

    @abstractmethod
    def run(self, batch: Batch, poolings: Mapping[str, str]) -> dict[str, Any]:
        """One forward pass: ``{layer: pooled}`` (torch tensor, numpy array or TokenRows)."""

    def session(self) -> contextlib.AbstractContextManager[None]:
        """Context around a whole extraction (eval mode, inference mode, ...)."""
        return contextlib.nullcontext()

    def describe(self) -> dict[str, Any]:
        """JSON-able description recorded in a store's attrs."""
        return {"adapter": self.kind}

