"""Kernel ridge predictivity (KRR-ST): RBF kernel, ``lambda = 1e-6 tr K`` taken exactly."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.exceptions import RepscopeValueError
from repscope.similarity import (
    get_measure,
    kernel_ridge_predictivity,
    measure_info,
    ridge_predictivity,
)


def _naive_krr_r2(X, Y, *, folds, alpha, gamma=None, kernel="rbf"):
    """Plain numpy: per fold, K_rs (K_ss + alpha tr(K_ss) I)^{-1} (Y_s - mean) + mean."""
    sse = sst = 0.0
    for f in range(folds):
        te = np.array([i % folds == f for i in range(len(X))])
        Xs, Ys, Xr, Yr = X[~te], Y[~te], X[te], Y[te]
        if kernel == "rbf":
            if gamma is None:
                d = [np.sum((Xs[i] - Xs[j]) ** 2) for i in range(len(Xs)) for j in range(i + 1, len(Xs))]
                g = 1.0 / (2.0 * np.median(d))
            else:
                g = gamma
            Kss = np.array([[np.exp(-g * np.sum((a - b) ** 2)) for b in Xs] for a in Xs])
            Krs = np.array([[np.exp(-g * np.sum((a - b) ** 2)) for b in Xs] for a in Xr])
        else:
            m = Xs.mean(0)
            Kss, Krs = (Xs - m) @ (Xs - m).T, (Xr - m) @ (Xs - m).T
        lam = alpha * np.trace(Kss)
        pred = Krs @ np.linalg.solve(Kss + lam * np.eye(len(Xs)), Ys - Ys.mean(0)) + Ys.mean(0)
        sse += np.sum((Yr - pred) ** 2)
        sst += np.sum((Yr - Yr.mean(0)) ** 2)
    return 1.0 - sse / sst


def _pair(seed=0, n=53, dx=4, dy=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dx)) * [2.0, 1.0, 0.5, 0.3] + 1.0
    Y = np.sin(X @ rng.standard_normal((dx, dy))) + 0.1 * rng.standard_normal((n, dy))
    return X, Y


@pytest.mark.parametrize("alpha", [1e-6, 1e-2])
@pytest.mark.parametrize("gamma", [None, 0.3])
def test_rbf_kernel_ridge_equals_naive_numpy_with_lambda_from_the_trace(alpha, gamma):
    X, Y = _pair()
    ref = _naive_krr_r2(X, Y, folds=5, alpha=alpha, gamma=gamma)
    got = kernel_ridge_predictivity(X, Y, alpha=alpha, gamma=gamma, folds=5)
    assert got == pytest.approx(ref, rel=1e-8, abs=1e-10)


def test_lambda_is_the_exact_trace_rule_not_a_per_dimension_approximation():
    # alpha = 1 makes lambda = tr K a large penalty: a scale of it (tr K / d, tr K / n) differs
    X, Y = _pair(seed=3)
    exact = _naive_krr_r2(X, Y, folds=4, alpha=1.0, gamma=0.2)
    assert kernel_ridge_predictivity(X, Y, alpha=1.0, gamma=0.2, folds=4) == pytest.approx(exact, rel=1e-9)
    other = _naive_krr_r2(X, Y, folds=4, alpha=1.0 / X.shape[1], gamma=0.2)
    assert abs(exact - other) > 1e-2


def test_linear_kernel_equals_primal_ridge_predictivity_at_alpha_times_d():
    X, Y = _pair(seed=1, n=60)
    a = 1e-3
    dual = kernel_ridge_predictivity(X, Y, kernel="linear", alpha=a, folds=5)
    assert dual == pytest.approx(_naive_krr_r2(X, Y, folds=5, alpha=a, kernel="linear"), rel=1e-9)
    assert dual == pytest.approx(ridge_predictivity(X, Y, alpha=a * X.shape[1], folds=5), rel=1e-9)


def test_rbf_sees_a_nonlinear_map_the_linear_ridge_misses():
    rng = np.random.default_rng(2)
    X = rng.uniform(-2, 2, (200, 2))
    Y = (X**2) @ np.array([[1.0], [1.0]]) + 0.05 * rng.standard_normal((200, 1))
    assert kernel_ridge_predictivity(X, Y) > 0.95
    assert ridge_predictivity(X, Y) < 0.1


def test_registered_and_directions():
    X, Y = _pair(seed=4)
    info = measure_info("kernel_ridge_predictivity")
    assert info["higher_is_better"] and not info["symmetric"]
    m = get_measure("kernel_ridge_predictivity")
    fwd, bwd = m(X, Y), m(X, Y, direction="backward")
    assert m(X, Y, direction="mean") == pytest.approx(0.5 * (fwd + bwd))
    assert bwd == pytest.approx(kernel_ridge_predictivity(Y, X))
    assert abs(fwd - bwd) > 1e-3


def test_bad_options_are_named():
    X, Y = _pair()
    with pytest.raises(RepscopeValueError, match="'kernel' parameter of kernel_ridge_predictivity"):
        kernel_ridge_predictivity(X, Y, kernel="poly")
    with pytest.raises(RepscopeValueError, match="'folds' parameter of kernel_ridge_predictivity must be >= 2"):
        kernel_ridge_predictivity(X, Y, folds=1)
    with pytest.raises(RepscopeValueError, match="'gamma' parameter of kernel_ridge_predictivity"):
        kernel_ridge_predictivity(X, Y, gamma=0.0)
    with pytest.raises(RepscopeValueError, match="at least 2 samples in each of its 5 folds"):
        kernel_ridge_predictivity(X[:8], Y[:8], folds=5)
    Xd = np.repeat(X[:1], 20, axis=0)
    Xd[0] += 1.0
    with pytest.raises(RepscopeValueError, match="Pass gamma explicitly"):
        kernel_ridge_predictivity(Xd, Y[:20], folds=2)


def test_cli_similarity_runs_the_kernel_ridge_measure_into_the_database(tmp_path):
    import json

    from click.testing import CliRunner
    from safetensors.numpy import save_file

    from repscope.cli import RepscopeGroup
    from repscope.cli._common import Settings
    from repscope.cli.similarity import similarity
    from repscope.db import ResultsDB

    X, Y = _pair(seed=5, n=80)
    pa, pb = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"x": X.astype(np.float32)}, str(pa))
    save_file({"y": Y.astype(np.float32)}, str(pb))
    app = RepscopeGroup(name="repscope")
    app.add_command(similarity)
    settings = Settings(db_path=str(tmp_path / "results.db"), seed=0)
    res = CliRunner().invoke(app, ["similarity", str(pa), str(pb), "--measure",
                                   "kernel_ridge_predictivity", "--json"], obj=settings)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    ref = kernel_ridge_predictivity(X.astype(np.float32), Y.astype(np.float32))
    assert out["matrix"][0][0] == pytest.approx(ref, abs=1e-6)
    with ResultsDB(settings.db_path) as db:
        recs = list(db.query(analysis="similarity_matrix"))
    assert recs[0].params["measure"] == "kernel_ridge_predictivity"
