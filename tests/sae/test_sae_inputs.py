"""LayerVectors: the vectors an SAE trains on from a layer of features (files, stores, arrays),
the split by sample, and the descriptions of examples in a record."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.exceptions import RepscopeValueError, UnknownNameError
from repscope.sae import LayerVectors
from repscope.store import FeatureStore, RaggedArray, open_layers


def _tokens(lengths, d: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(n), d)).astype(np.float32) for n in lengths]


@pytest.fixture(scope="module")
def token_store(tmp_path_factory):
    """A token layer of 150 samples (some without tokens) in two chunks, with text/id/tokens."""
    root = tmp_path_factory.mktemp("inputs")
    lengths = np.random.default_rng(1).integers(0, 6, size=150)
    lengths[:3] = [4, 0, 1]
    samples = _tokens(lengths)
    texts = [f"sample {i} " + "x" * 500 for i in range(150)]
    tokens = ["abcdef"[: max(0, int(n) - i % 2)] for i, n in enumerate(lengths)]
    store = FeatureStore.create(root / "store", model_id="lm")
    for a, b in ((0, 100), (100, 150)):
        store.append({"emb": np.stack([s.sum(0) for s in samples[a:b]]), "tok": samples[a:b]},
                     metadata={"text": texts[a:b], "id": [f"s{i}" for i in range(a, b)],
                               "tokens": tokens[a:b]})
    return root / "store", lengths, samples, texts, tokens


def test_a_npy_file_is_its_memory_mapped_rows(tmp_path):
    X = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.save(tmp_path / "x.npy", X)
    v = LayerVectors(tmp_path / "x.npy")
    assert (v.layer, v.d, v.n_samples, v.n_vectors, v.ragged) == ("x", 4, 10, 10, False)
    assert isinstance(v.data, np.memmap)
    np.testing.assert_array_equal(v.data, X)
    train, held = v.split(0.25)
    assert held is not None
    assert (train.start, train.stop, held.start, held.stop) == (0, 8, 8, 10)
    np.testing.assert_array_equal(held.data, X[8:])
    np.testing.assert_array_equal(np.concatenate(list(held)), X[8:])
    assert held.describe(1) == {"index": 9}  # rows count from the range's start
    assert v.split(0.0)[1] is None and v.split(0.0)[0].n_samples == 10
    assert v.split(0.01)[1].n_samples == 1  # any holdout > 0 keeps at least one sample


def test_token_layer_vectors_offsets_and_batches(token_store):
    path, lengths, samples, _, _ = token_store
    v = LayerVectors(path, "tok")
    assert v.ragged and v.d == 3 and v.data is v
    np.testing.assert_array_equal(v.offsets(), np.concatenate([[0], np.cumsum(lengths)]))
    assert v.n_vectors == int(lengths.sum())
    batches = list(v)
    assert len(batches) == 3  # 64 samples (paragraphs) per read
    np.testing.assert_array_equal(np.concatenate(batches), np.concatenate(samples))
    assert list(v) and len(list(v)) == 3  # re-iterable: every pass reads again


def test_skip_first_drops_each_samples_first_token(token_store):
    path, lengths, samples, _, _ = token_store
    v = LayerVectors(path, "tok", skip_first=True)
    kept = np.maximum(lengths - 1, 0)
    np.testing.assert_array_equal(v.offsets(), np.concatenate([[0], np.cumsum(kept)]))
    np.testing.assert_array_equal(np.concatenate(list(v)), np.concatenate([s[1:] for s in samples]))
    train, held = v.split(0.2)
    assert (train.n_samples, held.n_samples) == (120, 30)
    assert (train.n_vectors, held.n_vectors) == (int(kept[:120].sum()), int(kept[120:].sum()))
    np.testing.assert_array_equal(np.concatenate(list(held)),
                                  np.concatenate([s[1:] for s in samples[120:]]))


@pytest.mark.parametrize("skip_first", [False, True])
def test_describe_names_the_sample_position_text_and_token(token_store, skip_first):
    path, lengths, samples, texts, tokens = token_store
    _, held = LayerVectors(path, "tok", skip_first=skip_first).split(0.2)
    drop = int(skip_first)
    rows = [(i, p) for i in range(120, 150) for p in range(drop, int(lengths[i]))]
    assert len(rows) == held.n_vectors
    for row, (i, pos) in enumerate(rows):
        got = held.describe(row)
        assert list(got)[:3] == ["position", "index", "text"]
        assert (got["index"], got["position"], got["text"]) == (i, pos, texts[i][:400])
        assert got.get("token") == (tokens[i][pos] if pos < len(tokens[i]) else None)
        np.testing.assert_array_equal(np.concatenate(list(held))[row], samples[i][pos])


def test_dense_store_layer_is_streamed_and_described_by_id(tmp_path):
    X = np.random.default_rng(2).standard_normal((5000, 4)).astype(np.float32)
    store = FeatureStore.create(tmp_path / "s", model_id="m")
    store.append({"h": X}, metadata={"id": [f"id{i}" for i in range(5000)]})
    v = LayerVectors(tmp_path / "s")
    assert v.layer == "h" and v.data is v and v.n_vectors == 5000
    assert [b.shape[0] for b in v] == [4096, 904]
    _, held = v.split(0.1)
    np.testing.assert_array_equal(np.concatenate(list(held)), X[4500:])
    assert held.describe(3) == {"index": 4503, "id": "id4503"}


def test_arrays_in_memory_and_an_open_source():
    tokens = RaggedArray(np.arange(12.0).reshape(6, 2), np.array([0, 2, 3, 6]))
    v = LayerVectors({"emb": np.ones((3, 5)), "tok": tokens})
    assert v.layer == "tok" and v.n_vectors == 6  # the last layer by default
    pooled = open_layers({"tok": tokens})  # a source opened with mean pooling still gives tokens
    np.testing.assert_array_equal(np.concatenate(list(LayerVectors(pooled))), tokens.values)
    dense = LayerVectors({"emb": np.ones((3, 5)), "tok": tokens}, "emb", 1, 3)
    assert dense.data.shape == (2, 5) and dense.describe(0) == {"index": 1}


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"layer": "x", "skip_first": True}, RepscopeValueError, "is not a token layer"),
        ({"layer": "cube"}, RepscopeValueError, r"shape \(2, 2\); an SAE needs one vector"),
        ({"layer": "nope"}, UnknownNameError, "Known layers"),
        ({"layer": "x", "start": 3, "stop": 2}, RepscopeValueError, "'stop' parameter"),
        ({"layer": "x", "stop": 9}, RepscopeValueError, "'stop' parameter"),
    ],
)
def test_bad_arguments_are_errors(kwargs, error, pattern):
    arrays = {"x": np.ones((4, 2)), "cube": np.ones((4, 2, 2))}
    with pytest.raises(error, match=pattern):
        LayerVectors(arrays, **kwargs)


@pytest.mark.parametrize(("holdout", "pattern"), [
    (1.0, r"'holdout' parameter of LayerVectors.split must be in the range \[0, 1\)"),
    (-0.1, "'holdout' parameter"),
    (0.9, "leaves no training samples out of 2"),
])
def test_bad_holdout_is_an_error(holdout, pattern):
    with pytest.raises(RepscopeValueError, match=pattern):
        LayerVectors({"x": np.ones((2, 3))}).split(holdout)


def test_a_layer_without_samples_is_an_error():
    with pytest.raises(RepscopeValueError, match="holds no samples"):
        LayerVectors({"x": np.ones((0, 3))})
