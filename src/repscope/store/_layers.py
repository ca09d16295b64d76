"""One way to read layers: :func:`open_layers` gives a :class:`LayerSource` over anything that
holds features, and :func:`load_features` reads one into memory.

Sources:

* a :class:`~repscope.store.FeatureStore`, or the path of its directory;
* a ``.npy`` file (one layer, named after the file stem), a ``.safetensors`` file (one tensor
  per layer), or a directory of such files (no ``manifest.json``; files in name order);
* features in memory: a mapping ``layer name -> array`` (numpy arrays, torch tensors, or
  :class:`~repscope.store.RaggedArray` token layers as :func:`repscope.extract.extract` returns
  them), or a sequence of arrays (layers named ``"0"``, ``"1"``, ...);
* a :class:`LayerSource` (selects a subset, or changes the pooling).

A layer is read as one row per sample: trailing dimensions are flattened, ``(n, c, h, w) ->
(n, c*h*w)``. A *ragged* token layer (a variable number of tokens per sample) becomes one row
per sample by an explicit ``pooling``, or stays tokens with ``pooling="none"``. Every selected
layer must hold the same samples. Nothing is ever unpickled.
"""

from __future__ import annotations

import abc
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from repscope._validation import check_choice, check_positive_int
from repscope.exceptions import (
    CorruptStoreError,
    DataNotFoundError,
    RepscopeTypeError,
    RepscopeValueError,
    UnknownNameError,
)
from repscope.store._manifest import MANIFEST
from repscope.store._names import unknown_layer_error
from repscope.store._ragged import RaggedArray
from repscope.store.feature_store import FeatureStore

__all__ = ["TOKEN_POOLINGS", "LayerSource", "TokenPooling", "load_features", "open_layers"]

#: How a ragged token layer becomes one row per sample (see :func:`open_layers`).
TokenPooling = Literal["mean", "none", "first", "last", "error"]
TOKEN_POOLINGS: tuple[str, ...] = ("mean", "none", "first", "last", "error")

_SUFFIXES = (".npy", ".safetensors")


# --------------------------------------------------------------------------- backends
class _Layers(abc.ABC):
    """What a kind of source provides; :class:`LayerSource` adds selection and pooling."""

    description = ""
    path: Path | None = None
    store: FeatureStore | None = None
    in_memory = False
    names: list[str]

    @abc.abstractmethod
    def n(self, name: str) -> int:
        """Samples in layer ``name``."""

    def ragged(self, name: str) -> bool:
        return False

    @abc.abstractmethod
    def shape(self, name: str) -> tuple[int, ...]:
        """Per-sample (per-token, for a ragged layer) shape of layer ``name``."""

    def check(self, name: str) -> None:  # noqa: B027  (most sources have nothing to check)
        """Raise if ``name`` cannot be read as features (checked when a source is opened)."""

    @abc.abstractmethod
    def read(self, name: str) -> Any:
        """All of layer ``name``: an array, or a RaggedArray for a ragged layer."""

    @abc.abstractmethod
    def batches(self, name: str, size: int, start: int, stop: int) -> Iterator[Any]:
        """Samples ``start:stop`` of layer ``name``, ``size`` at a time."""

    def token_counts(self, name: str) -> np.ndarray:
        """Tokens per sample: one each unless a source with ragged layers says otherwise."""
        return np.ones(self.n(name), dtype=np.int64)

    def n_samples(self) -> int | None:
        """Samples of the source as a whole (None: known from its layers only)."""
        return None


