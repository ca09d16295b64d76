"""LinearProbe: agreement with scikit-learn, path behaviour, backends, distributed, bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from repscope._testing import run_distributed
from repscope.exceptions import RepscopeValueError
from repscope.probe._logistic import C_from_lambda, LinearProbe, PathPointResult, lambda_from_C


def _blobs(rng: np.random.Generator, n: int = 300, d: int = 8, k: int = 4, sep: float = 1.5):
    means = rng.standard_normal((k, d)) * sep
    y = rng.integers(0, k, n)
    A = rng.standard_normal((d, d)) / np.sqrt(d)
    X = means[y] + rng.standard_normal((n, d)) @ A * 2.0 + 3.0  # correlated, off-centre
    return X, y


def _objective(X, y, W, b, lam, sw=None):
    """repscope's convention, written out naively (softmax for W.shape[0] > 1, else sigmoid)."""
    Z = X @ W.T + b
    if W.shape[0] == 1:
        t = (y == np.unique(y)[1]).astype(float)
        per = np.logaddexp(0, Z[:, 0]) - t * Z[:, 0]
    else:
        idx = np.searchsorted(np.unique(y), y)
        per = np.array([np.log(np.exp(z - z.max()).sum()) + z.max() - z[c] for z, c in zip(Z, idx)])
    sw = np.ones(len(y)) if sw is None else sw
    return float(np.mean(sw * per) + 0.5 * lam * np.sum(W * W))


@pytest.mark.parametrize("solver", ["numpy", "torch"])
@pytest.mark.parametrize("C", [0.05, 1.0])
def test_objective_matches_sklearn_logistic_regression(rng, solver, C):
    X, y = _blobs(rng)
    sk = LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(X, y)
    probe = LinearProbe(C=C, solver=solver, tol=1e-7 if solver == "numpy" else 1e-5).fit(X, y)
    lam = lambda_from_C(C, len(y))
    f_sk = _objective(X, y, sk.coef_, sk.intercept_, lam)
    f_rs = _objective(X, y, probe.coef_, probe.intercept_, lam)
    assert abs(f_rs - f_sk) / f_sk < 1e-4
    assert probe.path_[0].objective == pytest.approx(f_rs, rel=1e-5)
    assert np.mean(probe.predict(X) == sk.predict(X)) >= 0.99


