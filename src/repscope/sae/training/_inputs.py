"""SAE inputs from a layer of features: the vectors of a range of samples, split by sample into
training and held-out vectors, and what a record says about one of them.

A dense layer gives one vector per sample; a token layer (a ragged FeatureStore layer, or a
:class:`~repscope.store.RaggedArray` in memory) gives one per token, optionally without each
sample's first token (in many language models an attention sink whose huge norm would dominate
the reconstruction error). Held-out samples are the last ones, kept whole, so no paragraph has
tokens on both sides.
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
    >>> train.n_vectors, held_out.n_vectors, held_out.describe(1)
    (1, 2, {'position': 2, 'index': 2})
    """

    def __init__(
        self,
        source: Any,
        layer: str | None = None,
        start: int = 0,
        stop: int | None = None,
        *,
        skip_first: bool = False,
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

    def __repr__(self) -> str:
        return (f"LayerVectors({self.source.description}, layer={self.layer!r}, "
                f"samples {self.start}:{self.stop}, skip_first={self.skip_first})")

    @property
    def n_samples(self) -> int:
        """Samples in the range."""
        return self.stop - self.start

    @property
    def n_vectors(self) -> int:
        """Vectors in the range (tokens of a token layer; reads only a store's offsets)."""
        return int(self.offsets()[-1])

    @property
    def data(self) -> Any:
        """What :func:`~repscope.sae.fit`, :func:`~repscope.sae.metrics.evaluate` and
        :func:`~repscope.sae.top_activations` read: the rows of a file or an array in memory
        (a ``.npy`` file stays memory-mapped), else this object, a re-iterable of batches."""
        return self if self._array is None else self._array[self.start:self.stop]

    def __iter__(self) -> Iterator[np.ndarray]:
        """The vectors in order, as arrays of shape (b, d): 4096 samples of a dense layer, or
        the tokens of 64 samples of a token layer, per batch."""
        size = _TOKEN_SAMPLES if self.ragged else _DENSE_SAMPLES
        for batch in self.source.iter_batches(self.layer, size, start=self.start, stop=self.stop):
            values = np.asarray(batch.values if self.ragged else batch).reshape(-1, self.d)
            if self.skip_first:
                offsets = np.asarray(batch.offsets)
                keep = np.ones(values.shape[0], dtype=bool)
                keep[offsets[:-1][np.diff(offsets) > 0]] = False
                values = values[keep]
            yield values

    def offsets(self) -> np.ndarray:
        """Where each sample's vectors start in the range's vectors, int64 of shape
        (n_samples + 1,)."""
        if self._offsets is None:
            counts = self.source.token_counts(self.layer, self.start, self.stop)
            if self.skip_first:
                counts = np.maximum(counts - 1, 0)
            self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return self._offsets

    def split(self, holdout: float) -> tuple[LayerVectors, LayerVectors | None]:
        """Training and held-out vectors: the last ``round(holdout * n_samples)`` samples (at
        least one when ``holdout > 0``) are held out whole.

        Parameters
        ----------
        holdout : float in [0, 1)
            Share of the samples held out; 0 holds out none (the second item is None).

        Returns
        -------
        train, held_out : LayerVectors, and LayerVectors or None

        Raises
        ------
        RepscopeValueError
            ``holdout`` outside [0, 1), or it leaves no training sample.
        """
        check_scalar(holdout, "holdout", caller="LayerVectors.split", min_value=0,
                     max_value=1, include_max=False)
        n = self.n_samples
        n_eval = max(1, round(holdout * n)) if holdout > 0 else 0
        if n - n_eval < 1:
            raise RepscopeValueError(
                f"holdout={holdout} leaves no training samples out of {n}; lower it."
            )
        cut = self.start + n - n_eval
        return self._range(self.start, cut), (self._range(cut, self.stop) if n_eval else None)

    def _range(self, start: int, stop: int) -> LayerVectors:
        out = copy.copy(self)
        out.start, out.stop, out._offsets = start, stop, None
        return out

    def describe(self, row: int) -> dict[str, Any]:
        """What a record shows of vector ``row`` of the range (a top-activating example).

        Returns
        -------
        dict
            ``position`` (token layers: the token's position in its sample), ``index`` (the
            sample), then the store's ``text`` (the first 400 characters) or else its ``id``,
            and ``token`` (the ``tokens`` metadata at that position) when there is one.
        """
        meta = self._metadata()
        out: dict[str, Any] = {}
        pos: int | None = None
        if self.ragged:
            offsets = self.offsets()
            j = int(np.searchsorted(offsets, row, side="right")) - 1
            sample, pos = self.start + j, row - int(offsets[j]) + int(self.skip_first)
            out["position"] = pos
        else:
            sample = self.start + row
        out["index"] = sample
        if "text" in meta:
            out["text"] = str(meta["text"][sample])[:_TEXT_CHARS]
        elif "id" in meta:
            out["id"] = str(meta["id"][sample])
        toks = meta.get("tokens")
        if pos is not None and toks is not None:
            seq = toks[sample]
            if seq is not None and pos < len(seq):
                out["token"] = str(seq[pos])
        return out

    def _metadata(self) -> dict[str, np.ndarray]:
        if self._meta is None:
            cols = self.source.metadata_columns
            wanted = [c for c in ("text", "id", "tokens") if c in cols]
            self._meta = self.source.metadata(wanted) if wanted else {}
        return self._meta