class _StoreLayers(_Layers):
    def __init__(self, store: FeatureStore) -> None:
        self.fs = store
        self.store = store
        self.path = store.path
        self.description = f"the FeatureStore at {store.path}"
        self.names = list(store.layers)

    def n(self, name: str) -> int:
        return self.fs.n_samples

    def ragged(self, name: str) -> bool:
        return bool(self.fs.layer_info(name).ragged)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.fs.layer_info(name).shape_tail)

    def read(self, name: str) -> Any:
        return self.fs.read_ragged(name) if self.ragged(name) else self.fs.read(name)

    def batches(self, name: str, size: int, start: int, stop: int) -> Iterator[Any]:
        return self.fs.iter_batches(name, size, start=start, stop=stop)

    def token_counts(self, name: str) -> np.ndarray:
        parts = []
        for ci in range(self.fs.n_chunks):
            offsets = self.fs._shard(name, ci).offsets  # the offsets only (memory-mapped)
            if offsets is None:  # pragma: no cover - ragged shards always have offsets
                raise CorruptStoreError(f"shard of layer {name!r} chunk {ci} has no offsets.")
            parts.append(np.diff(np.asarray(offsets)))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def n_samples(self) -> int | None:
        return self.fs.n_samples


class _ArrayLayers(_Layers):
    in_memory = True

    def __init__(self, arrays: Mapping[str, Any], name: str) -> None:
        self.description = name
        self.names = list(arrays)
        self.arrays: dict[str, Any] = {}
        for key, value in arrays.items():
            if not isinstance(value, RaggedArray) and not (
                hasattr(value, "shape") and hasattr(value, "ndim")
            ):
                value = np.asarray(value)
            if not isinstance(value, RaggedArray) and value.ndim == 0:
                raise RepscopeValueError(
                    f"{name}[{key!r}] must be an array of shape (n_samples, ...); got a scalar "
                    f"of type {type(value).__name__}."
                )
            self.arrays[key] = value

    def n(self, name: str) -> int:
        a = self.arrays[name]
        return a.n_samples if isinstance(a, RaggedArray) else int(a.shape[0])

    def ragged(self, name: str) -> bool:
        return isinstance(self.arrays[name], RaggedArray)

    def shape(self, name: str) -> tuple[int, ...]:
        a = self.arrays[name]
        return tuple(int(s) for s in (a.values.shape if isinstance(a, RaggedArray) else a.shape)[1:])

    def read(self, name: str) -> Any:
        return self.arrays[name]

    def batches(self, name: str, size: int, start: int, stop: int) -> Iterator[Any]:
        a = self.arrays[name]
        for lo in range(start, stop, size):
            hi = min(lo + size, stop)
            if isinstance(a, RaggedArray):
                offs = np.asarray(a.offsets)
                yield RaggedArray(a.values[int(offs[lo]):int(offs[hi])], offs[lo:hi + 1] - offs[lo])
            else:
                yield a[lo:hi]

    def token_counts(self, name: str) -> np.ndarray:
        return np.diff(np.asarray(self.arrays[name].offsets))


