"""Few-shot results report the test ECE and NLL of the probe per shot count."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from repscope.probe import few_shot


def _hand_ece(P: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    conf, pred = P.max(axis=1), P.argmax(axis=1)
    total = 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        inside = (conf > lo) & (conf <= hi) if k else (conf <= hi)
        if inside.any():
            total += inside.sum() * abs(np.mean(pred[inside] == y[inside]) - conf[inside].mean())
    return total / y.size


def _narrow_layer(real) -> np.ndarray:
    """The deepest real Lite0 layer of at most 120 channels (fast logistic fits)."""
    name = [n for n in real.layers if real.X[n].shape[1] <= 120][-1]
    return real.X[name]


def test_few_shot_ece_nll_match_the_fitted_probes_on_real_features(lite0_mnist):
    X, y = _narrow_layer(lite0_mnist), lite0_mnist.y
    fitted: list[LogisticRegression] = []

    def factory() -> LogisticRegression:
        est = LogisticRegression(max_iter=200)
        fitted.append(est)
        return est

    shots = (1, 20)
    res = few_shot(factory, X, y, shots=shots, n_tries=3, seed=0)
    assert len(res.ece) == len(res.nll) == len(shots)
    te = np.asarray(res.test_indices)
    for i in range(len(shots)):
        eces, nlls = [], []
        for est in fitted[3 * i:3 * i + 3]:
            P = est.predict_proba(X[te])
            cols = np.searchsorted(est.classes_, y[te])
            eces.append(_hand_ece(P, cols))
            nlls.append(log_loss(y[te], P, labels=est.classes_))
        assert res.ece[i] == pytest.approx(np.mean(eces), abs=1e-6)
        assert res.nll[i] == pytest.approx(np.mean(nlls), rel=1e-6)
    # more shots: a better-calibrated, more accurate probe on real features
    assert res.nll[1] < res.nll[0]
    assert res.mean[1] > res.mean[0]
    values = res.to_records(model="m")[0].values
    assert values["ece"] == list(res.ece) and values["nll"] == list(res.nll)


def test_few_shot_calibration_is_nan_without_predict_proba(lite0_mnist):
    from sklearn.linear_model import RidgeClassifier

    X, y = _narrow_layer(lite0_mnist), lite0_mnist.y
    res = few_shot(RidgeClassifier(), X, y, shots=(2,), n_tries=2)
    assert math.isnan(res.ece[0]) and math.isnan(res.nll[0])
    assert 0.0 < res.mean[0] <= 1.0
