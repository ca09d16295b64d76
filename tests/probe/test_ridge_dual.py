"""RidgeProbe's dual (n x n Gram) path for n < d: equal to the primal path, to scikit-learn's
RidgeClassifierCV (same alphas, same choice, same predictions) and to brute-force criteria;
the automatic choice; streaming, torch and float32 input; real Lite0 features."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier, RidgeClassifierCV

from repscope.exceptions import RepscopeValueError
from repscope.probe._ridge import RidgeProbe
from repscope.stats import Moments


@pytest.fixture(autouse=True)
def _one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def _wide(rng, n=60, d=150, k=4, shift=3.0):
    """Fewer samples than features: class means plus correlated noise, off-centre."""
    A = rng.standard_normal((d, d)) / np.sqrt(d)
    means = rng.standard_normal((k, d)) * 0.4
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)
    return means[y] + rng.standard_normal((n, d)) @ A + shift, y


@pytest.mark.parametrize("selection", ["gcv", "loo", "kfold", "holdout"])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("k", [2, 5])
def test_dual_path_equals_primal_path(rng, selection, fit_intercept, k):
    X, y = _wide(rng, k=k)
    params = dict(alphas=ALPHAS, selection=selection, fit_intercept=fit_intercept, cv=3)
    primal = RidgeProbe(solver="primal", **params).fit(X, y)
    dual = RidgeProbe(**params).fit(X, y)
    assert (primal.solver_, dual.solver_) == ("primal", "dual")
    assert dual.alpha_ == primal.alpha_
    # the primal GCV's residual sum is a difference of near-equal terms at the smallest
    # alphas (the dual equals the explicit hat matrix to 1e-8: test_dual_criteria_...)
    np.testing.assert_allclose(dual.path_, primal.path_, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(dual.coef_, primal.coef_, rtol=1e-7,
                               atol=1e-9 * np.abs(primal.coef_).max())
    np.testing.assert_allclose(dual.intercept_, primal.intercept_, atol=1e-8)
    np.testing.assert_array_equal(dual.predict(X), primal.predict(X))


def test_dual_equals_ridge_classifier_cv(rng):
    X, y = _wide(rng, n=140, d=200, k=6)
    X, y, Xte = X[:90], y[:90], X[90:]
    ours = RidgeProbe(alphas=ALPHAS, selection="loo").fit(X, y)
    ref = RidgeClassifierCV(alphas=ALPHAS).fit(X, y)
    assert ours.solver_ == "dual"
    assert ours.alpha_ == ref.alpha_
    assert ours.path_.max() == pytest.approx(ref.best_score_, rel=1e-9)
    np.testing.assert_array_equal(ours.predict(Xte), ref.predict(Xte))
    np.testing.assert_allclose(ours.decision_function(Xte), ref.decision_function(Xte),
                               atol=1e-8)


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_dual_single_alpha_equals_ridge_classifier(rng, k, fit_intercept):
    X, y = _wide(rng, k=k)
    ours = RidgeProbe(alphas=(3.0,), solver="dual", fit_intercept=fit_intercept).fit(X, y)
    ref = RidgeClassifier(alpha=3.0, fit_intercept=fit_intercept).fit(X, y)
    np.testing.assert_allclose(ours.decision_function(X), ref.decision_function(X),
                               rtol=1e-7, atol=1e-8)


def test_dual_criteria_equal_brute_force(rng):
    """LOO from refits without each row; GCV from the explicit n x n hat matrix."""
    X, y = _wide(rng, n=30, d=70, k=3)
    alphas = (0.05, 2.0, 300.0)
    classes = np.unique(y)
    T = -np.ones((len(y), len(classes)))
    T[np.arange(len(y)), np.searchsorted(classes, y)] = 1
    loo_ref, gcv_ref = [], []
    Xc = X - X.mean(0)
    for a in alphas:
        err = 0.0
        for i in range(len(X)):
            keep = np.arange(len(X)) != i
            m = RidgeClassifier(alpha=a).fit(X[keep], y[keep])
            err += ((T[i] - m.decision_function(X[i:i + 1])[0]) ** 2).sum()
        loo_ref.append(-err / T.size)
        H = Xc @ np.linalg.solve(Xc.T @ Xc + a * np.eye(X.shape[1]), Xc.T) + 1.0 / len(X)
        R = T - H @ T
        gcv_ref.append(-((R**2).sum() / T.size) / (1 - np.trace(H) / len(X)) ** 2)
    loo = RidgeProbe(alphas=alphas, selection="loo").fit(X, y)
    gcv = RidgeProbe(alphas=alphas, selection="gcv").fit(X, y)
    assert loo.solver_ == gcv.solver_ == "dual"
    np.testing.assert_allclose(loo.path_, loo_ref, rtol=1e-8)
    np.testing.assert_allclose(gcv.path_, gcv_ref, rtol=1e-8)


def test_dual_multilabel_equals_primal(rng):
    X, _ = _wide(rng, n=70, d=120)
    Y = (X[:, :3] - X[:, :3].mean(0) + rng.standard_normal((70, 3)) > 0).astype(int)
    for selection in ("loo", "kfold"):
        p = RidgeProbe(alphas=ALPHAS, multilabel=True, selection=selection,
                       solver="primal").fit(X, Y)
        d = RidgeProbe(alphas=ALPHAS, multilabel=True, selection=selection).fit(X, Y)
        assert d.solver_ == "dual"
        assert d.alpha_ == p.alpha_
        np.testing.assert_allclose(d.path_, p.path_, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(d.decision_function(X), p.decision_function(X), atol=1e-8)


def test_auto_rule_and_forced_solver(rng):
    X, y = _wide(rng, n=40, d=30)  # n >= d: primal
    assert RidgeProbe().fit(X, y).solver_ == "primal"
    assert RidgeProbe().fit(X[:30], y[:30]).solver_ == "primal"  # n == d: primal
    assert RidgeProbe().fit(X[:29], y[:29]).solver_ == "dual"  # n < d
    forced = RidgeProbe(solver="dual").fit(X, y)  # a dual fit at n > d is still exact
    primal = RidgeProbe(solver="primal").fit(X, y)
    assert forced.solver_ == "dual"
    np.testing.assert_allclose(forced.decision_function(X), primal.decision_function(X),
                               atol=1e-8)
    assert RidgeProbe(solver="primal").fit(X[:29], y[:29]).solver_ == "primal"


def test_dual_bad_input():
    X = np.random.default_rng(0).standard_normal((20, 50))
    y = np.repeat([0, 1], 10)
    with pytest.raises(RepscopeValueError, match="solver"):
        RidgeProbe(solver="kernel").fit(X, y)
    with pytest.raises(RepscopeValueError, match="fit_moments solves the primal form"):
        RidgeProbe(solver="dual").fit_moments(Moments().update(X, labels=y))
    with pytest.raises(RepscopeValueError, match="training fold has 1 samples"):
        RidgeProbe(selection="kfold", cv=2, solver="dual").fit(X[:2], y[9:11])
    auto = RidgeProbe().fit_moments(Moments().update(X, labels=y))  # moments: primal
    assert auto.solver_ == "primal"


def test_dual_from_store_and_torch_equal_in_memory(tmp_path, rng):
    import torch

    from repscope.store import FeatureStore

    X, y = _wide(rng, n=80, d=120, k=3)
    X = X.astype(np.float32)
    store = FeatureStore.create(tmp_path / "store", model_id="synthetic")
    for part in np.array_split(np.arange(len(X)), 3):
        store.append({"layer": X[part]}, {"label": y[part]})
    store = FeatureStore.open(tmp_path / "store")
    mem = RidgeProbe(alphas=ALPHAS, selection="loo").fit(X, y)
    streamed = RidgeProbe.from_store(store, "layer", labels="label", alphas=ALPHAS,
                                     selection="loo", batch_size=30)
    on_torch = RidgeProbe(alphas=ALPHAS, selection="loo").fit(torch.from_numpy(X), y)
    for other in (streamed, on_torch):
        assert other.solver_ == "dual"
        assert other.alpha_ == mem.alpha_
        np.testing.assert_allclose(other.path_, mem.path_, rtol=1e-6)
        np.testing.assert_allclose(other.decision_function(X), mem.decision_function(X),
                                   rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def lite0_bn1(lite0_mnist):
    """Real EfficientNet-Lite0 ``_bn1`` features (1,280-d) of 600 MNIST training images and
    400 held-out ones: the benchmark's n < d case."""
    X = np.asarray(lite0_mnist.X["_bn1"], dtype=np.float32)
    y = np.asarray(lite0_mnist.y)
    perm = np.random.default_rng(0).permutation(len(y))  # the rows come sorted by class
    tr, te = perm[:600], perm[600:]
    return X[tr], y[tr], X[te], y[te]