class _FileLayers(_Layers):
    """Layers of ``.npy`` and ``.safetensors`` files; shapes come from the file headers."""

    def __init__(self, files: Sequence[Path], description: str, path: Path, memmap: bool) -> None:
        self.description = description
        self.path = path
        self.memmap = memmap
        self.where: dict[str, tuple[Path, str | None]] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._mapped: dict[str, np.ndarray] = {}
        for f in files:
            if f.suffix.lower() == ".npy":
                self._add(f.stem, f, None, self._npy_shape(f))
            else:
                for key, shape in self._safetensors_shapes(f):
                    self._add(key, f, key, shape)
        self.names = list(self.where)

    def _add(self, name: str, file: Path, key: str | None, shape: tuple[int, ...]) -> None:
        if name in self.where:
            raise RepscopeValueError(
                f"layer {name!r} is in both {self.where[name][0]} and {file}; every layer of "
                f"{self.description} must have one file."
            )
        self.where[name] = (file, key)
        self.shapes[name] = shape

    def _label(self, name: str) -> str:
        file, key = self.where[name]
        return f"{file}" + (f" [{key}]" if key else "")

    def _npy(self, file: Path, mmap_mode: Literal["r", "c"] | None) -> np.ndarray:
        try:
            return np.load(file, mmap_mode=mmap_mode, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise CorruptStoreError(f"cannot read {file} as a numeric .npy file: {err}") from None

    def _npy_shape(self, file: Path) -> tuple[int, ...]:
        try:
            arr = np.load(file, mmap_mode="c" if self.memmap else "r", allow_pickle=False)
        except (ValueError, OSError):  # cannot be mapped (e.g. empty): read it to find out
            arr = self._npy(file, None)
        self._mapped[file.stem] = arr
        return tuple(int(s) for s in arr.shape)

    def _safetensors_shapes(self, file: Path) -> list[tuple[str, tuple[int, ...]]]:
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="numpy") as fh:
                return [(k, tuple(int(s) for s in fh.get_slice(k).get_shape())) for k in fh.keys()]  # noqa: SIM118
        except Exception as err:
            raise CorruptStoreError(f"cannot read {file} as safetensors: {err}") from None

    def n(self, name: str) -> int:
        return self.shapes[name][0]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name][1:]

    def check(self, name: str) -> None:
        shape = self.shapes[name]
        if len(shape) < 2:
            raise RepscopeValueError(
                f"features in {self._label(name)} must be 2-D (n_samples, n_features); got shape "
                f"{shape}. Save a single feature as shape (n, 1)."
            )

    def _numeric(self, arr: Any, name: str) -> np.ndarray:
        arr = np.asarray(arr) if not isinstance(arr, np.ndarray) else arr
        if arr.dtype.kind not in "fiu":
            raise RepscopeValueError(
                f"features in {self._label(name)} must be numeric; got dtype {arr.dtype}."
            )
        return arr

    def read(self, name: str) -> Any:
        file, key = self.where[name]
        if key is None:
            whole = self._mapped[name] if self.memmap else self._npy(file, None)
            return self._numeric(whole, name)
        return self._numeric(self._tensor(file, key, None), name)

    def _tensor(self, file: Path, key: str, rows: slice | None) -> Any:
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="numpy") as fh:
                return fh.get_tensor(key) if rows is None else fh.get_slice(key)[rows]
        except Exception as err:
            raise CorruptStoreError(f"cannot read {file} as safetensors: {err}") from None

    def batches(self, name: str, size: int, start: int, stop: int) -> Iterator[Any]:
        file, key = self.where[name]
        for lo in range(start, stop, size):
            rows = slice(lo, min(lo + size, stop))
            if key is None:
                mapped = self._mapped[name]
                part = mapped[rows] if self.memmap else np.array(mapped[rows])
            else:
                part = self._tensor(file, key, rows)
            yield self._numeric(part, name)


