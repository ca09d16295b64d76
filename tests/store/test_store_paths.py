"""Every path a manifest names stays inside the store: relative, normalised, no ``..``, no
absolute paths, no symbolic links. A crafted manifest or tree is refused with a
CorruptStoreError naming the manifest entry (never the size or content of an outside file), and
nothing outside the store is ever written, read or deleted."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from repscope.exceptions import CorruptStoreError
from repscope.store import FeatureStore

SHARD = "layers/h/chunk-000000.safetensors"


def _make(root: Path, value: float = 0.0, *, meta: bool = False) -> Path:
    store = FeatureStore.create(root, "m")
    store.append(
        {"h": np.full((4, 3), value, dtype=np.float32)},
        metadata={"label": [0, 1, 0, 1]} if meta else None,
    )
    store.close()
    return root


def _edit(root: Path, change: Any) -> None:
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _read(root: Path, verify: Any) -> np.ndarray:
    return FeatureStore.open(root, verify=verify).read("h")


def _tree(base: Path, skip: Path) -> dict[str, bytes | str]:
    """Every file and link under ``base`` outside ``skip``: path -> content or link target."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p == skip or skip in p.parents:
                continue
            if p.is_symlink():
                out[str(p)] = os.readlink(p)
            elif p.is_file():
                out[str(p)] = p.read_bytes()
    return out


def test_layer_dir_escaping_the_store_is_refused_and_nothing_is_written_outside(
    tmp_path: Path,
) -> None:
    root = _make(tmp_path / "x" / "y" / "store")
    _edit(root, lambda m: m["layers"]["h"].update(dir="../../.."))
    before = _tree(tmp_path, root)
    more = {"h": np.ones((2, 3), dtype=np.float32)}
    for attempt in (
        lambda: FeatureStore.create(root, "m", exist_ok=True).append(more),
        lambda: FeatureStore.open(root).append(more),
        lambda: FeatureStore.open(root),
    ):
        with pytest.raises(CorruptStoreError, match=r"layer 'h' has dir '\.\./\.\./\.\.'"):
            attempt()
    assert _tree(tmp_path, root) == before
    assert not list(tmp_path.rglob("chunk-000001.safetensors"))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_shard_file_in_another_store_is_refused(tmp_path: Path, how: str) -> None:
    root, other = _make(tmp_path / "a", 0.0), _make(tmp_path / "b", 7.0)
    theirs = json.loads((other / "manifest.json").read_text())["chunks"][0]["shards"]["h"]
    target = other / SHARD
    if how == "symlink":
        (root / SHARD).unlink()
        (root / SHARD).symlink_to(target)
        entry = SHARD
    else:
        entry = "../b/" + SHARD if how == "dotdot" else str(target)
    _edit(root, lambda m: m["chunks"][0]["shards"]["h"].update({**theirs, "file": entry}))
    before = _tree(tmp_path, root)
    refused = rf"chunk 0 shard of layer 'h'.*{re.escape(repr(entry))}"
    with pytest.raises(CorruptStoreError, match=refused):
        _read(root, "none")  # before the fix: the 7.0s of the other store, silently
    with pytest.raises(CorruptStoreError, match=refused):
        _read(root, "full")
    assert _tree(tmp_path, root) == before


@pytest.mark.parametrize("outside", ["tmp", "/etc/passwd"])
def test_shard_pointing_outside_does_not_leak_the_files_size(tmp_path: Path, outside: str) -> None:
    if outside == "tmp":
        secret = tmp_path / "secret.bin"
        secret.write_bytes(b"SECRET-CONTENT" + b"x" * (54321 - 14))
    else:
        secret = Path(outside)
        if not secret.is_file():
            pytest.skip("no /etc/passwd here")
    size = secret.stat().st_size
    root = _make(tmp_path / "store")
    _edit(root, lambda m: m["chunks"][0]["shards"]["h"].update(file=str(secret), bytes=7))
    for verify in ("lazy", "full", "none"):
        with pytest.raises(CorruptStoreError) as err:
            _read(root, verify)
        msg = str(err.value)
        assert "chunk 0 shard of layer 'h'" in msg
        assert f"{size} bytes" not in msg and "SECRET" not in msg
        assert len(msg.splitlines()) == 1