def test_binary_uses_one_sigmoid_head_like_sklearn(rng):
    X, y = _blobs(rng, k=2, sep=0.7)
    labels = np.where(y == 1, "yes", "no")
    sk = LogisticRegression(C=0.3, tol=1e-10, max_iter=10000).fit(X, labels)
    probe = LinearProbe(C=0.3, tol=1e-8).fit(X, labels)
    assert probe.coef_.shape == (1, X.shape[1])
    np.testing.assert_allclose(probe.coef_, sk.coef_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(probe.predict_proba(X), sk.predict_proba(X), atol=1e-4)
    assert set(probe.predict(X)) <= {"yes", "no"}


def test_path_weight_norm_grows_as_lambda_decreases(rng):
    X, y = _blobs(rng, sep=2.5)
    probe = LinearProbe(lambdas=np.logspace(0, -5, 8), selection="fixed").fit(
        X, y, X_val=X, y_val=y
    )
    norms = np.linalg.norm(probe.coef_path_, axis=(1, 2))
    assert np.all(np.diff(norms) > 0)
    lams = [p.lam for p in probe.path_]
    assert lams == sorted(lams, reverse=True)
    assert all(isinstance(p, PathPointResult) and p.converged for p in probe.path_)
    assert probe.scores_ is not None
    assert probe.scores_.shape == (8,)
    assert probe.lambda_ in probe.lambdas_


def test_warm_start_that_already_meets_tolerance_is_flagged(rng):
    X, y = _blobs(rng)
    probe = LinearProbe(lambdas=[1e-2, 1e-2 * (1 - 1e-9)], selection="fixed", tol=1e-4).fit(
        X, y, X_val=X, y_val=y
    )
    first, second = probe.path_
    assert first.n_iter > 0
    assert not first.warm_start_met_tol
    assert second.n_iter == 0
    assert second.warm_start_met_tol
    assert second.converged
    cold = LinearProbe(lambdas=[1e-2, 1e-2 * (1 - 1e-9)], path=False, selection="fixed").fit(
        X, y, X_val=X, y_val=y
    )
    assert not any(p.warm_start_met_tol for p in cold.path_)
    assert cold.path_[1].n_iter > 0


def test_warm_started_path_equals_cold_fits(rng):
    X, y = _blobs(rng)
    lams = np.logspace(-1, -4, 4)
    kw = dict(lambdas=lams, selection="fixed", tol=1e-8)
    warm = LinearProbe(**kw).fit(X, y, X_val=X, y_val=y)
    cold = LinearProbe(path=False, **kw).fit(X, y, X_val=X, y_val=y)
    for pw, pc in zip(warm.path_, cold.path_):
        assert pw.objective == pytest.approx(pc.objective, rel=1e-7)
    assert sum(p.n_iter for p in warm.path_) < sum(p.n_iter for p in cold.path_)


def test_nonconvergence_is_reported_not_warned(rng):
    X, y = _blobs(rng)
    probe = LinearProbe(C=100.0, max_iter=2, tol=1e-10).fit(X, y)
    p = probe.path_[0]
    assert not p.converged
    assert p.n_iter == 2
    assert p.grad_max > 1e-10
    assert "max_iter" in p.status


@pytest.mark.parametrize("cw", ["balanced", {0: 3.0, 2: 0.5}])
def test_class_weight_agrees_with_sklearn(rng, cw):
    X, y = _blobs(rng, n=240)
    y[:150] = 0  # imbalanced
    sk = LogisticRegression(C=0.5, class_weight=cw, tol=1e-10, max_iter=10000).fit(X, y)
    probe = LinearProbe(C=0.5, class_weight=cw, tol=1e-8).fit(X, y)
    counts = np.bincount(y)
    if cw == "balanced":
        sw = (len(y) / (4 * counts))[y]
    else:
        sw = np.array([cw.get(c, 1.0) for c in range(4)])[y]
    lam = lambda_from_C(0.5, len(y))
    f_sk = _objective(X, y, sk.coef_, sk.intercept_, lam, sw)
    f_rs = _objective(X, y, probe.coef_, probe.intercept_, lam, sw)
    assert abs(f_rs - f_sk) / f_sk < 1e-6
    np.testing.assert_allclose(probe.predict_proba(X), sk.predict_proba(X), atol=1e-3)


def test_multilabel_sigmoid_heads_match_per_label_sklearn(rng):
    X, _ = _blobs(rng, n=200)
    Wt = rng.standard_normal((3, X.shape[1]))
    Y = ((X - X.mean(0)) @ Wt.T + rng.standard_normal((200, 3)) > 0).astype(int)
    probe = LinearProbe(C=0.2, multilabel=True, tol=1e-8).fit(X, Y)
    assert probe.coef_.shape == (3, X.shape[1])
    for j in range(3):
        sk = LogisticRegression(C=0.2, tol=1e-10, max_iter=10000).fit(X, Y[:, j])
        np.testing.assert_allclose(probe.coef_[j], sk.coef_[0], rtol=1e-3, atol=1e-4)
    assert probe.predict(X).shape == (200, 3)
    assert probe.score(X, Y) > 0.7


def test_numpy_and_torch_inputs_give_the_same_fit(rng):
    X, y = _blobs(rng)
    a = LinearProbe(C=1.0, solver="torch", tol=1e-6).fit(X, y)
    Xt = torch.from_numpy(X.astype(np.float32))
    b = LinearProbe(C=1.0, tol=1e-6).fit(Xt, torch.from_numpy(y))
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-3, atol=1e-3)
    out = b.predict_proba(Xt)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32
    assert isinstance(b.predict(Xt), torch.Tensor)
    c = LinearProbe(C=1.0, solver="numpy", tol=1e-7).fit(X, y)
    np.testing.assert_allclose(c.predict_proba(X), a.predict_proba(X), atol=2e-3)


