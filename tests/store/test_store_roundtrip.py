"""FeatureStore round trips: what goes in comes back out exactly, however it is read."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch

from repscope.store import FeatureStore, LayerInfo, RaggedArray, pad_ragged

DENSE = "model.layers.6.mlp"
RAGGED = "model.layers.6.attn"
CHUNKS = (5, 1, 7, 3)  # rows per append, so chunk boundaries fall at 5, 6, 13


def _dataset(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n = sum(CHUNKS)
    lengths = rng.integers(0, 6, size=n)
    lengths[[0, 4]] = 1  # single-token samples, one of them at a chunk edge
    lengths[2] = 0  # and an empty one
    return {
        DENSE: rng.standard_normal((n, 3, 2)).astype(np.float32),
        "logits": rng.standard_normal((n, 5)),  # float64
        "half": rng.standard_normal((n, 4)).astype(np.float16),
        RAGGED: [rng.standard_normal((int(t), 4)).astype(np.float32) for t in lengths],
        "meta": {
            "label": rng.integers(0, 3, size=n),
            "id": [f"doc-{i:03d}" for i in range(n)],
            "weight": rng.random(n),
            "is_test": rng.random(n) < 0.5,
        },
    }


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("rt") / "store"
    data = _dataset()
    store = FeatureStore.create(root, model_id="toy/model", attrs={"pooling": "mean", "k": 2})
    a = 0
    for rows in CHUNKS:
        b = a + rows
        n = store.append(
            {k: data[k][a:b] for k in (DENSE, "logits", "half", RAGGED)},
            metadata={k: v[a:b] for k, v in data["meta"].items()},
        )
        assert n == b
        a = b
    return root, data


def test_reading_whole_layers_returns_exactly_what_was_appended(filled: tuple[Path, dict]) -> None:
    root, data = filled
    store = FeatureStore.open(root)
    assert len(store) == store.n_samples == sum(CHUNKS)
    assert store.n_chunks == len(CHUNKS)
    for layer in (DENSE, "logits", "half"):
        out = store.read(layer)
        assert out.dtype == data[layer].dtype
        assert type(out) is np.ndarray  # a copy, not a memory map
        np.testing.assert_array_equal(out, data[layer])
    ragged = store.read_ragged(RAGGED)
    np.testing.assert_array_equal(ragged.values, np.concatenate(data[RAGGED]))
    np.testing.assert_array_equal(ragged.lengths, [len(t) for t in data[RAGGED]])
    assert type(ragged.values) is np.ndarray
    assert ragged.offsets[0] == 0
    assert ragged.offsets.dtype == np.int64
    for i, tokens in enumerate(data[RAGGED]):
        np.testing.assert_array_equal(ragged.sample(i), tokens)


def test_store_properties_describe_the_contents(filled: tuple[Path, dict]) -> None:
    root, data = filled
    store = FeatureStore.open(root)
    assert store.model_id == "toy/model"
    assert store.attrs == {"pooling": "mean", "k": 2}
    assert store.layers == [DENSE, "logits", "half", RAGGED]
    assert store.layer_info(DENSE) == LayerInfo(DENSE, (3, 2), "float32", False, 16, None)
    info = store.layer_info(RAGGED)
    assert info.ragged
    assert info.shape_tail == (4,)
    assert info.n_tokens == sum(len(t) for t in data[RAGGED])
    text = repr(store)
    assert "toy/model" in text
    assert "n_samples=16" in text
    assert DENSE in text
    assert str(root) in text
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    assert manifest["layers"][DENSE] | {"dir": None} == {
        "dir": None,
        "shape_tail": [3, 2],
        "dtype": "float32",
        "ragged": False,
    }
    assert [c["start"] for c in manifest["chunks"]] == [0, 5, 6, 13]


@pytest.mark.parametrize("verify", ["lazy", "none", "full"])
def test_random_access_with_unsorted_repeated_and_negative_indices(
    filled: tuple[Path, dict], verify: str
) -> None:
    root, data = filled
    store = FeatureStore.open(root, verify=verify)  # type: ignore[arg-type]
    idx = [15, 0, 6, 5, 5, 12, -1, 3, 13]
    np.testing.assert_array_equal(store.read(DENSE, idx), data[DENSE][idx])
    np.testing.assert_array_equal(store.read("half", np.array(idx)), data["half"][idx])
    np.testing.assert_array_equal(store.read("logits", torch.tensor(idx)), data["logits"][idx])
    ragged = store.read_ragged(RAGGED, idx)
    assert ragged.n_samples == len(idx)
    for j, i in enumerate(idx):
        np.testing.assert_array_equal(ragged.sample(j), data[RAGGED][i])
    assert store.read(DENSE, []).shape == (0, 3, 2)
    np.testing.assert_array_equal(store.read(DENSE, slice(2, 9, 3)), data[DENSE][2:9:3])


@pytest.mark.parametrize(
    ("batch_size", "start", "stop"), [(1, 0, None), (3, 0, None), (4, 2, 15), (100, 5, 6)]
)
def test_iter_batches_crosses_chunks_and_equals_the_concatenation(
    filled: tuple[Path, dict], batch_size: int, start: int, stop: int | None
) -> None:
    root, data = filled
    store = FeatureStore.open(root)
    end = store.n_samples if stop is None else stop
    batches = list(store.iter_batches(DENSE, batch_size, start=start, stop=stop))
    assert all(len(b) == batch_size for b in batches[:-1])
    np.testing.assert_array_equal(np.concatenate(batches), data[DENSE][start:end])
    rag = list(store.iter_batches(RAGGED, batch_size, start=start, stop=stop))
    assert all(isinstance(r, RaggedArray) and r.n_samples <= batch_size for r in rag)
    got = [r.sample(j) for r in rag for j in range(r.n_samples)]
    assert len(got) == end - start
    for g, want in zip(got, data[RAGGED][start:end]):
        np.testing.assert_array_equal(g, want)


def test_metadata_round_trips_str_int_float_bool_columns(filled: tuple[Path, dict]) -> None:
    root, data = filled
    store = FeatureStore.open(root)
    meta = store.metadata()
    assert list(meta) == store.metadata_columns == ["label", "id", "weight", "is_test"]
    np.testing.assert_array_equal(meta["label"], data["meta"]["label"])
    assert meta["label"].dtype == np.int64
    assert list(meta["id"]) == data["meta"]["id"]
    np.testing.assert_array_equal(meta["weight"], data["meta"]["weight"])
    np.testing.assert_array_equal(meta["is_test"], data["meta"]["is_test"])
    assert list(store.metadata(["id"])) == ["id"]
    assert list(store.metadata("weight")) == ["weight"]
    table = store.metadata_table()
    assert table.num_rows == store.n_samples
    assert table.column_names == ["label", "id", "weight", "is_test"]


def test_read_padded_mask_marks_exactly_the_real_tokens(filled: tuple[Path, dict]) -> None:
    root, data = filled
    store = FeatureStore.open(root)
    idx = [4, 2, 0, 7]
    lengths = [len(data[RAGGED][i]) for i in idx]
    padded = store.read_padded(RAGGED, idx, pad_value=-9.0)
    assert padded.values.shape == (4, max(lengths), 4)
    np.testing.assert_array_equal(padded.mask.sum(axis=1), lengths)
    for j, i in enumerate(idx):
        t = lengths[j]
        assert padded.mask[j, :t].all()
        assert not padded.mask[j, t:].any()
        np.testing.assert_array_equal(padded.values[j, :t], data[RAGGED][i])
        assert (padded.values[j, t:] == -9.0).all()
    empty = pad_ragged(RaggedArray(np.zeros((0, 2)), np.zeros(3, dtype=np.int64)))
    assert empty.values.shape == (2, 0, 2)
    assert empty.mask.shape == (2, 0)


def test_ragged_values_offsets_input_equals_list_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    samples = [rng.standard_normal((t, 3)).astype(np.float32) for t in (1, 4, 2)]
    values, offsets = np.concatenate(samples), np.array([0, 1, 5, 7])
    a = FeatureStore.create(tmp_path / "a", "m")
    a.append({"tok": samples})
    b = FeatureStore.create(tmp_path / "b", "m")
    b.append({"tok": (values, offsets)})
    b.append({"tok": RaggedArray(values, offsets)})
    ra, rb = a.read_ragged("tok"), b.read_ragged("tok", [0, 1, 2])
    np.testing.assert_array_equal(ra.values, rb.values)
    np.testing.assert_array_equal(ra.offsets, rb.offsets)
    np.testing.assert_array_equal(b.read_ragged("tok", [3, 4, 5]).values, values)


def test_torch_tensors_are_stored_as_numpy_and_bfloat16_reads_as_float32(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g, requires_grad=True)
    bf = torch.randn(6, 3, generator=g).to(torch.bfloat16)
    tokens = [torch.randn(t, 2, generator=g) for t in (1, 3, 2, 1, 1, 4)]
    store = FeatureStore.create(tmp_path / "s", "m")
    store.append({"x": x, "bf": bf, "tok": tokens}, metadata={"y": torch.arange(6)})
    store.append({"x": x[:2], "bf": bf[:2], "tok": tokens[:2]}, metadata={"y": torch.arange(2)})
    assert store.layer_info("bf").dtype == "bfloat16"
    out = FeatureStore.open(store.path).read("bf")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, torch.cat([bf, bf[:2]]).float().numpy())
    np.testing.assert_array_equal(store.read("x", range(6)), x.detach().numpy())
    np.testing.assert_array_equal(store.read_ragged("tok", [2]).values, tokens[2].numpy())
    np.testing.assert_array_equal(store.metadata()["y"], [0, 1, 2, 3, 4, 5, 0, 1])
    # The shards are plain safetensors files that the reference implementation reads.
    shard = store.path / "layers" / "bf" / "chunk-000000.safetensors"
    import safetensors.torch

    assert torch.equal(safetensors.torch.load_file(shard)["values"], bf)


def test_shards_are_readable_by_the_safetensors_library(filled: tuple[Path, dict]) -> None:
    root, data = filled
    manifest = json.loads((root / "manifest.json").read_text())
    chunk = manifest["chunks"][2]
    dense = safetensors.numpy.load_file(root / chunk["shards"][DENSE]["file"])
    np.testing.assert_array_equal(dense["values"], data[DENSE][6:13])
    rag = safetensors.numpy.load_file(root / chunk["shards"][RAGGED]["file"])
    np.testing.assert_array_equal(
        rag["offsets"], np.cumsum([0] + [len(t) for t in data[RAGGED][6:13]])
    )
    np.testing.assert_array_equal(rag["values"], np.concatenate(data[RAGGED][6:13]))


def test_layer_names_map_to_distinct_safe_directories(tmp_path: Path) -> None:
    names = ["", "enc/blocks.0", "A", "a", "..", "blocks[0]", "x" * 300]
    store = FeatureStore.create(tmp_path / "s", "m")
    feats = {n: np.full((2, 1), i, dtype=np.float32) for i, n in enumerate(names)}
    store.append(feats)
    store.append(feats)
    dirs = {p.name.lower() for p in (tmp_path / "s" / "layers").iterdir()}
    assert len(dirs) == len(names)
    assert {p.name for p in tmp_path.iterdir()} == {"s"}  # ".." escaped nowhere
    assert {p.name for p in (tmp_path / "s").iterdir()} == {"layers", "manifest.json", ".lock"}
    reopened = FeatureStore.open(tmp_path / "s")
    assert reopened.layers == names
    for i, n in enumerate(names):
        np.testing.assert_array_equal(reopened.read(n), np.full((4, 1), i, dtype=np.float32))


def test_reopening_with_exist_ok_appends_and_other_writers_chunks_are_seen(tmp_path: Path) -> None:
    # Writers take turns (one at a time, see test_store_writer_lock.py); each resumes from the
    # n_samples the previous one left, and readers see new chunks after refresh().
    FeatureStore.create(tmp_path / "s", "m", attrs={"a": 1}).close()
    reader = FeatureStore.open(tmp_path / "s")
    with FeatureStore.create(tmp_path / "s", "m", exist_ok=True) as first:
        assert first.append({"h": np.zeros((2, 3))}) == 2
    with FeatureStore.create(tmp_path / "s", "m", exist_ok=True) as second:
        assert second.n_samples == 2
        assert second.append({"h": np.ones((3, 3))}) == 5  # continues after first's chunk
    assert first.append({"h": np.full((1, 3), 2.0)}) == 6  # takes the lock again, re-reads
    first.close()
    assert reader.n_samples == 0
    reader.refresh()
    assert reader.n_samples == 6
    np.testing.assert_array_equal(reader.read("h")[:, 0], [0, 0, 1, 1, 1, 2])


def test_store_pickles_for_dataloader_workers(filled: tuple[Path, dict]) -> None:
    root, data = filled
    store = FeatureStore.open(root)
    store.read(DENSE, [0])  # populate the memory-map cache
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.read(DENSE, [15, 1]), data[DENSE][[15, 1]])


def test_nan_values_are_stored_as_given(tmp_path: Path) -> None:
    x = np.array([[np.nan, np.inf], [-np.inf, 1.0]], dtype=np.float32)
    store = FeatureStore.create(tmp_path / "s", "m")
    store.append({"h": x})
    np.testing.assert_array_equal(store.read("h"), x)


@pytest.mark.parametrize("verify", ["none", "lazy"])
def test_iter_batches_memory_is_bounded_by_the_batch_not_the_store(
    tmp_path: Path, verify: str
) -> None:
    import tracemalloc

    store = FeatureStore.create(tmp_path / "s", "m")
    chunk = np.arange(1000 * 1024, dtype=np.float32).reshape(1000, 1024)  # 4 MB per chunk
    for _ in range(4):
        store.append({"h": chunk})
    reader = FeatureStore.open(tmp_path / "s", verify=verify)  # type: ignore[arg-type]
    tracemalloc.start()
    try:
        total = 0.0
        for batch in reader.iter_batches("h", 64):  # 256 KB per batch, 16 MB in all
            total += float(batch[:, 0].sum())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 4 * float(chunk[:, 0].sum())
    assert peak < 3 * 2**20
