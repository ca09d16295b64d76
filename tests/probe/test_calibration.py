"""Calibration metrics, temperature scaling and head diagnostics (+ the LP-FT claim on real features)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from repscope.exceptions import RepscopeValueError
from repscope.probe._calibration import (
    CalibrationResult,
    TemperatureScaler,
    brier_score,
    calibration_report,
    ece,
    fit_temperature,
    head_diagnostics,
    nll,
    reliability_diagram,
)
from repscope.probe._logistic import LinearProbe


def _softmax(Z):
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def _ece_naive(P, y, n_bins):
    total = 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        members = [i for i in range(len(y)) if (lo < P[i].max() <= hi) or (k == 0 and P[i].max() == 0)]
        if members:
            conf = np.mean([P[i].max() for i in members])
            acc = np.mean([P[i].argmax() == y[i] for i in members])
            total += len(members) / len(y) * abs(acc - conf)
    return total


def _sample(seed, n=120, k=4, scale=3.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    Z = scale * rng.standard_normal((n, k)) + 2.0 * np.eye(k)[y]
    return Z, y


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n_bins=st.sampled_from([1, 5, 15]))
def test_ece_nll_brier_equal_naive_references(seed, n_bins):
    Z, y = _sample(seed)
    P = _softmax(Z)
    assert ece(P, y, n_bins) == pytest.approx(_ece_naive(P, y, n_bins), abs=1e-12)
    assert nll(P, y) == pytest.approx(-np.mean([np.log(P[i, y[i]]) for i in range(len(y))]))
    ref = np.mean([sum((P[i, k] - (k == y[i])) ** 2 for k in range(P.shape[1]))
                   for i in range(len(y))])
    assert brier_score(P, y) == pytest.approx(ref)


def test_reliability_diagram_counts_and_bin_edges():
    P = np.array([[0.5, 0.5], [0.6, 0.4], [0.95, 0.05], [1.0, 0.0]])
    y = np.array([0, 1, 0, 0])
    d = reliability_diagram(P, y, n_bins=2)
    assert d.counts == (1, 3)  # 0.5 falls in (0, 0.5]; 0.6, 0.95, 1.0 in (0.5, 1]
    assert d.bin_edges == (0.0, 0.5, 1.0)
    assert d.accuracy[1] == pytest.approx(2 / 3)
    assert d.confidence[1] == pytest.approx((0.6 + 0.95 + 1.0) / 3)
    assert d.ece == pytest.approx(ece(P, y, 2))
    assert d.to_dict()["type"] == "ReliabilityDiagramResult"
    empty = reliability_diagram(P, y, n_bins=10)
    assert np.isnan(empty.accuracy[0])
    assert sum(empty.counts) == 4


def test_fitted_temperature_minimises_nll_on_a_grid():
    Z, y = _sample(3, n=400, scale=6.0)
    T = fit_temperature(Z, y)
    grid = np.exp(np.linspace(np.log(0.05), np.log(50), 2001))
    nlls = [nll(_softmax(Z / t), y) for t in grid]
    assert pytest.approx(grid[int(np.argmin(nlls))], rel=5e-3) == T
    assert nll(_softmax(Z / T), y) <= min(nlls) + 1e-9


def test_temperature_scaler_keeps_predictions_and_backend():
    Z, y = _sample(5, n=300, scale=8.0)
    ts = TemperatureScaler().fit(Z, y)
    assert ts.temperature_ > 1.0  # noisy large logits are over-confident
    P = ts.predict_proba(Z)
    np.testing.assert_array_equal(P.argmax(axis=1), Z.argmax(axis=1))
    Pt = ts.predict_proba(torch.from_numpy(Z.astype(np.float32)))
    assert isinstance(Pt, torch.Tensor)
    assert Pt.dtype == torch.float32
    np.testing.assert_allclose(Pt.numpy(), P, atol=1e-5)
    np.testing.assert_allclose(ts.transform(Z), Z / ts.temperature_)
    assert ece(P, y) < ece(_softmax(Z), y)


def test_calibration_report_before_after():
    Z, y = _sample(7, n=600, scale=8.0)
    rep = calibration_report(Z[:300], y[:300], Z[300:], y[300:], n_bins=10)
    assert isinstance(rep, CalibrationResult)
    assert rep.ece_after < rep.ece_before
    assert rep.nll_after < rep.nll_before
    assert rep.temperature == pytest.approx(fit_temperature(Z[:300], y[:300]))
    assert rep.ece_before == pytest.approx(ece(_softmax(Z[300:]), y[300:], 10))
    assert rep.to_dict()["diagram_after"]["counts"] == list(rep.diagram_after.counts)


def test_head_diagnostics_equal_naive_formulas(rng):
    X = rng.standard_normal((50, 6))
    W, b = rng.standard_normal((3, 6)), rng.standard_normal(3)
    y = rng.integers(0, 3, 50)
    hd = head_diagnostics(W, b, X, y)
    Z = X @ W.T + b
    R = _softmax(Z) - np.eye(3)[y]
    margins = [Z[i, y[i]] - max(Z[i, k] for k in range(3) if k != y[i]) for i in range(50)]
    assert hd.head_norm == pytest.approx(np.sqrt((W**2).sum()))
    assert hd.mean_margin == pytest.approx(np.mean(margins))
    assert hd.ce_residual_norm == pytest.approx(np.sqrt((R**2).sum() / 50))
    assert hd.ce_grad_norm == pytest.approx(np.linalg.norm(R.T @ X) / 50)


def test_bad_calibration_input_errors():
    Z, y = _sample(1)
    with pytest.raises(RepscopeValueError, match="probabilities in"):
        ece(Z, y)
    with pytest.raises(RepscopeValueError, match="column indices"):
        nll(_softmax(Z), y + 10)
    with pytest.raises(RepscopeValueError, match="bounds must satisfy"):
        fit_temperature(Z, y, bounds=(2.0, 1.0))
    with pytest.raises(RepscopeValueError, match="X must be finite"):
        head_diagnostics(np.ones((3, 2)), np.zeros(3), np.array([[np.nan, 1.0]]), [0])


def test_temperature_scaling_fixes_an_unregularized_head_on_real_features(lite0_mnist):
    """LP-FT (Tomihari & Sato 2024): weak L2 -> head norm grows, ECE rises; temperature
    scaling fitted on validation data lowers the test ECE again."""
    X, y = lite0_mnist.X["_bn1"], np.asarray(lite0_mnist.y)
    perm = np.random.default_rng(0).permutation(len(y))
    tr, va, te = perm[:500], perm[500:750], perm[750:]
    var = float(X[tr].var(axis=0).mean())
    probe = LinearProbe(lambdas=var * np.array([1e-2, 1e-4, 1e-6]), selection="fixed",
                        tol=1e-6, max_iter=200).fit(X[tr], y[tr], X_val=X[va], y_val=y[va])
    norms = [p.weight_norm for p in probe.path_]
    assert norms[0] < norms[1] < norms[2]
    heads = list(zip(probe.coef_path_, probe.intercept_path_))
    reps = [calibration_report(X[va] @ W.T + b, y[va], X[te] @ W.T + b, y[te]) for W, b in heads]
    regularized, weakest = reps[0], reps[-1]
    assert weakest.ece_before > regularized.ece_before  # over-confident head
    assert weakest.temperature > 1.5
    assert weakest.ece_after < 0.6 * weakest.ece_before  # temperature scaling repairs it
    assert weakest.nll_after < weakest.nll_before
    diag = [head_diagnostics(W, b, X[tr], y[tr]) for W, b in heads]
    assert diag[0].mean_margin < diag[-1].mean_margin
    assert diag[-1].ce_residual_norm < diag[0].ce_residual_norm