@pytest.mark.parametrize("selection", ["holdout", "kfold"])
def test_selection_picks_a_grid_value_and_refits(rng, selection):
    X, y = _blobs(rng, n=300, sep=0.6)
    probe = LinearProbe(lambdas=np.logspace(0, -4, 5), selection=selection, cv=3).fit(X, y)
    assert probe.lambda_ in probe.lambdas_
    assert probe.path_[-1].split == "refit"
    assert probe.path_[-1].lam == probe.lambda_
    if selection == "kfold":
        assert probe.scores_.shape == (3, 5)
        assert {p.split for p in probe.path_} == {"fold0", "fold1", "fold2", "refit"}
    else:
        assert probe.scores_.shape == (5,)
    assert pytest.approx(C_from_lambda(probe.lambda_, len(y))) == probe.C_


def test_converters_match_sklearn_convention():
    assert lambda_from_C(2.0, 50) == pytest.approx(0.01)
    assert C_from_lambda(lambda_from_C(0.37, 1234), 1234) == pytest.approx(0.37)
    with pytest.raises(ValueError, match="C must be a positive"):
        lambda_from_C(0.0, 10)


def test_estimator_contract_clone_and_pickle(rng):
    X, y = _blobs(rng)
    probe = LinearProbe(C=1.0)
    assert clone(probe).get_params() == probe.get_params()
    probe.fit(X, y)
    again = pickle.loads(pickle.dumps(probe))
    np.testing.assert_array_equal(again.predict(X), probe.predict(X))


def test_bad_input_errors_and_documented_behaviour(rng):
    X, y = _blobs(rng, n=50)
    with pytest.raises(RepscopeValueError, match="at least 2 distinct classes"):
        LinearProbe(C=1.0).fit(X, np.zeros(50, dtype=int))
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(RepscopeValueError, match="X must be finite"):
        LinearProbe(C=1.0).fit(Xn, y)
    with pytest.raises(RepscopeValueError, match="either C"):
        LinearProbe(C=1.0, lambdas=[0.1]).fit(X, y)
    with pytest.raises(RepscopeValueError, match="needs validation data"):
        LinearProbe(lambdas=[0.1, 0.01], selection="fixed").fit(X, y)
    with pytest.raises(RepscopeValueError, match="lambdas"):
        LinearProbe(lambdas=[0.1, -1.0]).fit(X, y)
    # string labels work
    names = np.array(["a", "b", "c", "d"])[y]
    probe = LinearProbe(C=1.0).fit(X, names)
    assert probe.predict(X).dtype.kind == "U"
    # more classes than samples per class: every class a single sample -> fits and memorises
    Xs = rng.standard_normal((3, 5))
    one_each = LinearProbe(C=100.0).fit(Xs, [10, 20, 30])
    np.testing.assert_array_equal(one_each.predict(Xs), [10, 20, 30])
    with pytest.raises(ValueError, match="expected X with 8 columns"):
        probe.predict(np.zeros((2, 3)))


def _dist_worker(rank: int, world: int, X, y):
    import torch.distributed as dist

    rows = np.arange(rank, len(y), world)
    probe = LinearProbe(C=0.5, solver="torch", tol=1e-6).fit(
        torch.from_numpy(X[rows]), y[rows], group=dist.group.WORLD
    )
    return probe.coef_, probe.intercept_, probe.path_[0].n_iter


def test_two_process_all_reduce_fit_equals_single_process(rng):
    X, y = _blobs(rng, n=200)
    X = X.astype(np.float32)
    single = LinearProbe(C=0.5, solver="torch", tol=1e-6).fit(torch.from_numpy(X), y)
    out = run_distributed(_dist_worker, X, y, world_size=2)
    (c0, b0, _), (c1, _b1, _) = out[0], out[1]
    np.testing.assert_array_equal(c0, c1)
    np.testing.assert_allclose(c0, single.coef_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(b0, single.intercept_, rtol=1e-3, atol=1e-4)
