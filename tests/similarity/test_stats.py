"""Permutation tests, null calibration, bootstrap and jackknife for similarity measures."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.exceptions import RepscopeValueError
from repscope.similarity._cka import linear_cka
from repscope.similarity._knn_measures import mutual_knn
from repscope.similarity._stats import (
    bootstrap_ci,
    jackknife,
    null_calibrated,
    permutation_test,
)


def _naive_perm(X, Y, fn, B, seed):
    rng = np.random.default_rng(seed)
    return np.array([fn(X, Y[rng.permutation(len(X))]) for _ in range(B)])


@pytest.mark.parametrize("shape", [(40, 5, 7), (25, 60, 9), (20, 50, 70)])
def test_batched_cross_term_null_equals_naive_recomputation(shape) -> None:
    n, dx, dy = shape  # n > d (feature form) and d > n (reduced to min(n, d) columns)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, dx)) + 5.0
    Y = X[:, :1] @ rng.standard_normal((1, dy)) + rng.standard_normal((n, dy))
    res = permutation_test(X, Y, n_permutations=37, seed=11, batch_size=5)
    naive = _naive_perm(X, Y, linear_cka, 37, 11)
    np.testing.assert_allclose(res.null, naive, rtol=1e-10, atol=1e-13)
    assert res.value == pytest.approx(linear_cka(X, Y), rel=1e-12)
    hits = np.sum(naive >= res.value)
    assert res.p_value == pytest.approx((1 + hits) / 38)
    assert res.null_mean == pytest.approx(naive.mean())
    assert res.z_score == pytest.approx((res.value - naive.mean()) / naive.std(ddof=1))


def test_generic_measure_path_uses_same_permutations() -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 4))
    Y = X + rng.standard_normal((40, 4))
    res = permutation_test(X, Y, "mutual_knn", n_permutations=9, seed=3, k=5)
    naive = _naive_perm(X, Y, lambda a, b: mutual_knn(a, b, k=5), 9, 3)
    np.testing.assert_array_equal(res.null, naive)
    dist = permutation_test(X, Y, lambda a, b: float(np.abs(a - b).mean()), n_permutations=9,
                            alternative="less")
    assert dist.alternative == "less"
    assert dist.p_value == pytest.approx(0.1)


def test_p_value_small_for_dependent_and_not_extreme_under_null() -> None:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((60, 6))
    Y = X @ rng.standard_normal((6, 8)) + rng.standard_normal((60, 8))
    assert permutation_test(X, Y, n_permutations=199).p_value == pytest.approx(1 / 200)
    ps = np.array([
        permutation_test(rng.standard_normal((30, 5)), rng.standard_normal((30, 9)),
                         n_permutations=99, seed=s).p_value
        for s in range(40)
    ])
    assert np.mean(ps < 0.05) <= 0.2
    assert 0.3 < np.mean(ps) < 0.7  # roughly uniform


def test_null_calibration_removes_width_confound() -> None:
    rng = np.random.default_rng(3)
    n = 40
    raw, z = [], []
    for d in (4, 40, 400):
        X, Y = rng.standard_normal((n, d)), rng.standard_normal((n, d))
        raw.append(linear_cka(X, Y))
        z.append(null_calibrated(X, Y, n_permutations=200, seed=d).value)
    assert raw[0] < raw[1] < raw[2]
    assert raw[2] > 0.4
    assert all(abs(v) < 3.0 for v in z)
    dep = rng.standard_normal((n, 400))
    s = null_calibrated(dep, dep + 2 * rng.standard_normal((n, 400)), n_permutations=200)
    assert s.value > 5.0
    assert s.details["raw_value"] > raw[2]


def test_bootstrap_ci_covers_the_true_value() -> None:
    rng = np.random.default_rng(4)
    # population CKA of X and Y = X + noise: large-sample value as the truth
    Xp = rng.standard_normal((200_000, 3))
    Yp = Xp @ np.diag([2.0, 1.0, 0.5]) + rng.standard_normal((200_000, 3))
    truth = linear_cka(Xp, Yp)
    covered = 0
    for s in range(6):
        r = np.random.default_rng(100 + s)
        X = r.standard_normal((400, 3))
        Y = X @ np.diag([2.0, 1.0, 0.5]) + r.standard_normal((400, 3))
        ci = bootstrap_ci(X, Y, n_resamples=200, seed=s)
        assert ci.ci_low < ci.value < ci.ci_high
        covered += ci.ci_low <= truth <= ci.ci_high
    assert covered >= 5


def test_jackknife_matches_naive_leave_one_out() -> None:
    rng = np.random.default_rng(5)
    X = rng.standard_normal((30, 4)) + 3.0
    Y = X @ rng.standard_normal((4, 6)) + rng.standard_normal((30, 6))
    fast = jackknife(X, Y)
    loo = np.array([linear_cka(np.delete(X, i, 0), np.delete(Y, i, 0)) for i in range(30)])
    np.testing.assert_allclose(fast.values, loo, rtol=1e-10)
    slow = jackknife(X, Y, lambda a, b: linear_cka(a, b))
    np.testing.assert_allclose(slow.values, loo, rtol=1e-12)
    assert fast.bias == pytest.approx(29 * (loo.mean() - linear_cka(X, Y)), rel=1e-8)
    se = np.sqrt(29 / 30 * np.sum((loo - loo.mean()) ** 2))
    assert fast.std_error == pytest.approx(se, rel=1e-8)
    assert fast.ci_low < fast.estimate < fast.ci_high


def test_results_serialise_and_bad_parameters_raise() -> None:
    X = np.random.default_rng(6).standard_normal((20, 3))
    d = permutation_test(X, X, n_permutations=5).to_dict()
    assert d["type"] == "PermutationTestResult"
    assert len(d["null"]) == 5
    with pytest.raises(RepscopeValueError, match="'confidence' parameter of bootstrap_ci"):
        bootstrap_ci(X, X, confidence=1.5)
    with pytest.raises(RepscopeValueError, match="'n_permutations' parameter"):
        permutation_test(X, X, n_permutations=0)
    with pytest.raises(RepscopeValueError, match="'alternative' parameter of permutation_test"):
        permutation_test(X, X, alternative="bigger")  # type: ignore[arg-type]
    with pytest.raises(RepscopeValueError, match="same number of samples"):
        jackknife(X, X[:10])
    with pytest.raises(RepscopeValueError, match="constant"):
        permutation_test(np.ones((20, 3)), X, n_permutations=5)
