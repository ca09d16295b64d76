"""FeatureStore: a directory of safetensors shards, Parquet metadata and ``manifest.json``.

Layout::

    <root>/manifest.json                           # the source of truth (see below)
    <root>/layers/<layer dir>/chunk-000000.safetensors
    <root>/meta/chunk-000000.parquet               # per-sample metadata of chunk 0
    <root>/.lock                                   # the writer's lock; holds its pid

A chunk exists only once the manifest lists it: every file of a chunk is written to a temp file,
fsynced and renamed into place, the directories are fsynced, and only then is the manifest
replaced the same way. A writer killed at any moment leaves the store at its last complete
chunk; the next writer removes temp files and unlisted shards.

A store has **one writer at a time**. A writer (a store from :meth:`FeatureStore.create`, or any
store once it appends) holds an exclusive OS lock (``flock`` on ``.lock``) from the moment it
opens the store for writing until :meth:`FeatureStore.close`, the end of its ``with`` block, its
garbage collection or its process's death (the kernel drops the lock, so a killed writer never
leaves the store locked). It reads ``n_samples`` under that lock. Another writer, in another
process or in the same one, fails at once naming the holder's pid, or waits ``lock_timeout``
seconds. Readers take no lock and are never blocked.

Every path the manifest names is confined to the store (relative, normalised, no ``..``, no
symbolic links); a manifest or tree that says otherwise is refused with a CorruptStoreError and
nothing outside the store is ever read, written or deleted.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from repscope._validation import check_choice, check_positive_int, check_scalar
from repscope.exceptions import (
    CorruptStoreError,
    RepscopeTypeError,
    RepscopeValueError,
    UnknownNameError,
)
from repscope.registry import closest_names
from repscope.store._fs import (
    LOCK_FILE,
    TMP_PREFIX,
    StoreLock,
    acquire_store_lock,
    check_listed_file,
    store_path,
)
from repscope.store._index import check_indices, chunks_in, group_by_chunk
from repscope.store._inputs import normalize_features
from repscope.store._manifest import (
    MANIFEST,
    SCHEMA_VERSION,
    cleanup_unlisted,
    jsonable_attrs,
    new_manifest,
    read_manifest,
    write_manifest,
)
from repscope.store._metadata import normalize_metadata, read_parquet
from repscope.store._names import unknown_layer_error
from repscope.store._ragged import PaddedArray, RaggedArray, concat_ranges, pad_ragged
from repscope.store._safetensors import LayerShard, open_layer_shard, out_dtype, to_user_dtype
from repscope.store._writer import plan_append, write_chunk

__all__ = ["SCHEMA_VERSION", "FeatureStore", "LayerInfo"]

VerifyMode = Literal["lazy", "full", "none"]
_CACHE_SIZE = 64


@dataclass(frozen=True)
class LayerInfo:
    """What a store holds for one layer.

    Attributes
    ----------
    name : str
        The layer's module path.
    shape_tail : tuple of int
        Per-sample shape without the sample dimension (per-token shape for a ragged layer).
    dtype : str
        Stored dtype (``"float32"``, ``"bfloat16"``, ...); reads return bfloat16 as float32.
    ragged : bool
        True for token layers with a variable number of tokens per sample.
    n_samples : int
    n_tokens : int or None
        Total tokens of a ragged layer; None for a dense one.
    """

    name: str
    shape_tail: tuple[int, ...]
    dtype: str
    ragged: bool
    n_samples: int
    n_tokens: int | None = None


class FeatureStore:
    """Extracted features of one model: per-layer safetensors shards, Parquet metadata, manifest.

    Create one with :meth:`create`, fill it with :meth:`append` (one chunk per call), and open
    it with :meth:`open`. One writer at a time: a store opened for writing holds the store's lock
    until :meth:`close` (or the end of a ``with`` block, or garbage collection); another writer
    fails at once naming the holder's pid. Readers are never blocked.

    Reads memory-map the shards; a dense layer reads as an array of shape (n_samples,
    *shape_tail), a ragged token layer as a :class:`RaggedArray` (values of shape
    (n_tokens, *shape_tail) plus int64 offsets of shape (n_samples + 1,)).

    Stored dtypes: float16, bfloat16, float32, float64 (and integer/bool). numpy has no
    bfloat16, so bfloat16 layers are stored as raw bits and **read back as float32** (exactly).
    Nothing is ever unpickled: the store is safetensors, JSON and Parquet.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> root = tempfile.mkdtemp() + "/feats"
    >>> with FeatureStore.create(root, model_id="toy") as store:
    ...     store.append({"h": np.ones((4, 3), np.float32)}, metadata={"label": [0, 1, 0, 1]})
    4
    >>> FeatureStore.open(root).read("h", [3, 0]).shape
    (2, 3)
    """

    def __init__(self, root: Path, manifest: dict[str, Any], *, verify: VerifyMode) -> None:
        self._root = root
        self._verify_mode: VerifyMode = verify
        self._verified: set[str] = set()
        self._cache: OrderedDict[tuple[str, int], LayerShard] = OrderedDict()
        self._lock: StoreLock | None = None  # set while this object is the store's writer
        self._append_lock = threading.Lock()  # threads sharing this object append in turn
        self._set_manifest(manifest)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        path: str | PathLike[str],
        model_id: str,
        *,
        attrs: Mapping[str, Any] | None = None,
        exist_ok: bool = False,
        lock_timeout: float | None = 0.0,
    ) -> FeatureStore:
        """Create an empty store at ``path`` (or reopen one for appending), as its one writer.

        The returned store holds the store's writer lock until :meth:`close`, the end of a
        ``with`` block or garbage collection (or the process's death). Readers
        (:meth:`open`) are never blocked.

        Parameters
        ----------
        path : str or PathLike
            A new or empty directory.
        model_id : str
            Identifier of the source model, recorded in the manifest.
        attrs : mapping, optional
            Free-form JSON-serialisable attributes (pooling, dataset id, ...).
        exist_ok : bool, default False
            When ``path`` already holds a store, open it for appending if its ``model_id``
            (and ``attrs``, when given) match; resuming writers continue from ``n_samples``,
            read under the lock.
        lock_timeout : float or None, default 0.0
            Seconds to wait while another writer holds the store: 0 fails at once, None waits
            as long as it takes.

        Raises
        ------
        RepscopeValueError
            ``path`` holds a store and ``exist_ok`` is False, or the existing store was made
            for another model or attrs, or ``path`` is a non-empty directory of other files;
            or another writer holds the store (the message names its pid):
            "another process (pid N) is writing to this store; wait for it or write elsewhere".
        CorruptStoreError
            The existing manifest is unreadable or names paths outside the store.
        """
        if not isinstance(model_id, str) or not model_id:
            raise RepscopeTypeError(
                f"The 'model_id' parameter of FeatureStore.create must be a non-empty str. Got "
                f"{model_id!r} instead."
            )
        attrs_json = jsonable_attrs(attrs)
        if lock_timeout is not None:
            lock_timeout = float(
                check_scalar(lock_timeout, "lock_timeout", caller="FeatureStore.create",
                             min_value=0)
            )
        return cls._open_writer(
            Path(path), model_id, attrs_json, exist_ok=exist_ok,
            match_attrs=attrs is not None, lock_timeout=lock_timeout,
        )

    @classmethod
    def _open_writer(
        cls,
        root: Path,
        model_id: str,
        attrs: dict[str, Any],
        *,
        exist_ok: bool,
        match_attrs: bool,
        lock_timeout: float | None = 0.0,
        check: Callable[[FeatureStore], None] | None = None,
    ) -> FeatureStore:
        """The store at ``root`` opened as its writer (created with ``attrs`` when missing).

        ``check(store)`` and the model_id (and, with ``match_attrs``, attrs) comparison run on
        an existing store before the lock is taken (they concern what never changes once
        written, so a busy store still reports them) and again under the lock.
        """
        if root.exists() and not root.is_dir():
            raise RepscopeValueError(f"path {root} exists and is not a directory.")

        def reopen() -> FeatureStore:
            if not exist_ok:
                raise RepscopeValueError(
                    f"path {root} already holds a FeatureStore. Pass exist_ok=True to append "
                    "to it, or choose a new path."
                )
            store = cls(root, read_manifest(root), verify="lazy")
            store._refuse_parts()
            if check is not None:
                check(store)
            if store.model_id != model_id:
                raise RepscopeValueError(
                    f"the FeatureStore at {root} holds features of model_id="
                    f"{store.model_id!r}; got model_id={model_id!r}. Use another path."
                )
            if match_attrs and attrs != store.attrs:
                raise RepscopeValueError(
                    f"the FeatureStore at {root} was created with attrs={store.attrs!r}; got "
                    f"attrs={attrs!r}. Resume with the same attrs (or attrs=None)."
                )
            return store

        if (root / MANIFEST).exists():
            reopen()
        elif root.is_dir():
            if (root / "parts").is_dir():
                raise RepscopeValueError(
                    f"path {root} holds the parts of an extraction on several ranks that has "
                    "not finished; run it again under torchrun with the same number of "
                    "processes to finish it, or write elsewhere.")
            others = [p.name for p in root.iterdir() if p.name != LOCK_FILE]
            others = [n for n in others if not n.startswith(TMP_PREFIX)]
            if others:
                raise RepscopeValueError(
                    f"path {root} is a non-empty directory that is not a FeatureStore (it holds "
                    f"{sorted(others)[:3]}). Pass a new or empty directory."
                )
        root.mkdir(parents=True, exist_ok=True)
        lock = acquire_store_lock(root, timeout=lock_timeout)
        try:
            if (root / MANIFEST).exists():  # read again: another writer may have appended
                store = reopen()
                store._cleanup()
            else:
                manifest = new_manifest(model_id, attrs)
                write_manifest(root, manifest)
                store = cls(root, manifest, verify="lazy")
        except BaseException:
            lock.release()
            raise
        store._lock = lock
        return store

    @classmethod
    def open(cls, path: str | PathLike[str], *, verify: VerifyMode = "lazy") -> FeatureStore:
        """Open an existing store.

        Parameters
        ----------
        path : str or PathLike
            The store directory (holding ``manifest.json``).
        verify : {"lazy", "full", "none"}, default "lazy"
            ``"lazy"`` checks each file's SHA-256 the first time it is read, ``"full"`` checks
            every file now, ``"none"`` skips checksums. File sizes are always checked.

        Raises
        ------
        DataNotFoundError
            ``path`` is not a FeatureStore (no manifest).
        CorruptStoreError
            The manifest is unreadable, or (``verify="full"``) a file is missing, truncated
            or fails its checksum.
        """
        mode = check_choice(verify, "verify", ("lazy", "full", "none"), caller="FeatureStore.open")
        root = Path(path)
        store = cls(root, read_manifest(root), verify=mode)  # type: ignore[arg-type]
        if verify == "full":
            store.verify()
        return store

    def _refuse_parts(self) -> None:
        """A store joined from the parts several ranks wrote is read-only."""
        parts = self._m.get("parts")
        if parts:
            raise RepscopeValueError(
                f"the FeatureStore at {self._root} was extracted by {len(parts)} ranks and is "
                "read-only (its manifest joins the parts each rank wrote). Resume or redo the "
                "extraction under torchrun with as many ranks, or write a new store.")

    # ------------------------------------------------------------------ properties
    def _set_manifest(self, manifest: dict[str, Any]) -> None:
        self._m = manifest
        chunks = manifest["chunks"]
        self._starts = np.array([c["start"] for c in chunks], dtype=np.int64)
        self._stops = np.array([c["stop"] for c in chunks], dtype=np.int64)

    @property
    def path(self) -> Path:
        """The store directory."""
        return self._root

    @property
    def model_id(self) -> str:
        """Identifier of the model the features come from."""
        return str(self._m["model_id"])

    @property
    def attrs(self) -> dict[str, Any]:
        """Free-form attributes given at creation (a copy)."""
        return copy.deepcopy(self._m.get("attrs", {}))

    @property
    def created(self) -> str:
        """Creation time, ISO 8601 UTC."""
        return str(self._m.get("created", ""))

    @property
    def n_samples(self) -> int:
        """Number of samples in complete chunks."""
        return int(self._m["n_samples"])

    @property
    def n_chunks(self) -> int:
        """Number of complete chunks."""
        return len(self._m["chunks"])

    @property
    def layers(self) -> list[str]:
        """Layer names, in the order of the first append."""
        return list(self._m["layers"])

    @property
    def metadata_columns(self) -> list[str]:
        """Names of the per-sample metadata columns."""
        return [c[0] for c in self._m.get("metadata_columns") or []]

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        layers = self.layers
        shown = ", ".join(repr(n) for n in layers[:6]) + (", ..." if len(layers) > 6 else "")
        return (
            f"FeatureStore(path={str(self._root)!r}, model_id={self.model_id!r}, "
            f"n_samples={self.n_samples}, layers=[{shown}])"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()  # memory maps are reopened in the new process
        state["_lock"] = None  # a copy only reads; its first append would take the lock itself
        del state["_append_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._append_lock = threading.Lock()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _layer(self, layer: str) -> dict[str, Any]:
        try:
            return dict(self._m["layers"][layer])
        except (KeyError, TypeError):
            raise unknown_layer_error(
                layer, self.layers, f"the FeatureStore at {self._root}",
                empty="(none: nothing appended yet)",
            ) from None

    def layer_info(self, layer: str) -> LayerInfo:
        """Shape, dtype and size of ``layer``; raises UnknownNameError for an unknown name."""
        spec = self._layer(layer)
        tokens = None
        if spec["ragged"]:
            tokens = sum(int(c["shards"][layer]["tokens"]) for c in self._m["chunks"])
        return LayerInfo(
            layer, tuple(spec["shape_tail"]), spec["dtype"], spec["ragged"], self.n_samples, tokens
        )

    def refresh(self) -> None:
        """Re-read the manifest to see chunks appended by another writer since opening."""
        self._set_manifest(read_manifest(self._root))

    def close(self) -> None:
        """Release the writer lock, if this store holds it, and drop the cached memory maps.

        Both also go when the store is garbage-collected. The store stays readable, and a later
        :meth:`append` takes the lock again.
        """
        self._cache.clear()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def _begin_writing(self, timeout: float | None = 0.0) -> bool:
        """Become the store's writer unless already it: take the lock, re-read the manifest
        under it and remove a dead writer's debris. Returns whether the lock was taken now."""
        if self._lock is not None and self._lock.held:
            return False
        self._refuse_parts()
        lock = acquire_store_lock(self._root, timeout=timeout)
        try:
            self._set_manifest(read_manifest(self._root))
            self._cleanup()
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        return True

    # ------------------------------------------------------------------ writing
    def append(
        self,
        features: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one chunk of samples atomically and return the new ``n_samples``.

        Parameters
        ----------
        features : mapping of str to array
            Layer name -> values for ``rows`` samples. A dense layer is a numpy array or torch
            tensor of shape (rows, *shape_tail). A ragged token layer is a **list** of
            per-sample arrays of shape (t_i, *shape_tail), or a **tuple** ``(values, offsets)``
            with values of shape (sum t_i, *shape_tail) and offsets of shape (rows + 1,) from 0.
            The first append fixes the layer set, shapes and dtypes; later ones must match.
            Values are stored as given (no NaN check).
        metadata : mapping of str to sequence, optional
            Per-sample columns (lists, numpy arrays or torch tensors of str, int, float or
            bool) of length ``rows``. The first append fixes the columns; later ones must pass
            the same columns (integers may fill a float column).

        Returns
        -------
        int
            ``n_samples`` after the append.

        Raises
        ------
        RepscopeValueError
            Layers, shapes, dtypes or metadata columns differ from the store's, or row counts
            disagree; or another writer holds the store (a store from :meth:`open` takes the
            writer lock on its first append and keeps it until :meth:`close`).
        RepscopeTypeError
            An input is not an array (or has an unsupported dtype).
        """
        batches = normalize_features(features)
        rows = next(iter(batches.values())).rows
        table = normalize_metadata(metadata, rows) if metadata is not None else None
        if table is not None and table.num_columns == 0:
            table = None
        with self._append_lock:
            self._begin_writing()  # from here on no other writer can change the store
            manifest, table = plan_append(self._m, batches, table)
            chunk = write_chunk(self._root, manifest, batches, table, rows)
            manifest["chunks"].append(chunk)
            manifest["n_samples"] = chunk["stop"]
            write_manifest(self._root, manifest)
            self._set_manifest(manifest)
        return self.n_samples

    def _cleanup(self) -> None:
        """Remove temp files and unlisted shards (call with the lock held)."""
        cleanup_unlisted(self._root, self._m)

    # ------------------------------------------------------------------ integrity
    def _check_file(self, entry: Mapping[str, Any], what: str, *, checksum: bool) -> Path:
        path = store_path(self._root, entry["file"], what)
        check_listed_file(path, entry, checksum=checksum and entry["file"] not in self._verified)
        if checksum:
            self._verified.add(entry["file"])
        return path

    def verify(self) -> None:
        """Check the size and SHA-256 of every file the manifest lists.

        Raises
        ------
        CorruptStoreError
            On the first missing, truncated or modified file, naming it.
        """
        for c in self._m["chunks"]:
            i = c["index"]
            entries = [(f"chunk {i} shard of layer {n!r}", e) for n, e in c["shards"].items()]
            if c.get("metadata"):
                entries.append((f"chunk {i} metadata", c["metadata"]))
            for what, entry in entries:  # re-hash even files a lazy read already checked
                path = store_path(self._root, entry["file"], what)
                check_listed_file(path, entry, checksum=True)
                self._verified.add(entry["file"])

    def _shard(self, layer: str, ci: int) -> LayerShard:
        key = (layer, ci)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        spec = self._m["layers"][layer]
        entry = self._m["chunks"][ci]["shards"][layer]
        path = self._check_file(
            entry, f"chunk {ci} shard of layer {layer!r}", checksum=self._verify_mode == "lazy"
        )
        shard = open_layer_shard(
            path,
            dtype=spec["dtype"],
            shape_tail=tuple(spec["shape_tail"]),
            rows=int(entry["rows"]),
            tokens=int(entry["tokens"]) if spec["ragged"] else None,
        )
        self._cache[key] = shard
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return shard

    # ------------------------------------------------------------------ reading
    def _spec_of(self, layer: str, *, ragged: bool, caller: str) -> dict[str, Any]:
        spec = self._layer(layer)
        if spec["ragged"] != ragged:
            use = "read_ragged() or read_padded()" if spec["ragged"] else "read()"
            raise RepscopeValueError(
                f"{caller} needs a {'ragged token' if ragged else 'dense'} layer; layer {layer!r} "
                f"is {'ragged' if spec['ragged'] else 'dense'}. Use {use}."
            )
        return spec

    def _dense_range(self, layer: str, spec: Mapping[str, Any], a: int, b: int,
                     dtype: np.dtype[Any] | None = None) -> np.ndarray:
        """Rows ``a:b`` as one new array, in ``dtype`` when given (cast while copying out of
        the shards: one pass over the rows instead of a copy and then a cast)."""
        out = np.empty((b - a, *spec["shape_tail"]),
                       dtype=out_dtype(spec["dtype"]) if dtype is None else dtype)
        pos = 0
        for ci, la, lb in chunks_in(self._starts, self._stops, a, b):
            raw = self._shard(layer, ci).values[la:lb]
            out[pos : pos + lb - la] = to_user_dtype(raw, spec["dtype"])
            pos += lb - la
        return out

    def _ragged_range(self, layer: str, spec: Mapping[str, Any], a: int, b: int) -> RaggedArray:
        parts, lengths = [], []
        for ci, la, lb in chunks_in(self._starts, self._stops, a, b):
            shard = self._shard(layer, ci)
            off = shard.offsets
            if off is None:  # pragma: no cover - _shard guarantees offsets for ragged layers
                raise CorruptStoreError(f"shard of layer {layer!r} chunk {ci} has no offsets.")
            raw = shard.values[int(off[la]) : int(off[lb])]
            parts.append(to_user_dtype(raw, spec["dtype"]))
            lengths.append(np.diff(off[la : lb + 1]))
        offsets = np.zeros(b - a + 1, dtype=np.int64)
        if lengths:
            np.cumsum(np.concatenate(lengths), out=offsets[1:])
        if parts:
            values = np.concatenate(parts, axis=0)
        else:
            values = np.empty((0, *spec["shape_tail"]), dtype=out_dtype(spec["dtype"]))
        return RaggedArray(values, offsets)

    def read(self, layer: str, indices: Any = None) -> np.ndarray:
        """Read a dense layer, all samples or the given ones in the given order.

        Parameters
        ----------
        layer : str
            A dense layer.
        indices : array-like of int of shape (k,), slice, or None
            Sample indices in any order (repeats allowed, negative counts from the end);
            None reads every sample.

        Returns
        -------
        ndarray of shape (k, *shape_tail)
            In the stored dtype (bfloat16 comes back as float32). A fresh array, not a memmap.

        Raises
        ------
        UnknownNameError
            ``layer`` is not in the store.
        RepscopeValueError
            ``layer`` is ragged, or an index is out of range.
        """
        spec = self._spec_of(layer, ragged=False, caller="read()")
        if indices is None:
            return self._dense_range(layer, spec, 0, self.n_samples)
        idx = check_indices(indices, self.n_samples)
        out = np.empty((idx.shape[0], *spec["shape_tail"]), dtype=out_dtype(spec["dtype"]))
        for ci, sel, local in group_by_chunk(self._starts, self._stops, idx):
            raw = self._shard(layer, ci).values[local]
            out[sel] = to_user_dtype(raw, spec["dtype"])
        return out

    def read_ragged(self, layer: str, indices: Any = None) -> RaggedArray:
        """Read a ragged token layer as values plus offsets.

        Parameters
        ----------
        layer : str
            A ragged layer.
        indices : array-like of int of shape (k,), slice, or None
            Samples in the requested order; None reads every sample.

        Returns
        -------
        RaggedArray
            ``values`` of shape (n_tokens, *shape_tail) (bfloat16 read as float32) and int64
            ``offsets`` of shape (k + 1,): sample ``j`` of the request is
            ``values[offsets[j]:offsets[j + 1]]``.
        """
        spec = self._spec_of(layer, ragged=True, caller="read_ragged()")
        if indices is None:
            return self._ragged_range(layer, spec, 0, self.n_samples)
        idx = check_indices(indices, self.n_samples)
        k = idx.shape[0]
        lengths = np.zeros(k, dtype=np.int64)
        src = np.zeros(k, dtype=np.int64)
        groups = list(group_by_chunk(self._starts, self._stops, idx))
        for ci, sel, local in groups:
            off = self._shard(layer, ci).offsets
            if off is None:  # pragma: no cover
                raise CorruptStoreError(f"shard of layer {layer!r} chunk {ci} has no offsets.")
            src[sel] = off[local]
            lengths[sel] = off[local + 1] - off[local]
        offsets = np.zeros(k + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.empty((int(offsets[-1]), *spec["shape_tail"]), dtype=out_dtype(spec["dtype"]))
        for ci, sel, _ in groups:
            tok_src = concat_ranges(src[sel], lengths[sel])
            tok_dst = concat_ranges(offsets[sel], lengths[sel])
            values[tok_dst] = to_user_dtype(self._shard(layer, ci).values[tok_src], spec["dtype"])
        return RaggedArray(values, offsets)

    def read_padded(
        self, layer: str, indices: Any = None, *, pad_value: float = 0.0
    ) -> PaddedArray:
        """Read a ragged layer padded to the longest requested sample.

        Returns
        -------
        PaddedArray
            ``values`` of shape (k, t_max, *shape_tail) and boolean ``mask`` of shape
            (k, t_max), True at real tokens; padding holds ``pad_value``.
        """
        return pad_ragged(self.read_ragged(layer, indices), pad_value=pad_value)

    def iter_batches(
        self,
        layer: str,
        batch_size: int,
        *,
        start: int = 0,
        stop: int | None = None,
        prefetch: int = 2,
        dtype: Any = None,
    ) -> Iterator[Any]:
        """Stream samples ``start:stop`` of ``layer`` in order, ``batch_size`` at a time.

        Batches cross chunk boundaries. Memory use is O((prefetch + 1) * batch_size),
        independent of the store's size: shards are memory-mapped by a private reader of this
        call, which unmaps each shard once the stream has passed it.

        Parameters
        ----------
        layer : str
        batch_size : int
        start, stop : int, optional
            The sample range (default: all).
        prefetch : int, default=2
            Batches read ahead in a background thread while the caller works on the current
            one (reads release the GIL, so reading overlaps compute). At most ``prefetch``
            batches wait ahead of the caller; the thread starts at the first batch and is
            stopped and joined when the stream ends or the caller stops early (``break``,
            ``close()``). An error while reading (a shard deleted or corrupted after
            :meth:`open`) is raised in the caller, at that batch. 0 reads in the caller's
            thread.
        dtype : numpy dtype, optional
            Cast each batch's values to it while reading (in the background thread), e.g.
            ``np.float64`` for a float16 store that is reduced in float64.

        Yields
        ------
        ndarray of shape (b, *shape_tail) for a dense layer, or RaggedArray for a ragged one
            ``b == batch_size`` except for a shorter last batch. A dense batch is a new array
            that nothing else holds (the consumer may overwrite it).
        """
        from repscope.store._prefetch import prefetch as read_ahead

        spec = self._layer(layer)
        batch_size = check_positive_int(batch_size, "batch_size", caller="iter_batches")
        depth = check_scalar(prefetch, "prefetch", caller="iter_batches", kind=int,
                             min_value=0)
        cast = None if dtype is None else np.dtype(dtype)
        n = self.n_samples
        stop = n if stop is None else stop
        for name, value, lo in (("start", start, 0), ("stop", stop, start)):
            if not isinstance(value, (int, np.integer)) or not lo <= value <= n:
                raise RepscopeValueError(
                    f"The {name!r} parameter of iter_batches must be an int in [{lo}, {n}] "
                    f"(n_samples={n}). Got {value!r} instead."
                )
        # A copy with its own shard cache: the reading thread never shares memory maps with
        # other readers of this store, and the stream can unmap what it has passed.
        reader = copy.copy(self)
        a0, b0 = int(start), int(stop)

        def gen() -> Iterator[Any]:
            try:
                for a in range(a0, b0, batch_size):
                    b = min(a + batch_size, b0)
                    batch: RaggedArray | np.ndarray
                    if spec["ragged"]:
                        batch = reader._ragged_range(layer, spec, a, b)
                        if cast is not None:
                            batch = RaggedArray(batch.values.astype(cast, copy=False),
                                                batch.offsets)
                    else:  # a new array, cast while copied: the consumer may write to it
                        batch = reader._dense_range(layer, spec, a, b, cast)
                    passed = int(np.searchsorted(reader._stops, b, side="right"))
                    for key in [k for k in reader._cache if k[1] < passed]:
                        del reader._cache[key]
                    yield batch
            finally:
                reader._cache.clear()

        return read_ahead(gen(), depth)

    # ------------------------------------------------------------------ metadata
    def metadata_table(self, columns: str | Sequence[str] | None = None) -> pa.Table:
        """Per-sample metadata of every chunk as one ``pyarrow.Table`` (n_samples rows).

        Parameters
        ----------
        columns : str or sequence of str, optional
            Columns to read; None reads all.
        """
        known = self.metadata_columns
        cols = [columns] if isinstance(columns, str) else None if columns is None else list(columns)
        for c in cols or []:
            if c not in known:
                close = closest_names(str(c), known)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise UnknownNameError(
                    f"unknown metadata column {c!r}.{hint} Known columns: "
                    f"{', '.join(known) if known else '(none)'}.",
                    name=str(c),
                    known=tuple(known),
                )
        names = known if cols is None else cols
        types = dict(self._m.get("metadata_columns") or [])
        tables = []
        for c in self._m["chunks"]:
            if not c.get("metadata"):
                continue
            path = self._check_file(
                c["metadata"], f"chunk {c['index']} metadata", checksum=self._verify_mode == "lazy"
            )
            t = read_parquet(path, names)
            if t.num_rows != c["stop"] - c["start"]:
                raise CorruptStoreError(
                    f"corrupt metadata file {path}: expected {c['stop'] - c['start']} rows, it "
                    f"has {t.num_rows}."
                )
            tables.append(t)
        if not tables:
            return pa.table({n: pa.array([], type=pa.type_for_alias(types[n])) for n in names})
        return pa.concat_tables(tables)

    def metadata(self, columns: str | Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Per-sample metadata as ``{column: ndarray of shape (n_samples,)}``.

        Strings come back as object arrays; integer columns with missing values as floats.
        """
        table = self.metadata_table(columns)
        return {n: table.column(n).to_numpy(zero_copy_only=False) for n in table.column_names}