# --------------------------------------------------------------------------- the source
class LayerSource:
    """Read-only access to the layers of a store, files or arrays; make one with
    :func:`open_layers`.

    Attributes
    ----------
    layers : tuple of str
        The selected layers, in order (a store's depth order by default).
    n_samples : int
        Samples in every layer.
    pooling : {"mean", "none", "first", "last", "error"}
        How ragged token layers are read (see :func:`open_layers`).
    path : Path or None
        The store directory or file the layers come from.
    store : FeatureStore or None
        The store, for a store source (its metadata, model id, attributes).
    in_memory : bool
        True for arrays given in memory (reads are free); False for stores and files.
    """

    def __init__(self, backend: _Layers, layers: Sequence[str], pooling: TokenPooling) -> None:
        self._b = backend
        self._layers = tuple(layers)
        self._pooling: TokenPooling = pooling
        self._ids: np.ndarray | None = None

    # ------------------------------------------------------------------ description
    @property
    def layers(self) -> tuple[str, ...]:
        """The selected layers, in order."""
        return self._layers

    @property
    def n_samples(self) -> int:
        """Samples in every layer."""
        whole = self._b.n_samples()
        if whole is not None:
            return whole
        return self._b.n(self._layers[0]) if self._layers else 0

    @property
    def pooling(self) -> TokenPooling:
        """How ragged token layers are read."""
        return self._pooling

    @property
    def path(self) -> Path | None:
        """The store directory or file the layers come from (None for arrays in memory)."""
        return self._b.path

    @property
    def store(self) -> FeatureStore | None:
        """The FeatureStore of a store source, else None."""
        return self._b.store

    @property
    def in_memory(self) -> bool:
        """True when the layers are arrays given in memory."""
        return self._b.in_memory

    @property
    def description(self) -> str:
        """How error messages name the source (a path, or the argument name)."""
        return self._b.description

    @property
    def ids(self) -> np.ndarray | None:
        """Sample ids: the store's ``id`` metadata column, or None when there is none."""
        if self._ids is None and "id" in self.metadata_columns:
            self._ids = np.asarray(self.metadata(["id"])["id"])
        return self._ids

    @property
    def metadata_columns(self) -> list[str]:
        """Per-sample metadata columns (a store's; none for files and arrays)."""
        return self.store.metadata_columns if self.store is not None else []

    def metadata(self, columns: str | Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Per-sample metadata as ``{column: ndarray of shape (n_samples,)}`` (stores only).

        Raises
        ------
        UnknownNameError
            A column that does not exist (files and arrays have none).
        """
        if self.store is not None:
            return self.store.metadata(columns)
        wanted = [columns] if isinstance(columns, str) else list(columns or [])
        if wanted:
            raise UnknownNameError(
                f"unknown metadata column {wanted[0]!r}: {self.description} has no per-sample "
                "metadata (only a FeatureStore has).",
                name=str(wanted[0]),
                known=(),
            )
        return {}

    def __contains__(self, layer: object) -> bool:
        return layer in self._layers

    def __repr__(self) -> str:
        shown = ", ".join(repr(n) for n in self._layers[:6]) + (
            ", ..." if len(self._layers) > 6 else "")
        return (f"LayerSource({self.description}, n_samples={self.n_samples}, "
                f"layers=[{shown}], pooling={self._pooling!r})")

    def _name(self, layer: str) -> str:
        if layer not in self._layers:
            raise unknown_layer_error(layer, self._layers, self.description)
        return layer

    def is_ragged(self, layer: str) -> bool:
        """True when ``layer`` holds a variable number of tokens per sample."""
        return self._b.ragged(self._name(layer))

    def shape(self, layer: str) -> tuple[int, ...]:
        """Per-sample shape of ``layer`` as stored (per token for a ragged layer)."""
        return self._b.shape(self._name(layer))

    def width(self, layer: str) -> int:
        """Features per row of ``read(layer)``: the product of :meth:`shape`."""
        return math.prod(self.shape(layer))

    def token_counts(self, layer: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Tokens of samples ``start:stop``, int64 of shape (stop - start,); 1 per sample for a
        dense layer. Reads only the offsets of a store layer."""
        name = self._name(layer)
        start, stop = self._range(start, stop, "token_counts")
        if not self._b.ragged(name):
            return np.ones(stop - start, dtype=np.int64)
        return np.asarray(self._b.token_counts(name)[start:stop], dtype=np.int64)

    def n_tokens(self, layer: str) -> int:
        """Vectors in ``layer``: all tokens of a ragged layer, ``n_samples`` for a dense one."""
        name = self._name(layer)
        if not self._b.ragged(name):
            return self.n_samples
        if self.store is not None:
            return int(self.store.layer_info(name).n_tokens or 0)
        return int(self._b.token_counts(name).sum())

    # ------------------------------------------------------------------ reading
    def _rows(self, layer: str, raw: Any, first: int) -> Any:
        if isinstance(raw, RaggedArray):
            if self._pooling == "none":
                return raw
            return _pool(raw, self._pooling, layer, self.description, first)
        return raw.reshape(raw.shape[0], -1) if raw.ndim > 2 else raw

    def read(self, layer: str) -> Any:
        """``layer`` with one row per sample.

        Returns
        -------
        array of shape (n_samples, width)
            numpy for stores and files (``.npy`` files opened with ``memmap=True`` give a
            copy-on-write memory map), the given array (numpy or torch) for arrays in memory.
            Trailing dimensions are flattened. A ragged layer is pooled as ``pooling`` says
            (``"mean"`` averages in float64 and returns float64), or, with ``pooling="none"``,
            comes back as a :class:`~repscope.store.RaggedArray` (values of shape
            (n_tokens, *shape), offsets of shape (n_samples + 1,)).

        Raises
        ------
        UnknownNameError
            ``layer`` is not one of :attr:`layers`.
        RepscopeValueError
            A sample of a ragged layer has no tokens (mean, first or last pooling).
        """
        name = self._name(layer)
        return self._rows(name, self._b.read(name), 0)

    def read_all(self) -> dict[str, Any]:
        """``{layer: read(layer)}`` for every selected layer (all in memory at once)."""
        return {name: self.read(name) for name in self._layers}

    def _range(self, start: int, stop: int | None, caller: str) -> tuple[int, int]:
        n = self.n_samples
        stop = n if stop is None else stop
        for label, value, lo in (("start", start, 0), ("stop", stop, start)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not (
                    lo <= value <= n):
                raise RepscopeValueError(
                    f"The {label!r} parameter of {caller} must be an int in [{lo}, {n}] "
                    f"(n_samples={n}). Got {value!r} instead."
                )
        return int(start), int(stop)

    def iter_batches(
        self, layer: str, batch_size: int, *, start: int = 0, stop: int | None = None
    ) -> Iterator[Any]:
        """Samples ``start:stop`` of ``layer`` in order, ``batch_size`` samples at a time.

        Each batch is what :meth:`read` gives for those samples (pooled rows, or a
        RaggedArray with ``pooling="none"``). Stores, ``.npy`` and ``.safetensors`` files are
        read batch by batch (memory O(batch_size)); arrays in memory are sliced.

        Yields
        ------
        array of shape (b, width), or RaggedArray
            ``b == batch_size`` except for a shorter last batch.
        """
        name = self._name(layer)
        size = check_positive_int(batch_size, "batch_size", caller="iter_batches")
        a, b = self._range(start, stop, "iter_batches")

        def gen() -> Iterator[Any]:
            pos = a
            for raw in self._b.batches(name, size, a, b):
                rows = self._rows(name, raw, pos)
                pos += raw.n_samples if isinstance(raw, RaggedArray) else int(raw.shape[0])
                yield rows

        return gen()

    def read_rows(self, layer: str, indices: Any) -> Any:
        """Samples ``indices`` (int array, any order) of ``layer``, as :meth:`read` gives
        them. A store reads only those rows (its shards are memory-mapped); files and arrays
        are read whole and indexed."""
        name = self._name(layer)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        store = self._b.store
        if store is None:
            return _take_rows(self.read(name), idx)
        if self._b.ragged(name):
            return self._rows(name, store.read_ragged(name, idx), 0)
        return self._rows(name, store.read(name, idx), 0)

    def select(self, layers: str | Sequence[str] | None) -> LayerSource:
        """The same source restricted to (and ordered as) ``layers``; None keeps them all."""
        if layers is None:
            return self
        names = _wanted(layers, self._layers, self.description)
        return LayerSource(self._b, names, self._pooling)


def _pool(r: RaggedArray, how: str, layer: str, where: str, first: int) -> np.ndarray:
    """One row per sample of a ragged layer: the mean (float64), first or last token."""
    offs = np.asarray(r.offsets)
    lengths = np.diff(offs)
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise RepscopeValueError(
            f"layer {layer!r} of {where} has {empty.size} sample(s) without tokens (the first is "
            f"sample {first + int(empty[0])}); {how} pooling needs at least one token per "
            "sample. Drop those samples (e.g. empty texts) and extract again, or analyse the "
            "tokens unpooled (in Python: open_layers(..., pooling=\"none\"))."
        )
    values = np.asarray(r.values)
    values = values.reshape(values.shape[0], -1)
    if lengths.size == 0:
        return np.zeros((0, values.shape[1]), dtype=np.float64 if how == "mean" else values.dtype)
    if how == "mean":
        sums = np.add.reduceat(np.asarray(values, dtype=np.float64), offs[:-1], axis=0)
        return sums / lengths[:, None]
    return values[offs[:-1]] if how == "first" else values[offs[1:] - 1]


def _wanted(layers: str | Sequence[str], known: Sequence[str], where: str) -> list[str]:
    names = [layers] if isinstance(layers, str) else list(layers)
    for name in names:
        if name not in known:
            raise unknown_layer_error(name, known, where)
    return names


def _backend(source: Any, name: str, memmap: bool) -> _Layers:
    if isinstance(source, FeatureStore):
        return _StoreLayers(source)
    if isinstance(source, (str, os.PathLike)):
        return _path_backend(Path(source), name, memmap)
    if isinstance(source, Mapping):
        return _ArrayLayers({str(k): v for k, v in source.items()}, name)
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes, RaggedArray)):
        return _ArrayLayers({str(i): v for i, v in enumerate(source)}, name)
    raise RepscopeTypeError(
        f"{name} must be a FeatureStore, a path (store directory, .npy or .safetensors file, "
        f"or a directory of them), a mapping of layer name -> array, or a sequence of arrays; "
        f"got {type(source).__name__}."
    )


