"""extract returns arrays; extract_to_store fills a store; extract(store=) is deprecated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.extract import extract, extract_to_store
from repscope.store import FeatureStore


def _net_and_inputs():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    X = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    return net, X


def test_extract_returns_arrays_equal_to_what_extract_to_store_writes(tmp_path) -> None:
    net, X = _net_and_inputs()
    feats = extract(net, X, ["0", "2"], chunk_size=8, progress=False)
    assert isinstance(feats, dict) and set(feats) == {"0", "2"}
    store = extract_to_store(net, X, tmp_path / "s", ["0", "2"], chunk_size=8,
                             metadata={"id": [f"x{i}" for i in range(20)]}, progress=False)
    assert isinstance(store, FeatureStore) and store.n_chunks == 3
    for name in ("0", "2"):
        np.testing.assert_array_equal(store.read(name), feats[name])
    assert list(store.metadata(["id"])["id"][:2]) == ["x0", "x1"]


def test_extract_with_store_warns_and_still_returns_the_store(tmp_path) -> None:
    net, X = _net_and_inputs()
    with pytest.warns(DeprecationWarning, match=r"extract\(\.\.\., store=\.\.\.\) is deprecated.*"
                                                r"extract_to_store\(model, inputs, store"):
        store = extract(net, X, ["2"], store=tmp_path / "old", progress=False)
    assert isinstance(store, FeatureStore) and store.n_samples == 20
    new = extract_to_store(net, X, tmp_path / "new", ["2"], progress=False)
    np.testing.assert_array_equal(store.read("2"), new.read("2"))
    assert store.attrs == new.attrs
