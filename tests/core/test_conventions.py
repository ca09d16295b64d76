"""Conventions: error hierarchy, validation messages, registry suggestions, result records."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from repscope._array import from_numpy_like, get_namespace, to_numpy
from repscope._validation import (
    check_choice,
    check_features,
    check_labels,
    check_paired,
    check_scalar,
)
from repscope.exceptions import (
    BackendMismatchError,
    RepscopeError,
    RepscopeTypeError,
    RepscopeValueError,
    UnknownNameError,
)
from repscope.registry import Registry, closest_names
from repscope.results import Score, to_jsonable


def test_errors_are_also_builtins():
    assert issubclass(RepscopeValueError, ValueError)
    assert issubclass(RepscopeTypeError, TypeError)
    assert issubclass(UnknownNameError, KeyError)
    assert issubclass(BackendMismatchError, TypeError)
    for cls in (RepscopeValueError, RepscopeTypeError, UnknownNameError, BackendMismatchError):
        assert issubclass(cls, RepscopeError)
    # KeyError normally quotes its message; ours reads as a sentence.
    assert str(UnknownNameError("unknown thing 'x'.")) == "unknown thing 'x'."


@pytest.mark.parametrize(
    ("X", "kwargs", "err", "match"),
    [
        (np.zeros(4), {}, RepscopeValueError, r"X must be 2-D \(n_samples, n_features\); got shape \(4,\)\. Use X\.reshape"),
        (np.zeros((0, 3)), {}, RepscopeValueError, r"at least 1 sample.*got shape \(0, 3\).*empty"),
        (np.zeros((3, 0)), {}, RepscopeValueError, r"at least 1 feature"),
        (np.array([[1.0, np.nan], [np.inf, 2.0]]), {}, RepscopeValueError, r"1 NaN and 1 inf value\(s\), the first at index \(0, 1\)"),
        (np.array([["a"]]), {}, RepscopeTypeError, "must hold numbers; got dtype <U1"),
        ("abc", {}, RepscopeTypeError, "got str"),
        (np.zeros((2, 3)), {"ndim": 3}, RepscopeValueError, r"3-D \(n_samples, n_tokens, n_features\)"),
        (np.zeros((2, 3)), {"name": "features", "min_samples": 3}, RepscopeValueError, "features must have at least 3 sample"),
    ],
)
def test_check_features_messages(X, kwargs, err, match):
    with pytest.raises(err, match=match):
        check_features(X, **kwargs)


def test_check_features_keeps_backend_and_device():
    torch = pytest.importorskip("torch")
    t = torch.ones(3, 2, dtype=torch.float16)
    assert check_features(t) is t
    a = np.ones((3, 2), dtype=np.float32)
    assert check_features(a) is a
    assert isinstance(check_features([[1.0, 2.0]]), np.ndarray)
    with pytest.raises(RepscopeValueError, match="X must be finite"):
        check_features(torch.tensor([[float("nan")]]))


def test_check_paired_and_backend_mismatch():
    torch = pytest.importorskip("torch")
    with pytest.raises(RepscopeValueError, match=r"same number of samples.*X\.shape=\(5, 2\) and Y\.shape=\(4, 3\)"):
        check_paired(np.zeros((5, 2)), np.zeros((4, 3)))
    with pytest.raises(BackendMismatchError, match="mix backends"):
        check_paired(np.zeros((2, 2)), torch.zeros(2, 2))
    assert get_namespace(torch.zeros(1), None) == ("torch", "cpu")
    assert get_namespace(np.zeros(1)) == ("numpy", "cpu")


def test_check_labels():
    assert check_labels([0, 1, 1]).dtype.kind == "i"
    assert check_labels(np.array([1.0, 2.0])).dtype == np.int64
    np.testing.assert_array_equal(check_labels(["a", "b"]), ["a", "b"])
    with pytest.raises(RepscopeValueError, match=r"labels must have one entry per sample \(3\); got 2"):
        check_labels([0, 1], n_samples=3)
    with pytest.raises(RepscopeValueError, match="non-integer floats such as 0.5"):
        check_labels([0.5, 1.0])
    with pytest.raises(RepscopeValueError, match="1-D with one label per sample.*ravel"):
        check_labels(np.zeros((3, 1)))
    with pytest.raises(RepscopeValueError, match="at least 2 distinct classes; got 1"):
        check_labels([1, 1, 1], min_classes=2)
    with pytest.raises(RepscopeTypeError, match="integer class indices"):
        check_labels(["a"], allow_strings=False)


def test_check_scalar_and_choice_follow_sklearn_template():
    with pytest.raises(RepscopeValueError, match=r"The 'alpha' parameter of Ridge must be in the range \(0, inf\)\. Got -1\.0 instead\."):
        check_scalar(-1.0, "alpha", caller="Ridge", min_value=0, include_min=False)
    with pytest.raises(RepscopeTypeError, match="must be of type int. Got 2.5"):
        check_scalar(2.5, "k", caller="KNN", kind=int)
    with pytest.raises(RepscopeTypeError, match="must be of type int"):
        check_scalar(True, "k", caller="KNN", kind=int)
    assert check_scalar(np.int64(3), "k", caller="KNN", kind=int) == 3
    with pytest.raises(RepscopeValueError, match="Did you mean 'mean'"):
        check_choice("maen", "pooling", ["mean", "cls", "last"], caller="extract")


def test_registry_lists_known_names_and_suggests_closest():
    reg: Registry[object] = Registry("measure")
    reg.add("linear_cka", object(), higher_is_better=True, invariances={"orthogonal"})
    reg.add("rbf_cka", object(), higher_is_better=True, invariances=set())
    reg.add("procrustes_distance", object(), higher_is_better=False, invariances={"orthogonal"})
    with pytest.raises(UnknownNameError, match=r"unknown measure 'linear_ckaa'\. Did you mean 'linear_cka'\? Known measures: linear_cka, procrustes_distance, rbf_cka\.") as info:
        reg.get("linear_ckaa")
    assert info.value.known == ("linear_cka", "procrustes_distance", "rbf_cka")
    assert reg.names(invariances="orthogonal") == ["linear_cka", "procrustes_distance"]
    assert reg.names(higher_is_better=False) == ["procrustes_distance"]
    with pytest.raises(RepscopeValueError, match="already registered"):
        reg.add("rbf_cka", object())
    assert closest_names("encoder.layer.3", ["encoder.layer.2", "embeddings", "pooler"])[0] == "encoder.layer.2"


def test_score_is_frozen_and_serialises():
    s = Score(value=np.float64(0.5), measure="linear_cka", direction="similarity",
              n_samples=10, n_features=(3, 4), details={"ci": np.array([0.4, 0.6]), "p": float("nan")})
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["details"]["p"] == "nan"
    assert d["details"]["ci"] == [0.4, 0.6]
    assert d["type"] == "Score"
    with pytest.raises(AttributeError):
        s.value = 1.0  # type: ignore[misc]
    assert float(pickle.loads(pickle.dumps(s))) == 0.5
    assert to_jsonable({"a": np.int32(3), "b": float("-inf")}) == {"a": 3, "b": "-inf"}


def test_array_round_trip_keeps_type():
    torch = pytest.importorskip("torch")
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    back = from_numpy_like(to_numpy(t) * 2, t)
    assert isinstance(back, torch.Tensor)
    assert back.dtype == torch.float32
    assert from_numpy_like(np.ones(2), np.ones(2, np.float32)).dtype == np.float32
    assert to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype == np.float32
