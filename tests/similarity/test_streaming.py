"""Streaming == in-memory for every Moments-based measure (batches, shards, reset, pickle)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from _strategies import one_blas_thread  # noqa: F401  (autouse fixture)

from repscope.exceptions import RepscopeValueError, UnknownNameError
from repscope.similarity import MinibatchCKA, StreamingSimilarity, get_measure, linear_cka_debiased

STREAMABLE = StreamingSimilarity.available()


def _data(n: int = 237, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6)) * np.array([3, 2, 1, 1, 0.5, 0.2]) + 100.0  # far from 0
    Y = X @ rng.standard_normal((6, 5)) + rng.standard_normal((n, 5)) - 40.0
    return X, Y


def test_every_moments_based_measure_streams():
    assert {"linear_cka", "linear_cka_debiased", "cca", "svcca", "pwcca", "procrustes",
            "shape_angular", "shape_cca", "linear_r2", "ridge_predictivity"} <= set(STREAMABLE)


@pytest.mark.parametrize("name", STREAMABLE)
def test_uneven_batches_equal_in_memory(name):
    X, Y = _data()
    acc = StreamingSimilarity(name)
    for s, e in [(0, 1), (1, 40), (40, 41), (41, 150), (150, 237)]:
        acc.update(X[s:e], Y[s:e])
    assert acc.compute() == pytest.approx(get_measure(name)(X, Y), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", STREAMABLE)
def test_merged_shards_equal_in_memory(name):
    X, Y = _data(n=300, seed=1)
    shards = []
    for s, e in [(0, 100), (100, 250), (250, 300)]:  # multiples of the 5 folds
        a = StreamingSimilarity(name)
        a.update(X[s:e] * 1.0, Y[s:e])
        shards.append(a)
    total = shards[0].merge(shards[1]).merge(shards[2])
    assert total.n_seen == 300
    assert total.compute() == pytest.approx(get_measure(name)(X, Y), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ["linear_cka", "linear_cka_debiased", "procrustes", "cca"])
def test_reset_pickle_and_torch_batches(name):
    X, Y = _data(seed=2)
    acc = StreamingSimilarity(name)
    acc.update(X[:50], Y[:50])
    acc.reset()
    acc.update(torch.from_numpy(X[:120]), torch.from_numpy(Y[:120]))
    acc = pickle.loads(pickle.dumps(acc))
    acc.update(torch.from_numpy(X[120:]).float(), torch.from_numpy(Y[120:]).float())
    assert acc.compute() == pytest.approx(get_measure(name)(X, Y), rel=1e-5)


def test_streaming_errors():
    with pytest.raises(RepscopeValueError, match="cannot be streamed exactly"):
        StreamingSimilarity("rsa")
    with pytest.raises(UnknownNameError, match="Did you mean 'linear_cka'"):
        StreamingSimilarity("linear_ckaa")
    with pytest.raises(RepscopeValueError, match="at least 3 samples"):
        StreamingSimilarity("cca").compute()
    acc = StreamingSimilarity("cca")
    with pytest.raises(RepscopeValueError, match="same number of samples"):
        acc.update(np.zeros((4, 2)), np.zeros((5, 2)))


def test_minibatch_cka_accumulator_merge_and_reset():
    X, Y = _data(n=400, seed=3)
    a, b = MinibatchCKA(), MinibatchCKA()
    for s in range(0, 200, 100):
        a.update(X[s:s + 100], Y[s:s + 100])
    for s in range(200, 400, 100):
        b.update(X[s:s + 100], Y[s:s + 100])
    whole = MinibatchCKA()
    for s in range(0, 400, 100):
        whole.update(X[s:s + 100], Y[s:s + 100])
    assert a.merge(b).compute() == pytest.approx(whole.compute(), rel=1e-12)
    one = MinibatchCKA().update(X, Y)
    assert one.compute() == pytest.approx(linear_cka_debiased(X, Y), rel=1e-10)
    one.reset()
    with pytest.raises(RepscopeValueError, match="no batches"):
        one.compute()