def _path_backend(p: Path, name: str, memmap: bool) -> _Layers:
    if not p.exists():
        raise DataNotFoundError(f"no features at {p}: the file or directory does not exist.")
    if p.is_dir():
        if (p / MANIFEST).exists():
            return _StoreLayers(FeatureStore.open(p))
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in _SUFFIXES)
        if not files:
            raise DataNotFoundError(
                f"{p} is not a FeatureStore (it has no {MANIFEST}) and holds no .npy or "
                ".safetensors files."
            )
        return _FileLayers(files, str(p), p, memmap)
    if p.suffix.lower() in _SUFFIXES:
        return _FileLayers([p], str(p), p, memmap)
    raise RepscopeValueError(
        f"{name} must be a .npy file, a .safetensors file, a FeatureStore directory or a "
        f"directory of .npy/.safetensors files; got {p.name!r}."
    )


def ragged_error(layer: str, where: str, caller: str | None) -> RepscopeValueError:
    """The error for a ragged token layer where ``caller`` needs one vector per sample."""
    why = f"{caller} needs one vector per sample" if caller else "pooling='error' refuses it"
    return RepscopeValueError(
        f"layer {layer!r} of {where} is a ragged token layer (a variable number of tokens per "
        f"sample) and {why}. Pool its tokens: pass open_layers(source, pooling='mean') (or "
        "'first', 'last') instead of the source."
    )


