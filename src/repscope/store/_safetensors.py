"""Reading and writing safetensors files without loading them whole.

A safetensors file is an 8-byte little-endian header length ``n``, ``n`` bytes of JSON mapping
each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to
the data region that follows), then the raw little-endian data. This module writes that format
(streaming, hashing as it goes) and memory-maps tensors out of it; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from repscope.exceptions import CorruptStoreError
from repscope.store._fs import atomic_write

__all__ = [
    "DTYPES",
    "LayerShard",
    "SafetensorsFile",
    "TensorSpec",
    "from_storage",
    "open_layer_shard",
    "out_dtype",
    "read_safetensors_header",
    "to_user_dtype",
    "write_safetensors",
]

#: store dtype name -> (safetensors code, numpy dtype holding the raw little-endian bytes)
DTYPES: dict[str, tuple[str, np.dtype[Any]]] = {
    "bool": ("BOOL", np.dtype("bool")),
    "uint8": ("U8", np.dtype("<u1")),
    "int8": ("I8", np.dtype("<i1")),
    "uint16": ("U16", np.dtype("<u2")),
    "int16": ("I16", np.dtype("<i2")),
    "uint32": ("U32", np.dtype("<u4")),
    "int32": ("I32", np.dtype("<i4")),
    "uint64": ("U64", np.dtype("<u8")),
    "int64": ("I64", np.dtype("<i8")),
    "float16": ("F16", np.dtype("<f2")),
    "bfloat16": ("BF16", np.dtype("<u2")),  # raw bits; numpy has no bfloat16
    "float32": ("F32", np.dtype("<f4")),
    "float64": ("F64", np.dtype("<f8")),
}
_FROM_CODE = {code: name for name, (code, _) in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorSpec:
    """One tensor in a safetensors header: store dtype name, shape, absolute byte range."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def write_safetensors(
    path: Path, tensors: dict[str, tuple[str, np.ndarray]], *, sync_dir: bool = True
) -> tuple[str, int]:
    """Atomically write ``tensors`` (name -> (store dtype, raw C-contiguous array)) to ``path``.

    Returns the file's SHA-256 hex digest and size in bytes, computed while writing.
    """
    header: dict[str, Any] = {}
    pos = 0
    for name, (dtype, arr) in tensors.items():
        header[name] = {
            "dtype": DTYPES[dtype][0],
            "shape": [int(s) for s in arr.shape],
            "data_offsets": [pos, pos + arr.nbytes],
        }
        pos += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the reference implementation aligns the data to 8 bytes
    prefix = struct.pack("<Q", len(raw)) + raw
    digest = hashlib.sha256(prefix)
    size = len(prefix)

    def write(f: IO[bytes]) -> None:
        nonlocal size
        f.write(prefix)
        for _, arr in tensors.values():
            if arr.nbytes == 0:
                continue
            buf = np.ascontiguousarray(arr).data.cast("B")
            f.write(buf)
            digest.update(buf)
            size += len(buf)

    atomic_write(path, write, sync_dir=sync_dir)
    return digest.hexdigest(), size


