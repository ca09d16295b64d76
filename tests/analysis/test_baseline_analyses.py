"""The analyses the demo runs at the foundation stage: linear CKA, PCA spectra, a CV
logistic-regression separability baseline — each against a reference."""

from __future__ import annotations

import numpy as np
import pytest
from repscope.separability import logistic_separability

from repscope._testing import random_orthogonal
from repscope.exceptions import RepscopeValueError
from repscope.similarity import linear_cka, linear_cka_matrix
from repscope.stats import Moments, effective_rank, pca_spectrum


def _kernel_cka(X, Y):
    """Naive n x n kernel form (Kornblith et al., 2019, eq. 2 with linear kernels)."""
    n = len(X)
    H = np.eye(n) - 1.0 / n
    K, L = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    return (K * L).sum() / np.sqrt((K * K).sum() * (L * L).sum())


@pytest.fixture
def pair(rng):
    X = rng.standard_normal((300, 12))
    Y = np.tanh(X @ rng.standard_normal((12, 20))) + 0.5 * rng.standard_normal((300, 20))
    return X, Y


def test_linear_cka_equals_kernel_form(pair):
    X, Y = pair
    assert linear_cka(X, Y) == pytest.approx(_kernel_cka(X, Y), rel=1e-10)


def test_linear_cka_invariances_and_a_non_invariance(pair, rng):
    X, Y = pair
    base = linear_cka(X, Y)
    Q = random_orthogonal(Y.shape[1], rng)
    assert linear_cka(X, 5.0 * Y @ Q + 3.0) == pytest.approx(base, rel=1e-10)
    assert linear_cka(X, X) == pytest.approx(1.0, rel=1e-12)
    # an anisotropic scaling is not an allowed transform: the value must move
    assert abs(linear_cka(X, Y * np.linspace(0.1, 10, Y.shape[1])) - base) > 1e-3


def test_linear_cka_matrix_equals_pairwise_calls(pair, rng):
    X, Y = pair
    A = [X, X[:, :4], Y]
    B = [Y, np.sin(X), X @ rng.standard_normal((12, 3))]
    M = linear_cka_matrix(A, B)
    ref = np.array([[linear_cka(a, b) for b in B] for a in A])
    np.testing.assert_allclose(M, ref, rtol=1e-10)
    # streamed Moments in batches give the same matrix
    m = Moments()
    Xc, Yc = np.concatenate(A, 1), np.concatenate(B, 1)
    for s in range(0, len(Xc), 64):
        m.update(Xc[s : s + 64], Yc[s : s + 64])
    np.testing.assert_allclose(
        linear_cka_matrix(m, widths=([a.shape[1] for a in A], [b.shape[1] for b in B])), M, rtol=1e-10
    )


def test_linear_cka_errors(rng):
    with pytest.raises(RepscopeValueError, match="same number of samples"):
        linear_cka(rng.standard_normal((5, 2)), rng.standard_normal((6, 2)))
    with pytest.raises(RepscopeValueError, match="constant"):
        linear_cka(np.ones((5, 2)), rng.standard_normal((5, 2)))


def test_pca_spectrum_matches_sklearn(rng):
    from sklearn.decomposition import PCA

    X = rng.standard_normal((400, 15)) @ rng.standard_normal((15, 15)) + 50
    spec = pca_spectrum(X)
    ref = PCA().fit(X)
    np.testing.assert_allclose(spec.explained_variance, ref.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(spec.explained_variance_ratio, ref.explained_variance_ratio_, rtol=1e-8)
    assert spec.n_components_90 == int(np.searchsorted(np.cumsum(ref.explained_variance_ratio_), 0.9) + 1)


def test_effective_rank_identities():
    assert effective_rank(np.ones(7)) == pytest.approx(7.0)
    assert effective_rank([5.0, 0, 0]) == pytest.approx(1.0)
    lam = np.array([3.0, 2.0, 1.0, 0.5])
    assert effective_rank(lam) == pytest.approx(effective_rank(10 * lam))
    assert 1.0 < effective_rank(lam) < 4.0
    assert effective_rank(np.zeros(3)) == 0.0


def test_logistic_separability_equals_sklearn_cross_val(rng):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True)
    res = logistic_separability(X, y, n_folds=5, seed=3)
    ref = cross_val_score(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), X, y,
        cv=StratifiedKFold(5, shuffle=True, random_state=3),
    )
    assert res.accuracy == pytest.approx(ref.mean())
    assert res.converged
    assert res.chance == pytest.approx(1 / 3)
    noise = logistic_separability(rng.standard_normal((150, 4)), y)
    assert noise.accuracy < res.accuracy - 0.3


def test_logistic_separability_bad_input(rng):
    X = rng.standard_normal((20, 3))
    with pytest.raises(RepscopeValueError, match="at least 2 distinct classes; got 1"):
        logistic_separability(X, np.zeros(20))
    with pytest.raises(RepscopeValueError, match="needs at least n_folds=5 samples"):
        logistic_separability(X, np.r_[np.zeros(17), np.ones(3)])
    with pytest.raises(RepscopeValueError, match="one entry per sample"):
        logistic_separability(X, np.zeros(10))