def _open(
    source: Any,
    layers: str | Sequence[str] | None,
    pooling: TokenPooling,
    name: str,
    memmap: bool,
    caller: str | None,
) -> LayerSource:
    if isinstance(source, LayerSource):
        backend = source._b
        names = list(source.layers) if layers is None else _wanted(
            layers, source.layers, source.description)
    else:
        backend = _backend(source, name, memmap)
        names = list(backend.names) if layers is None else _wanted(
            layers, backend.names, backend.description)
    for layer in names:
        backend.check(layer)
        if pooling == "error" and backend.ragged(layer):
            raise ragged_error(layer, backend.description, caller)
    counts = {layer: backend.n(layer) for layer in names}
    if len(set(counts.values())) > 1:
        raise RepscopeValueError(
            f"every layer of {backend.description} must have the same number of samples; got "
            f"{counts}."
        )
    return LayerSource(backend, names, pooling)


def open_layers(
    source: Any,
    layers: str | Sequence[str] | None = None,
    *,
    pooling: TokenPooling = "mean",
    name: str = "features",
    memmap: bool = False,
) -> LayerSource:
    """Open the layers of a store, a file, a directory of files or arrays in memory.

    Nothing is read yet beyond file headers (a store's manifest): :meth:`LayerSource.read`
    reads one layer, :meth:`LayerSource.iter_batches` streams one.

    Parameters
    ----------
    source : FeatureStore, path, mapping of str to array, sequence of arrays, or LayerSource
        A :class:`~repscope.store.FeatureStore`; the path of a store directory, of a ``.npy``
        file (one layer named after the file stem), of a ``.safetensors`` file (one tensor per
        layer) or of a directory of such files (name order); a mapping ``layer -> array of
        shape (n_samples, ...)`` (numpy, torch, or :class:`~repscope.store.RaggedArray` for a
        token layer); a sequence of arrays (layers ``"0"``, ``"1"``, ...); or a LayerSource
        (to select layers or change the pooling).
    layers : str or sequence of str, optional
        Which layers, in which order (default: all, in the source's order).
    pooling : {"mean", "none", "first", "last", "error"}, default="mean"
        How a ragged token layer is read: ``"mean"`` averages each sample's tokens (in
        float64, as every analysis did so far), ``"first"``/``"last"`` take its first/last
        token, ``"none"`` keeps the tokens (reads give a RaggedArray), ``"error"`` refuses
        ragged layers when the source is opened. A sample without tokens is an error for
        ``"mean"``, ``"first"`` and ``"last"``. Dense layers are never pooled.
    name : str, default="features"
        How messages name the source when it is not a path (e.g. ``"A"``).
    memmap : bool, default=False
        Open ``.npy`` files memory-mapped (copy-on-write) instead of reading them into memory.

    Returns
    -------
    LayerSource

    Raises
    ------
    UnknownNameError
        A name in ``layers`` is not a layer of the source (the message suggests the closest
        one and lists the known layers).
    DataNotFoundError
        ``source`` is a path that does not exist, or a directory without a store or files.
    CorruptStoreError
        A file cannot be read as ``.npy`` or safetensors.
    RepscopeTypeError
        ``source`` is none of the kinds above.
    RepscopeValueError
        The selected layers hold different numbers of samples; a file holds a 1-D array;
        ``pooling="error"`` and a selected layer is ragged.

    See Also
    --------
    load_features : every layer read into memory.

    Examples
    --------
    >>> import numpy as np
    >>> from repscope.store import RaggedArray
    >>> tokens = RaggedArray(np.arange(10.0).reshape(5, 2), np.array([0, 2, 5]))
    >>> src = open_layers({"emb": np.ones((2, 3, 4)), "tok": tokens})
    >>> src.layers, src.n_samples, src.width("emb"), src.is_ragged("tok")
    (('emb', 'tok'), 2, 12, True)
    >>> src.read("tok")  # the mean of each sample's tokens
    array([[1., 2.],
           [6., 7.]])
    >>> open_layers(src, "tok", pooling="last").read("tok")
    array([[2., 3.],
           [8., 9.]])
    """
    pooling = check_choice(pooling, "pooling", TOKEN_POOLINGS, caller="open_layers")  # type: ignore[assignment]
    return _open(source, layers, pooling, name, memmap, None)


