"""open_layers / LayerSource: one reader for stores, files and arrays."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
from safetensors.numpy import save_file

from repscope.exceptions import (
    DataNotFoundError,
    RepscopeTypeError,
    RepscopeValueError,
    UnknownNameError,
)
from repscope.store import FeatureStore, LayerSource, RaggedArray, load_features, open_layers


def _dense(n: int = 23, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "block.0": rng.standard_normal((n, 5)).astype(np.float32),
        "block.1": rng.standard_normal((n, 2, 3)).astype(np.float32),  # flattened to 6
    }


def _tokens(n: int = 23, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(t), 4)).astype(np.float32) for t in rng.integers(1, 6, n)]


def _store(tmp_path, feats, tokens=None, ids=True) -> FeatureStore:
    store = FeatureStore.create(tmp_path / "store", model_id="toy")
    n = len(next(iter(feats.values())))
    for a in range(0, n, 10):  # several chunks
        part = {k: v[a:a + 10] for k, v in feats.items()}
        if tokens is not None:
            part["tok"] = tokens[a:a + 10]
        meta = {"id": [f"s{i}" for i in range(a, min(a + 10, n))]} if ids else None
        store.append(part, meta)
    return store


def _sources(tmp_path, feats):
    store = _store(tmp_path, feats)
    files = tmp_path / "files"
    files.mkdir()
    for name, arr in feats.items():
        np.save(files / f"{name}.npy", arr)
    save_file({k: np.ascontiguousarray(v) for k, v in feats.items()}, str(tmp_path / "f.safetensors"))
    return {
        "store": store,
        "store path": store.path,
        "npy directory": files,
        "npy memmap": (files, {"memmap": True}),
        "safetensors": tmp_path / "f.safetensors",
        "mapping": feats,
        "sequence": [feats["block.0"], feats["block.1"]],
    }


def test_every_kind_of_source_gives_identical_arrays(tmp_path) -> None:
    feats = _dense()
    expected = {k: v.reshape(len(v), -1) for k, v in feats.items()}
    for kind, given in _sources(tmp_path, feats).items():
        source, kw = given if isinstance(given, tuple) else (given, {})
        src = open_layers(source, **kw)
        names = ["0", "1"] if kind == "sequence" else ["block.0", "block.1"]
        assert src.layers == tuple(names), kind
        assert src.n_samples == 23
        assert [src.width(k) for k in names] == [5, 6]
        assert [src.shape(k) for k in names] == [(5,), (2, 3)]
        for name, want in zip(names, expected.values()):
            got = src.read(name)
            np.testing.assert_array_equal(got, want, err_msg=kind)
            assert got.dtype == np.float32
            batches = list(src.iter_batches(name, 7))
            assert [len(b) for b in batches] == [7, 7, 7, 2]
            np.testing.assert_array_equal(np.concatenate(batches), want, err_msg=kind)
            part = np.concatenate(list(src.iter_batches(name, 4, start=5, stop=16)))
            np.testing.assert_array_equal(part, want[5:16], err_msg=kind)
        assert not src.is_ragged(names[0])
        assert src.in_memory == (kind in ("mapping", "sequence"))
    assert isinstance(open_layers(tmp_path / "files", memmap=True).read("block.0"), np.memmap)
    np.testing.assert_array_equal(load_features(tmp_path / "files")["block.1"],
                                  expected["block.1"])


def test_ragged_layer_is_mean_pooled_like_a_manual_mean(tmp_path) -> None:
    feats, tokens = _dense(), _tokens()
    store = _store(tmp_path, feats, tokens)
    manual = np.stack([t.astype(np.float64).mean(axis=0) for t in tokens])
    src = open_layers(store)
    assert src.pooling == "mean" and src.is_ragged("tok") and src.width("tok") == 4
    np.testing.assert_allclose(src.read("tok"), manual, rtol=1e-12)
    assert src.read("tok").dtype == np.float64
    np.testing.assert_array_equal(np.concatenate(list(src.iter_batches("tok", 6))),
                                  src.read("tok"))
    np.testing.assert_array_equal(load_features(store.path, ["tok"])["tok"], src.read("tok"))
    first = open_layers(src, pooling="first").read("tok")
    last = open_layers(src, pooling="last").read("tok")
    np.testing.assert_array_equal(first, np.stack([t[0] for t in tokens]))
    np.testing.assert_array_equal(last, np.stack([t[-1] for t in tokens]))
    raw = open_layers(store, pooling="none")
    r = raw.read("tok")
    assert isinstance(r, RaggedArray)
    np.testing.assert_array_equal(r.values, np.concatenate(tokens))
    lengths = np.array([len(t) for t in tokens])
    np.testing.assert_array_equal(raw.token_counts("tok"), lengths)
    np.testing.assert_array_equal(raw.token_counts("tok", 4, 9), lengths[4:9])
    np.testing.assert_array_equal(raw.token_counts("block.0", 0, 3), [1, 1, 1])
    assert raw.n_tokens("tok") == lengths.sum() and raw.n_tokens("block.0") == 23
    batch = next(raw.iter_batches("tok", 5, start=3))
    np.testing.assert_array_equal(batch.values, np.concatenate(tokens[3:8]))
    # the same tokens in memory (what extract returns) read the same way
    mem = open_layers({"tok": r})
    np.testing.assert_array_equal(mem.read("tok"), src.read("tok"))
    np.testing.assert_array_equal(mem.token_counts("tok"), lengths)
    np.testing.assert_array_equal(
        np.concatenate(list(open_layers(mem, pooling="last").iter_batches("tok", 4))), last)


def test_sample_without_tokens_is_an_error_not_inf(tmp_path) -> None:
    tokens = _tokens(12)
    tokens[3] = np.zeros((0, 4), np.float32)
    tokens[11] = np.zeros((0, 4), np.float32)  # the last one: reduceat would IndexError
    store = _store(tmp_path, {"d": np.ones((12, 2), np.float32)}, tokens)
    for pooling in ("mean", "first", "last"):
        src = open_layers(store, pooling=pooling)
        with pytest.raises(RepscopeValueError,
                           match=r"layer 'tok' of .* has 2 sample\(s\) without tokens \(the "
                                 r"first is sample 3\); " + pooling + " pooling"):
            src.read("tok")
        with pytest.raises(RepscopeValueError, match=r"the first is sample 11\)"):
            list(src.iter_batches("tok", 5, start=5))
    assert open_layers(store, pooling="none").read("tok").n_samples == 12


def test_unknown_layer_message_is_the_same_everywhere(tmp_path) -> None:
    feats = _dense()
    sources = _sources(tmp_path, feats)
    for kind in ("store", "store path", "npy directory", "safetensors", "mapping"):
        where = {"mapping": "features"}.get(kind, "")
        with pytest.raises(UnknownNameError,
                           match=rf"unknown layer 'block\.2' in .*{where}.*\. Did you mean "
                                 r"'block\.[01]'\? Known layers: block\.0, block\.1\.$"):
            open_layers(sources[kind], ["block.1", "block.2"])
    src = open_layers(feats, "block.0", name="A")
    with pytest.raises(UnknownNameError, match=r"unknown layer 'block\.1' in A\. Did you mean"):
        src.read("block.1")  # not selected
    with pytest.raises(UnknownNameError, match="Known layers: block.0"):
        src.select(["block.1"])
    with pytest.raises(UnknownNameError, match=r"in the FeatureStore at .*Did you mean"):
        sources["store"].read("block.2")  # the store itself says the same


def test_layers_with_different_numbers_of_samples_are_an_error(tmp_path) -> None:
    feats = {"a": np.zeros((10, 2)), "b": np.zeros((9, 2))}
    with pytest.raises(RepscopeValueError,
                       match=r"every layer of features must have the same number of samples; "
                             r"got \{'a': 10, 'b': 9\}"):
        open_layers(feats)
    assert open_layers(feats, ["b"]).n_samples == 9  # only the selected layers must agree
    (tmp_path / "d").mkdir()
    for k, v in feats.items():
        np.save(tmp_path / "d" / f"{k}.npy", v)
    with pytest.raises(RepscopeValueError, match="same number of samples"):
        open_layers(tmp_path / "d")


def test_ids_and_metadata_come_from_the_store(tmp_path) -> None:
    feats = _dense()
    src = open_layers(_store(tmp_path, feats))
    assert src.ids is not None and list(src.ids[:3]) == ["s0", "s1", "s2"] and len(src.ids) == 23
    assert src.metadata_columns == ["id"] and src.store is not None
    assert open_layers(feats).ids is None
    assert open_layers(FeatureStore.open(src.store.path)).ids is not None
    with pytest.raises(UnknownNameError, match="has no per-sample metadata"):
        open_layers(feats).metadata(["label"])


def test_pooling_error_refuses_token_layers_and_compare_layers_takes_a_pooled_source(
    tmp_path,
) -> None:
    from repscope.similarity import compare_layers

    feats, tokens = _dense(30), _tokens(30)
    store = _store(tmp_path, {"block.0": feats["block.0"]}, tokens)
    with pytest.raises(RepscopeValueError, match="'tok' .* ragged token layer .* pooling='error'"):
        open_layers(store, pooling="error")
    assert open_layers(store, "block.0", pooling="error").layers == ("block.0",)
    with pytest.raises(RepscopeValueError, match="compare_layers needs one vector per sample"):
        compare_layers(store)
    with pytest.raises(RepscopeValueError, match="compare_layers needs one vector per sample"):
        compare_layers(open_layers(store, pooling="none"))
    pooled = open_layers(store, pooling="mean")
    got = compare_layers(pooled)
    want = compare_layers({"block.0": feats["block.0"], "tok": pooled.read("tok")})
    np.testing.assert_allclose(got.values, want.values, atol=1e-12)


def test_probe_layers_reads_a_layer_source_with_its_pooling(tmp_path) -> None:
    from repscope.probe._layerwise import probe_layers
    from repscope.probe._protocols import Holdout

    tokens = _tokens(60)
    y = np.arange(60) % 2
    store = _store(tmp_path, {"d": np.random.default_rng(0).standard_normal((60, 3))}, tokens)
    mean = np.stack([t.astype(np.float64).mean(axis=0) for t in tokens])
    res = probe_layers(store, y, protocol=Holdout(0.3), layers=["tok"])
    ref = probe_layers({"tok": mean}, y, protocol=Holdout(0.3))
    assert res.accuracy == ref.accuracy
    first = probe_layers(open_layers(store, pooling="first"), y, protocol=Holdout(0.3),
                         layers=["tok"])
    ref_first = probe_layers({"tok": np.stack([t[0] for t in tokens])}, y, protocol=Holdout(0.3))
    assert first.accuracy == ref_first.accuracy


def test_bad_sources_and_files_raise(tmp_path) -> None:
    with pytest.raises(DataNotFoundError, match="no features at"):
        open_layers(tmp_path / "missing.npy")
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(RepscopeValueError, match=r"features must be a \.npy file.*got 'x\.txt'"):
        open_layers(tmp_path / "x.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="is not a FeatureStore .* holds no .npy"):
        open_layers(tmp_path / "empty")
    np.save(tmp_path / "flat.npy", np.zeros(5))
    with pytest.raises(RepscopeValueError, match=r"must be 2-D .*Save a single feature"):
        open_layers(tmp_path / "flat.npy")
    np.save(tmp_path / "words.npy", np.array([["a", "b"]]))
    with pytest.raises(RepscopeValueError, match="must be numeric; got dtype <U1"):
        open_layers(tmp_path / "words.npy").read("words")
    with pytest.raises(RepscopeTypeError, match="must be a FeatureStore, a path"):
        open_layers(42)
    with pytest.raises(RepscopeValueError, match="'pooling' parameter of open_layers"):
        open_layers({"a": np.zeros((2, 2))}, pooling="max")
    with pytest.raises(RepscopeValueError, match="'stop' parameter of iter_batches"):
        list(open_layers({"a": np.zeros((2, 2))}).iter_batches("a", 1, stop=3))
    assert isinstance(open_layers({"a": [[1.0], [2.0]]}), LayerSource)


def test_repscope_io_is_a_deprecated_alias() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import repscope.io

    with pytest.warns(DeprecationWarning, match=r"repscope\.io is deprecated.*repscope\.store"):
        importlib.reload(repscope.io)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert repscope.io.load_features is load_features
