"""``manifest.json``: creation, atomic replacement, validation on load, and the clean-up of
files that no manifest entry lists (left by a writer that died mid-chunk).

Every path a manifest names is confined to the store: a layer's ``dir`` is one plain name
under ``layers/``, a shard's ``file`` is ``layers/<that dir>/<name>``, a metadata ``file`` is
``meta/<name>``, and none of them may pass through a symbolic link. Anything else is refused
on load with a CorruptStoreError naming the entry, before any file it names is touched."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from repscope._version import __version__
from repscope.exceptions import (
    CorruptStoreError,
    DataNotFoundError,
    RepscopeTypeError,
    RepscopeValueError,
)
from repscope.results import to_jsonable
from repscope.store._fs import TMP_PREFIX, atomic_write, is_plain_name, is_real_dir, store_path

__all__ = [
    "MANIFEST",
    "SCHEMA_VERSION",
    "cleanup_unlisted",
    "jsonable_attrs",
    "listed_files",
    "new_manifest",
    "read_manifest",
    "write_manifest",
]

#: Version of the on-disk format; a newer one is refused with a message to upgrade.
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def new_manifest(model_id: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest of an empty store (layers and metadata columns are fixed by the first append)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "format": "repscope.FeatureStore",
        "repscope_version": __version__,
        "model_id": model_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "attrs": dict(attrs),
        "layers": {},
        "metadata_columns": None,
        "n_samples": 0,
        "chunks": [],
    }


def jsonable_attrs(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``attrs`` as plain JSON data (numpy scalars and arrays converted)."""
    if attrs is None:
        return {}
    if not isinstance(attrs, Mapping):
        raise RepscopeTypeError(
            f"The 'attrs' parameter of FeatureStore.create must be a mapping. Got "
            f"{type(attrs).__name__} instead."
        )
    try:
        out: dict[str, Any] = json.loads(json.dumps(to_jsonable(dict(attrs))))
    except (TypeError, ValueError) as err:
        raise RepscopeTypeError(
            f"The 'attrs' parameter of FeatureStore.create must be JSON-serialisable ({err})."
        ) from None
    return out


def write_manifest(root: Path, manifest: Mapping[str, Any]) -> None:
    """Atomically replace ``root/manifest.json`` (the commit point of every append)."""
    data = json.dumps(manifest, indent=1).encode("utf-8")

    def write(f: IO[bytes]) -> None:
        f.write(data)

    atomic_write(root / MANIFEST, write)


def read_manifest(root: Path) -> dict[str, Any]:
    """Load and check ``root/manifest.json``.

    Raises
    ------
    DataNotFoundError
        ``root`` is not a FeatureStore.
    CorruptStoreError
        The manifest is unreadable or inconsistent (chunks not contiguous, shards missing).
    RepscopeValueError
        The manifest was written by a newer schema version.
    """
    path = root / MANIFEST
    if not path.is_file():
        raise DataNotFoundError(
            f"{root} is not a FeatureStore: it has no {MANIFEST}. Create one with "
            "FeatureStore.create(path, model_id=...) or check the path."
        )
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptStoreError(f"corrupt manifest {path}: {err}") from None
    version = m.get("schema_version") if isinstance(m, dict) else None
    if not isinstance(version, int):
        raise CorruptStoreError(f"corrupt manifest {path}: no integer 'schema_version'.")
    if version > SCHEMA_VERSION:
        raise RepscopeValueError(
            f"{path} has schema_version {version}; this repscope ({__version__}) reads up to "
            f"{SCHEMA_VERSION}. Upgrade repscope to read it."
        )
    for key, kind in (("model_id", str), ("layers", dict), ("chunks", list), ("n_samples", int)):
        if not isinstance(m.get(key), kind):
            raise CorruptStoreError(f"corrupt manifest {path}: {key!r} must be a {kind.__name__}.")
    pos = 0
    for i, c in enumerate(m["chunks"]):
        if c.get("index") != i or c.get("start") != pos or c.get("stop", -1) <= pos:
            raise CorruptStoreError(
                f"corrupt manifest {path}: chunk {i} does not continue at sample {pos} "
                f"({c!r:.200})."
            )
        if set(c.get("shards", {})) != set(m["layers"]):
            raise CorruptStoreError(
                f"corrupt manifest {path}: chunk {i} has shards {sorted(c.get('shards', {}))}, "
                f"expected one per layer {sorted(m['layers'])}."
            )
        pos = c["stop"]
    if pos != m["n_samples"]:
        raise CorruptStoreError(
            f"corrupt manifest {path}: chunks cover {pos} samples but n_samples is "
            f"{m['n_samples']}."
        )
    _check_paths(root, path, m)
    return m


