"""Probe metrics agree with scikit-learn on random inputs (hypothesis) and edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from repscope.exceptions import RepscopeValueError
from repscope.probe._metrics import (
    accuracy,
    average_precision,
    balanced_accuracy,
    macro_f1,
    mean_average_precision,
    top_k_accuracy,
)

cases = st.tuples(st.integers(5, 80), st.integers(2, 7), st.integers(0, 2**31 - 1))


def _labels(n, k, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k) if n >= k else y[:k]
    p = rng.integers(0, k + 1, n)  # may predict a class that never occurs
    # rounding makes ties, which exercise the tie rules
    s = np.round(rng.standard_normal((n, k)), 1)
    return y, p, s


@settings(max_examples=15, deadline=None)
@given(cases)
def test_label_metrics_equal_sklearn(case):
    y, p, _ = _labels(*case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p))
        assert balanced_accuracy(y, p) == pytest.approx(skm.balanced_accuracy_score(y, p))
        assert macro_f1(y, p) == pytest.approx(skm.f1_score(y, p, average="macro"))


@settings(max_examples=15, deadline=None)
@given(st.tuples(st.integers(5, 80), st.integers(3, 7), st.integers(0, 2**31 - 1)),
       st.integers(1, 4))
def test_top_k_accuracy_equals_sklearn(case, k):
    y, _, s = _labels(*case)
    labels = np.arange(s.shape[1])
    ref = skm.top_k_accuracy_score(y, s, k=k, labels=labels)
    assert top_k_accuracy(y, s, k=k, labels=labels) == pytest.approx(ref)
    if len(np.unique(y)) == s.shape[1]:
        assert top_k_accuracy(y, s, k=k) == pytest.approx(ref)


def test_top_k_accuracy_binary_scores_equal_sklearn(rng):
    y = rng.integers(0, 2, 50)
    s = rng.standard_normal(50)
    assert top_k_accuracy(y, s) == pytest.approx(skm.top_k_accuracy_score(y, s, k=1))
    p = rng.random(50)
    assert top_k_accuracy(y, p) == pytest.approx(skm.top_k_accuracy_score(y, p, k=1))


@settings(max_examples=15, deadline=None)
@given(st.integers(4, 60), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_mean_average_precision_equals_sklearn_macro(n, n_labels, seed):
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, n_labels)) < 0.4).astype(int)
    S = np.round(rng.random((n, n_labels)), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = skm.average_precision_score(Y, S, average="macro")
    assert mean_average_precision(Y, S) == pytest.approx(ref, abs=1e-12)
    if Y[:, 0].any():
        assert average_precision(Y[:, 0], S[:, 0]) == pytest.approx(
            skm.average_precision_score(Y[:, 0], S[:, 0]))


def test_metrics_accept_torch_and_strings(rng):
    torch = pytest.importorskip("torch")
    y = rng.integers(0, 3, 40)
    s = rng.standard_normal((40, 3))
    assert top_k_accuracy(torch.as_tensor(y), torch.as_tensor(s), k=2) == top_k_accuracy(y, s, k=2)
    names = np.array(["a", "b", "c"])
    assert macro_f1(names[y], names[s.argmax(1)]) == macro_f1(y, s.argmax(1))


@pytest.mark.parametrize(("call", "match"), [
    (lambda: accuracy([0, 1], [0]), "same shape|one label per sample"),
    (lambda: top_k_accuracy([0, 1, 2], np.zeros((3, 2))), "one column per class"),
    (lambda: top_k_accuracy([0, 1, 2], np.zeros(3)), "1-D scores are only for two classes"),
    (lambda: top_k_accuracy([0, 1], np.zeros((2, 2)), k=0), "'k' parameter"),
    (lambda: mean_average_precision(np.ones((3, 2)) * 2, np.zeros((3, 2))), "0/1 indicator"),
    (lambda: accuracy([], []), "must not be empty"),
])
def test_metric_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
    assert issubclass(RepscopeValueError, ValueError)
