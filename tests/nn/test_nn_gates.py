"""OptFS continuation gate: the mask's closed form and schedule, the hard ticket, the paper's
claim (all 10 relevant of 100 one-hot features kept, at most 20 in total, AUC within 0.005 of
the dense model) and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope._threads import single_thread
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.nn._gates import ContinuationGate, select_features


def test_mask_closed_form_and_geometric_schedule():
    gate = ContinuationGate(4, init=0.5, final_temperature=200.0)
    with torch.no_grad():
        gate.logits.copy_(torch.tensor([0.5, 0.1, -0.1, -2.0]))
    w = gate.logits.detach()
    s0 = torch.sigmoid(torch.tensor(0.5))
    for frac, temp in ((0.0, 1.0), (0.5, 200.0**0.5), (1.0, 200.0)):
        gate.set_progress(frac)
        assert gate.temperature == pytest.approx(temp)
        torch.testing.assert_close(gate.mask(), torch.sigmoid(temp * w) / s0)
        torch.testing.assert_close(gate.penalty(), torch.sigmoid(temp * w).sum())
    # at the final temperature the soft mask is already nearly the step
    assert torch.all((gate.mask() > 0.5) == (w > 0))
    x = torch.randn(3, 4)
    torch.testing.assert_close(gate(x), x * gate.mask())


def test_hard_ticket_keeps_positive_logits_and_stops_gradients():
    gate = ContinuationGate(5)
    with torch.no_grad():
        gate.logits.copy_(torch.tensor([0.3, -0.01, 2.0, -4.0, 0.001]))
    assert gate.harden().kept().tolist() == [0, 2, 4]
    x = torch.ones(2, 5, requires_grad=True)
    y = gate(x)
    torch.testing.assert_close(y, torch.tensor([[1.0, 0, 1, 0, 1]] * 2))
    y.sum().backward()
    assert gate.logits.grad is None
    assert float(gate.penalty()) == 0.0


def _one_hot_clicks(seed: int):
    """100 binary (one-hot) features, 30 % active; the log-odds use 10 of them."""
    rng = np.random.default_rng(seed)
    n, d = 20_000, 100
    X = (rng.random((2 * n, d)) < 0.3).astype(float)
    relevant = rng.choice(d, 10, replace=False)
    beta = rng.choice([-1.0, 1.0], 10) * rng.uniform(0.8, 2.0, 10)
    y = (rng.random(2 * n) < 1 / (1 + np.exp(-(X[:, relevant] - 0.3) @ beta))).astype(int)
    return X[:n], y[:n], X[n:], y[n:], relevant


@pytest.mark.parametrize("seed", [0, 1])
def test_continuation_keeps_the_relevant_features_and_the_auc(seed):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    X, y, X_test, y_test, relevant = _one_hot_clicks(seed)
    with single_thread():
        kept = select_features(X, y, penalty=1e-3, epochs=10, final_temperature=200.0,
                               seed=seed)
        dense = LogisticRegression(max_iter=1000).fit(X, y)
        sparse = LogisticRegression(max_iter=1000).fit(X[:, kept], y)
    assert set(relevant.tolist()) <= set(kept.tolist())
    assert len(kept) <= 20
    auc_dense = roc_auc_score(y_test, dense.decision_function(X_test))
    auc_kept = roc_auc_score(y_test, sparse.decision_function(X_test[:, kept]))
    assert abs(auc_kept - auc_dense) < 0.005


def test_regression_and_multiclass_targets_select_the_signal():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((3000, 30))
    with single_thread():
        reg = select_features(X, 2 * X[:, 4] - X[:, 17] + 0.1 * rng.standard_normal(3000),
                              task="regression", penalty=3e-3)
        cls = select_features(X, np.argmax(X[:, [1, 8, 20]], axis=1), penalty=3e-3)
    assert reg.tolist() == [4, 17]
    assert {1, 8, 20} <= set(cls.tolist()) and len(cls) <= 6


def test_no_penalty_and_no_continuation_keeps_everything():
    # the negative control: without the sparsity term and at T = 1 nothing drives gates down
    X, y, *_ = _one_hot_clicks(0)
    with single_thread():
        kept = select_features(X[:5000], y[:5000], penalty=0.0, final_temperature=1.0,
                               epochs=2)
    assert len(kept) == 100


def test_bad_input_is_named():
    with pytest.raises(RepscopeValueError, match="n_features must be a positive integer"):
        ContinuationGate(0)
    with pytest.raises(RepscopeValueError, match="init must be positive"):
        ContinuationGate(3, init=-1.0)
    with pytest.raises(RepscopeValueError, match="final_temperature must be at least 1; got 0.5"):
        ContinuationGate(3, final_temperature=0.5)
    with pytest.raises(RepscopeValueError, match=r"fraction must be in \[0, 1\]; got 2"):
        ContinuationGate(3).set_progress(2)
    with pytest.raises(RepscopeValueError, match=r"x must have shape \(\.\.\., 3\); got \(2, 4\)"):
        ContinuationGate(3)(torch.zeros(2, 4))
    with pytest.raises(RepscopeTypeError, match="x must be a torch.Tensor"):
        ContinuationGate(3)(np.zeros((2, 3)))  # type: ignore[arg-type]
    X = np.zeros((10, 3))
    with pytest.raises(RepscopeValueError, match=r"y must have one value per row of X, shape "
                                                 r"\(10,\); got \(9,\)"):
        select_features(X, np.zeros(9))
    with pytest.raises(RepscopeValueError, match="at least two classes for classification; "
                                                 "got 1"):
        select_features(X, np.zeros(10))
    with pytest.raises(RepscopeValueError, match="task must be 'classification' or "
                                                 "'regression'; got 'ranking'"):
        select_features(X, np.zeros(10), task="ranking")  # type: ignore[arg-type]
    with pytest.raises(RepscopeValueError, match="penalty must be non-negative; got -1"):
        select_features(X, np.arange(10) % 2, penalty=-1)
    with pytest.raises(RepscopeValueError, match="X must be finite"):
        select_features(np.full((10, 3), np.nan), np.arange(10) % 2)