@pytest.mark.parametrize(("alphas", "rtol"), [(ALPHAS, 1e-7), ((10.0, 100.0, 1e3, 1e4, 1e5), 5e-4)])
def test_dual_on_real_features_matches_sklearn_and_primal(lite0_bn1, alphas, rtol):
    """Real features (float32, rank-deficient Gram): the dual path picks scikit-learn's alpha
    with the same held-out predictions, and its LOO path agrees with the float64 primal path.
    The full grid's smallest alphas sit near float32 rounding of the spectrum (in float32
    the LOO error at alpha = 0.01 is 4% off): that grid goes to float64; the second runs in
    float32."""
    Xtr, ytr, Xte, yte = lite0_bn1
    ours = RidgeProbe(alphas=alphas, selection="loo").fit(Xtr, ytr)
    ref = RidgeClassifierCV(alphas=alphas).fit(Xtr.astype(np.float64), ytr)
    primal = RidgeProbe(alphas=alphas, selection="loo", solver="primal").fit(
        Xtr.astype(np.float64), ytr)
    assert ours.solver_ == "dual"
    assert ours.alpha_ == ref.alpha_ == primal.alpha_
    agree = np.mean(ours.predict(Xte) == ref.predict(Xte))
    assert agree >= 0.995
    assert ours.score(Xte, yte) > 0.85
    np.testing.assert_allclose(ours.path_, primal.path_, rtol=rtol)


