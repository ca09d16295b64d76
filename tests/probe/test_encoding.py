"""EncodingModel: per-target ridge == scikit-learn RidgeCV(alpha_per_target=True); k-fold and
GCV paths == brute force; thousands of targets; held-out R^2 / Pearson r; errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.metrics import r2_score

from repscope.exceptions import RepscopeValueError
from repscope.probe._encoding import EncodingModel

ALPHAS = np.logspace(-2, 4, 9)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _data(rng, n=300, d=20, t=40, shift=3.0):
    X = rng.standard_normal((n, d)) + shift
    W = rng.standard_normal((d, t)) * rng.random(t) * 0.3
    Y = X @ W + rng.standard_normal((n, t)) * (0.2 + 3 * rng.random(t)) + 1.0
    return X, Y


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_loo_selection_equals_sklearn_ridgecv_alpha_per_target(rng, fit_intercept):
    X, Y = _data(rng)
    ours = EncodingModel(ALPHAS, cv="loo", fit_intercept=fit_intercept).fit(X, Y)
    ref = RidgeCV(alphas=ALPHAS, alpha_per_target=True, fit_intercept=fit_intercept).fit(X, Y)
    np.testing.assert_array_equal(ours.alpha_, ref.alpha_)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-8, atol=1e-8)
    assert len(np.unique(ours.alpha_)) > 1  # the test data really need several alphas


def test_kfold_errors_equal_brute_force_refits(rng):
    X, Y = _data(rng, n=120, t=15)
    ours = EncodingModel(ALPHAS, cv=4, random_state=3).fit(X, Y)
    ids = np.empty(len(X), int)
    ids[np.random.default_rng(3).permutation(len(X))] = np.arange(len(X)) % 4
    sse = np.zeros((len(ALPHAS), Y.shape[1]))
    for f in range(4):
        tr, va = ids != f, ids == f
        for i, a in enumerate(ALPHAS):
            sse[i] += ((Ridge(alpha=a).fit(X[tr], Y[tr]).predict(X[va]) - Y[va]) ** 2).sum(0)
    np.testing.assert_allclose(ours.cv_mse_, sse / len(X), rtol=1e-9)
    np.testing.assert_array_equal(ours.alpha_, ALPHAS[sse.argmin(0)])
    # the refit uses each target's alpha on all rows
    j = 3
    ref = Ridge(alpha=ours.alpha_[j]).fit(X, Y[:, j])
    np.testing.assert_allclose(ours.coef_[j], ref.coef_, rtol=1e-8)


def test_gcv_equals_explicit_hat_matrix_formula(rng):
    X, Y = _data(rng, n=60, d=8, t=5)
    ours = EncodingModel(ALPHAS, cv="gcv").fit(X, Y)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    ref = np.zeros((len(ALPHAS), Y.shape[1]))
    for i, a in enumerate(ALPHAS):
        H = Xc @ np.linalg.solve(Xc.T @ Xc + a * np.eye(8), Xc.T) + 1.0 / len(X)
        R = Yc - (H - 1.0 / len(X)) @ Yc
        ref[i] = (R**2).mean(0) / (1 - np.trace(H) / len(X)) ** 2
    np.testing.assert_allclose(ours.cv_mse_, ref, rtol=1e-9)


def test_shared_alpha_minimises_the_summed_error(rng):
    X, Y = _data(rng)
    ours = EncodingModel(ALPHAS, cv="loo", per_target_alpha=False).fit(X, Y)
    ref = RidgeCV(alphas=ALPHAS).fit(X, Y)
    assert np.all(ours.alpha_ == ref.alpha_)


def test_thousands_of_targets_at_once(rng):
    X, _ = _data(rng, n=400, d=30, t=1)
    W = rng.standard_normal((30, 3000)) * 0.2
    Y = X @ W + rng.standard_normal((400, 3000))
    model = EncodingModel(ALPHAS, cv=5).fit(X[:300], Y[:300])
    scores = model.score_targets(X[300:], Y[300:])
    assert scores["r2"].shape == scores["pearson_r"].shape == (3000,)
    assert np.median(scores["pearson_r"]) > 0.5
    np.testing.assert_allclose(scores["r2"], r2_score(Y[300:], model.predict(X[300:]),
                                                      multioutput="raw_values"), rtol=1e-10)
    for j in (0, 1234, 2999):
        assert scores["pearson_r"][j] == pytest.approx(
            pearsonr(Y[300:, j], model.predict(X[300:])[:, j]).statistic, rel=1e-9)


def test_torch_input_matches_numpy_and_keeps_backend(rng):
    torch = pytest.importorskip("torch")
    X, Y = _data(rng, t=6)
    a = EncodingModel(ALPHAS, cv=3).fit(X, Y)
    b = EncodingModel(ALPHAS, cv=3).fit(torch.as_tensor(X), torch.as_tensor(Y))
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-9)
    pred = b.predict(torch.as_tensor(X))
    assert isinstance(pred, torch.Tensor)
    np.testing.assert_allclose(pred.numpy(), a.predict(X), rtol=1e-9)


def test_constant_target_scores_are_finite(rng):
    X, Y = _data(rng, t=3)
    Y[:, 1] = 2.0
    model = EncodingModel(ALPHAS, cv="gcv").fit(X, Y)
    s = model.score_targets(X, Y)
    assert np.isfinite(s["r2"]).all()
    assert s["pearson_r"][1] == 0.0


@pytest.mark.parametrize(("make", "args", "match"), [
    (lambda: EncodingModel(cv=1), None, "'cv' parameter of EncodingModel"),
    (lambda: EncodingModel(cv="kfold"), None, "'cv' parameter of EncodingModel"),
    (lambda: EncodingModel(alphas=()), None, "'alphas' parameter of EncodingModel"),
    (lambda: EncodingModel(), "rows", "same number of samples"),
    (lambda: EncodingModel(), "nan", "Y must be finite"),
])
def test_bad_input_raises(rng, make, args, match):
    X, Y = _data(rng, n=30, t=2)
    if args == "rows":
        Y = Y[:-1]
    elif args == "nan":
        Y[3, 0] = np.nan
    with pytest.raises(RepscopeValueError, match=match):
        make().fit(X, Y)
