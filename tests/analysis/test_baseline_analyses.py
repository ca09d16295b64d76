"""The analyses the demo runs at the foundation stage: linear CKA, PCA spectra, a
cross-validated logistic probe per layer — each against a reference."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_logistic_probe_per_layer_equals_sklearn_cross_val(rng):
    """``probe_layers`` with the ``LinearProbe`` at one ``C`` (the probe behind ``repscope
    probe --probe logistic``, which replaced the scikit-learn separability loop) scores every
    fold as scikit-learn's cross-validation of its logistic regression does."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from repscope.probe import KFold, LinearProbe, probe_layers

    X, y = load_iris(return_X_y=True)
    noise = rng.standard_normal((150, 4))
    res = probe_layers({"iris": X, "noise": noise}, y,
                       probe=make_pipeline(StandardScaler(), LinearProbe(C=1.0)),
                       protocol=KFold(5, 3))
    ref = cross_val_score(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), X, y,
        cv=StratifiedKFold(5, shuffle=True, random_state=3),
    )
    assert res.layers == ("iris", "noise")
    np.testing.assert_allclose(res.split_scores[0], ref)
    assert res.accuracy[0] == pytest.approx(ref.mean())  # equal folds: pooled = mean
    assert res.ci_low[0] < res.accuracy[0] < res.ci_high[0]
    assert res.chance == pytest.approx(1 / 3)
    assert res.best_layer == "iris"
    assert res.accuracy[1] < res.accuracy[0] - 0.3


def test_logistic_probe_per_layer_bad_input(rng):
    from repscope.probe import KFold, LinearProbe, probe_layers

    feats = {"a": rng.standard_normal((20, 3))}
    probe = LinearProbe(C=1.0)
    with pytest.raises(RepscopeValueError, match="at least 2 distinct classes; got 1"):
        probe_layers(feats, np.zeros(20), probe=probe, protocol=KFold(5))
    with pytest.raises(RepscopeValueError, match=r"KFold\(k=5\) needs at least 5 samples in "
                       "every class; the smallest class has 3"):
        probe_layers(feats, np.r_[np.zeros(17), np.ones(3)], probe=probe, protocol=KFold(5))
    with pytest.raises(RepscopeValueError, match="one entry per sample"):
        probe_layers(feats, np.zeros(10), probe=probe, protocol=KFold(5))
