"""Unit matching, sparse predictability and co-clustering (Convergent Learning)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Lasso
from sklearn.metrics import adjusted_rand_score

from repscope._kernels.assignment import greedy_assignment, linear_assignment
from repscope._kernels.spectral import spectral_cocluster
from repscope.exceptions import RepscopeValueError
from repscope.similarity._neurons import (
    match_units,
    sparse_predictability,
    unit_coclusters,
    unit_correlation,
)
from repscope.stats import Moments


def _net(rng: np.random.Generator, n: int = 500, d: int = 24) -> np.ndarray:
    Z = rng.standard_normal((n, 8))
    return np.maximum(Z @ rng.standard_normal((8, d)) + 0.5 * rng.standard_normal((n, d)), 0)


def test_unit_correlation_equals_numpy_corrcoef_and_moments_input() -> None:
    rng = np.random.default_rng(0)
    A, B = _net(rng), _net(rng, d=17)
    ref = np.corrcoef(A.T, B.T)[:24, 24:]
    np.testing.assert_allclose(unit_correlation(A, B), ref, atol=1e-12)
    m = Moments.from_arrays(A, B, batch_size=64)
    np.testing.assert_allclose(unit_correlation(m), ref, atol=1e-12)
    A[:, 3] = 1.0  # dead unit
    assert np.all(unit_correlation(A, B)[3] == 0.0)


def test_hungarian_recovers_permutation_of_noisy_copy() -> None:
    rng = np.random.default_rng(1)
    A = _net(rng, d=40)
    perm = rng.permutation(40)
    B = A[:, perm] + 0.3 * rng.standard_normal(A.shape)
    res = match_units(A, B)
    np.testing.assert_array_equal(perm[res.cols], res.rows)  # B[:, cols[i]] is A[:, rows[i]]
    greedy = match_units(A, B, method="greedy")
    assert greedy.total <= res.total + 1e-12
    # matched correlation beats the within-network next best for most units
    assert res.fraction_above_within > 0.8
    assert res.mean_matched_corr > 0.8
    semi = match_units(A, B, method="semi")
    assert semi.total >= res.total - 1e-12  # unconstrained argmax is an upper bound


def test_greedy_never_beats_hungarian_on_random_matrices() -> None:
    rng = np.random.default_rng(2)
    for shape in [(6, 6), (5, 9), (12, 4)]:
        W = rng.standard_normal(shape)
        h, g = linear_assignment(W, maximize=True), greedy_assignment(W)
        assert g.total <= h.total + 1e-12
        assert len(h.rows) == len(g.rows) == min(shape)
        assert len(set(g.cols.tolist())) == min(shape)
        # brute-force check of the optimum on the square 6x6 case
        if shape == (6, 6):
            import itertools

            best = max(sum(W[i, p[i]] for i in range(6)) for p in itertools.permutations(range(6)))
            assert h.total == pytest.approx(best)
    assert linear_assignment(-W).total == pytest.approx(
        -linear_assignment(W, maximize=True).total)


def test_sparse_predictability_agrees_with_sklearn_lasso() -> None:
    rng = np.random.default_rng(3)
    A = rng.standard_normal((300, 10))
    B = np.column_stack([A[:, 0] + 0.1 * rng.standard_normal(300),
                         A @ rng.standard_normal(10)])
    res = sparse_predictability(A, B, alphas=[0.3, 0.05])
    As = (A - A.mean(0)) / A.std(0)
    for u in range(2):
        b = (B[:, u] - B[:, u].mean()) / B[:, u].std()
        for a, alpha in enumerate(res.alphas):
            w = Lasso(alpha=alpha, fit_intercept=False, tol=1e-10, max_iter=100_000).fit(As, b)
            nmse = np.mean((b - As @ w.coef_) ** 2)
            assert res.nmse[u, a] == pytest.approx(nmse, abs=1e-4)
            assert res.n_nonzero[u, a] == np.count_nonzero(w.coef_)
    # unit 0 is local: one weight explains most of it
    assert res.best_nmse_with_at_most(1)[0] < 0.3
    assert res.best_nmse_with_at_most(1)[1] > res.best_nmse_with_at_most(10)[1]


def test_coclustering_recovers_planted_blocks() -> None:
    rng = np.random.default_rng(4)
    n, k = 400, 3
    Z = rng.standard_normal((n, k))
    ga, gb = rng.integers(0, k, 18), rng.integers(0, k, 15)
    ga[:k], gb[:k] = np.arange(k), np.arange(k)
    A = Z[:, ga] + 0.5 * rng.standard_normal((n, 18))
    B = -Z[:, gb] + 0.5 * rng.standard_normal((n, 15))  # sign flips: |corr| is used
    res = unit_coclusters(A, B, n_clusters=k)
    assert adjusted_rand_score(ga, res.labels_a) == 1.0
    assert adjusted_rand_score(gb, res.labels_b) == 1.0
    truth = {(int(a), int(b)) for a, b in zip(res.labels_a[:k], res.labels_b[:k], strict=True)}
    assert len(truth) == k  # each planted factor's A and B units share a co-cluster
    assert res.sizes.sum() == 33
    assert np.nanmin(res.mean_abs_corr) > 0.5


def test_bad_inputs_raise() -> None:
    rng = np.random.default_rng(5)
    A = rng.standard_normal((20, 4))
    with pytest.raises(RepscopeValueError, match="same number of samples"):
        match_units(A, A[:10])
    with pytest.raises(RepscopeValueError, match="'method' parameter of match_units"):
        match_units(A, A, method="optimal")  # type: ignore[arg-type]
    with pytest.raises(RepscopeValueError, match="must be finite"):
        linear_assignment([[np.nan, 1.0]])
    with pytest.raises(RepscopeValueError, match="'n_clusters' parameter of spectral_cocluster"):
        spectral_cocluster(np.ones((3, 5)), 4)
    with pytest.raises(RepscopeValueError, match="non-negative"):
        spectral_cocluster(-np.ones((3, 5)), 2)
    with pytest.raises(RepscopeValueError, match="alphas must be positive"):
        sparse_predictability(A, A, alphas=[0.0])