def test_dual_gcv_exact_at_alphas_far_below_the_spectrum(rng):
    """GCV's residual sum is ``||a (K_c + a I)^{-1} T_c||^2`` and ``n - df`` the trace of
    ``a (K_c + a I)^{-1}`` less 1: with ``alpha`` a millionth of the spectrum the old
    ``tss - sum (2 f - s f^2) C^2`` and ``1 - df / n`` were differences of near-equal terms;
    the residual filters ``a / (s + a)`` keep both exact."""
    X, y = _wide(rng, n=40, d=90, k=3)
    Xc = X - X.mean(0)
    Kc = Xc @ Xc.T
    top = np.linalg.eigvalsh(Kc)[-1]
    alphas = top * np.array([1e-6, 1e-5, 1e-3])
    classes = np.unique(y)
    T = -np.ones((len(y), len(classes)))
    T[np.arange(len(y)), np.searchsorted(classes, y)] = 1
    Tc = T - T.mean(0)
    ref = []
    for a in alphas:
        G = a * np.linalg.inv(Kc + a * np.eye(len(y)))  # I - hat, but for the intercept
        R = G @ Tc
        rest = np.trace(G) - 1.0  # n - df: the direction 1 has G = 1 and is fitted
        ref.append(-((R**2).sum() / T.size) / (rest / len(y)) ** 2)
    gcv = RidgeProbe(alphas=alphas, selection="gcv").fit(X, y)
    assert gcv.solver_ == "dual"
    np.testing.assert_allclose(gcv.path_, ref, rtol=1e-5)


