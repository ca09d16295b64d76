"""Linear factorization (cluster-b §4): the recipe's synthetic claims as tests."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from repscope.concepts._factorization import (
    FactorizationResult,
    concept_ranks,
    linear_factorization,
)
from repscope.exceptions import RepscopeTypeError, RepscopeValueError


def _factorial(binding: float = 0.0, noise: float = 0.0, d: int = 64, reps: int = 8, seed: int = 0):
    """3 concepts x 5 values, orthogonal value means (centred per concept), every combination
    ``reps`` times; optional binding of concepts a and b (a random vector per (a, b) pair, the
    outer product of their one-hots through a random map) and isotropic noise."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, 15)))
    U = [Q[:, 5 * h: 5 * h + 5].T * 3.0 for h in range(3)]
    U = [u - u.mean(0) for u in U]
    ys = np.repeat(np.array(list(itertools.product(range(5), repeat=3))), reps, axis=0)
    M = rng.standard_normal((25, d)) * binding
    X = sum(U[h][ys[:, h]] for h in range(3)) + M[ys[:, 0] * 5 + ys[:, 1]]
    X = X + noise * rng.standard_normal(X.shape)
    return X, {"a": ys[:, 0], "b": ys[:, 1], "c": ys[:, 2]}, M


def test_factorial_data_is_linear_and_orthogonal():
    X, concepts, _ = _factorial()
    r = linear_factorization(X, concepts, train_fraction=0.2)
    assert isinstance(r, FactorizationResult)
    assert r.r2 == pytest.approx(1.0, abs=1e-12)
    assert r.r2_whitened == pytest.approx(1.0, abs=1e-6)
    assert r.binding == pytest.approx(0.0, abs=1e-12)
    assert r.cross_abs_cos < 1e-12  # orthogonal concepts
    assert r.within_abs_cos == pytest.approx(0.25)  # 5 centred values: cos = -1/4
    assert r.k95 == {"a": 4, "b": 4, "c": 4}  # at most C_h - 1
    assert r.probe_span_r2 == pytest.approx(1.0, abs=1e-9)
    # probes trained on 20 % of the combinations generalise to the unseen ones
    assert r.n_heldout_combinations >= 90
    assert min(r.heldout_accuracy.values()) == 1.0
    row = r.record_rows()[0][1]
    json.dumps(row)
    assert row["k95"] == {"a": 4, "b": 4, "c": 4} and row["concepts"] == ["a", "b", "c"]


def test_noise_lowers_r2_as_predicted():
    sigma = 0.3
    X, concepts, _ = _factorial(noise=sigma)
    Xc = X - X.mean(0)
    r = linear_factorization(X, concepts, train_fraction=1.0)
    predicted = 1.0 - sigma**2 * X.shape[1] * X.shape[0] / float((Xc**2).sum())
    assert r.r2 == pytest.approx(predicted, abs=0.01)
    assert np.isnan(r.heldout_accuracy["a"])


def test_binding_lowers_r2_by_its_interaction_energy_and_breaks_generalisation():
    linear = linear_factorization(_factorial()[0], _factorial()[1], train_fraction=0.2)
    X, concepts, M = _factorial(binding=3.0)
    r = linear_factorization(X, concepts, train_fraction=0.2)
    # prediction: the additive model misses exactly the interaction part of the binding map
    Mi = M.reshape(5, 5, -1)
    Mi = Mi - Mi.mean(0, keepdims=True) - Mi.mean(1, keepdims=True) + Mi.mean((0, 1), keepdims=True)
    share = 8 * 5 * float((Mi**2).sum()) / float(((X - X.mean(0)) ** 2).sum())
    assert r.r2 == pytest.approx(1.0 - share, abs=1e-10)
    assert r.binding == pytest.approx(share, abs=1e-10)
    assert r.r2_cells == pytest.approx(1.0, abs=1e-10)
    # whitened: 12 additive directions of 28 (12 main effects + 16 interaction)
    assert r.r2_whitened == pytest.approx(12 / 28, abs=1e-6)
    assert r.probe_span_r2 < 0.7
    # probes fit the seen combinations but no longer carry over to unseen ones
    assert min(r.train_accuracy.values()) == 1.0
    assert np.mean(list(r.heldout_accuracy.values())) < 0.7
    assert np.mean(list(linear.heldout_accuracy.values())) - np.mean(
        list(r.heldout_accuracy.values())) > 0.3


def test_concept_ranks_threshold():
    means = np.diag([10.0, 1.0, 0.1])
    assert concept_ranks(means, 0.95)[0] == 1
    assert concept_ranks(means, 0.999)[0] == 2
    assert concept_ranks(means, 1.0)[0] == 3


def test_bad_input_is_named():
    X, concepts, _ = _factorial()
    one = dict(concepts, d=np.zeros(X.shape[0], dtype=int))
    with pytest.raises(RepscopeValueError, match=r"concepts\['d'\].*at least 2 values"):
        linear_factorization(X, one)
    with pytest.raises(RepscopeTypeError, match="'concepts'"):
        linear_factorization(X, [concepts["a"]])
    with pytest.raises(RepscopeValueError, match="one entry per sample"):
        linear_factorization(X, {"a": concepts["a"][:10]})
