"""Mutual kNN, Jaccard of kNN sets and CKNNA: blocked == dense, invariances, reference CKNNA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from repscope._testing import random_orthogonal
from repscope.exceptions import RepscopeValueError
from repscope.similarity._knn_measures import cknna, knn_jaccard, mutual_knn


def _dense_knn(X: np.ndarray, k: int) -> np.ndarray:
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    return np.argsort(-S, axis=1, kind="stable")[:, :k]


def _dense_mutual_knn(X: np.ndarray, Y: np.ndarray, k: int) -> tuple[float, float]:
    a, b = _dense_knn(X, k), _dense_knn(Y, k)
    c = np.array([len(set(a[i]) & set(b[i])) for i in range(len(a))], dtype=float)
    return float(np.mean(c / k)), float(np.mean(c / (2 * k - c)))


def _hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    m = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    return float((np.sum(Kt * Lt.T) + Kt.sum() * Lt.sum() / ((m - 1) * (m - 2))
                  - 2 * np.sum(Kt @ Lt) / (m - 2)) / (m * (m - 3)))


def _hsic_biased(K: np.ndarray, L: np.ndarray) -> float:
    m = K.shape[0]
    H = np.eye(m) - 1.0 / m
    return float(np.trace(K @ H @ L @ H))


def _naive_cknna(X: np.ndarray, Y: np.ndarray, k: int, unbiased: bool = True) -> float:
    """The platonic-rep definition, dense n x n (without its +1e-6 in the denominator)."""
    n = X.shape[0]
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    K, L = Xn @ Xn.T, Yn @ Yn.T
    hsic = _hsic_unbiased if unbiased else _hsic_biased

    def sim(K: np.ndarray, L: np.ndarray) -> float:
        mk, ml = np.zeros((n, n)), np.zeros((n, n))
        rows = np.arange(n)[:, None]
        mk[rows, _dense_knn_kernel(K, k)] = 1
        ml[rows, _dense_knn_kernel(L, k)] = 1
        m = mk * ml
        return hsic(m * K, m * L)

    return sim(K, L) / np.sqrt(sim(K, K) * sim(L, L))


def _dense_knn_kernel(K: np.ndarray, k: int) -> np.ndarray:
    S = K.copy()
    np.fill_diagonal(S, -np.inf)
    return np.argsort(-S, axis=1, kind="stable")[:, :k]


@settings(max_examples=15, deadline=None)
@given(n=st.integers(12, 60), d=st.integers(2, 9), k=st.integers(1, 8),
       block=st.integers(1, 17), seed=st.integers(0, 10_000))
def test_blocked_knn_measures_equal_dense(n: int, d: int, k: int, block: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    Y = X @ rng.standard_normal((d, d + 1)) + 0.5 * rng.standard_normal((n, d + 1))
    mk, jac = _dense_mutual_knn(X, Y, k)
    assert mutual_knn(X, Y, k=k, block_size=block) == pytest.approx(mk, abs=1e-12)
    assert knn_jaccard(X, Y, k=k, block_size=block) == pytest.approx(jac, abs=1e-12)


@pytest.mark.parametrize("unbiased", [True, False])
def test_cknna_equals_naive_definition(unbiased: bool) -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 6))
    Y = np.tanh(X @ rng.standard_normal((6, 9))) + 0.3 * rng.standard_normal((120, 9))
    for k in (2, 17):
        ref = _naive_cknna(X, Y, k, unbiased)
        assert cknna(X, Y, k=k, unbiased=unbiased, block_size=23) == pytest.approx(ref, rel=1e-9)


def test_self_similarity_is_one_and_symmetric() -> None:
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((80, 5)), rng.standard_normal((80, 7))
    assert mutual_knn(X, X, k=7) == 1.0
    assert knn_jaccard(X, X, k=7) == 1.0
    assert cknna(X, X, k=7) == pytest.approx(1.0, abs=1e-12)
    assert mutual_knn(X, Y, k=7) == pytest.approx(mutual_knn(Y, X, k=7))
    # CKNNA's masked kernels are directed: symmetric only approximately (platonic-rep's form)
    assert cknna(X, Y, k=7) == pytest.approx(cknna(Y, X, k=7), rel=1e-2)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100.0))
def test_invariant_to_orthogonal_and_isotropic_scale(seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((60, 6))
    Y = X[:, :4] ** 3 + rng.standard_normal((60, 4))
    Q = random_orthogonal(4, rng)
    Yt = scale * Y @ Q
    for f in (mutual_knn, knn_jaccard, cknna):
        assert f(X, Yt, k=6) == pytest.approx(f(X, Y, k=6), abs=1e-9)


def test_not_invariant_to_anisotropic_scaling() -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 5))
    D = np.diag([1e-3, 1.0, 1.0, 30.0, 1.0])
    for f in (mutual_knn, knn_jaccard, cknna):
        assert abs(f(X, X @ D, k=8) - f(X, X, k=8)) > 0.05


def test_torch_input_matches_numpy_and_float32_ok() -> None:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((90, 6))
    Y = X + 0.5 * rng.standard_normal((90, 6))
    ref = mutual_knn(X, Y, k=5)
    assert mutual_knn(torch.from_numpy(X), torch.from_numpy(Y), k=5) == pytest.approx(ref)
    assert cknna(torch.from_numpy(X), torch.from_numpy(Y), k=5) == pytest.approx(
        cknna(X, Y, k=5), rel=1e-9)
    assert cknna(X.astype(np.float32), Y.astype(np.float32), k=5) == pytest.approx(
        cknna(X, Y, k=5), rel=1e-4)


def test_dependent_beats_independent() -> None:
    rng = np.random.default_rng(4)
    X = rng.standard_normal((300, 8))
    Y_dep = X @ rng.standard_normal((8, 12)) + 0.2 * rng.standard_normal((300, 12))
    Y_ind = rng.standard_normal((300, 12))
    for f in (mutual_knn, knn_jaccard, cknna):
        assert f(X, Y_dep, k=10) > 0.3 > f(X, Y_ind, k=10)


def test_bad_inputs_raise_clear_errors() -> None:
    X = np.random.default_rng(0).standard_normal((10, 3))
    with pytest.raises(RepscopeValueError, match="same number of samples"):
        mutual_knn(X, X[:9])
    with pytest.raises(RepscopeValueError, match=r"'k' parameter of mutual_knn must be in \[1, 9\]"):
        mutual_knn(X, X, k=10)
    with pytest.raises(RepscopeValueError, match=r"'k' parameter of cknna must be in \[2, 9\]"):
        cknna(X, X, k=1)
    with pytest.raises(RepscopeValueError, match="'metric' parameter of cknna"):
        cknna(X, X, k=3, metric="euclidean")  # type: ignore[arg-type]
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(RepscopeValueError, match="must be finite"):
        knn_jaccard(bad, X, k=3)