def _check_paths(root: Path, path: Path, m: Mapping[str, Any]) -> None:
    """Refuse any path in the manifest that could lead outside the store (see the module doc).

    Layer directories (a handful) are also checked for symbolic links here; listed files are
    checked for links when they are opened (:func:`repscope.store._fs.store_path`).
    """
    parts = _part_dirs(path, m)
    dirs: dict[str, str] = {}
    for name, spec in m["layers"].items():
        d = spec.get("dir") if isinstance(spec, dict) else None
        if not is_plain_name(d):
            raise CorruptStoreError(
                f"corrupt manifest {path}: layer {name!r} has dir {d!r:.200}; a layer's dir must "
                "be one plain name inside layers/ (no '/', '..' or absolute path)."
            )
        store_path(root, f"layers/{d}", f"layer {name!r} has dir {d!r}; its directory")
        dirs[name] = f"layers/{d}/"
    for i, c in enumerate(m["chunks"]):
        for name, entry in c["shards"].items():
            _check_file_entry(path, entry, dirs[name], f"chunk {i} shard of layer {name!r}", parts)
        if c.get("metadata"):
            _check_file_entry(path, c["metadata"], "meta/", f"chunk {i} metadata", parts)


def _part_dirs(path: Path, m: Mapping[str, Any]) -> set[str]:
    """The part folders of a store made by several ranks (``parts/<plain name>``), checked."""
    parts = m.get("parts")
    if parts is None:
        return set()
    if not isinstance(parts, list):
        raise CorruptStoreError(f"corrupt manifest {path}: 'parts' must be a list.")
    out: set[str] = set()
    for p in parts:
        d = p.get("dir") if isinstance(p, dict) else None
        head, _, name = d.partition("/") if isinstance(d, str) else ("", "", "")
        if head != "parts" or not is_plain_name(name):
            raise CorruptStoreError(
                f"corrupt manifest {path}: part dir {d!r:.200} must be parts/<one plain name>.")
        out.add(str(d))
    return out


def _check_file_entry(path: Path, entry: Any, prefix: str, what: str,
                      parts: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    rel = entry.get("file") if isinstance(entry, dict) else None
    if isinstance(rel, str) and parts and rel.startswith("parts/"):
        part = "/".join(rel.split("/", 2)[:2])
        if part in parts:  # a file of one rank's part: the same rules inside that part
            rel = rel[len(part) + 1:]
    if not (isinstance(rel, str) and rel.startswith(prefix) and is_plain_name(rel[len(prefix):])):
        raise CorruptStoreError(
            f"corrupt manifest {path}: {what} has file {rel!r:.200}; it must be a file directly "
            f"in {prefix} inside the store (no '..', '.', '//' or absolute path)."
        )


def listed_files(manifest: Mapping[str, Any]) -> set[str]:
    """Relative paths of every shard and metadata file the manifest lists."""
    out: set[str] = set()
    for c in manifest["chunks"]:
        out.update(s["file"] for s in c["shards"].values())
        if c.get("metadata"):
            out.add(c["metadata"]["file"])
    return out


def cleanup_unlisted(root: Path, manifest: Mapping[str, Any]) -> None:
    """Remove temp files and chunk files the manifest does not list.

    Only a writer holding the store lock may call this: then every such file is debris of a
    writer that died before its manifest update. Files with other names are left alone, and so
    is every symbolic link and whatever it points at: only regular files inside the store's own
    (non-link) ``layers/*`` and ``meta`` directories are ever deleted.
    """
    listed = listed_files(manifest)
    for tmp in root.glob(f"{TMP_PREFIX}*"):
        _unlink_regular(tmp)
    layer_dirs = {s["dir"] for s in manifest["layers"].values()}
    for sub, suffix in (("layers", ".safetensors"), ("meta", ".parquet")):
        base = root / sub
        if not is_real_dir(base):
            continue
        dirs = [base] if sub == "meta" else [d for d in base.iterdir() if is_real_dir(d)]
        for d in dirs:
            for f in d.iterdir():
                rel = f.relative_to(root).as_posix()
                stale_tmp = f.name.startswith(TMP_PREFIX)
                orphan = f.name.startswith("chunk-") and f.suffix == suffix
                if stale_tmp or (orphan and rel not in listed):
                    _unlink_regular(f)
            if sub == "layers" and d.name not in layer_dirs and not any(d.iterdir()):
                d.rmdir()


def _unlink_regular(path: Path) -> None:
    """Delete ``path`` if it is a regular file (never a link, a directory or what a link names)."""
    try:
        if stat.S_ISREG(os.lstat(path).st_mode):
            path.unlink()
    except FileNotFoundError:
        pass
