"""LayerVectors: the vectors an SAE trains on from a layer of features (files, stores, arrays),
the split by document, and the descriptions of examples in a record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from repscope.exceptions import RepscopeValueError, UnknownNameError
from repscope.sae import LayerVectors
from repscope.store import FeatureStore, RaggedArray, open_layers


def _tokens(lengths, d: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(n), d)).astype(np.float32) for n in lengths]


#: 15 documents of 10 samples each: ids "d<k>:<j>"
IDS = [f"d{i // 10}:{i % 10:04d}" for i in range(150)]


@pytest.fixture(scope="module")
def token_store(tmp_path_factory):
    """A token layer of 150 samples (some without tokens) in two chunks, with text, ids of 15
    documents, and token strings (JSON arrays; odd samples lack their last token's string)."""
    root = tmp_path_factory.mktemp("inputs")
    lengths = np.random.default_rng(1).integers(0, 6, size=150)
    lengths[:3] = [4, 0, 1]
    samples = _tokens(lengths)
    texts = [f"sample {i} " + "x" * 500 for i in range(150)]
    tokens = [[f"w{i}t{p}" for p in range(max(0, int(n) - i % 2))] for i, n in enumerate(lengths)]
    store = FeatureStore.create(root / "store", model_id="lm")
    for a, b in ((0, 100), (100, 150)):
        store.append({"emb": np.stack([s.sum(0) for s in samples[a:b]]), "tok": samples[a:b]},
                     metadata={"text": texts[a:b], "id": IDS[a:b],
                               "tokens": [json.dumps(t) for t in tokens[a:b]]})
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
    # no ids: every sample is its own document, two drawn at random
    rows = held.samples()
    assert rows.size == 2 and train.n_samples == 8
    assert sorted([*rows, *train.samples()]) == list(range(10))
    np.testing.assert_array_equal(held.data, X[rows])
    np.testing.assert_array_equal(np.concatenate(list(held)), X[rows])
    assert held.describe(1) == {"index": int(rows[1])}  # rows count over the chosen samples
    assert held.split_info["by"] == "sample" and held.split_info["n_held_out_samples"] == 2
    assert v.split(0.0)[1] is None and v.split(0.0)[0].n_samples == 10
    assert v.split(0.01)[1].n_samples == 1  # any holdout > 0 keeps at least one sample
    assert list(v.split(0.25, seed=1)[1].samples()) != list(rows)  # the seed draws


def test_token_layer_vectors_offsets_and_batches(token_store):
    path, lengths, samples, _, _ = token_store
    v = LayerVectors(path, "tok")
    assert v.ragged and v.d == 3
    np.testing.assert_array_equal(v.data, np.concatenate(samples))  # small: read once, kept
    assert v.data is v.data
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
    assert (train.n_samples, held.n_samples) == (120, 30)  # 3 of the 15 documents
    rows = held.samples()
    assert (train.n_vectors, held.n_vectors) == (int(kept.sum() - kept[rows].sum()),
                                                 int(kept[rows].sum()))
    np.testing.assert_array_equal(np.concatenate(list(held)),
                                  np.concatenate([samples[i][1:] for i in rows]))
    np.testing.assert_array_equal(held.data, np.concatenate([samples[i][1:] for i in rows]))


def test_split_holds_out_whole_documents_drawn_at_random(token_store, tmp_path):
    path, *_ = token_store
    v = LayerVectors(path, "tok")
    docs = np.array([i.split(":")[0] for i in IDS])
    seen = set()
    for seed in range(6):
        train, held = v.split(0.1, seed=seed)
        held_docs, train_docs = set(docs[held.samples()]), set(docs[train.samples()])
        assert not held_docs & train_docs  # no document on both sides
        assert len(held_docs) == 1 and held.n_samples == 10 == round(0.1 * 150) - 5
        assert held.split_info == train.split_info
        assert held.split_info["held_out_documents"] == sorted(held_docs)
        assert held.split_info["n_documents"] == 15 and held.split_info["by"] == "document"
        seen.add(next(iter(held_docs)))
    assert len(seen) > 1 and seen != {"d14"}  # random, not the last samples
    one = FeatureStore.create(tmp_path / "one", model_id="m")
    one.append({"x": np.ones((4, 2))}, metadata={"id": ["a:1", "a:2", "a:3", "a:4"]})
    with pytest.raises(RepscopeValueError, match=r"they form 1 document\(s\) \(a\)"):
        LayerVectors(tmp_path / "one").split(0.5)


@pytest.mark.parametrize("skip_first", [False, True])
def test_describe_names_the_sample_position_text_and_token(token_store, skip_first):
    path, lengths, samples, texts, tokens = token_store
    _, held = LayerVectors(path, "tok", skip_first=skip_first).split(0.2)
    drop = int(skip_first)
    rows = [(i, p) for i in held.samples() for p in range(drop, int(lengths[i]))]
    assert len(rows) == held.n_vectors
    vectors = np.concatenate(list(held))
    for row, (i, pos) in enumerate(rows):
        got = held.describe(row)
        assert (got["index"], got["position"]) == (i, pos)
        if pos < len(tokens[i]):  # the token in its context, 8 tokens either side at most
            assert list(got) == ["position", "index", "id", "token", "context"]
            assert got["id"] == IDS[i] and got["token"] == tokens[i][pos]
            before, tok, after = got["context"]
            assert tok == tokens[i][pos]
            assert before == " ".join(tokens[i][max(0, pos - 8):pos]) + (" " if pos else "")
            assert after == "".join(" " + t for t in tokens[i][pos + 1:pos + 9])
        else:  # no token string at that position: the sample's text instead
            assert list(got) == ["position", "index", "text"] and got["text"] == texts[i][:400]
        np.testing.assert_array_equal(vectors[row], samples[i][pos])


def test_dense_store_layer_is_streamed_and_described_by_id(tmp_path):
    X = np.random.default_rng(2).standard_normal((5000, 4)).astype(np.float32)
    store = FeatureStore.create(tmp_path / "s", model_id="m")
    store.append({"h": X}, metadata={"id": [f"id{i}" for i in range(5000)]})
    v = LayerVectors(tmp_path / "s")
    assert v.layer == "h" and v.n_vectors == 5000
    assert [b.shape[0] for b in v] == [4096, 904]
    _, held = v.split(0.1)
    rows = held.samples()
    assert rows.size == 500 and rows[-1] - rows[0] > 500  # drawn, not the last 500
    np.testing.assert_array_equal(np.concatenate(list(held)), X[rows])
    assert held.describe(3) == {"index": int(rows[3]), "id": f"id{rows[3]}"}


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