def layer_source(
    source: Any,
    layers: str | Sequence[str] | None,
    *,
    pooling: TokenPooling,
    name: str,
    caller: str,
) -> LayerSource:
    """What an analysis calls on its ``source`` argument: a LayerSource keeps the pooling it
    was opened with (the user's explicit choice); anything else is opened with ``pooling``,
    the analysis's default. ``caller`` names the analysis in the ragged-layer error."""
    if isinstance(source, LayerSource):
        return source.select(layers)
    return _open(source, layers, pooling, name, False, caller)


#: How two sources of a paired analysis are lined up.
PairBy = Literal["id", "position"]
PAIR_BY: tuple[str, ...] = ("id", "position")


def pair_sources(
    a: LayerSource, b: LayerSource, *, by: PairBy = "id", caller: str = "a paired analysis"
) -> tuple[LayerSource, LayerSource, str]:
    """Line up the samples of two sources of a paired analysis (row ``i`` of both = input ``i``).

    With ``by="id"`` (the default) and sample ids on both sides (a store's ``id`` column):

    * the same ids in the same order: the sources are returned as they are;
    * the same ids in another order: ``b`` is reordered to ``a``'s order (read into memory,
      pooled as ``b`` reads), and the returned note says so;
    * different sets of ids: an error saying how many are shared. Pass ``by="position"`` to
      pair rows by position anyway.

    A side without ids (arrays, files) can only be paired by position, which needs the same
    number of samples on both sides.

    Returns
    -------
    a, b : LayerSource
    note : str
        What was done: "" unless ``b`` was reordered.

    Raises
    ------
    RepscopeValueError
        Different sample counts (by position), different or duplicated ids (by id).
    """
    perm, note = pairing_order(a, b, by=by, caller=caller)
    if perm is None:
        return a, b, ""
    reordered = open_layers({name: _take_rows(b.read(name), perm) for name in b.layers},
                            name=b.description)
    return a, reordered, note


