"""Supervised separability: naive formulas, scikit-learn equality, neural-collapse limits,
streaming from a store, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.exceptions import RepscopeValueError
from repscope.geometry import (
    calinski_harabasz,
    fisher_directions,
    fisher_ratio,
    fisher_trace_ratio,
    geometry_info,
    nc_equiangularity,
    nc_equinorm,
    nc_max_angle,
    nc_self_duality,
    nc_variability,
    silhouette,
    thornton_index,
)
from repscope.stats import Moments


def _blobs(rng, n_per=60, K=4, d=6, spread=1.0):
    means = rng.standard_normal((K, d)) * 3
    y = np.repeat(np.arange(K), n_per)
    return means[y] + spread * rng.standard_normal((K * n_per, d)), y


def test_fisher_ratio_equals_naive_formula(rng):
    X, y = _blobs(rng)
    mu = X.mean(0)
    Sw = sum((X[y == k] - X[y == k].mean(0)).T @ (X[y == k] - X[y == k].mean(0)) for k in range(4))
    Sb = sum((y == k).sum() * np.outer(X[y == k].mean(0) - mu, X[y == k].mean(0) - mu)
             for k in range(4))
    naive = np.trace(np.linalg.solve(Sw, Sb))
    assert fisher_ratio(X, y, reg=0.0) == pytest.approx(naive, rel=1e-9)
    assert fisher_ratio(X, y) == pytest.approx(naive, rel=1e-4)
    dirs = fisher_directions(X, y, reg=0.0)
    assert dirs.shape == (3,) and np.all(np.diff(dirs) <= 0)
    assert dirs.sum() == pytest.approx(naive, rel=1e-9)
    assert fisher_trace_ratio(X, y) == pytest.approx(np.trace(Sb) / np.trace(Sw), rel=1e-12)
    # invariant to an invertible linear map (trace form), not the trace ratio
    A = rng.standard_normal((6, 6)) + 3 * np.eye(6)
    assert fisher_ratio(X @ A, y, reg=0.0) == pytest.approx(naive, rel=1e-7)
    assert fisher_trace_ratio(X @ A, y) != pytest.approx(fisher_trace_ratio(X, y), rel=1e-3)


def test_silhouette_and_calinski_harabasz_equal_sklearn(rng):
    from sklearn.metrics import calinski_harabasz_score, silhouette_score

    X, y = _blobs(rng, n_per=50, K=3, spread=2.0)
    y = y.copy()
    y[0] = 7  # a singleton class scores 0, as in scikit-learn
    assert silhouette(X, y, block_elements=500) == pytest.approx(silhouette_score(X, y),
                                                                 abs=1e-10)
    assert calinski_harabasz(X, y) == pytest.approx(calinski_harabasz_score(X, y), rel=1e-10)


def test_thornton_index_is_knn_label_agreement(rng):
    X, y = _blobs(rng, n_per=40, K=3)
    D = ((X[:, None] - X[None]) ** 2).sum(-1)
    np.fill_diagonal(D, np.inf)
    nn = np.argsort(D, axis=1)[:, :5]
    assert thornton_index(X, y, k=5) == pytest.approx((y[nn] == y[:, None]).mean())
    assert thornton_index(X, rng.permutation(y), k=5) < 0.6
    with pytest.raises(RepscopeValueError, match="limited to 50 samples.*subsample"):
        thornton_index(X, y, max_samples=50)


def test_neural_collapse_limits_on_collapsed_case():
    """Simplex equiangular class means and zero within-class spread: NC1 = 0, equal norms,
    equal angles at -1/(K-1); a classifier equal to the means is self-dual."""
    K, d = 4, 6
    M = np.eye(K) - 1.0 / K  # centred simplex in R^K
    M = np.hstack([M, np.zeros((K, d - K))]) * 5
    y = np.repeat(np.arange(K), 10)
    X = M[y] + 1.0
    assert nc_variability(X, y) == pytest.approx(0.0, abs=1e-12)
    assert nc_equinorm(X, y) == pytest.approx(0.0, abs=1e-12)
    assert nc_equiangularity(X, y) == pytest.approx(0.0, abs=1e-12)
    assert nc_max_angle(X, y) == pytest.approx(0.0, abs=1e-12)
    assert nc_self_duality(X, y, M * 3) == pytest.approx(0.0, abs=1e-12)
    assert fisher_trace_ratio(X, y) == np.inf
    # away from collapse every measure moves off its limit
    rng = np.random.default_rng(0)
    Xn = X + rng.standard_normal(X.shape)
    Mn = M.copy()
    Mn[0] *= 2
    Xn[y == 0] += M[0]
    assert nc_variability(Xn, y) > 0.01
    assert nc_equinorm(Xn, y) > 0.05 and nc_max_angle(Xn, y) > 0.01
    assert nc_equiangularity(Xn, y) > 0.01
    assert nc_self_duality(Xn, y, rng.standard_normal((K, d))) > 0.1


def test_moments_measures_stream_from_a_store(tmp_path, rng):
    from repscope.store import FeatureStore

    X, y = _blobs(rng, n_per=80)
    store = FeatureStore.create(tmp_path / "s", model_id="toy")
    store.append({"a": X.astype(np.float32), "b": (2 * X).astype(np.float32)})
    Xf = X.astype(np.float32).astype(np.float64)
    assert fisher_ratio(store, y, layer="a") == pytest.approx(fisher_ratio(Xf, y), rel=1e-8)
    assert calinski_harabasz(store, y, layer="b") == pytest.approx(
        calinski_harabasz(2 * Xf, y), rel=1e-8)
    merged = Moments().update(Xf[:100], labels=y[:100]).merge(
        Moments().update(Xf[100:], labels=y[100:]))
    assert nc_variability(merged, y) == pytest.approx(nc_variability(Xf, y), rel=1e-9)
    with pytest.raises(RepscopeValueError, match="Pass layer=NAME"):
        fisher_ratio(store, y)
    assert geometry_info("fisher_ratio")["cost"] == "moments"


def test_bad_input(rng):
    X, y = _blobs(rng, n_per=3, K=4)
    with pytest.raises(RepscopeValueError, match="more samples than classes"):
        fisher_ratio(X[:4], y[[0, 3, 6, 9]])
    with pytest.raises(RepscopeValueError, match="at least 2 distinct classes"):
        fisher_ratio(X, np.zeros(len(X)))
    with pytest.raises(RepscopeValueError, match="NaN"):
        calinski_harabasz(np.full_like(X, np.nan), y)
    with pytest.raises(RepscopeValueError, match="needs class labels"):
        silhouette(X)
    # duplicate points: defined values
    Xd = np.repeat(X[:4], 5, axis=0)
    yd = np.repeat(np.arange(4), 5)
    assert silhouette(Xd, yd) == pytest.approx(1.0)
    assert nc_variability(Xd, yd) == pytest.approx(0.0, abs=1e-12)
