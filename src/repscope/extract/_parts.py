"""Extraction by rank: each rank of a ``torch.distributed`` launch writes one part of a store,
and rank 0 joins the parts into one store (see :func:`repscope.extract.extract_to_store`).

Layout of a store made by ``W`` ranks::

    <root>/manifest.json                       # written last, by rank 0: every part's chunks
    <root>/parts/rank-00000-of-0000W/...       # an ordinary FeatureStore per rank (resumable)
    <root>/parts/rank-00001-of-0000W/...
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repscope._version import __version__
from repscope.distributed import DistContext, share
from repscope.exceptions import RepscopeTypeError, RepscopeValueError

if TYPE_CHECKING:
    from repscope.store import FeatureStore

__all__ = ["PARTS_DIR", "extract_parts", "join_parts", "part_name"]

PARTS_DIR = "parts"


def part_name(rank: int, world_size: int) -> str:
    """The folder (under ``parts/``) of rank ``rank``'s part: ``rank-00001-of-00002``."""
    return f"rank-{rank:05d}-of-{world_size:05d}"


def chunk_share(n: int, chunk_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` rank ``rank`` extracts: its contiguous block of whole chunks
    (``share`` of the ``ceil(n / chunk_size)`` chunks), so every chunk holds the same rows as
    in one process."""
    n_chunks = -(-n // chunk_size)
    a, b = share(n_chunks, rank, world_size)
    return min(a * chunk_size, n), min(b * chunk_size, n)


def check_parts_root(root: Path, world_size: int) -> None:
    """Refuse a store folder that one process wrote, or that another number of ranks wrote."""
    from repscope.store._manifest import MANIFEST, read_manifest

    if (root / MANIFEST).is_file():
        made = read_manifest(root).get("parts")
        if not made:
            raise RepscopeValueError(
                f"{root} holds a store that one process extracted; an extraction on "
                f"{world_size} ranks writes a store made of parts. Extract into a new path (or "
                "resume this one without torchrun).")
    folder = root / PARTS_DIR
    if folder.is_dir():
        others = sorted(p.name for p in folder.iterdir()
                        if p.is_dir() and not p.name.endswith(f"-of-{world_size:05d}"))
        if others:
            before = others[0].rsplit("-of-", 1)[-1].lstrip("0") or "?"
            raise RepscopeValueError(
                f"{root} holds parts written by {before} ranks ({', '.join(others[:3])}); this "
                f"run has {world_size}. Resume it with torchrun --nproc-per-node {before} (the "
                "parts are cut by world size), or extract into a new path.")


def extract_parts(
    ctx: DistContext,
    job: Any,
    store: Any,
    progress: bool,
    dataset: str | None,
    extract_into: Callable[..., FeatureStore],
) -> FeatureStore:
    """This rank's part of the extraction, then (rank 0, after a barrier) the top-level
    manifest; every rank returns the joined store once it is written."""
    from repscope.store import FeatureStore

    if not isinstance(store, (str, PathLike)):
        raise RepscopeTypeError(
            "The 'store' parameter of extract_to_store must be a path under torch.distributed "
            f"(each rank writes its own part of it). Got {type(store).__name__} instead.")
    if job.n is None:
        raise RepscopeValueError(
            "extraction on several ranks needs inputs of known length (a list, an array or an "
            "iterable with len()) to give each rank its share; got an iterable without len().")
    root = Path(store)
    check_parts_root(root, ctx.world_size)
    ctx.check_same({"n": job.n, "chunk_size": job.chunk_size, "batch_size": job.batch_size,
                    "layers": job.names, "pooling": job.poolings,
                    "model_id": job.adapter.model_id},
                   "the extraction's inputs and settings")
    n = job.n
    start, stop = chunk_share(n, job.chunk_size, ctx.rank, ctx.world_size)
    if stop > start:
        job.restrict(start, stop)
        part = {"rank": ctx.rank, "world_size": ctx.world_size, "start": start, "stop": stop}
        extract_into(job, root / PARTS_DIR / part_name(ctx.rank, ctx.world_size), progress,
                     dataset, part)
    ctx.barrier(f"waiting for every rank to finish its part of the extraction into {root}")
    if ctx.is_writer:
        blocks = [chunk_share(n, job.chunk_size, r, ctx.world_size)
                  for r in range(ctx.world_size)]
        join_parts(root, blocks)
    ctx.barrier(f"waiting for rank 0 to write the manifest of {root}")
    return FeatureStore.open(root)


def join_parts(root: Path, blocks: list[tuple[int, int]]) -> None:
    """Write ``root/manifest.json`` listing the chunks of every part in input order, after
    checking that the parts hold what ``blocks`` (each rank's ``[start, stop)``) says and were
    made by the same model, layers and settings.

    Raises
    ------
    RepscopeValueError
        A part is missing or incomplete, or was written by another model or with other layers,
        pooling or metadata columns (the message names the part).
    """
    from repscope.store import FeatureStore
    from repscope.store._manifest import MANIFEST, SCHEMA_VERSION, write_manifest

    world = len(blocks)
    first: dict[str, Any] | None = None
    chunks: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for rank, (start, stop) in enumerate(blocks):
        if stop <= start:
            continue
        rel = f"{PARTS_DIR}/{part_name(rank, world)}"
        if not (root / rel / MANIFEST).is_file():
            raise RepscopeValueError(
                f"part {rel} of {root} is missing: rank {rank} did not write it. Run the same "
                "command again to finish it.")
        part = FeatureStore.open(root / rel, verify="none")
        m = part._m
        if part.n_samples != stop - start:
            raise RepscopeValueError(
                f"part {rel} of {root} holds {part.n_samples} samples, not the {stop - start} "
                f"of rank {rank}'s share (inputs {start}:{stop}); its extraction did not finish "
                "or used other inputs. Run the same command again to finish it, or extract "
                "into a new path.")
        made = dict(m.get("attrs", {}).get("part", {}))
        if (made.get("start"), made.get("stop"), made.get("world_size")) != (start, stop, world):
            raise RepscopeValueError(
                f"part {rel} of {root} was written for inputs {made.get('start')}:"
                f"{made.get('stop')} of {made.get('world_size')} ranks, not {start}:{stop} of "
                f"{world}; extract into a new path.")
        if first is None:
            first = m
        else:
            _check_same_part(rel, m, first)
        for c in m["chunks"]:
            entry = copy.deepcopy(c)
            entry["index"] = len(chunks)
            entry["start"] = start + c["start"]
            entry["stop"] = start + c["stop"]
            for shard in entry["shards"].values():
                shard["file"] = f"{rel}/{shard['file']}"
            if entry.get("metadata"):
                entry["metadata"]["file"] = f"{rel}/{entry['metadata']['file']}"
            chunks.append(entry)
        parts.append({"dir": rel, "rank": rank, "start": start, "stop": stop})
    if first is None:
        raise RepscopeValueError(f"no rank wrote a part of {root}: the inputs are empty.")
    attrs = {k: v for k, v in first.get("attrs", {}).items() if k != "part"}
    attrs["world_size"] = world
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "format": "repscope.FeatureStore",
        "repscope_version": __version__,
        "model_id": first["model_id"],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "attrs": attrs,
        "layers": copy.deepcopy(first["layers"]),
        "metadata_columns": copy.deepcopy(first.get("metadata_columns")),
        "n_samples": blocks[-1][1],
        "chunks": chunks,
        "parts": parts,
    }
    write_manifest(root, manifest)


def _check_same_part(rel: str, m: Mapping[str, Any], first: Mapping[str, Any]) -> None:
    """Refuse a part made by another model, layers, pooling or metadata than the first part."""
    from repscope.extract._extract import ATTRS_KEY

    def settings(x: Mapping[str, Any]) -> Any:
        return x.get("attrs", {}).get(ATTRS_KEY)

    checks = (
        ("model", m["model_id"], first["model_id"]),
        ("layers", m["layers"], first["layers"]),
        ("metadata columns", m.get("metadata_columns"), first.get("metadata_columns")),
        ("extraction settings", settings(m), settings(first)),
    )
    for what, got, want in checks:
        if got != want:
            shown = list(got) if what == "layers" and got is not None else got
            expected = list(want) if what == "layers" and want is not None else want
            raise RepscopeValueError(
                f"part {rel} was written with other {what} than the first part: {shown!r:.200} "
                f"instead of {expected!r:.200}. A store's parts come from one extraction; "
                "extract into a new path.")