def pairing_order(
    a: LayerSource, b: LayerSource, *, by: PairBy = "id", caller: str = "a paired analysis"
) -> tuple[np.ndarray | None, str]:
    """How :func:`pair_sources` lines up ``b`` with ``a``, without reading any layer: None
    when row ``i`` of both is already input ``i``, else ``perm`` (int64 of shape
    (n_samples,)) with ``b``'s row ``perm[i]`` paired with ``a``'s row ``i``; and the note
    :func:`pair_sources` returns. Only the id columns are read, so every rank of a
    distributed analysis can compute it and read just its share of the paired rows
    (:meth:`LayerSource.read_rows`).

    Raises
    ------
    RepscopeValueError
        As :func:`pair_sources`.
    """
    by = check_choice(by, "pair_by", PAIR_BY, caller=caller)  # type: ignore[assignment]
    ids_a, ids_b = (a.ids, b.ids) if by == "id" else (None, None)
    if ids_a is None or ids_b is None:
        if a.n_samples != b.n_samples:
            raise RepscopeValueError(
                f"{caller} needs the same samples on both sides, paired row by row; "
                f"{a.description} holds {a.n_samples} samples and {b.description} "
                f"{b.n_samples}. Pass features of the same inputs.")
        return None, ""
    la, lb = [str(v) for v in ids_a.tolist()], [str(v) for v in ids_b.tolist()]
    if la == lb:
        return None, ""
    for side, ids in ((a, la), (b, lb)):
        if len(set(ids)) != len(ids):
            raise RepscopeValueError(
                f"{caller} cannot pair by id: {side.description} has duplicated sample ids "
                f"({len(ids) - len(set(ids))} repeats). Pass pair_by='position' (CLI: "
                "--pair-by position) to pair rows by position.")
    sa, sb = set(la), set(lb)
    if sa != sb:
        raise RepscopeValueError(
            f"{caller}: the two sides hold different samples: {len(sa & sb)} of the "
            f"{len(la)} sample ids of {a.description} are among the {len(lb)} of "
            f"{b.description}. Extract both from the same inputs, or pass pair_by='position' "
            "(CLI: --pair-by position) to pair rows by position anyway.")
    where = {v: i for i, v in enumerate(lb)}
    perm = np.fromiter((where[v] for v in la), dtype=np.int64, count=len(la))
    return perm, (f"the samples of {b.description} were reordered by id to match "
                  f"{a.description} (the same {len(la)} ids in another order)")


def _take_rows(arr: Any, rows: np.ndarray) -> Any:
    if hasattr(arr, "detach"):  # torch
        import torch

        return arr[torch.as_tensor(rows, device=arr.device)]
    return np.asarray(arr)[rows]


def load_features(
    path: str | os.PathLike[str] | Any, layers: str | Sequence[str] | None = None
) -> dict[str, Any]:
    """Read every (or each given) layer into memory: ``{layer: array of shape (n, d)}``.

    Parameters
    ----------
    path : str or PathLike (or anything :func:`open_layers` takes)
        A ``.npy`` file (one layer named after the file stem), a ``.safetensors`` file (one
        tensor per layer), a FeatureStore directory, or a directory of ``.npy``/
        ``.safetensors`` files. Nothing is unpickled.
    layers : str or sequence of str, optional
        Which layers to read (default: all). Unknown names raise an error listing the known
        ones.

    Returns
    -------
    dict mapping layer name to an array of shape (n_samples, n_features)
        Trailing dimensions are flattened; token (ragged) layers of a store are mean-pooled
        per sample (float64).
    """
    return open_layers(path, layers).read_all()