def test_metadata_file_outside_the_store_is_refused(tmp_path: Path) -> None:
    root, other = _make(tmp_path / "a", meta=True), _make(tmp_path / "b", meta=True)
    entry = json.loads((other / "manifest.json").read_text())["chunks"][0]["metadata"]
    escape = {**entry, "file": "../b/" + entry["file"]}
    _edit(root, lambda m: m["chunks"][0]["metadata"].update(escape))
    with pytest.raises(CorruptStoreError, match=r"chunk 0 metadata has file '\.\./b/meta/"):
        FeatureStore.open(root).metadata()


def test_symlinked_layer_dir_is_refused_and_its_target_keeps_its_chunks(tmp_path: Path) -> None:
    root = _make(tmp_path / "store")
    outside = tmp_path / "elsewhere"
    (root / "layers" / "h").rename(outside)
    (outside / "chunk-000005.safetensors").write_bytes(b"someone else's chunk")
    (root / "layers" / "h").symlink_to(outside, target_is_directory=True)
    before = _tree(tmp_path, root)
    with pytest.raises(CorruptStoreError, match=r"layer 'h' has dir 'h'.*symbolic link"):
        FeatureStore.create(root, "m", exist_ok=True)  # before the fix: deleted chunk-000005
    with pytest.raises(CorruptStoreError, match=r"layer 'h' has dir 'h'.*symbolic link"):
        FeatureStore.open(root)
    assert _tree(tmp_path, root) == before


def test_cleanup_never_follows_or_deletes_symlinks(tmp_path: Path) -> None:
    root = _make(tmp_path / "store", meta=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for name in ("chunk-000000.safetensors", "chunk-000003.safetensors", "chunk-000003.parquet"):
        (outside / name).write_bytes(b"not ours")
    (root / "layers" / "old").symlink_to(outside, target_is_directory=True)  # unlisted layer dir
    (root / "layers" / "h" / "chunk-000003.safetensors").symlink_to(
        outside / "chunk-000003.safetensors"
    )
    (root / "meta" / "chunk-000003.parquet").symlink_to(outside / "chunk-000003.parquet")
    (root / ".tmp-manifest.json.1.x").symlink_to(outside / "chunk-000000.safetensors")
    (root / "layers" / "h" / "chunk-000004.safetensors").write_bytes(b"debris")  # ours: removed
    before = _tree(tmp_path, root)
    store = FeatureStore.create(root, "m", exist_ok=True)
    store.append({"h": np.ones((2, 3), dtype=np.float32)}, metadata={"label": [1, 1]})
    store.close()
    assert _tree(tmp_path, root) == before
    assert (root / "layers" / "old").is_symlink()
    assert not (root / "layers" / "h" / "chunk-000004.safetensors").exists()
    assert FeatureStore.open(root, verify="full").n_samples == 6


@pytest.mark.parametrize("link", ["layers", "layers/h", "meta"])
def test_first_append_never_writes_through_a_planted_symlink(tmp_path: Path, link: str) -> None:
    root = tmp_path / "store"
    FeatureStore.create(root, "m").close()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    (root / link).symlink_to(outside, target_is_directory=True)
    store = FeatureStore.create(root, "m", exist_ok=True)
    with pytest.raises(CorruptStoreError, match=rf"{link} is a symbolic link"):
        store.append({"h": np.ones((2, 3), dtype=np.float32)}, metadata={"label": [1, 1]})
    store.close()
    assert list(outside.rglob("*")) == []
    assert FeatureStore.open(root).n_samples == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dir", "a/b"),
        ("dir", ".."),
        ("dir", ""),
        ("dir", "C:\\x"),
        ("file", "layers/h/../h/chunk-000000.safetensors"),
        ("file", "layers/h//chunk-000000.safetensors"),
        ("file", "./layers/h/chunk-000000.safetensors"),
        ("file", "layers/other/chunk-000000.safetensors"),
        ("file", "meta/chunk-000000.parquet"),
        ("file", 3),
    ],
)
def test_unnormalised_or_misplaced_manifest_paths_are_refused(
    tmp_path: Path, field: str, value: Any
) -> None:
    root = _make(tmp_path / "store")
    if field == "dir":
        _edit(root, lambda m: m["layers"]["h"].update(dir=value))
    else:
        _edit(root, lambda m: m["chunks"][0]["shards"]["h"].update(file=value))
    with pytest.raises(CorruptStoreError, match=r"corrupt manifest .*layer 'h'"):
        FeatureStore.open(root)