def test_float32_stays_single_on_full_rank_features_only(rng, monkeypatch):
    """float32 features of full rank (every eigenvalue far above float32 rounding of the
    largest) keep the float32 eigh even at alpha = 0.01 and match the float64 fit; a
    rank-deficient Gram with that alpha is redone in float64."""
    from repscope.probe._ridge_dual import DualGram

    calls = []
    original = DualGram.in_float64

    def spy(self):
        calls.append(self.K.shape[0])
        return original(self)

    monkeypatch.setattr(DualGram, "in_float64", spy)
    X, y = _wide(rng, n=120, d=400, k=4, shift=20.0)
    X32 = X.astype(np.float32)
    for selection in ("gcv", "loo"):
        single = RidgeProbe(selection=selection).fit(X32, y)  # default grid from 0.01
        assert calls == []
        double = RidgeProbe(selection=selection).fit(X32.astype(np.float64), y)
        assert single.alpha_ == double.alpha_
        np.testing.assert_allclose(single.path_, double.path_, rtol=1e-5)
        np.testing.assert_allclose(single.decision_function(X32), double.decision_function(X32),
                                   rtol=1e-4, atol=1e-4)
    low_rank = (X32[:, :30] @ rng.standard_normal((30, 400))).astype(np.float32)
    RidgeProbe(selection="loo").fit(low_rank, y)
    assert calls == [120]


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("t", [1, 4])
@pytest.mark.parametrize("single", [False, True])
def test_tridiagonal_form_equals_the_eigenbasis(rng, fit_intercept, t, single):
    """GCV and the dual coefficients from the tridiagonal form (``sytrd``, ``sterf`` and
    tridiagonal solves, no eigenvectors) equal those of the float64 ``eigh``: to 1e-10 in
    float64; in float32 within the documented bound (each filter within about 1/64, see
    ``SINGLE_SAFE``; the uncentred Gram with an offset of 3 is the ill-conditioned case)."""
    from repscope.probe._ridge_dual import DualGram, dual_problem, tridiagonal_problem

    X, _ = _wide(rng, n=70, d=160, k=max(t, 2))
    gram = DualGram.of(X.astype(np.float32) if single else X, center=fit_intercept)
    T = rng.choice([-1.0, 1.0], size=(70, t))
    alphas = np.array([1e-1, 1.0, 10.0, 1e3, 1e5])
    eig = dual_problem(gram.in_float64().K, T, fit_intercept=fit_intercept)
    tri = tridiagonal_problem(gram.K, T, fit_intercept=fit_intercept, single=single)
    assert tri.solvable(alphas.min()) and tri.single_ok(alphas.min())
    rtol = 2e-2 if single else 1e-10
    np.testing.assert_allclose(tri.bounds, eig.values[[0, -1]], rtol=rtol,
                               atol=rtol * eig.values.max())
    np.testing.assert_allclose(tri.gcv(alphas, fit_intercept=fit_intercept),
                               eig.gcv(alphas, fit_intercept=fit_intercept), rtol=rtol)
    for a in (1e-1, 1e3):
        ref = eig.dual_coefs(a)
        np.testing.assert_allclose(tri.dual_coefs(a), ref, rtol=rtol,
                                   atol=rtol * np.abs(ref).max())


def test_gcv_on_a_singular_gram_at_alpha_zero_takes_the_eigh(rng, monkeypatch):
    """Where ``T + alpha I`` is not safely positive definite (rank-deficient rows, alpha 0),
    GCV falls back to the eigenbasis and its pseudo-inverse filters: the fit equals the
    primal path's."""
    import repscope.probe._ridge as ridge_mod

    calls = []
    original = ridge_mod.dual_problem

    def spy(*args, **kwargs):
        calls.append(kwargs.get("single"))
        return original(*args, **kwargs)

    monkeypatch.setattr(ridge_mod, "dual_problem", spy)
    X, y = _wide(rng, n=50, d=120, k=3)
    low_rank = X[:, :20] @ rng.standard_normal((20, 120))
    params = dict(alphas=(0.0, 1e-3, 1.0, 100.0), selection="gcv")
    dual = RidgeProbe(**params).fit(low_rank, y)
    assert dual.solver_ == "dual" and calls == [False]
    primal = RidgeProbe(solver="primal", **params).fit(low_rank, y)
    assert dual.alpha_ == primal.alpha_
    np.testing.assert_allclose(dual.decision_function(low_rank),
                               primal.decision_function(low_rank), rtol=1e-6, atol=1e-8)
    calls.clear()
    RidgeProbe(alphas=(1e-3, 1.0, 100.0), selection="gcv").fit(X, y)  # full rank: no eigh
    assert calls == []
