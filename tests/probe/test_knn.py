"""Chunked kNN search kernel and the DINO-style KNNProbe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from repscope._kernels.knn import knn_search
from repscope.probe._knn import KNNProbe


def _data(seed: int, n: int = 300, d: int = 12, classes: int = 4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = rng.standard_normal((n, d)) + 0.8 * np.eye(classes, d)[y] * 3
    return X, y


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), block=st.integers(1, 64), qblock=st.integers(1, 50),
       metric=st.sampled_from(["cosine", "euclidean", "inner_product"]))
def test_chunked_search_equals_dense_search(seed, block, qblock, metric):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((120, 7))
    Q = rng.standard_normal((37, 7))
    chunked = knn_search(Q, X, 9, metric=metric, block_size=block, query_block_size=qblock)
    if metric == "euclidean":
        dense = np.sqrt(((Q[:, None, :] - X[None]) ** 2).sum(-1))
        order = np.argsort(dense, axis=1, kind="stable")[:, :9]
    else:
        Qn, Xn = (Q, X) if metric == "inner_product" else (
            Q / np.linalg.norm(Q, axis=1, keepdims=True), X / np.linalg.norm(X, axis=1, keepdims=True))
        dense = Qn @ Xn.T
        order = np.argsort(-dense, axis=1, kind="stable")[:, :9]
    np.testing.assert_array_equal(chunked.indices, order)
    np.testing.assert_allclose(chunked.values, np.take_along_axis(dense, order, 1), atol=1e-9)


def test_chunked_search_ties_keep_lower_index():
    X = np.ones((10, 3))
    r = knn_search(np.ones((2, 3)), X, 4, block_size=3)
    np.testing.assert_array_equal(r.indices, [[0, 1, 2, 3]] * 2)


def test_search_matches_sklearn_euclidean_and_keeps_torch_backend():
    from sklearn.neighbors import NearestNeighbors

    X, _ = _data(0)
    Q = X[:50] + 0.1
    d, i = NearestNeighbors(n_neighbors=6).fit(X).kneighbors(Q)
    r = knn_search(Q, X, 6, metric="euclidean", block_size=50)
    np.testing.assert_array_equal(r.indices, i)
    np.testing.assert_allclose(r.distances, d, atol=1e-8)
    rt = knn_search(torch.as_tensor(Q, dtype=torch.float32), torch.as_tensor(X, dtype=torch.float32),
                    6, metric="euclidean")
    assert isinstance(rt.indices, torch.Tensor)
    assert rt.values.dtype == torch.float32
    np.testing.assert_array_equal(rt.indices.numpy(), i)


def test_exclude_self_is_leave_one_out():
    X, _ = _data(1)
    r = knn_search(X, X, 5, exclude_self=True, block_size=17, query_block_size=40)
    assert not (r.indices == np.arange(len(X))[:, None]).any()
    full = knn_search(X, X, 6)
    np.testing.assert_array_equal(full.indices[:, 0], np.arange(len(X)))
    np.testing.assert_array_equal(r.indices, full.indices[:, 1:])


def test_first_k_of_a_larger_search_equals_smaller_search():
    X, _ = _data(2)
    big = knn_search(X[:40], X, 20)
    np.testing.assert_array_equal(big.first(5).indices, knn_search(X[:40], X, 5).indices)


def test_search_errors_name_the_argument():
    X = np.zeros((5, 3))
    with pytest.raises(ValueError, match="'k' parameter of knn_search must be at most 5"):
        knn_search(X, X, 6)
    with pytest.raises(ValueError, match="same number of features"):
        knn_search(X, np.zeros((5, 4)), 1)
    with pytest.raises(ValueError, match="exclude_self=True needs"):
        knn_search(X[:2], X, 1, exclude_self=True)
    with pytest.raises(ValueError, match="similarities are not defined"):
        _ = knn_search(X + 1, X + 1, 1, metric="euclidean").similarities
    with pytest.raises(TypeError, match="mix backends"):
        knn_search(torch.zeros(5, 3), X, 1)


def test_faiss_backend_agrees_or_says_how_to_install():
    X, _ = _data(3)
    try:
        import faiss  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="install faiss-cpu"):
            knn_search(X, X, 3, backend="faiss")
        return
    a = knn_search(X, X, 3, backend="faiss", exclude_self=True)
    b = knn_search(X, X, 3, exclude_self=True)
    np.testing.assert_array_equal(a.indices, b.indices)


@pytest.mark.parametrize("k", [1, 5, 15])
def test_uniform_knn_probe_equals_sklearn_cosine(k):
    from sklearn.neighbors import KNeighborsClassifier

    X, y = _data(4)
    Q, _ = _data(5, n=120)
    ours = KNNProbe(k=k, weighting="uniform").fit(X, y).predict(Q)
    ref = KNeighborsClassifier(k, metric="cosine", algorithm="brute").fit(X, y).predict(Q)
    np.testing.assert_array_equal(ours, ref)


def test_dino_weighting_is_the_temperature_softmax_vote():
    X, y = _data(6)
    Q, _ = _data(7, n=30)
    probe = KNNProbe(k=(10, 20), temperature=0.07).fit(X, y)
    p = probe.predict_proba(Q, k=20)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    s = Qn @ Xn.T
    nn = np.argsort(-s, axis=1)[:, :20]
    w = np.exp(np.take_along_axis(s, nn, 1) / 0.07)
    votes = np.zeros((len(Q), 4))
    for i in range(len(Q)):
        np.add.at(votes[i], y[nn[i]], w[i])
    np.testing.assert_allclose(p, votes / votes.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(probe.predict(Q, k=20), votes.argmax(1))


def test_several_k_from_one_search_fill_scores():
    X, y = _data(8)
    probe = KNNProbe(k=(1, 10, 20)).fit(X[:200], y[:200])
    acc = probe.score(X[200:], y[200:])
    assert set(probe.scores_) == {1, 10, 20}
    assert acc == probe.scores_[1]
    for k in (1, 10, 20):
        single = KNNProbe(k=k).fit(X[:200], y[:200]).score(X[200:], y[200:])
        assert probe.scores_[k] == pytest.approx(single)
    assert probe.scores_[20] > 0.8


def test_knn_probe_string_labels_and_torch_input():
    X, y = _data(9)
    names = np.array(["a", "b", "c", "d"])[y]
    probe = KNNProbe(k=5).fit(torch.as_tensor(X), names)
    pred = probe.predict(torch.as_tensor(X[:20]))
    assert pred.dtype.kind == "U"
    assert (pred == names[:20]).mean() > 0.8
    assert isinstance(probe.predict_proba(torch.as_tensor(X[:3])), torch.Tensor)


def test_knn_probe_errors():
    from sklearn.exceptions import NotFittedError

    X, y = _data(10, n=20)
    with pytest.raises(ValueError, match="'k' parameter of KNNProbe must be at most"):
        KNNProbe(k=50).fit(X, y)
    with pytest.raises(ValueError, match="'weighting' parameter of KNNProbe"):
        KNNProbe(weighting="cos").fit(X, y)
    with pytest.raises(ValueError, match="temperature"):
        KNNProbe(k=3, temperature=0.0).fit(X, y)
    with pytest.raises(NotFittedError):
        KNNProbe().predict(X)
    with pytest.raises(ValueError, match="is expecting 12 features"):
        KNNProbe(k=3).fit(X, y).predict(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="must be finite"):
        KNNProbe(k=3).fit(np.full((20, 12), np.nan), y)


def test_knn_probe_on_real_mnist_features(lite0_mnist):
    X = lite0_mnist.X[lite0_mnist.layers[-2]]
    y = lite0_mnist.y
    perm = np.random.default_rng(0).permutation(len(y))
    tr, te = perm[:800], perm[800:]
    probe = KNNProbe(k=(10, 20)).fit(X[tr], y[tr])
    probe.score(X[te], y[te])
    assert min(probe.scores_.values()) > 0.7
