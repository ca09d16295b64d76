"""Appending one chunk: checking it against the store's schema and writing its files.

The caller holds the store lock and commits the chunk by rewriting the manifest afterwards.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from repscope.exceptions import RepscopeValueError
from repscope.store._fs import fsync_dir, layer_dir_name, store_path
from repscope.store._inputs import LayerBatch
from repscope.store._metadata import conform_metadata, write_parquet
from repscope.store._safetensors import write_safetensors

__all__ = ["plan_append", "write_chunk"]


def _new_layer_specs(batches: Mapping[str, LayerBatch]) -> dict[str, Any]:
    specs: dict[str, Any] = {}
    taken: list[str] = []
    for name, b in batches.items():
        d = layer_dir_name(name, taken)
        taken.append(d)
        specs[name] = {
            "dir": d,
            "shape_tail": list(b.shape_tail),
            "dtype": b.dtype,
            "ragged": b.ragged,
        }
    return specs


def _check_batches(specs: Mapping[str, Any], batches: Mapping[str, LayerBatch]) -> None:
    missing = sorted(set(specs) - set(batches))
    extra = sorted(set(batches) - set(specs))
    if missing or extra:
        raise RepscopeValueError(
            f"features must have exactly the store's layers {list(specs)}; got "
            f"{list(batches)} (missing {missing}, unexpected {extra})."
        )
    for name, b in batches.items():
        s = specs[name]
        kind = "ragged (a list or (values, offsets))" if s["ragged"] else "dense (one array)"
        if b.ragged != s["ragged"]:
            raise RepscopeValueError(
                f"features[{name!r}] must be {kind} like the store's layer; got "
                f"{'ragged' if b.ragged else 'dense'} input."
            )
        if list(b.shape_tail) != s["shape_tail"]:
            lead = "n_tokens" if s["ragged"] else "rows"
            raise RepscopeValueError(
                f"features[{name!r}] must have shape ({lead}, "
                f"{', '.join(map(str, s['shape_tail']))}) like the store's layer; got per-"
                f"{'token' if s['ragged'] else 'sample'} shape {b.shape_tail}."
            )
        if b.dtype != s["dtype"]:
            raise RepscopeValueError(
                f"features[{name!r}] must have dtype {s['dtype']} like the store's layer; got "
                f"{b.dtype}. Cast it first (e.g. .astype(np.{s['dtype']}))."
            )


def plan_append(
    manifest: Mapping[str, Any], batches: Mapping[str, LayerBatch], table: pa.Table | None
) -> tuple[dict[str, Any], pa.Table | None]:
    """Check a chunk against the store and return (a copy of the manifest with the layer and
    metadata schema fixed, the metadata table cast to the store's column types)."""
    out = copy.deepcopy(dict(manifest))
    if not out["chunks"]:  # the first append fixes the schema
        out["layers"] = _new_layer_specs(batches)
        out["metadata_columns"] = (
            []
            if table is None
            else [[n, str(t)] for n, t in zip(table.column_names, table.schema.types)]
        )
        return out, table
    _check_batches(out["layers"], batches)
    columns = out["metadata_columns"] or []
    if table is None and columns:
        raise RepscopeValueError(
            f"metadata must be given: the store's chunks carry columns "
            f"{[c[0] for c in columns]}. Pass metadata={{...}} with those columns."
        )
    if table is not None and not columns:
        raise RepscopeValueError(
            "metadata must be None: the store's first append had no metadata columns; got "
            f"columns {table.column_names}. Every chunk carries the same columns."
        )
    return out, (None if table is None else conform_metadata(table, columns))


def write_chunk(
    root: Path,
    manifest: Mapping[str, Any],
    batches: Mapping[str, LayerBatch],
    table: pa.Table | None,
    rows: int,
) -> dict[str, Any]:
    """Write every file of the next chunk durably and return its manifest entry.

    Each file goes through a temp file + fsync + rename; the touched directories are fsynced
    once at the end. Files of an earlier, uncommitted attempt at this chunk are overwritten.
    No file is written through a symbolic link (CorruptStoreError naming the link).
    """
    index = len(manifest["chunks"])
    start = int(manifest["n_samples"])
    dirs: set[Path] = set()
    shards: dict[str, Any] = {}
    for name, spec in manifest["layers"].items():
        b = batches[name]
        rel = f"layers/{spec['dir']}/chunk-{index:06d}.safetensors"
        target = store_path(root, rel, f"chunk {index} shard of layer {name!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"values": (b.dtype, b.values)}
        if b.offsets is not None:
            tensors["offsets"] = ("int64", b.offsets)
        sha, nbytes = write_safetensors(target, tensors, sync_dir=False)
        dirs.add(target.parent)
        entry: dict[str, Any] = {"file": rel, "sha256": sha, "bytes": nbytes, "rows": rows}
        if b.offsets is not None:
            entry["tokens"] = int(b.values.shape[0])
        shards[name] = entry
    meta = None
    if table is not None:
        rel = f"meta/chunk-{index:06d}.parquet"
        target = store_path(root, rel, f"chunk {index} metadata")
        target.parent.mkdir(parents=True, exist_ok=True)
        sha, nbytes = write_parquet(target, table, sync_dir=False)
        dirs.add(target.parent)
        meta = {"file": rel, "sha256": sha, "bytes": nbytes}
    for d in sorted(dirs):
        fsync_dir(d)
    fsync_dir(root / "layers")
    return {
        "index": index,
        "start": start,
        "stop": start + rows,
        "shards": shards,
        "metadata": meta,
    }
