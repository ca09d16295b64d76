"""Per-sample metadata (labels, ids, text, attributes) as one Parquet file per chunk."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from repscope._array import is_torch
from repscope.exceptions import CorruptStoreError, RepscopeTypeError, RepscopeValueError
from repscope.store._fs import atomic_write

__all__ = ["conform_metadata", "normalize_metadata", "read_parquet", "write_parquet"]


def _kind(t: pa.DataType) -> str | None:
    """ "int", "float", "bool" or "str" for the column types a store accepts, else None."""
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "str"
    return None


def normalize_metadata(metadata: Mapping[str, Any], rows: int) -> pa.Table:
    """Validate ``metadata`` (column -> 1-D sequence of ``rows`` str/int/float/bool values)."""
    if not isinstance(metadata, Mapping):
        raise RepscopeTypeError(
            "metadata must be a mapping of column name -> sequence; got "
            f"{type(metadata).__name__}. Pass e.g. {{'label': y}}."
        )
    arrays: dict[str, pa.Array] = {}
    for col, values in metadata.items():
        where = f"metadata[{col!r}]"
        if not isinstance(col, str) or not col:
            raise RepscopeTypeError(f"metadata column names must be non-empty str; got {col!r}.")
        if is_torch(values):
            values = values.detach().cpu().numpy()
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise RepscopeTypeError(
                f"{where} must be a 1-D sequence with one value per sample; got "
                f"{type(values).__name__}."
            )
        if isinstance(values, np.ndarray) and values.ndim != 1:
            raise RepscopeValueError(
                f"{where} must be 1-D with one value per sample; got shape {values.shape}."
            )
        try:
            arr = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise RepscopeTypeError(
                f"{where} must hold str, int, float or bool values; pyarrow could not convert "
                f"it ({err})."
            ) from None
        if _kind(arr.type) is None:
            raise RepscopeTypeError(
                f"{where} must hold str, int, float or bool values; got arrow type {arr.type}. "
                "Convert nested values to strings (e.g. JSON) first."
            )
        if len(arr) != rows:
            raise RepscopeValueError(
                f"{where} must have one value per sample ({rows}); got {len(arr)}."
            )
        arrays[col] = arr
    return pa.table(arrays)


def conform_metadata(table: pa.Table, columns: Sequence[Sequence[str]]) -> pa.Table:
    """Cast ``table`` to the store's column schema (``[[name, arrow type alias], ...]``).

    Integers may widen to floats; otherwise a column keeps its kind (int, float, bool, str).
    """
    want = [c[0] for c in columns]
    got = list(table.column_names)
    if sorted(want) != sorted(got):
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        raise RepscopeValueError(
            f"metadata must have the store's columns {want}; got {got} (missing {missing}, "
            f"unexpected {extra}). Every chunk carries the same columns."
        )
    out = []
    for name, alias in columns:
        target = pa.type_for_alias(alias)
        arr = table.column(name)
        k_from, k_to = _kind(arr.type), _kind(target)
        if arr.type != target:
            if not (k_from == k_to or (k_from == "int" and k_to == "float")):
                raise RepscopeValueError(
                    f"metadata[{name!r}] must hold {alias} values like the store's first chunk; "
                    f"got {arr.type}."
                )
            try:
                arr = arr.cast(target, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise RepscopeValueError(
                    f"metadata[{name!r}] must hold {alias} values like the store's first chunk; "
                    f"got {arr.type} that does not fit ({err})."
                ) from None
        out.append(arr)
    return pa.table(out, names=want)


def write_parquet(path: Path, table: pa.Table, *, sync_dir: bool = True) -> tuple[str, int]:
    """Atomically write ``table`` to ``path``; returns the file's SHA-256 hex digest and size."""
    buf = io.BytesIO()
    pq.write_table(table, buf)
    data = buf.getvalue()

    def write(f: IO[bytes]) -> None:
        f.write(data)

    atomic_write(path, write, sync_dir=sync_dir)
    return hashlib.sha256(data).hexdigest(), len(data)


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read one metadata file (never unpickles; Parquet is plain columnar data)."""
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise CorruptStoreError(
            f"missing metadata file {path}: the manifest lists it but it does not exist."
        ) from None
    except (pa.ArrowException, OSError) as err:
        raise CorruptStoreError(f"corrupt metadata file {path}: {err}") from None
