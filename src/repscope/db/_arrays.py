"""JSON encoding of record values, with large arrays stored by reference.

Values are kept as JSON text in SQLite. Arrays are written two ways:

* small numeric arrays (at most ``inline_max`` elements) stay in the JSON as
  ``{"$ndarray": [...], "shape": [...], "dtype": "float32"}``;
* larger ones are saved as ``.npy`` files (``np.save``, ``allow_pickle=False``) in an
  ``arrays/`` folder beside the database, named by the sha256 of the file's bytes, and the
  JSON holds ``{"$array": "<sha256>", "shape": [...], "dtype": "float32"}``.

Both come back as :class:`numpy.ndarray`. Non-finite floats are kept: the JSON text uses
Python's ``NaN``/``Infinity`` tokens, which :mod:`json` reads back exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from repscope._array import is_torch, to_numpy
from repscope._io import atomic_write_bytes
from repscope.exceptions import CorruptStoreError, RepscopeTypeError

__all__ = ["ARRAY_KEY", "INLINE_KEY", "ArrayStore", "decode_values", "dumps", "encode_values"]

#: JSON key marking an array stored by reference.
ARRAY_KEY = "$array"
#: JSON key marking an array stored inline.
INLINE_KEY = "$ndarray"

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class ArrayStore:
    """A content-addressed folder of ``.npy`` files (``<sha256>.npy``).

    Parameters
    ----------
    root : path-like
        The folder; created on the first write.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """File holding the array ``key``."""
        if not _SHA_RE.match(key):
            raise CorruptStoreError(
                f"array reference {key!r} is not a sha256 hex digest; the record's JSON was "
                "edited or corrupted."
            )
        return self.root / f"{key}.npy"

    def put(self, array: np.ndarray) -> str:
        """Save ``array`` (atomically, once per content) and return its key."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        data = buf.getvalue()
        key = hashlib.sha256(data).hexdigest()
        target = self.root / f"{key}.npy"
        if target.exists():
            return key
        atomic_write_bytes(target, data)  # a concurrent writer of the same key is harmless
        return key

    def get(self, key: str) -> np.ndarray:
        """Load the array ``key``, checking that its bytes still hash to ``key``."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CorruptStoreError(
                f"array file {path} is missing; the database refers to it. Keep the 'arrays/' "
                "folder beside the database file when moving it."
            ) from None
        if hashlib.sha256(data).hexdigest() != key:
            raise CorruptStoreError(f"array file {path} does not match its sha256 name.")
        return np.load(io.BytesIO(data), allow_pickle=False)


def _array_to_json(arr: np.ndarray, store: ArrayStore, inline_max: int, where: str) -> Any:
    if arr.dtype.kind in "OV":
        raise RepscopeTypeError(
            f"values{where} is an array of dtype {arr.dtype}; only numeric, bool and string "
            "arrays can be stored. Convert it first."
        )
    if arr.ndim == 0:
        return _encode(arr.item(), store, inline_max, where)
    if arr.dtype.kind in "US":
        return arr.tolist()
    meta = {"shape": list(arr.shape), "dtype": arr.dtype.name}
    if arr.size <= inline_max and arr.dtype.kind != "c":
        return {INLINE_KEY: arr.tolist(), **meta}
    return {ARRAY_KEY: store.put(arr), **meta}


def _encode(value: Any, store: ArrayStore, inline_max: int, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, np.generic):
        return _encode(value.item(), store, inline_max, where)
    if is_torch(value):
        value = to_numpy(value)
    if isinstance(value, np.ndarray):
        return _array_to_json(value, store, inline_max, where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            key = str(k)
            if key.startswith("$"):
                raise RepscopeTypeError(
                    f"values{where} has key {key!r}; keys starting with '$' are reserved for "
                    "array references. Rename the key."
                )
            out[key] = _encode(v, store, inline_max, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_encode(v, store, inline_max, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, PurePath):
        return str(value)
    raise RepscopeTypeError(
        f"values{where} has type {type(value).__name__}, which cannot be stored. Use numbers, "
        "strings, lists, dicts, numpy arrays or torch tensors."
    )


def encode_values(value: Any, store: ArrayStore, *, inline_max: int = 64) -> Any:
    """Turn ``value`` into JSON-ready data, saving large arrays into ``store``.

    Parameters
    ----------
    value : object
        Scalars, strings, lists, dicts, dataclasses, numpy arrays and torch tensors.
    store : ArrayStore
        Where arrays with more than ``inline_max`` elements are written.
    inline_max : int, default=64
        Largest array kept inline in the JSON.

    Returns
    -------
    object
        Data that :func:`dumps` can write; arrays replaced by ``$ndarray``/``$array`` objects.

    Raises
    ------
    RepscopeTypeError
        For objects that have no JSON form (the message names the offending key).
    """
    return _encode(value, store, inline_max, "")


def dumps(data: Any) -> str:
    """JSON text for encoded data (non-finite floats as ``NaN``/``Infinity`` tokens)."""
    return json.dumps(data, allow_nan=True, ensure_ascii=False, separators=(",", ":"))


def is_array_ref(obj: Any) -> bool:
    """True for an encoded array (inline or by reference)."""
    return isinstance(obj, dict) and (ARRAY_KEY in obj or INLINE_KEY in obj)


def _decode_array(obj: dict[str, Any], store: ArrayStore | None) -> Any:
    dtype = np.dtype(obj.get("dtype", "float64"))
    shape = tuple(obj.get("shape", ()))
    if INLINE_KEY in obj:
        return np.asarray(obj[INLINE_KEY], dtype=dtype).reshape(shape)
    if store is None:
        return obj
    arr = store.get(str(obj[ARRAY_KEY]))
    if arr.shape != shape:
        raise CorruptStoreError(
            f"array {obj[ARRAY_KEY]} has shape {arr.shape}, but the record says {shape}."
        )
    return arr


def decode_values(data: Any, store: ArrayStore | None) -> Any:
    """Inverse of :func:`encode_values`: encoded arrays become :class:`numpy.ndarray`.

    With ``store=None`` arrays stored by reference are left as their ``$array`` objects.
    """
    if isinstance(data, dict):
        if is_array_ref(data):
            return _decode_array(data, store)
        return {k: decode_values(v, store) for k, v in data.items()}
    if isinstance(data, list):
        return [decode_values(v, store) for v in data]
    return data


def is_scalar(value: Any) -> bool:
    """True for a number, bool, string or None (what fits a table cell)."""
    return value is None or isinstance(value, (bool, int, float, str, np.generic))


def strict_jsonable(value: Any) -> Any:
    """Decoded values -> strict JSON (arrays as lists; NaN/inf as "nan"/"inf"/"-inf")."""
    if isinstance(value, np.ndarray):
        return strict_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, complex):
        return {"real": strict_jsonable(value.real), "imag": strict_jsonable(value.imag)}
    if isinstance(value, dict):
        return {str(k): strict_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_jsonable(v) for v in value]
    return value
