"""``extract`` (into memory) and ``extract_to_store`` (into a resumable FeatureStore): batched,
ordered activation extraction."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from repscope._array import is_torch
from repscope._validation import check_positive_int
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.extract._base import Adapter, PreparedChunk
from repscope.extract._dispatch import make_adapter
from repscope.extract._pooling import TokenRows, resolve_pooling, to_host
from repscope.extract._text import TextBatcher
from repscope.store._tokens import TEXT_COLUMN, TOKENS_COLUMN, encode_tokens

if TYPE_CHECKING:
    from repscope.store import FeatureStore, RaggedArray

__all__ = ["extract", "extract_to_store"]

#: Key of the extraction settings inside a store's ``attrs``.
ATTRS_KEY = "extract"


@overload
def extract(
    model: Any,
    inputs: Any,
    layers: str | Sequence[str] | None = ...,
    pooling: str | Mapping[str, str] = ...,
    *,
    batch_size: int = ...,
    store: None = ...,
    device: Any = ...,
    progress: bool = ...,
    max_length: int | None = ...,
    metadata: Mapping[str, Sequence[Any]] | None = ...,
    tokenizer: Any = ...,
    forward_fn: Callable[..., Any] | None = ...,
    chunk_size: int | None = ...,
    model_id: str | None = ...,
) -> dict[str, np.ndarray | RaggedArray]: ...


@overload
def extract(
    model: Any,
    inputs: Any,
    layers: str | Sequence[str] | None = ...,
    pooling: str | Mapping[str, str] = ...,
    *,
    batch_size: int = ...,
    store: str | PathLike[str] | FeatureStore,
    device: Any = ...,
    progress: bool = ...,
    max_length: int | None = ...,
    metadata: Mapping[str, Sequence[Any]] | None = ...,
    tokenizer: Any = ...,
    forward_fn: Callable[..., Any] | None = ...,
    chunk_size: int | None = ...,
    model_id: str | None = ...,
) -> FeatureStore: ...


def extract(
    model: Any,
    inputs: Any,
    layers: str | Sequence[str] | None = None,
    pooling: str | Mapping[str, str] = "mean",
    *,
    batch_size: int = 32,
    store: str | PathLike[str] | FeatureStore | None = None,
    device: Any = None,
    progress: bool = True,
    max_length: int | None = None,
    metadata: Mapping[str, Sequence[Any]] | None = None,
    tokenizer: Any = None,
    forward_fn: Callable[..., Any] | None = None,
    chunk_size: int | None = None,
    model_id: str | None = None,
) -> dict[str, np.ndarray | RaggedArray] | FeatureStore:
    """Run ``model`` over ``inputs`` and return the activations of ``layers`` in memory.

    Every requested layer is captured in **one** forward pass per batch through forward hooks
    that exist only inside :func:`repscope.extract.capture` (removed in ``finally``, also when
    the forward raises). The model runs in eval mode under ``torch.inference_mode()``; its
    training flags are restored afterwards and it is never moved. Results are in input order.
    Inputs are processed in chunks of ``chunk_size`` samples; a text chunk is tokenised once
    and sorted by length into batches (less padding), then restored to input order. To write
    into a resumable :class:`~repscope.store.FeatureStore` instead, use
    :func:`extract_to_store`.

    Parameters
    ----------
    model : model or repscope.zoo.LoadedModel or Adapter
        A zoo ``LoadedModel`` (dispatched on what it wraps); a Hugging Face ``transformers``
        encoder or causal LM (pass ``tokenizer``); a ``SentenceTransformer``; an ONNX graph
        (``.onnx`` path, ``onnx.ModelProto`` or ``onnxruntime.InferenceSession``; ``tokenizer``
        for text); any ``torch.nn.Module`` taking a tensor batch; or an :class:`Adapter`.
    inputs : list of str, array-like or iterable
        Texts for text models; for tensor models an array/tensor of shape (n_samples, ...) or an
        iterable of batches (arrays/tensors, or tuples whose first entry is one, e.g. a
        ``DataLoader``), re-cut into ``batch_size`` rows.
    layers : str, list of str or None
        Layer names from :func:`list_layers`: module paths (``"encoder.layer.3"``), ONNX tensor
        names, ``"output"`` (a torch forward's return value). Shorthands: ``"blocks"``
        (zoo models: their ``info.layers``; Hugging Face models: the embedding output then
        every transformer block, i.e. what ``hidden_states`` holds; other torch models: the
        entries of the longest ``ModuleList``/``Sequential``) and ``"outputs"`` (ONNX: the
        graph's own outputs). ``None``: ``"blocks"``, or ``"outputs"`` for an ONNX graph
        without known blocks.
    pooling : str or mapping of str to str, default "mean"
        One mode for every layer or ``{layer: mode}``. Token layers (batch, tokens, features):
        ``"mean"`` (over real tokens: the attention mask), ``"cls"``/``"first"``,
        ``"last"`` (last non-padding token), ``"none"``/``"tokens"`` (keep every real token;
        for text models stored **ragged** without padding, one (t_i, d) block per sample;
        for models without a mask kept dense). Spatial maps (batch, channels, *spatial):
        ``"avg"``/``"mean"`` (global average) or ``"none"``. Vectors (batch, d) are kept.
        Means accumulate in float32 up to 4096 terms and in float64 beyond.
    batch_size : int, default 32
        Samples per forward pass.
    device : str or torch.device, optional
        Compute device. Torch models run where their parameters are; ``device`` must agree
        (repscope refuses to move your model; move it first). Batches are copied to that
        device and pooled activations back to host memory (one device-to-host copy per layer
        and batch; pooling happens on the device, so only pooled values travel). ONNX graphs:
        ``"cpu"`` or ``"cuda"`` (execution provider).
    progress : bool, default True
        Show a progress bar (rich, on stderr).
    max_length : int, optional
        Truncate texts to this many tokens; default the tokenizer's (a sentence-transformers
        model's ``max_seq_length``).
    tokenizer : optional
        The tokenizer of a bare transformers model or of an ONNX text graph.
    forward_fn : callable, optional
        Plain torch modules: call ``forward_fn(batch)`` instead of ``model(batch)``, e.g.
        ``model.extract_features``.
    chunk_size : int, optional
        Samples per chunk (one store append; text length-sorting happens within a chunk).
        Default: the multiple of ``batch_size`` closest to 1024.
    model_id : str, optional
        Identifier recorded in the store; default from the model (zoo name, Hugging Face
        ``name_or_path``, ONNX file name, class name).
    store : str, PathLike or FeatureStore, optional
        Deprecated: use :func:`extract_to_store`. Given, ``extract`` warns
        (:class:`DeprecationWarning`) and returns ``extract_to_store(model, inputs, store,
        ...)``, as it did before; this keyword goes in the next release.
    metadata : mapping of str to sequence, optional
        Only used with the deprecated ``store`` (see :func:`extract_to_store`); checked and
        otherwise ignored.

    Returns
    -------
    dict of str to ndarray or RaggedArray
        ``{layer: array of shape (n_samples, ...)}``, or a
        :class:`~repscope.store.RaggedArray` ``(values (n_tokens, d), offsets (n_samples + 1,))``
        for ragged token layers. bfloat16 activations come back as float32.

    Raises
    ------
    UnknownNameError
        A layer name is unknown (the message lists the closest names).
    RepscopeTypeError
        The model is none of the supported kinds, or inputs have the wrong type.
    RepscopeValueError
        Bad parameters; empty inputs; a device other than the model's.

    See Also
    --------
    extract_to_store : the same extraction written into a resumable FeatureStore.
    list_layers : the names ``layers`` accepts.
    capture : the hook context manager for custom loops.

    Examples
    --------
    >>> import numpy as np, torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> feats = extract(net, np.ones((10, 4), np.float32), ["1", "2"], progress=False)
    >>> feats["1"].shape, feats["2"].shape
    ((10, 8), (10, 2))
    """
    if store is not None:
        warnings.warn(
            "extract(..., store=...) is deprecated and will stop working in the next release; "
            "call repscope.extract.extract_to_store(model, inputs, store, ...) instead, which "
            "returns the FeatureStore (extract now always returns arrays).",
            DeprecationWarning,
            stacklevel=2,
        )
        return extract_to_store(
            model, inputs, store, layers, pooling, batch_size=batch_size, device=device,
            progress=progress, max_length=max_length, metadata=metadata, tokenizer=tokenizer,
            forward_fn=forward_fn, chunk_size=chunk_size, model_id=model_id,
        )
    job = _Job(model, inputs, layers, pooling, batch_size, chunk_size, device, max_length,
               tokenizer, forward_fn, model_id, metadata)
    if job.n == 0:
        raise RepscopeValueError("inputs is empty; pass at least one sample.")
    collected: list[dict[str, Any]] = []
    job.run(progress, 0, lambda features, a, b, items: collected.append(features))
    if not collected:
        raise RepscopeValueError("inputs is empty; pass at least one sample.")
    return {name: _concat_chunks([c[name] for c in collected]) for name in job.names}


def extract_to_store(
    model: Any,
    inputs: Any,
    store: str | PathLike[str] | FeatureStore,
    layers: str | Sequence[str] | None = None,
    pooling: str | Mapping[str, str] = "mean",
    *,
    batch_size: int = 32,
    device: Any = None,
    progress: bool = True,
    max_length: int | None = None,
    metadata: Mapping[str, Sequence[Any]] | None = None,
    tokenizer: Any = None,
    forward_fn: Callable[..., Any] | None = None,
    chunk_size: int | None = None,
    model_id: str | None = None,
    dataset: str | None = None,
    shard_by_rank: bool | None = None,
) -> FeatureStore:
    """Run ``model`` over ``inputs`` and write the activations of ``layers`` into a store.

    The extraction is the one :func:`extract` does (same hooks, batching and pooling); each
    chunk of ``chunk_size`` samples is appended to the :class:`~repscope.store.FeatureStore`
    atomically, so an interrupted run leaves the store at its last complete chunk, and calling
    ``extract_to_store`` again with the same arguments **resumes**: the first
    ``store.n_samples`` inputs are skipped and the final store holds exactly what an
    uninterrupted run writes.

    The run is the store's one writer: it takes the store's writer lock before reading
    ``n_samples`` and holds it until it returns (or fails), so a second extraction into the
    same store while this one runs stops at once with "another process (pid N) is writing to
    this store; wait for it or write elsewhere" instead of writing every sample twice. A
    FeatureStore object passed in that already holds the lock keeps it afterwards.

    Parameters
    ----------
    model, inputs
        As for :func:`extract`.
    store : str, PathLike or FeatureStore
        The store: created when missing, resumed when it holds an earlier partial run of the
        same model, layers and pooling.
    layers, pooling, batch_size, device, progress, max_length, tokenizer, forward_fn, model_id
        As for :func:`extract`.
    metadata : mapping of str to sequence, optional
        Per-sample columns (labels, ids, text) of length ``len(inputs)``, written with each
        chunk (``store.metadata()``).
    chunk_size : int, optional
        Samples per chunk (one store append; text length-sorting happens within a chunk).
        Default: the multiple of ``batch_size`` closest to 1024.
    dataset : str, optional
        The name of the data set ``inputs`` come from, kept in the store's attrs
        (``store.attrs["dataset"]``) when it is created; analyses of the store record it.
    shard_by_rank : bool, optional
        Under ``torch.distributed`` (e.g. ``torchrun``) with more than one rank, every rank
        calls this with the same arguments and extracts only its share, into one **part** of
        the store (default: True whenever a process group of more than one rank is
        initialised; False extracts everything on every rank, which then needs one store path
        per rank). See Notes.

    Notes
    -----
    **Extraction by rank.** The inputs are cut into chunks of ``chunk_size`` (the last one
    shorter); rank ``r`` of ``W`` takes the contiguous block of chunks
    ``[r * n_chunks // W, (r + 1) * n_chunks // W)`` and writes it as an ordinary store at
    ``<store>/parts/rank-<r>-of-<W>``. Because every chunk is the same rows as in one process,
    batched (and, for text, length-sorted) the same way, a store made by ``W`` ranks holds
    **exactly** the arrays of a one-process run with the same ``batch_size`` and
    ``chunk_size`` (with the same torch thread settings), row for row. After a barrier, rank
    0 writes the top-level ``manifest.json``, which lists every part's chunks in input order,
    so the folder opens with :meth:`FeatureStore.open` as one store (read-only: it is never
    appended to). Each rank resumes its own part after an interruption; a rerun with another
    world size, or into a store a single process made, is refused with a message saying what
    to run. The inputs must have a known length (a sequence, an array, or an iterable with
    ``len``).

    Returns
    -------
    FeatureStore
        The store, holding every input. bfloat16 activations are stored as bfloat16 and read
        back as float32.

    Raises
    ------
    UnknownNameError
        A layer name is unknown (the message lists the closest names).
    RepscopeTypeError
        The model is none of the supported kinds, inputs have the wrong type, or ``store`` is
        not a path or FeatureStore.
    RepscopeValueError
        Bad parameters; a store made with other inputs, layers, pooling or model; a device other
        than the model's; another writer holds the store.

    Examples
    --------
    >>> import numpy as np, tempfile, torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> fs = extract_to_store(net, np.ones((10, 4), np.float32), tempfile.mkdtemp() + "/s",
    ...                       ["2"], progress=False)
    >>> fs.n_samples, fs.read("2").shape
    (10, (10, 2))
    """
    job = _Job(model, inputs, layers, pooling, batch_size, chunk_size, device, max_length,
               tokenizer, forward_fn, model_id, metadata)
    from repscope.distributed import context

    ctx = context()
    if ctx.is_distributed and shard_by_rank is not False:
        from repscope.extract._parts import extract_parts

        return extract_parts(ctx, job, store, progress, dataset, _extract_into)
    return _extract_into(job, store, progress, dataset)


def _extract_into(job: _Job, store: Any, progress: bool, dataset: str | None,
                  part: Mapping[str, Any] | None = None) -> FeatureStore:
    """The extraction of ``job`` into ``store`` (created or resumed; ``part`` is recorded in
    the attrs of a store that is one rank's part)."""
    fs, locked_here = _open_store(store, job.adapter, job.names, job.poolings, job.batch_size,
                                  job.chunk_size, dataset, part)
    try:
        start = fs.n_samples  # read under the writer lock
        if job.n is not None and start > job.n:
            raise RepscopeValueError(
                f"the store at {fs.path} already holds {start} samples but inputs has {job.n}; "
                "it was made from other inputs. Use a new store path."
            )
        if start and job.rows.skip(start) < start:
            raise RepscopeValueError(
                f"the store at {fs.path} already holds {start} samples but inputs ran out "
                "before that; it was made from other inputs. Use a new store path."
            )
        columns = job.columns
        keep_text, keep_tokens = _kept_text(job, fs, start)

        def append(features: dict[str, Any], a: int, b: int, items: Any) -> None:
            meta = None
            if columns is not None:
                meta = {c: _slice(v, a, b, c) for c, v in columns.items()}
            if keep_text or keep_tokens:
                meta = dict(meta or {})
                texts = [str(t) for t in items]
                if keep_text:
                    meta[TEXT_COLUMN] = texts
                if keep_tokens and job.text is not None:
                    meta[TOKENS_COLUMN] = [encode_tokens(t) for t in job.text.token_strings(texts)]
            fs.append(features, meta)

        job.run(progress, start, append)
    finally:
        if locked_here:
            fs.close()  # the run is over: release the writer lock (the store stays readable)
    return fs


class _Job:
    """One extraction's settings resolved once: adapter, layer names, pooling, input rows."""

    def __init__(
        self,
        model: Any,
        inputs: Any,
        layers: str | Sequence[str] | None,
        pooling: str | Mapping[str, str],
        batch_size: int,
        chunk_size: int | None,
        device: Any,
        max_length: int | None,
        tokenizer: Any,
        forward_fn: Callable[..., Any] | None,
        model_id: str | None,
        metadata: Mapping[str, Sequence[Any]] | None,
    ) -> None:
        caller = "extract"
        self.batch_size = check_positive_int(batch_size, "batch_size", caller=caller)
        if chunk_size is None:
            chunk_size = self.batch_size * max(1, round(1024 / self.batch_size))
        self.chunk_size = check_positive_int(chunk_size, "chunk_size", caller=caller)
        self.adapter = make_adapter(
            model,
            tokenizer=tokenizer,
            forward_fn=forward_fn,
            max_length=max_length,
            device=device,
            model_id=model_id,
        )
        self.names = self.adapter.resolve_layers(layers)
        self.poolings = resolve_pooling(pooling, self.names)
        self.rows = self.adapter.rows(inputs)
        self.n = self.rows.n
        self.columns = _check_metadata(metadata, self.n)
        text = getattr(self.adapter, "text", None)
        #: The text adapter's tokenizer front end (None for images and arrays).
        self.text: TextBatcher | None = text if isinstance(text, TextBatcher) else None
        #: Whether a layer keeps every token (stored ragged, one row per token).
        self.token_layers = self.text is not None and any(
            p == "none" for p in self.poolings.values())

    def restrict(self, start: int, stop: int) -> None:
        """Keep only inputs ``start:stop`` (and their metadata rows): one rank's share."""
        self.rows.restrict(start, stop)
        self.n = stop - start
        if self.columns is not None:
            self.columns = {c: _slice(v, start, stop, c) for c, v in self.columns.items()}

    def run(
        self, progress: bool, start: int, sink: Callable[[dict[str, Any], int, int, Any], None]
    ) -> None:
        """Extract chunk after chunk from input ``start`` on; ``sink(features, a, b, items)``
        gets the features of inputs ``a:b`` and those inputs."""
        pos = start
        adapter = self.adapter
        with _progress(progress, self.n, start, adapter.model_id) as advance, adapter.session():
            while True:
                items = self.rows.take(self.chunk_size)
                if items is None:
                    break
                k = int(items.shape[0]) if hasattr(items, "shape") else len(items)
                prepared = adapter.prepare(items, self.batch_size)
                sink(_run_chunk(adapter, prepared, self.poolings, advance), pos, pos + k, items)
                pos += k


def _run_chunk(
    adapter: Adapter,
    prepared: PreparedChunk,
    poolings: Mapping[str, str],
    advance: Callable[[int], None],
) -> dict[str, Any]:
    outs = []
    for batch in prepared.batches:
        outs.append(adapter.run(batch, poolings))
        advance(batch.size)
    inv = None if prepared.order is None else np.argsort(prepared.order, kind="stable")
    return {name: _assemble(name, [o[name] for o in outs], inv) for name in poolings}


def _assemble(name: str, parts: list[Any], inv: np.ndarray | None) -> Any:
    """One chunk of one layer, in input order: a dense array or a RaggedArray."""
    from repscope.store import RaggedArray
    from repscope.store._ragged import concat_ranges

    if isinstance(parts[0], TokenRows):
        values = np.concatenate([p.values for p in parts]) if len(parts) > 1 else parts[0].values
        lengths = np.concatenate([p.lengths for p in parts])
        if inv is not None:
            starts = np.cumsum(lengths) - lengths
            values = values[concat_ranges(starts[inv], lengths[inv])]
            lengths = lengths[inv]
        offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return RaggedArray(np.ascontiguousarray(values), offsets)
    arrays = [to_host(p) if is_torch(p) else np.asarray(p) for p in parts]
    tails = {a.shape[1:] for a in arrays}
    if len(tails) > 1:
        raise RepscopeValueError(
            f"layer {name!r} gave per-sample shapes {sorted(tails)} in different batches, so its "
            "samples cannot be stacked. Pool it (e.g. pooling='mean') or keep tokens ragged with "
            "a text model."
        )
    dense = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    if inv is not None:
        dense = dense[inv]
    return np.ascontiguousarray(dense)


def _kept_text(job: _Job, fs: FeatureStore, start: int) -> tuple[bool, bool]:
    """Whether the store keeps each sample's text, and its token strings (text models; token
    strings only beside token layers). A column the caller's metadata already holds is left to
    it; a resumed store keeps the columns its first chunk had (an old store without them gets
    none, so its chunks stay alike)."""
    if job.text is None:
        return False, False
    given = set(job.columns or ())
    fresh = start == 0 and fs.n_samples == 0
    have = set(fs.metadata_columns)

    def keep(col: str) -> bool:
        return col not in given and (fresh or col in have)

    return keep(TEXT_COLUMN), job.token_layers and keep(TOKENS_COLUMN)


def _concat_chunks(chunks: list[Any]) -> Any:
    from repscope.store import RaggedArray

    if len(chunks) == 1:
        return chunks[0]
    if isinstance(chunks[0], RaggedArray):
        values = np.concatenate([c.values for c in chunks])
        lengths = np.concatenate([np.diff(c.offsets) for c in chunks])
        offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return RaggedArray(values, offsets)
    tails = {c.shape[1:] for c in chunks}
    if len(tails) > 1:
        raise RepscopeValueError(
            f"a layer gave per-sample shapes {sorted(tails)} in different chunks; pool it."
        )
    return np.concatenate(chunks)


def _check_metadata(
    metadata: Mapping[str, Sequence[Any]] | None, n: int | None
) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise RepscopeTypeError(
            f"The 'metadata' parameter of extract must be a mapping of column name to a sequence "
            f"with one entry per input. Got {type(metadata).__name__} instead."
        )
    out: dict[str, Any] = {}
    for col, given in metadata.items():
        values: Any = to_host(given) if is_torch(given) else given  # type: ignore[arg-type]
        if isinstance(values, (str, bytes)) or not hasattr(values, "__getitem__"):
            raise RepscopeTypeError(
                f"metadata[{col!r}] must be a sequence (list or array) with one entry per input; "
                f"got {type(values).__name__}."
            )
        if n is not None and len(values) != n:
            raise RepscopeValueError(
                f"metadata[{col!r}] must have one entry per input ({n}); got {len(values)}."
            )
        out[str(col)] = values
    return out


def _slice(values: Any, a: int, b: int, col: str) -> Any:
    part = values.iloc[a:b] if hasattr(values, "iloc") else values[a:b]
    if len(part) != b - a:
        raise RepscopeValueError(
            f"metadata[{col!r}] ran out at row {a + len(part)}; it must have one entry per input."
        )
    return part


def _open_store(
    store: Any,
    adapter: Adapter,
    names: list[str],
    poolings: Mapping[str, str],
    batch_size: int,
    chunk_size: int,
    dataset: str | None = None,
    part: Mapping[str, Any] | None = None,
) -> tuple[FeatureStore, bool]:
    """The store opened as its one writer: created, or reopened for resuming after checking
    (under the lock) that it was made the same way. Returns it and whether the writer lock was
    taken here (to be released when the run ends)."""
    from repscope.store import FeatureStore

    settings = {
        "layers": list(names),
        "pooling": dict(poolings),
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        **adapter.describe(),
    }
    text = getattr(adapter, "text", None)
    if isinstance(text, TextBatcher):
        # whose token strings the "tokens" column holds
        settings["tokenizer"] = text.name or adapter.model_id
    if isinstance(store, FeatureStore):
        # A store given as an object was chosen by the caller, whatever model_id it has.
        locked_here = store._begin_writing()  # re-reads the manifest under the lock
        try:
            _check_resumable(store, store.model_id, names, poolings)
        except BaseException:
            if locked_here:
                store.close()
            raise
        return store, locked_here
    if not isinstance(store, (str, PathLike)):
        raise RepscopeTypeError(
            f"The 'store' parameter of extract must be a path or a FeatureStore. Got "
            f"{type(store).__name__} instead."
        )
    model_id = adapter.model_id
    attrs: dict[str, Any] = {ATTRS_KEY: settings, **({"dataset": dataset} if dataset else {})}
    if part is not None:
        attrs["part"] = dict(part)
    fs = FeatureStore._open_writer(
        Path(store), model_id, attrs,
        exist_ok=True, match_attrs=False,
        check=lambda s: _check_resumable(s, model_id, names, poolings),
    )
    return fs, True


def _check_resumable(
    fs: FeatureStore, model_id: str, names: list[str], poolings: Mapping[str, str]
) -> None:
    """Refuse to append to a store whose chunks hold other layers, pooling or model."""
    if fs.n_samples == 0:
        return
    if fs.model_id != model_id:
        raise RepscopeValueError(
            f"cannot resume into the store at {fs.path}: it holds features of model_id="
            f"{fs.model_id!r}, not {model_id!r}. Use a new store path."
        )
    if fs.layers != list(names):
        raise RepscopeValueError(
            f"cannot resume into the store at {fs.path}: it was made with layers="
            f"{fs.layers}, now layers={list(names)}. Pass the same layers or use a new "
            "store path."
        )
    prev = fs.attrs.get(ATTRS_KEY)
    if not isinstance(prev, Mapping) or list(prev.get("layers", [])) != fs.layers:
        return  # no (consistent) record of the pooling: the layers are all we can check
    if dict(prev.get("pooling", {})) != dict(poolings):
        raise RepscopeValueError(
            f"cannot resume into the store at {fs.path}: it was made with pooling="
            f"{prev.get('pooling')}, now pooling={dict(poolings)}. Pass the same pooling or use "
            "a new store path."
        )


def _progress(
    enabled: bool, total: int | None, completed: int, label: str
) -> contextlib.AbstractContextManager[Callable[[int], None]]:
    from repscope._progress import progress_bar

    return progress_bar(label, total, enabled=enabled, completed=completed, prefix="extract")