def read_safetensors_header(path: Path) -> dict[str, TensorSpec]:
    """Parse the header of ``path`` and check that the file holds every byte it declares.

    Raises
    ------
    CorruptStoreError
        The file is missing, its header is malformed, or it is shorter than its header says.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CorruptStoreError(
                    f"truncated shard {path}: expected at least 8 bytes for the header length, "
                    f"the file has {size} bytes. Delete the store's last chunk or re-extract."
                )
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise CorruptStoreError(
                    f"truncated or corrupt shard {path}: its header declares {n} header bytes, "
                    f"so expected at least {8 + n} bytes; the file has {size} bytes."
                )
            meta = json.loads(f.read(n).decode("utf-8"))
    except FileNotFoundError:
        raise CorruptStoreError(
            f"missing shard file {path}: the manifest lists it but it does not exist."
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptStoreError(f"corrupt shard {path}: unreadable header ({err}).") from None
    if not isinstance(meta, dict):
        raise CorruptStoreError(f"corrupt shard {path}: the header is not a JSON object.")
    base = 8 + n
    specs: dict[str, TensorSpec] = {}
    data_end = 0
    for name, entry in meta.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _FROM_CODE[entry["dtype"]]
            shape = tuple(int(s) for s in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CorruptStoreError(
                f"corrupt shard {path}: bad header entry for tensor {name!r}: {entry!r}."
            ) from None
        nbytes = math.prod(shape) * DTYPES[dtype][1].itemsize
        if end - begin != nbytes or begin < 0:
            raise CorruptStoreError(
                f"corrupt shard {path}: tensor {name!r} of shape {shape} needs {nbytes} bytes "
                f"but its data_offsets are [{begin}, {end}]."
            )
        specs[name] = TensorSpec(dtype, shape, base + begin, base + end)
        data_end = max(data_end, end)
    if base + data_end > size:
        raise CorruptStoreError(
            f"truncated shard {path}: its header declares {base + data_end} bytes, the file has "
            f"{size} bytes. Delete the store's last chunk or re-extract."
        )
    return specs


class SafetensorsFile:
    """Memory-mapped, read-only view of the tensors in one safetensors file.

    Arrays come back in their raw storage dtype (``uint16`` bit patterns for bfloat16; see
    :func:`from_storage`). Creating one reads only the header.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.specs = read_safetensors_header(path)
        self._maps: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._maps:
            try:
                spec = self.specs[name]
            except KeyError:
                raise CorruptStoreError(
                    f"corrupt shard {self.path}: it has no tensor {name!r} (has "
                    f"{sorted(self.specs)})."
                ) from None
            raw_dtype = DTYPES[spec.dtype][1]
            if spec.end == spec.begin:
                arr: np.ndarray = np.empty(spec.shape, dtype=raw_dtype)
            else:
                arr = np.memmap(
                    self.path, dtype=raw_dtype, mode="r", offset=spec.begin, shape=spec.shape
                )
            self._maps[name] = arr
        return self._maps[name]


def from_storage(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Turn raw stored values into the numpy array handed to users (a copy, never a memmap).

    bfloat16 has no numpy dtype: its bit patterns are widened exactly to float32.
    """
    if dtype == "bfloat16":
        return (np.asarray(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    out = np.array(raw, dtype=raw.dtype.newbyteorder("="), copy=True)
    return out


def out_dtype(dtype: str) -> np.dtype[Any]:
    """The numpy dtype reads return for a stored dtype (bfloat16 -> float32)."""
    return np.dtype(np.float32) if dtype == "bfloat16" else np.dtype(dtype)


def to_user_dtype(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Raw storage -> values in :func:`out_dtype` (bfloat16 bits widen exactly to float32)."""
    return from_storage(raw, dtype) if dtype == "bfloat16" else raw


@dataclass(frozen=True)
class LayerShard:
    """One layer's shard of one chunk: memory-mapped raw ``values`` and, for a ragged layer,
    its validated ``offsets`` (in memory, int64 of shape (rows + 1,))."""

    file: SafetensorsFile
    values: np.ndarray
    offsets: np.ndarray | None


def open_layer_shard(
    path: Path, *, dtype: str, shape_tail: tuple[int, ...], rows: int, tokens: int | None
) -> LayerShard:
    """Open a layer shard and check it against the manifest (dtype, shapes, offsets).

    ``tokens`` is None for a dense layer and the chunk's token count for a ragged one.
    """
    f = SafetensorsFile(path)
    lead = rows if tokens is None else tokens
    values = f.specs.get("values")
    if values is None or values.dtype != dtype or values.shape != (lead, *shape_tail):
        raise CorruptStoreError(
            f"corrupt shard {path}: expected tensor 'values' of dtype {dtype} and shape "
            f"{(lead, *shape_tail)}; the file has {values}."
        )
    offsets = None
    if tokens is not None:
        o = f.specs.get("offsets")
        if o is None or o.dtype != "int64" or o.shape != (rows + 1,):
            raise CorruptStoreError(
                f"corrupt shard {path}: expected int64 'offsets' of shape ({rows + 1},); the "
                f"file has {o}."
            )
        offsets = np.array(f["offsets"], dtype=np.int64)
        if offsets[0] != 0 or offsets[-1] != lead or np.any(np.diff(offsets) < 0):
            raise CorruptStoreError(
                f"corrupt shard {path}: 'offsets' must rise from 0 to {lead}; got "
                f"{offsets[0]}..{offsets[-1]}."
            )
    return LayerShard(f, f["values"], offsets)
