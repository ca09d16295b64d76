"""Validation and conversion of the ``features`` handed to :meth:`FeatureStore.append`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from repscope._array import is_torch
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.store._safetensors import DTYPES

__all__ = ["LayerBatch", "normalize_features"]


@dataclass(frozen=True)
class LayerBatch:
    """One layer's part of a chunk, ready to write.

    ``values`` holds raw little-endian storage (uint16 bit patterns for bfloat16), shape
    (rows, *shape_tail) for a dense layer or (n_tokens, *shape_tail) for a ragged one, whose
    ``offsets`` (int64, rows + 1) start at 0.
    """

    name: str
    dtype: str
    shape_tail: tuple[int, ...]
    ragged: bool
    values: np.ndarray
    offsets: np.ndarray | None
    rows: int


def _to_raw(x: Any, where: str) -> tuple[np.ndarray, str]:
    """A C-contiguous little-endian numpy copy/view of ``x`` and its store dtype name."""
    if is_torch(x):
        import torch

        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:
            return t.contiguous().view(torch.int16).numpy().view(np.uint16), "bfloat16"
        try:
            arr = t.resolve_conj().numpy()
        except TypeError as err:
            raise RepscopeTypeError(
                f"{where} has torch dtype {t.dtype}, which numpy cannot hold ({err}). Cast it to "
                "float32 first."
            ) from None
    else:
        if x is None or isinstance(x, (str, bytes, Mapping)):
            raise RepscopeTypeError(
                f"{where} must be a numpy array or torch tensor; got {type(x).__name__}."
            )
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as err:
            raise RepscopeTypeError(
                f"{where} must be a numpy array or torch tensor; got {type(x).__name__} that "
                f"numpy cannot convert ({err})."
            ) from None
        if arr.dtype.name == "bfloat16":  # ml_dtypes
            return arr.astype(arr.dtype, order="C", copy=False).view(np.uint16), "bfloat16"
    name = arr.dtype.name
    if name not in DTYPES:
        raise RepscopeTypeError(
            f"{where} has dtype {arr.dtype}; a FeatureStore holds "
            f"{', '.join(sorted(DTYPES))}. Convert it, e.g. with .astype(np.float32)."
        )
    # astype(order="C") keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d).
    return arr.astype(DTYPES[name][1], order="C", copy=False), name


def _dense(name: str, x: Any) -> LayerBatch:
    where = f"features[{name!r}]"
    arr, dtype = _to_raw(x, where)
    if arr.ndim < 1:
        raise RepscopeValueError(
            f"{where} must have a leading sample dimension, shape (rows, *shape_tail); got a "
            "0-d scalar."
        )
    return LayerBatch(name, dtype, tuple(arr.shape[1:]), False, arr, None, int(arr.shape[0]))


def _ragged_from_list(name: str, samples: list[Any]) -> LayerBatch:
    where = f"features[{name!r}]"
    if not samples:
        raise RepscopeValueError(f"{where} is an empty list; pass at least one sample.")
    raws: list[np.ndarray] = []
    dtype = ""
    tail: tuple[int, ...] = ()
    for i, s in enumerate(samples):
        arr, dt = _to_raw(s, f"{where}[{i}]")
        if arr.ndim < 2:
            raise RepscopeValueError(
                f"{where}[{i}] must be one sample's tokens, shape (n_tokens, *shape_tail) with at "
                f"least 2 dims; got shape {arr.shape}. A list means a ragged token layer; for a "
                "dense layer pass one array of shape (rows, *shape_tail), e.g. np.stack(list)."
            )
        if i == 0:
            dtype, tail = dt, arr.shape[1:]
        elif dt != dtype or arr.shape[1:] != tail:
            raise RepscopeValueError(
                f"every sample of {where} must share dtype and per-token shape; sample 0 has "
                f"dtype {dtype} and shape (t, {', '.join(map(str, tail))}), sample {i} has "
                f"dtype {dt} and shape {arr.shape}."
            )
        raws.append(arr)
    lengths = np.array([r.shape[0] for r in raws], dtype=np.int64)
    offsets = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(lengths)])
    values = np.concatenate(raws, axis=0)
    return LayerBatch(name, dtype, tuple(tail), True, values, offsets, len(raws))


def _ragged_from_pair(name: str, pair: tuple[Any, ...]) -> LayerBatch:
    where = f"features[{name!r}]"
    if len(pair) != 2:
        raise RepscopeValueError(
            f"{where} is a tuple of length {len(pair)}; a tuple means (values, offsets) of a "
            "ragged layer. Pass a list of per-sample (n_tokens, d) arrays instead."
        )
    values, dtype = _to_raw(pair[0], f"{where}[0] (values)")
    off_raw, off_dtype = _to_raw(pair[1], f"{where}[1] (offsets)")
    if values.ndim < 2:
        raise RepscopeValueError(
            f"{where}[0] (values) must have shape (n_tokens, *shape_tail) with at least 2 dims; "
            f"got shape {values.shape}."
        )
    if off_dtype not in ("int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64"):
        raise RepscopeTypeError(f"{where}[1] (offsets) must hold integers; got dtype {off_dtype}.")
    offsets = off_raw.astype(np.int64)
    n_tok = int(values.shape[0])
    if offsets.ndim != 1 or offsets.shape[0] < 2:
        raise RepscopeValueError(
            f"{where}[1] (offsets) must be 1-D of length rows + 1 >= 2; got shape {offsets.shape}."
        )
    if offsets[0] != 0 or offsets[-1] != n_tok or np.any(np.diff(offsets) < 0):
        raise RepscopeValueError(
            f"{where}[1] (offsets) must be non-decreasing from 0 to len(values)={n_tok}; got "
            f"offsets starting at {int(offsets[0])} and ending at {int(offsets[-1])}"
            + (" with a decrease." if np.any(np.diff(offsets) < 0) else ".")
        )
    return LayerBatch(
        name, dtype, tuple(values.shape[1:]), True, values, offsets, int(offsets.shape[0]) - 1
    )


def normalize_features(features: Mapping[str, Any]) -> dict[str, LayerBatch]:
    """Validate ``features`` (layer -> dense array, list of per-sample arrays, or
    ``(values, offsets)``) and return each layer ready to write; all layers share one row count."""
    if not isinstance(features, Mapping):
        raise RepscopeTypeError(
            "features must be a mapping of layer name -> array; got "
            f"{type(features).__name__}. Pass e.g. {{'model.layers.6': X}}."
        )
    if not features:
        raise RepscopeValueError("features must contain at least one layer; got an empty mapping.")
    out: dict[str, LayerBatch] = {}
    for name, x in features.items():
        if not isinstance(name, str):
            raise RepscopeTypeError(
                f"features keys must be layer names (str); got {name!r} ({type(name).__name__})."
            )
        if isinstance(x, list):
            out[name] = _ragged_from_list(name, x)
        elif isinstance(x, tuple):
            out[name] = _ragged_from_pair(name, x)
        else:
            out[name] = _dense(name, x)
    rows = {name: b.rows for name, b in out.items()}
    if len(set(rows.values())) != 1:
        raise RepscopeValueError(
            f"every layer in features must have the same number of samples (rows); got {rows}."
        )
    if next(iter(rows.values())) < 1:
        raise RepscopeValueError("features must hold at least one sample; got 0 rows.")
    return out
