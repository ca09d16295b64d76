"""Damaged stores are detected and reported with the file's path: truncation, flipped bytes,
missing files, broken manifests."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from repscope.exceptions import CorruptStoreError, DataNotFoundError, RepscopeValueError
from repscope.store import FeatureStore


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    rng = np.random.default_rng(0)
    s = FeatureStore.create(tmp_path / "store", "m")
    for _ in range(3):
        s.append(
            {
                "h": rng.standard_normal((4, 8)).astype(np.float32),
                "tok": [rng.standard_normal((t, 2)).astype(np.float32) for t in (1, 3, 2, 2)],
            },
            metadata={"label": rng.integers(0, 2, size=4)},
        )
    s.close()  # done writing: release the writer lock (the store stays readable)
    return s


def _shard(store: FeatureStore, layer: str, chunk: int) -> Path:
    return store.path / "layers" / layer / f"chunk-{chunk:06d}.safetensors"


def _flip_byte(path: Path, offset_from_end: int = 3) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def test_truncated_shard_raises_naming_file_and_sizes(store: FeatureStore) -> None:
    path = _shard(store, "h", 1)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 5)
    for verify in ("none", "lazy"):
        reader = FeatureStore.open(store.path, verify=verify)
        np.testing.assert_array_equal(reader.read("h", [0]), store.read("h", [0]))  # chunk 0 ok
        with pytest.raises(CorruptStoreError, match=re.escape(str(path))) as err:
            reader.read("h", [5])
        assert f"expects {size} bytes" in str(err.value)
        assert f"has {size - 5} bytes" in str(err.value)
        with pytest.raises(CorruptStoreError, match="truncated"):
            list(reader.iter_batches("h", 3))
    with pytest.raises(CorruptStoreError, match=re.escape(str(path))):
        FeatureStore.open(store.path).verify()
    with pytest.raises(CorruptStoreError, match=re.escape(str(path))):
        FeatureStore.open(store.path, verify="full")


def test_shard_shorter_than_its_header_declares_is_detected(store: FeatureStore) -> None:
    # Truncate the file *and* make the manifest agree, so only the header betrays it.
    path = _shard(store, "tok", 2)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 8)
    manifest = json.loads((store.path / "manifest.json").read_text())
    manifest["chunks"][2]["shards"]["tok"]["bytes"] = size - 8
    (store.path / "manifest.json").write_text(json.dumps(manifest))
    reader = FeatureStore.open(store.path, verify="none")
    with pytest.raises(
        CorruptStoreError,
        match=rf"truncated shard {re.escape(str(path))}.*declares {size} bytes.*has {size - 8} bytes",
    ):
        reader.read_ragged("tok", [9])


def test_flipped_byte_fails_checksum_in_verify_and_lazy_read(store: FeatureStore) -> None:
    path = _shard(store, "h", 2)
    before = store.read("h")
    _flip_byte(path)
    with pytest.raises(CorruptStoreError, match=rf"checksum mismatch in {re.escape(str(path))}"):
        FeatureStore.open(store.path).verify()
    lazy = FeatureStore.open(store.path, verify="lazy")
    np.testing.assert_array_equal(lazy.read("h", [1, 5]), before[[1, 5]])
    with pytest.raises(CorruptStoreError, match=re.escape(str(path))):
        lazy.read("h", [9])
    with pytest.raises(CorruptStoreError, match="checksum mismatch"):
        FeatureStore.open(store.path, verify="full")
    with pytest.raises(CorruptStoreError, match=re.escape(str(path))):
        store.verify()  # re-hashes files this store's lazy reads already accepted
    # verify="none" trusts the files: the damage shows in the values instead.
    unchecked = FeatureStore.open(store.path, verify="none").read("h", [11])
    assert not np.array_equal(unchecked, before[[11]])


def test_flipped_byte_in_metadata_fails_checksum(store: FeatureStore) -> None:
    path = store.path / "meta" / "chunk-000001.parquet"
    _flip_byte(path, offset_from_end=40)
    with pytest.raises(CorruptStoreError, match=re.escape(str(path))):
        FeatureStore.open(store.path).metadata()
    with pytest.raises(CorruptStoreError, match=re.escape(str(path))):
        store.verify()


def test_missing_shard_is_reported(store: FeatureStore) -> None:
    path = _shard(store, "tok", 0)
    path.unlink()
    with pytest.raises(CorruptStoreError, match=rf"missing file {re.escape(str(path))}"):
        FeatureStore.open(store.path).read_ragged("tok")


def test_shard_with_a_header_that_disagrees_with_the_manifest_is_rejected(
    store: FeatureStore, tmp_path: Path
) -> None:
    # Swap in a well-formed shard of another shape and fix up size and checksum.
    other = FeatureStore.create(tmp_path / "other", "m")
    other.append({"h": np.zeros((4, 7), dtype=np.float32)})
    src = _shard(other, "h", 0)
    dst = _shard(store, "h", 0)
    dst.write_bytes(src.read_bytes())
    manifest = json.loads((store.path / "manifest.json").read_text())
    manifest["chunks"][0]["shards"]["h"].update(
        json.loads((other.path / "manifest.json").read_text())["chunks"][0]["shards"]["h"]
    )
    manifest["chunks"][0]["shards"]["h"]["file"] = "layers/h/chunk-000000.safetensors"
    (store.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        CorruptStoreError, match=r"expected tensor 'values' of dtype float32 and shape \(4, 8\)"
    ):
        FeatureStore.open(store.path).read("h")


def test_directory_without_manifest_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="is not a FeatureStore"):
        FeatureStore.open(tmp_path)
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        FeatureStore.open(tmp_path / "missing")


def test_broken_or_newer_manifest_is_rejected(store: FeatureStore) -> None:
    path = store.path / "manifest.json"
    good = path.read_text()
    path.write_text(good[:-20])
    with pytest.raises(CorruptStoreError, match="corrupt manifest"):
        FeatureStore.open(store.path)
    manifest = json.loads(good)
    manifest["n_samples"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(CorruptStoreError, match="chunks cover 12 samples but n_samples is 99"):
        FeatureStore.open(store.path)
    manifest = json.loads(good)
    manifest["schema_version"] = 7
    path.write_text(json.dumps(manifest))
    with pytest.raises(RepscopeValueError, match="schema_version 7.*Upgrade repscope"):
        FeatureStore.open(store.path)


def test_new_writer_removes_only_unlisted_chunk_and_temp_files(store: FeatureStore) -> None:
    root = store.path
    debris = [
        root / "layers" / "h" / "chunk-000003.safetensors",
        root / "layers" / "h" / ".tmp-chunk-000003.safetensors.123.abcd",
        root / "meta" / "chunk-000003.parquet",
        root / ".tmp-manifest.json.123.abcd",
        root / "layers" / "old_layer" / "chunk-000000.safetensors",
    ]
    keep = [root / "notes.txt", root / "layers" / "h" / "notes.txt"]
    for p in debris + keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"junk")
    FeatureStore.open(root).read("h")  # readers never delete anything
    assert all(p.exists() for p in debris)
    FeatureStore.create(root, "m", exist_ok=True)
    assert not any(p.exists() for p in debris)
    assert not (root / "layers" / "old_layer").exists()
    assert all(p.exists() for p in keep)
    FeatureStore.open(root).verify()
