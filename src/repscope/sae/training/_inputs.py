"""SAE inputs from a layer of features: the vectors of a range of samples, split by sample into
training and held-out vectors, and what a record says about one of them.

A dense layer gives one vector per sample; a token layer (a ragged FeatureStore layer, or a
:class:`~repscope.store.RaggedArray` in memory) gives one per token, optionally without each
sample's first token (in many language models an attention sink whose huge norm would dominate
the reconstruction error). Held-out samples are whole documents drawn at random (seeded): a
sample's document is its id's prefix before ":" (``emma:0042`` belongs to ``emma``), or the
sample itself, so no document, and no paragraph, has vectors on both sides. A top-activating
token is described with its token and the text around it when the store keeps the token strings
(see :func:`repscope.store._tokens.token_context`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np

from repscope._validation import check_scalar
from repscope.exceptions import RepscopeValueError

__all__ = ["LayerVectors"]

_DENSE_SAMPLES = 4096  # samples per read from a dense store layer
_TOKEN_SAMPLES = 64  # samples (paragraphs) per read from a token layer
_TEXT_CHARS = 400  # text kept per example description
_WINDOW = 8  # tokens of context either side of a described token
_IN_MEMORY = 1 << 30  # bytes: a store layer's vectors up to this size are read once, then kept
_SHOWN_DOCUMENTS = 20  # held-out documents named in the split's record


class LayerVectors:
    """The vectors of samples ``start:stop`` of one layer, as an SAE trains on or is scored on.

    Parameters
    ----------
    source : LayerSource, FeatureStore, path, or mapping of str to array
        Anything :func:`repscope.store.open_layers` opens; paths are opened memory-mapped and
        token layers are kept as tokens.
    layer : str, optional
        The layer (default: the source's last).
    start, stop : int, optional
        The samples (default: all).
    skip_first : bool, default=False
        Token layers: leave out each sample's first token.
    samples : array of int, optional
        Only these samples of ``start:stop`` (absolute indices, sorted); :meth:`split` passes
        them.

    Attributes
    ----------
    source : LayerSource
        The source, opened on ``layer`` with ``pooling="none"``.
    layer : str
    start, stop : int
    skip_first : bool
    d : int
        Features per vector.
    ragged : bool
        True for a token layer.
    split_info : dict or None
        After :meth:`split`: how the samples were divided (on both halves).

    Raises
    ------
    UnknownNameError
        ``layer`` is not a layer of the source.
    RepscopeValueError
        The source holds no layers or no samples; the layer holds more than one vector per
        sample or token; ``skip_first`` on a dense layer; ``start``/``stop`` out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from repscope.store import RaggedArray
    >>> tokens = RaggedArray(np.arange(12.0).reshape(6, 2), np.array([0, 2, 3, 6]))
    >>> v = LayerVectors({"tok": tokens}, skip_first=True)
    >>> v.n_samples, v.n_vectors, v.offsets().tolist()
    (3, 3, [0, 1, 1, 3])
    >>> train, held_out = v.split(0.3)
    >>> train.n_samples, held_out.n_samples, held_out.samples().tolist()
    (2, 1, [2])
    >>> held_out.describe(0)
    {'position': 1, 'index': 2}
    """

    def __init__(
        self,
        source: Any,
        layer: str | None = None,
        start: int = 0,
        stop: int | None = None,
        *,
        skip_first: bool = False,
        samples: Any = None,
    ) -> None:
        from repscope.store import open_layers

        src = open_layers(source, None if layer is None else [layer], pooling="none", memmap=True)
        if not src.layers:
            raise RepscopeValueError(f"{src.description} holds no layers.")
        self.layer = layer if layer is not None else src.layers[-1]
        self.source = src.select([self.layer])
        where = f"layer {self.layer!r} of {src.description}"
        shape = src.shape(self.layer)
        if len(shape) != 1:
            raise RepscopeValueError(
                f"{where} holds samples of shape {shape}; an SAE needs one vector per sample or "
                "token. Pool or flatten it to (n_samples, d), or extract it as tokens."
            )
        if src.n_samples < 1:
            raise RepscopeValueError(f"{where} holds no samples.")
        self.d = int(shape[0])
        self.ragged = src.is_ragged(self.layer)
        if skip_first and not self.ragged:
            raise RepscopeValueError(
                f"skip_first drops the first token of each sample, but {where} is not a token "
                "layer (a FeatureStore layer extracted with tokens)."
            )
        self.skip_first = bool(skip_first)
        n = src.n_samples
        stop = n if stop is None else stop
        check_scalar(start, "start", caller="LayerVectors", kind=int, min_value=0, max_value=n)
        check_scalar(stop, "stop", caller="LayerVectors", kind=int, min_value=start, max_value=n)
        self.start, self.stop = int(start), int(stop)
        # files and arrays in memory are read (mapped) now; stores and tokens are streamed
        self._array = None if self.ragged or src.store is not None else src.read(self.layer)
        self._offsets: np.ndarray | None = None
        self._meta: dict[str, np.ndarray] | None = None
        self._samples: np.ndarray | None = None
        self._kept: np.ndarray | None = None
        self.split_info: dict[str, Any] | None = None
        if samples is not None:
            idx = np.unique(np.asarray(samples, dtype=np.int64).ravel())
            if idx.size and (idx[0] < self.start or idx[-1] >= self.stop):
                raise RepscopeValueError(
                    f"The 'samples' parameter of LayerVectors must hold indices in "
                    f"[{self.start}, {self.stop}). Got {int(idx[0] if idx[0] < self.start else idx[-1])}"
                    " instead."
                )
            self._samples = idx

    def __repr__(self) -> str:
        which = (f"samples {self.start}:{self.stop}" if self._samples is None
                 else f"{self._samples.size} samples of {self.start}:{self.stop}")
        return (f"LayerVectors({self.source.description}, layer={self.layer!r}, "
                f"{which}, skip_first={self.skip_first})")

    @property
    def n_samples(self) -> int:
        """Samples in the range (the chosen ones after :meth:`split`)."""
        return self.stop - self.start if self._samples is None else int(self._samples.size)

    def samples(self) -> np.ndarray:
        """The samples' indices in the source, in order, int64 of shape (n_samples,)."""
        if self._samples is None:
            return np.arange(self.start, self.stop, dtype=np.int64)
        return self._samples

    @property
    def n_vectors(self) -> int:
        """Vectors in the range (tokens of a token layer; reads only a store's offsets)."""
        return int(self.offsets()[-1])

    @property
    def data(self) -> Any:
        """What :func:`~repscope.sae.fit`, :func:`~repscope.sae.metrics.evaluate` and
        :func:`~repscope.sae.top_activations` read: the rows of a file or an array in memory
        (a ``.npy`` range stays memory-mapped; chosen samples are copied), the vectors of a
        store layer read once and kept when they take at most 1 GiB (training then draws a
        fresh permutation per epoch instead of re-reading the store), else this object, a
        re-iterable of batches."""
        if self._array is not None:
            if self._samples is None:
                return self._array[self.start:self.stop]
            return np.asarray(self._array[self._samples])
        if self._kept is None and self.n_vectors * self.d * 4 <= _IN_MEMORY:
            parts = list(self)
            self._kept = (np.concatenate(parts) if parts
                          else np.zeros((0, self.d), dtype=np.float32))
        return self if self._kept is None else self._kept

    def __iter__(self) -> Iterator[np.ndarray]:
        """The vectors in order, as arrays of shape (b, d): 4096 samples of a dense layer, or
        the tokens of 64 samples of a token layer, per batch (fewer after :meth:`split`)."""
        size = _TOKEN_SAMPLES if self.ragged else _DENSE_SAMPLES
        pos = self.start
        for batch in self.source.iter_batches(self.layer, size, start=self.start, stop=self.stop):
            nb = batch.n_samples if self.ragged else int(batch.shape[0])
            local = None
            if self._samples is not None:
                lo, hi = np.searchsorted(self._samples, [pos, pos + nb])
                local = self._samples[lo:hi] - pos
            pos += nb
            values = np.asarray(batch.values if self.ragged else batch).reshape(-1, self.d)
            if self.ragged:
                from repscope.store._ragged import concat_ranges

                offsets = np.asarray(batch.offsets, dtype=np.int64)
                starts, lengths = offsets[:-1], np.diff(offsets)
                if local is not None:
                    starts, lengths = starts[local], lengths[local]
                if self.skip_first:
                    starts, lengths = starts + (lengths > 0), np.maximum(lengths - 1, 0)
                if local is not None or self.skip_first:
                    values = values[concat_ranges(starts, lengths)]
            elif local is not None:
                values = values[local]
            if values.shape[0] or local is None:
                yield values

    def take(self, rows: Any) -> np.ndarray:
        """Vectors ``rows`` of the range (indices into its ``n_vectors`` vectors, any order),
        reading only those: the rows of a dense layer, the samples holding the tokens of a
        token layer.

        Returns
        -------
        ndarray of shape (len(rows), d)
            In the given order, in the stored dtype.
        """
        rows = np.asarray(rows, dtype=np.int64).ravel()
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]  # sorted, so a memory map or a store is read forward
        if wanted.size and (wanted[0] < 0 or wanted[-1] >= self.n_vectors):
            bad = int(wanted[0] if wanted[0] < 0 else wanted[-1])
            raise RepscopeValueError(
                f"The 'rows' parameter of LayerVectors.take must hold indices in "
                f"[0, {self.n_vectors}). Got {bad} instead."
            )
        idx = self.samples()
        if not self.ragged:
            where = idx[wanted]
            if self._array is not None:
                values = np.asarray(self._array[where])
            else:
                store = self.source.store
                assert store is not None  # a dense layer not in memory is a store's
                values = store.read(self.layer, where)
        else:
            offsets = self.offsets()
            j = np.searchsorted(offsets, wanted, side="right") - 1
            pos = wanted - offsets[j] + int(self.skip_first)
            samples, inverse = np.unique(j, return_inverse=True)
            store = self.source.store
            tokens = (store.read_ragged(self.layer, idx[samples]) if store is not None
                      else _ragged_rows(self.source.read(self.layer), idx[samples]))
            values = np.asarray(tokens.values)[np.asarray(tokens.offsets)[inverse] + pos]
        out = np.empty((rows.size, self.d), dtype=values.dtype)
        out[order] = values.reshape(-1, self.d)
        return out

    def reader(self) -> Any:
        """The vectors as a :class:`~repscope.sae.training.RowReader` (:meth:`take` by index):
        training reads only the rows of each batch it keeps, so ranks under ``torchrun`` read
        only their piece of each global batch."""
        from repscope.sae.training._data import RowReader

        return RowReader(self.n_vectors, self.take)

    def offsets(self) -> np.ndarray:
        """Where each sample's vectors start in the range's vectors, int64 of shape
        (n_samples + 1,)."""
        if self._offsets is None:
            counts = self.source.token_counts(self.layer, self.start, self.stop)
            if self._samples is not None:
                counts = counts[self._samples - self.start]
            if self.skip_first:
                counts = np.maximum(counts - 1, 0)
            self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return self._offsets

    def documents(self) -> np.ndarray:
        """Each sample's document, str of shape (n_samples,): its id's prefix before ":"
        (``emma:0042`` -> ``emma``), the id itself when it has no ":", or the sample index when
        the source has no ids."""
        idx = self.samples()
        ids = self.source.ids
        if ids is None:
            return idx.astype(str)
        return np.asarray([str(i).split(":", 1)[0] for i in np.asarray(ids)[idx]], dtype=object)

    def split(self, holdout: float, *, seed: int = 0) -> tuple[LayerVectors, LayerVectors | None]:
        """Training and held-out vectors, split by document: whole documents drawn at random.

        The documents (:meth:`documents`) are shuffled with ``seed``; each in turn is held out
        if it keeps the held-out samples at most ``round(holdout * n_samples)`` (if none fits,
        the smallest document is held out). No document has samples on both sides, and a token
        layer's sample (paragraph) is held out whole. ``split_info`` on both halves records the
        split.

        Parameters
        ----------
        holdout : float in [0, 1)
            Share of the samples to hold out; 0 holds out none (the second item is None).
        seed : int, default=0
            Seed of the document draw.

        Returns
        -------
        train, held_out : LayerVectors, and LayerVectors or None

        Raises
        ------
        RepscopeValueError
            ``holdout`` outside [0, 1), or it leaves no training sample (e.g. all samples
            belong to one document).
        """
        check_scalar(holdout, "holdout", caller="LayerVectors.split", min_value=0,
                     max_value=1, include_max=False)
        n = self.n_samples
        if holdout == 0:
            train = self._subset(None)
            train.split_info = {"by": "none", "holdout": 0.0, "n_train_samples": n,
                                "n_held_out_samples": 0}
            return train, None
        docs = self.documents()
        names, inverse, sizes = np.unique(docs, return_inverse=True, return_counts=True)
        target = max(1, round(holdout * n))
        chosen: list[int] = []
        held = 0
        for j in np.random.default_rng(seed).permutation(names.size):
            if held + int(sizes[j]) <= target:
                chosen.append(int(j))
                held += int(sizes[j])
            if held == target:
                break
        if not chosen:
            chosen = [int(np.argmin(sizes))]
            held = int(sizes[chosen[0]])
        if n - held < 1:
            raise RepscopeValueError(
                f"holdout={holdout} leaves no training samples out of {n}: they form "
                f"{names.size} document(s) ({', '.join(map(str, names[:3]))}) and a document is "
                "held out whole; lower it, or set it to 0."
            )
        is_held = np.isin(inverse, chosen)
        idx = self.samples()
        train, held_out = self._subset(idx[~is_held]), self._subset(idx[is_held])
        shown = sorted(str(names[j]) for j in chosen)
        info = {
            "by": "document" if self.source.ids is not None else "sample",
            "seed": int(seed),
            "holdout": float(holdout),
            "n_documents": int(names.size),
            "n_held_out_documents": len(chosen),
            "held_out_documents": shown[:_SHOWN_DOCUMENTS],
            "n_train_samples": int(n - held),
            "n_held_out_samples": int(held),
        }
        train.split_info = held_out.split_info = info
        return train, held_out

    def _subset(self, samples: np.ndarray | None) -> LayerVectors:
        out = copy.copy(self)
        out._samples, out._offsets, out._kept = samples, None, None
        return out

    def describe(self, row: int) -> dict[str, Any]:
        """What a record shows of vector ``row`` of the range (a top-activating example).

        Returns
        -------
        dict
            ``position`` (token layers: the token's position in its sample), ``index`` (the
            sample), then, for a token layer whose store keeps the token strings, ``id`` (if
            any), ``token`` and ``context`` (``[before, token, after]``: the token's text and
            up to 8 tokens either side, see :func:`repscope.store._tokens.token_context`);
            otherwise the store's ``text`` (the first 400 characters) or else its ``id``.
        """
        from repscope.store._tokens import decode_tokens, token_context

        meta = self._metadata()
        out: dict[str, Any] = {}
        pos: int | None = None
        idx = self.samples()
        if self.ragged:
            offsets = self.offsets()
            j = int(np.searchsorted(offsets, row, side="right")) - 1
            sample, pos = int(idx[j]), row - int(offsets[j]) + int(self.skip_first)
            out["position"] = pos
        else:
            sample = int(idx[row])
        out["index"] = sample
        toks = meta.get("tokens")
        seq = decode_tokens(toks[sample]) if pos is not None and toks is not None else None
        if seq is not None and pos is not None and pos < len(seq):
            if "id" in meta:
                out["id"] = str(meta["id"][sample])
            before, token, after = token_context(seq, pos, _WINDOW)
            out["token"] = str(seq[pos])
            out["context"] = [before, token, after]
            return out
        if "text" in meta:
            out["text"] = str(meta["text"][sample])[:_TEXT_CHARS]
        elif "id" in meta:
            out["id"] = str(meta["id"][sample])
        return out

    def _metadata(self) -> dict[str, np.ndarray]:
        if self._meta is None:
            cols = self.source.metadata_columns
            wanted = [c for c in ("text", "id", "tokens") if c in cols]
            self._meta = self.source.metadata(wanted) if wanted else {}
        return self._meta


def _ragged_rows(r: Any, samples: np.ndarray) -> Any:
    """The tokens of ``samples`` (sorted) of a RaggedArray in memory, as a RaggedArray."""
    from repscope.store import RaggedArray
    from repscope.store._ragged import concat_ranges

    offsets = np.asarray(r.offsets, dtype=np.int64)
    starts, lengths = offsets[samples], np.diff(offsets)[samples]
    out = np.zeros(samples.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return RaggedArray(np.asarray(r.values)[concat_ranges(starts, lengths)], out)
