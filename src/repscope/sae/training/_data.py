"""Training data for SAEs: tensors, numpy arrays and memmaps, FeatureStore layers, iterators.

Every source becomes a stream of float tensors of shape (b, *sample_shape): leading dimensions
are flattened (a (n, t, d) token tensor trains on n*t vectors), ragged store layers give their
tokens. In-memory sources are shuffled by a fresh permutation per epoch; streamed ones (memmaps
read in contiguous blocks, store layers, iterators) pass through a shuffle buffer. Under
``torch.distributed`` every rank draws the same global batches (same seed) and keeps its slice,
so a 2-rank run with per-rank batch b sees exactly the data of a 1-rank run with batch 2b.

The batch rule: epoch ``e`` orders the ``n`` vectors by one permutation drawn from ``seed`` and
``e`` alone (not the world size); global batch ``j`` is the vectors at positions
``[j * B, (j + 1) * B)`` of that order (``B = batch_size * world_size``) and rank ``r`` keeps the
``r``-th of ``world_size`` contiguous, near-equal pieces of it (``tensor_split``), in that order.
A :class:`RowReader` source gives random access by vector index, so each rank reads only its
piece of each global batch (a ``FeatureStore`` layer or a memory-mapped file, never the whole).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from repscope.exceptions import RepscopeTypeError, RepscopeValueError

__all__ = ["DataSource", "RowReader", "as_source"]


@dataclass(frozen=True)
class RowReader:
    """Training vectors read by index: ``n`` vectors of which ``take(rows)`` returns the given
    ones, in the given order, as an array of shape (len(rows), ...).

    A :class:`DataSource` over a RowReader shuffles and batches like an array in memory (one
    permutation per epoch) but reads only the rows of each batch it keeps: under
    ``torch.distributed`` a rank reads only its piece of each global batch.
    :meth:`repscope.sae.LayerVectors.reader` makes one for a layer of features.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(12.0).reshape(6, 2)
    >>> RowReader(6, lambda rows: X[rows]).take(np.array([4, 1])).tolist()
    [[8.0, 9.0], [2.0, 3.0]]
    """

    n: int
    take: Callable[[np.ndarray], Any]


def _to_tensor(batch: Any, sample_shape: tuple[int, ...], name: str) -> Tensor:
    if hasattr(batch, "values") and hasattr(batch, "offsets"):  # RaggedArray
        batch = batch.values
    if isinstance(batch, np.ndarray):
        if batch.dtype.kind not in "fiu":
            raise RepscopeTypeError(
                f"The {name!r} batches must hold numbers. Got dtype {batch.dtype} instead."
            )
        if not batch.flags.writeable:
            batch = np.array(batch)  # a read-only view (memmap slice): torch needs its own copy
        t = torch.from_numpy(np.ascontiguousarray(batch))
    elif isinstance(batch, Tensor):
        t = batch
    else:
        raise RepscopeTypeError(
            f"The {name!r} parameter must yield torch tensors or numpy arrays. Got "
            f"{type(batch).__name__} instead."
        )
    if not t.is_floating_point():
        t = t.to(torch.float32)
    nd = len(sample_shape)
    if t.ndim < nd or tuple(t.shape[t.ndim - nd :]) != sample_shape:
        raise RepscopeValueError(
            f"The {name!r} parameter must hold samples of shape (..., "
            f"{', '.join(map(str, sample_shape))}) for this SAE. Got a batch of shape "
            f"{tuple(t.shape)} instead (d mismatch: the SAE's d_in is {sample_shape[-1]})."
        )
    return t.reshape(-1, *sample_shape)


class DataSource:
    """A training stream with a known or unknown length and a way to draw an init sample."""

    def __init__(
        self,
        X: Any,
        sample_shape: tuple[int, ...],
        *,
        name: str = "X",
        chunk_rows: int = 65_536,
    ) -> None:
        self.sample_shape = sample_shape
        self.name = name
        self.chunk_rows = chunk_rows
        self._array: Tensor | np.ndarray | None = None
        self._reader: RowReader | None = None
        self._store: tuple[Any, str] | None = None
        self._iterable: Iterable[Any] | None = None
        self._pushback: list[Tensor] = []
        if isinstance(X, Tensor):
            self._array = _to_tensor(X, sample_shape, name)
        elif isinstance(X, np.ndarray):
            nd = len(sample_shape)
            if X.ndim < nd or tuple(X.shape[X.ndim - nd :]) != sample_shape:
                _to_tensor(X[:1] if X.ndim else X, sample_shape, name)  # raises the message
            self._array = X.reshape(-1, *sample_shape)
        elif isinstance(X, RowReader):
            if X.n < 1:
                raise RepscopeValueError(f"The {name!r} parameter holds no samples.")
            self._reader = X
        elif isinstance(X, tuple) and len(X) == 2 and isinstance(X[1], str):
            store, layer = X
            if not hasattr(store, "iter_batches"):
                raise RepscopeTypeError(
                    f"A {name!r} tuple must be (FeatureStore, layer name). Got "
                    f"({type(store).__name__}, {layer!r}) instead."
                )
            info = store.layer_info(layer)
            tail = tuple(info.shape_tail)
            if tail[len(tail) - len(sample_shape) :] != sample_shape:
                raise RepscopeValueError(
                    f"Layer {layer!r} of the store holds samples of shape {tail}; "
                    f"this SAE expects (..., {', '.join(map(str, sample_shape))}) (d mismatch)."
                )
            self._store = (store, layer)
        elif isinstance(X, Iterable) and not isinstance(X, (str, bytes)):
            self._iterable = X
        else:
            raise RepscopeTypeError(
                f"The {name!r} parameter must be a torch.Tensor, a numpy array or memmap, a "
                f"RowReader, a (FeatureStore, layer) tuple or an iterable of batches. Got "
                f"{type(X).__name__} instead."
            )
        if self._array is not None and self._array.shape[0] == 0:
            raise RepscopeValueError(f"The {name!r} parameter holds no samples.")

    # ------------------------------------------------------------------ facts
    def __len__(self) -> int:
        """Number of vectors per epoch; raises TypeError for iterators of unknown length."""
        if self._array is not None:
            return int(self._array.shape[0])
        if self._reader is not None:
            return self._reader.n
        if self._store is not None:
            store, layer = self._store
            info = store.layer_info(layer)
            n = int(info.n_tokens) if info.ragged and info.n_tokens is not None else info.n_samples
            per = int(np.prod(info.shape_tail[: len(info.shape_tail) - len(self.sample_shape)]))
            return n * per
        raise TypeError("iterator of unknown length")

    @property
    def one_shot(self) -> bool:
        """True for an iterator (it can be read once); lists and other iterables restart."""
        return self._iterable is not None and iter(self._iterable) is self._iterable

    def known_length(self) -> int | None:
        try:
            return len(self)
        except TypeError:
            return None

    # ------------------------------------------------------------------ raw streams
    def _raw_chunks(self) -> Iterator[Tensor]:
        """One epoch of data in its stored order, in chunks."""
        if self._array is not None:
            for a in range(0, self._array.shape[0], self.chunk_rows):
                yield _to_tensor(self._array[a : a + self.chunk_rows], self.sample_shape, self.name)
        elif self._reader is not None:
            for a in range(0, self._reader.n, self.chunk_rows):
                span = np.arange(a, min(a + self.chunk_rows, self._reader.n))
                yield _to_tensor(self._reader.take(span), self.sample_shape, self.name)
        elif self._store is not None:
            store, layer = self._store
            rows = self.chunk_rows
            if store.layer_info(layer).ragged:
                rows = max(1, rows // 64)
            for batch in store.iter_batches(layer, rows):
                yield _to_tensor(batch, self.sample_shape, self.name)
        else:
            assert self._iterable is not None
            while self._pushback:
                yield self._pushback.pop(0)
            for batch in self._iterable:
                yield _to_tensor(batch, self.sample_shape, self.name)

    def sample(self, n: int, *, seed: int) -> Tensor:
        """Up to ``n`` vectors for initialisation (a random subset where the data allow)."""
        gen = np.random.default_rng(seed)
        if self._array is not None or self._reader is not None:
            total = len(self)
            if total <= n:
                idx = np.arange(total)
            else:
                idx = np.sort(gen.choice(total, size=n, replace=False))
            if self._array is not None:
                return _to_tensor(self._array[idx], self.sample_shape, self.name)
            assert self._reader is not None
            return _to_tensor(self._reader.take(idx), self.sample_shape, self.name)
        parts: list[Tensor] = []
        got = 0
        chunks = self._raw_chunks()
        for chunk in chunks:
            parts.append(chunk)
            got += chunk.shape[0]
            if got >= n:
                break
        if not parts:
            raise RepscopeValueError(f"The {self.name!r} parameter yielded no data.")
        if self.one_shot:
            # a one-shot iterator is consumed: hand these chunks back to the first epoch
            self._pushback = parts + self._pushback
        return torch.cat(parts)[:n]

    # ------------------------------------------------------------------ batches
    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool,
        shuffle_buffer: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[Tensor]:
        """One epoch of global batches of ``batch_size * world_size`` vectors; this rank's slice.

        The last, smaller global batch is dropped when it cannot give every rank at least one
        vector; otherwise it is split as evenly as possible.
        """
        gb = batch_size * world_size
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
        if self._array is not None or self._reader is not None:
            # in memory, memory-mapped or read by index: a fresh permutation per epoch; a
            # memmap is read a batch at a time (sorted rows, so reads go forward) and a reader
            # reads only this rank's rows of each batch, so memory stays O(batch)
            data: Tensor | np.ndarray | RowReader
            if self._reader is not None:
                data = self._reader
            else:
                assert self._array is not None
                data = self._array
            total = len(self)
            order = torch.randperm(total, generator=gen) if shuffle else torch.arange(total)
            for a in range(0, total, gb):
                idx = order[a : a + gb]
                part = _rank_slice(idx, rank, world_size)
                if part is None:
                    return
                if isinstance(data, RowReader):
                    yield _to_tensor(data.take(part.numpy()), self.sample_shape, self.name)
                elif isinstance(data, Tensor):
                    yield data[part.to(data.device)]
                elif isinstance(data, np.memmap):
                    rows = np.sort(part.numpy())
                    yield _to_tensor(np.asarray(data[rows]), self.sample_shape, self.name)
                else:
                    yield _to_tensor(data[part.numpy()], self.sample_shape, self.name)
            return
        stream = self._raw_chunks()
        if shuffle:
            stream = _shuffle_buffer(stream, max(shuffle_buffer, gb), gen)
        yield from _rebatch(stream, gb, rank, world_size)


def _rank_slice(idx: Tensor, rank: int, world_size: int) -> Tensor | None:
    if world_size == 1:
        return idx
    if idx.shape[0] < world_size:
        return None
    return idx.tensor_split(world_size)[rank]


def _shuffle_buffer(
    stream: Iterator[Tensor], capacity: int, gen: torch.Generator
) -> Iterator[Tensor]:
    """Mix a stream: fill a buffer of ``capacity`` rows, emit a shuffled half, keep the rest."""
    pending: list[Tensor] = []
    rows = 0
    for chunk in stream:
        pending.append(chunk)
        rows += chunk.shape[0]
        if rows >= capacity:
            buf = torch.cat(pending)
            buf = buf[torch.randperm(buf.shape[0], generator=gen).to(buf.device)]
            keep = capacity // 2
            yield buf[keep:]
            pending, rows = [buf[:keep]], keep
    if rows:
        buf = torch.cat(pending)
        yield buf[torch.randperm(buf.shape[0], generator=gen).to(buf.device)]


def _rebatch(stream: Iterator[Tensor], gb: int, rank: int, world_size: int) -> Iterator[Tensor]:
    """Cut a stream of chunks into global batches of ``gb`` rows; yield this rank's slice."""
    pending: list[Tensor] = []
    rows = 0
    for chunk in stream:
        pending.append(chunk)
        rows += chunk.shape[0]
        if rows < gb:
            continue
        buf = torch.cat(pending)
        a = 0
        while buf.shape[0] - a >= gb:
            yield _slice_rows(buf[a : a + gb], rank, world_size)
            a += gb
        pending, rows = [buf[a:]], buf.shape[0] - a
    if rows >= world_size:
        yield _slice_rows(torch.cat(pending), rank, world_size)


def _slice_rows(batch: Tensor, rank: int, world_size: int) -> Tensor:
    if world_size == 1:
        return batch
    return batch.tensor_split(world_size)[rank]


def as_source(X: Any, sample_shape: tuple[int, ...], *, name: str = "X") -> DataSource:
    """Wrap ``X`` as a :class:`DataSource` (a DataSource passes through)."""
    if isinstance(X, DataSource):
        return X
    return DataSource(X, sample_shape, name=name)
