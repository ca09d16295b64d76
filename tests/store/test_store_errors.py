"""Bad input is refused with a message naming the argument, what was expected and what came;
a refused append leaves the store unchanged."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from repscope.exceptions import (
    RepscopeTypeError,
    RepscopeValueError,
    UnknownNameError,
)
from repscope.store import FeatureStore


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    s = FeatureStore.create(tmp_path / "store", "m")
    s.append(
        {
            "model.layers.1": np.zeros((4, 8), dtype=np.float32),
            "tok": [np.zeros((t, 2), dtype=np.float32) for t in (1, 2, 3, 1)],
        },
        metadata={"label": [0, 1, 0, 1], "name": ["a", "b", "c", "d"]},
    )
    return s


def _ok(rows: int = 2) -> dict:
    return {
        "model.layers.1": np.ones((rows, 8), dtype=np.float32),
        "tok": [np.ones((2, 2), dtype=np.float32)] * rows,
    }


def _meta(rows: int = 2) -> dict:
    return {"label": list(range(rows)), "name": ["x"] * rows}


def test_unknown_layer_lists_layers_and_suggests_the_closest(store: FeatureStore) -> None:
    with pytest.raises(
        UnknownNameError,
        match=r"'model.layer.1'.*Did you mean 'model.layers.1'.*Known layers: model.layers.1, tok",
    ) as err:
        store.read("model.layer.1")
    assert isinstance(err.value, KeyError)
    assert err.value.known == ("model.layers.1", "tok")
    with pytest.raises(UnknownNameError, match="Known layers"):
        store.layer_info("nope")
    with pytest.raises(UnknownNameError, match="nothing appended yet"):
        FeatureStore.create(store.path.parent / "empty", "m").read("x")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda f: f.pop("tok"),
            r"exactly the store's layers \['model.layers.1', 'tok'\].*missing \['tok'\]",
        ),
        (lambda f: f.update(extra=np.zeros((2, 1))), r"unexpected \['extra'\]"),
        (
            lambda f: f.update({"model.layers.1": np.ones((2, 7), np.float32)}),
            r"features\['model.layers.1'\] must have shape \(rows, 8\).*got per-sample shape \(7,\)",
        ),
        (
            lambda f: f.update({"model.layers.1": np.ones((2, 8))}),
            r"must have dtype float32 like the store's layer; got float64",
        ),
        (
            lambda f: f.update(tok=[np.ones((2, 3), np.float32)] * 2),
            r"features\['tok'\] must have shape \(n_tokens, 2\).*per-token shape \(3,\)",
        ),
        (lambda f: f.update(tok=np.ones((2, 2), np.float32)), r"features\['tok'\] must be ragged"),
        (
            lambda f: f.update({"model.layers.1": np.ones((3, 8), np.float32)}),
            r"same number of samples.*'model.layers.1': 3, 'tok': 2",
        ),
    ],
)
def test_append_that_does_not_match_the_store_is_refused_and_changes_nothing(
    store: FeatureStore, change: Callable[[dict[str, Any]], object], message: str
) -> None:
    files = sorted(p for p in store.path.rglob("*"))
    feats = _ok()
    change(feats)
    with pytest.raises(RepscopeValueError, match=message):
        store.append(feats, metadata=_meta())
    assert store.n_samples == FeatureStore.open(store.path).n_samples == 4
    assert sorted(p for p in store.path.rglob("*")) == files


@pytest.mark.parametrize(
    ("metadata", "error", "message"),
    [
        (
            {"label": [0, 1, 2], "name": ["x", "y"]},
            RepscopeValueError,
            r"metadata\['label'\] must have one value per sample \(2\); got 3",
        ),
        (
            {"label": [0, 1]},
            RepscopeValueError,
            r"store's columns \['label', 'name'\].*missing \['name'\]",
        ),
        (
            {"label": ["a", "b"], "name": ["x", "y"]},
            RepscopeValueError,
            r"metadata\['label'\] must hold int64 values.*got string",
        ),
        (
            {"label": [0.5, 1.0], "name": ["x", "y"]},
            RepscopeValueError,
            r"metadata\['label'\] must hold int64 values",
        ),
        (
            {"label": [[0], [1]], "name": ["x", "y"]},
            RepscopeTypeError,
            r"metadata\['label'\] must hold str, int, float or bool.*list",
        ),
        (
            {"label": np.zeros((2, 2)), "name": ["x", "y"]},
            RepscopeValueError,
            r"metadata\['label'\] must be 1-D.*\(2, 2\)",
        ),
        (
            {"label": 3, "name": ["x", "y"]},
            RepscopeTypeError,
            r"metadata\['label'\] must be a 1-D sequence",
        ),
        (None, RepscopeValueError, r"metadata must be given.*\['label', 'name'\]"),
    ],
)
def test_bad_metadata_is_refused(
    store: FeatureStore, metadata: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        store.append(_ok(), metadata=metadata)
    assert store.n_samples == 4


def test_metadata_columns_are_fixed_by_the_first_append(tmp_path: Path) -> None:
    s = FeatureStore.create(tmp_path / "s", "m")
    s.append({"h": np.zeros((2, 1))})
    with pytest.raises(RepscopeValueError, match=r"metadata must be None.*got columns \['y'\]"):
        s.append({"h": np.zeros((2, 1))}, metadata={"y": [1, 2]})
    t = FeatureStore.create(tmp_path / "t", "m")
    t.append({"h": np.zeros((2, 1))}, metadata={"w": [1.5, 2.5]})
    t.append({"h": np.zeros((1, 1))}, metadata={"w": [3]})  # ints widen into a float column
    np.testing.assert_array_equal(t.metadata()["w"], [1.5, 2.5, 3.0])


@pytest.mark.parametrize(
    ("features", "error", "message"),
    [
        ({}, RepscopeValueError, "at least one layer"),
        ([np.zeros((2, 2))], RepscopeTypeError, "features must be a mapping"),
        (
            {"h": "text"},
            RepscopeTypeError,
            r"features\['h'\] must be a numpy array or torch tensor; got str",
        ),
        (
            {"h": np.zeros((2, 2), dtype=np.complex64)},
            RepscopeTypeError,
            r"features\['h'\] has dtype complex64",
        ),
        ({"h": np.float32(1.0)}, RepscopeValueError, "leading sample dimension"),
        ({"h": np.zeros((0, 3))}, RepscopeValueError, "at least one sample; got 0 rows"),
        (
            {"h": [np.zeros(4), np.zeros(4)]},
            RepscopeValueError,
            r"features\['h'\]\[0\] must be one sample's tokens.*got shape \(4,\).*np.stack",
        ),
        (
            {"h": [np.zeros((1, 4)), np.zeros((2, 3))]},
            RepscopeValueError,
            r"share dtype and per-token shape.*sample 1 has dtype float64 and shape \(2, 3\)",
        ),
        ({"h": []}, RepscopeValueError, "empty list"),
        (
            {"h": (np.zeros((5, 2)), np.array([0, 2, 4]))},
            RepscopeValueError,
            r"offsets\) must be non-decreasing from 0 to len\(values\)=5",
        ),
        ({"h": (np.zeros((5, 2)), np.array([0, 3, 2, 5]))}, RepscopeValueError, "with a decrease"),
        (
            {"h": (np.zeros((5, 2)), np.array([0.0, 5.0]))},
            RepscopeTypeError,
            r"offsets\) must hold integers",
        ),
        ({"h": (np.zeros((5, 2)),)}, RepscopeValueError, "tuple of length 1"),
    ],
)
def test_malformed_features_are_refused(
    tmp_path: Path, features: Any, error: type[Exception], message: str
) -> None:
    s = FeatureStore.create(tmp_path / "s", "m")
    with pytest.raises(error, match=message):
        s.append(features)
    assert s.n_samples == 0
    assert s.layers == []


def test_bad_indices_and_read_arguments(store: FeatureStore) -> None:
    with pytest.raises(
        RepscopeValueError,
        match=re.escape("indices must lie in [0, n_samples=4)") + ".*got 4 at position 1",
    ):
        store.read("model.layers.1", [0, 4])
    with pytest.raises(RepscopeValueError, match="got -5 at position 0"):
        store.read_ragged("tok", [-5])
    with pytest.raises(RepscopeTypeError, match=r"got the integer 2. Pass \[2\]"):
        store.read("model.layers.1", 2)
    with pytest.raises(RepscopeTypeError, match="boolean mask.*np.flatnonzero"):
        store.read("model.layers.1", np.ones(4, dtype=bool))
    with pytest.raises(RepscopeTypeError, match="indices must be integers; got dtype float64"):
        store.read("model.layers.1", [0.0])
    with pytest.raises(RepscopeValueError, match=r"indices must be 1-D; got shape \(1, 2\)"):
        store.read("model.layers.1", [[0, 1]])
    with pytest.raises(RepscopeValueError, match=r"layer 'tok' is ragged. Use read_ragged\(\)"):
        store.read("tok")
    with pytest.raises(RepscopeValueError, match=r"layer 'model.layers.1' is dense. Use read\(\)"):
        store.read_padded("model.layers.1")
    with pytest.raises(RepscopeValueError, match="'batch_size' parameter of iter_batches"):
        store.iter_batches("tok", 0)
    with pytest.raises(
        RepscopeValueError,
        match=r"'stop' parameter of iter_batches must be an int in \[1, 4\].*Got 9",
    ):
        store.iter_batches("tok", 2, start=1, stop=9)
    with pytest.raises(RepscopeValueError, match=r"'start' parameter.*\[0, 4\].*Got -1"):
        store.iter_batches("tok", 2, start=-1)
    with pytest.raises(
        UnknownNameError, match="unknown metadata column 'labels'. Did you mean 'label'"
    ):
        store.metadata(["labels"])
    with pytest.raises(
        RepscopeValueError, match="'verify' parameter of FeatureStore.open must be one of"
    ):
        FeatureStore.open(store.path, verify="partial")  # type: ignore[arg-type]


def test_create_refuses_existing_or_foreign_directories(
    store: FeatureStore, tmp_path: Path
) -> None:
    with pytest.raises(
        RepscopeValueError, match="already holds a FeatureStore. Pass exist_ok=True"
    ):
        FeatureStore.create(store.path, "m")
    with pytest.raises(RepscopeValueError, match="model_id='m'; got model_id='other'"):
        FeatureStore.create(store.path, "other", exist_ok=True)
    with pytest.raises(
        RepscopeValueError, match=r"created with attrs=\{\}; got attrs=\{'pool': 'cls'\}"
    ):
        FeatureStore.create(store.path, "m", attrs={"pool": "cls"}, exist_ok=True)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hi")
    with pytest.raises(
        RepscopeValueError, match=r"non-empty directory that is not a FeatureStore.*notes.txt"
    ):
        FeatureStore.create(tmp_path / "foreign", "m", exist_ok=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RepscopeValueError, match="exists and is not a directory"):
        FeatureStore.create(tmp_path / "file", "m")
    with pytest.raises(RepscopeTypeError, match="'model_id' parameter.*non-empty str"):
        FeatureStore.create(tmp_path / "new", "")
    with pytest.raises(RepscopeTypeError, match="'attrs' parameter.*JSON-serialisable"):
        FeatureStore.create(tmp_path / "new", "m", attrs={"f": object()})
