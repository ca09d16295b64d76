"""Coding rate, rate reduction (hard, soft, doubly stochastic), Sinkhorn, clustering scores."""

from __future__ import annotations

import numpy as np
import pytest

from repscope._kernels.sinkhorn import sinkhorn_affinity, sinkhorn_symmetric
from repscope.exceptions import RepscopeValueError
from repscope.geometry import (
    clustering_scores,
    coding_rate,
    coding_rate_table,
    membership_clustering,
    rate_reduction,
)
from repscope.stats import Moments


@pytest.fixture(scope="module")
def digits_pca32():
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA

    X, y = load_digits(return_X_y=True)
    return PCA(32, random_state=0).fit_transform(X), y


def _unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _naive_rate(Z, eps2):
    n, d = Z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + d / (n * eps2) * Z.T @ Z)[1]


def test_coding_rate_equals_naive_formula(rng):
    X = rng.standard_normal((300, 12)) + 2.0
    Z = _unit(X)
    assert coding_rate(X, eps2=0.3) == pytest.approx(_naive_rate(Z, 0.3), rel=1e-10)
    assert coding_rate(X, eps2=0.3, normalize=False) == pytest.approx(_naive_rate(X, 0.3),
                                                                      rel=1e-10)
    # n < d takes the n x n Gram; a Moments streams the d x d one: same value
    W = rng.standard_normal((20, 50))
    m = Moments().update(_unit(W[:7])).update(_unit(W[7:]))
    assert coding_rate(W) == pytest.approx(_naive_rate(_unit(W), 0.5), rel=1e-10)
    assert coding_rate(m) == pytest.approx(coding_rate(W), rel=1e-10)


def test_rate_reduction_equals_naive_formula(rng):
    X = rng.standard_normal((240, 8))
    y = rng.integers(0, 4, 240)
    Z = _unit(X)
    n, d = Z.shape
    Rc = sum((y == c).sum() / (2 * n) * np.linalg.slogdet(
        np.eye(d) + d / ((y == c).sum() * 0.5) * Z[y == c].T @ Z[y == c])[1] for c in range(4))
    assert rate_reduction(X, y) == pytest.approx(_naive_rate(Z, 0.5) - Rc, rel=1e-10)
    onehot = np.eye(4)[y]  # soft membership with one-hot rows: the same value
    assert rate_reduction(X, onehot) == pytest.approx(rate_reduction(X, y), rel=1e-10)
    table = coding_rate_table(X, y)
    assert table.rate_reduction == pytest.approx(rate_reduction(X, y), rel=1e-12)
    assert table.class_counts == tuple(np.bincount(y))
    with pytest.raises(RepscopeValueError, match="sum to 1"):
        rate_reduction(X, onehot * 2)


def test_rate_reduction_recipe_claim_digits(digits_pca32):
    """Recipe (§4), digits PCA-32, unit rows, eps^2 = 0.5: R = 13.87, Delta R(true) = 4.24
    far above Delta R(shuffled) >= 0, uniform membership 0 (also n x n uniform Gamma)."""
    Z, y = digits_pca32
    n = y.size
    assert coding_rate(Z) == pytest.approx(13.87, abs=0.01)
    true = rate_reduction(Z, y)
    shuffled = rate_reduction(Z, np.random.default_rng(0).permutation(y))
    assert true == pytest.approx(4.24, abs=0.01)
    assert 0.0 <= shuffled < true / 5
    assert rate_reduction(Z, np.ones((n, 1))) == pytest.approx(0.0, abs=1e-9)
    assert rate_reduction(Z, np.full((n, n), 1.0 / n)) == pytest.approx(0.0, abs=1e-9)


def test_sinkhorn_is_doubly_stochastic_and_matches_log_domain(rng):
    Z = rng.standard_normal((60, 5))
    G = sinkhorn_affinity(Z, eta=0.2).matrix
    np.testing.assert_allclose(G.sum(axis=0), 1.0, atol=1e-6)
    np.testing.assert_allclose(G, G.T)
    U = _unit(Z)
    small = sinkhorn_symmetric(U @ U.T / 0.001, tol=1e-9)  # log-domain path (no underflow)
    np.testing.assert_allclose(small.matrix.sum(axis=1), 1.0, atol=1e-8)
    with pytest.raises(RepscopeValueError, match="symmetric"):
        sinkhorn_symmetric(np.array([[0.0, 1.0], [2.0, 0.0]]))


def test_clustering_accuracy_is_hungarian_on_permuted_labels(rng):
    y = rng.integers(0, 5, 200)
    perm = np.array([3, 0, 4, 1, 2])
    s = clustering_scores(y, perm[y])
    assert s.accuracy == 1.0 and s.nmi == pytest.approx(1.0) and s.ari == pytest.approx(1.0)
    noisy = perm[y].copy()
    noisy[:20] = (noisy[:20] + 1) % 5
    flipped = int((noisy[:20] != perm[y][:20]).sum())
    assert clustering_scores(y, noisy).accuracy == pytest.approx(1 - flipped / 200)


def test_sinkhorn_clustering_vs_kmeans_digits(digits_pca32):
    """Not run by the recipe. Data: digits PCA-32 (unit rows), 900 samples; metric:
    Hungarian accuracy. What holds here: the Sinkhorn-membership spectral clustering is
    within 0.05 of k-means and well above chance (it beats k-means only for some eta)."""
    from sklearn.cluster import KMeans

    Z, y = digits_pca32
    Z, y = _unit(Z[:900]), y[:900]
    sink = clustering_scores(y, membership_clustering(Z, 10, eta=0.05)).accuracy
    km = clustering_scores(y, KMeans(10, n_init=10, random_state=0).fit_predict(Z)).accuracy
    assert sink > 0.6 and km > 0.6
    assert sink > km - 0.05


def test_rate_reduction_streams_from_a_store(tmp_path, rng):
    """A store layer: per-class Gram matrices in one pass with K accumulators, or in K passes
    when K d^2 does not fit the budget; both equal the in-memory value."""
    from repscope.geometry._inputs import LayerView, class_grams
    from repscope.store import FeatureStore, open_layers

    X = rng.standard_normal((300, 7)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    store = FeatureStore.create(tmp_path / "s", model_id="toy")
    store.append({"a": X})
    Xf = X.astype(np.float64)
    assert rate_reduction(store, y, layer="a") == pytest.approx(rate_reduction(Xf, y), rel=1e-9)
    assert coding_rate(store, layer="a") == pytest.approx(coding_rate(Xf), rel=1e-9)
    src = open_layers(store)
    one = list(class_grams(LayerView(src, "a"), y, normalize=True, caller="t"))
    many = list(class_grams(LayerView(src, "a"), y, normalize=True, caller="t",
                            memory_budget=8 * 7 * 7))
    assert [c for c, _, _ in one] == [c for c, _, _ in many] == [0, 1, 2]
    for (_, n1, g1), (_, n2, g2) in zip(one, many):
        assert n1 == n2
        np.testing.assert_allclose(g1, g2, rtol=1e-12)
