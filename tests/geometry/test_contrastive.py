"""Contrastive geometry: the papers' formulas by hand, hardness vs temperature, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.exceptions import RepscopeValueError
from repscope.geometry._contrastive import (
    alignment,
    class_alignment,
    effective_negatives,
    hardness_weights,
    tolerance,
    uniformity,
)
from repscope.geometry._registry import geometry_info, get_geometry_measure


def _unit(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def test_alignment_equals_wang_isola_formula_by_hand(rng):
    A, B = rng.standard_normal((40, 8)), rng.standard_normal((40, 8))
    a, b = _unit(A), _unit(B)
    by_hand = np.mean([np.linalg.norm(a[i] - b[i]) ** 2 for i in range(40)])
    assert alignment(A, B) == pytest.approx(by_hand, rel=1e-12)
    by_hand3 = np.mean([np.linalg.norm(a[i] - b[i]) ** 3 for i in range(40)])
    assert alignment(A, B, alpha=3) == pytest.approx(by_hand3, rel=1e-12)
    assert alignment(A, A) == pytest.approx(0.0, abs=1e-12)


def test_uniformity_equals_wang_isola_formula_by_hand(rng):
    X = rng.standard_normal((60, 5))
    z = _unit(X)
    vals = [np.exp(-2 * np.sum((z[i] - z[j]) ** 2)) for i in range(60) for j in range(60) if i != j]
    assert uniformity(X) == pytest.approx(np.log(np.mean(vals)), rel=1e-12)
    # the i<j form of the paper is the same mean
    half = [np.exp(-2 * np.sum((z[i] - z[j]) ** 2)) for i in range(60) for j in range(i + 1, 60)]
    assert uniformity(X) == pytest.approx(np.log(np.mean(half)), rel=1e-12)


def test_uniformity_orders_spread_and_collapsed_embeddings(rng):
    spread = rng.standard_normal((300, 3))
    clumped = np.array([1.0, 0, 0]) + 0.05 * rng.standard_normal((300, 3))
    assert uniformity(spread) < uniformity(clumped) - 1.0
    assert uniformity(np.tile([[1.0, 0.0]], (5, 1))) == pytest.approx(0.0, abs=1e-12)


def test_uniformity_blocks_agree_with_a_single_block(rng, monkeypatch):
    import repscope.geometry._contrastive as mod

    X = rng.standard_normal((150, 4))
    full = uniformity(X)
    monkeypatch.setattr(mod, "BLOCK", 7)
    assert uniformity(X) == pytest.approx(full, rel=1e-12)


def test_tolerance_and_class_alignment_equal_pair_loops(rng):
    X = rng.standard_normal((45, 6))
    y = rng.integers(0, 4, size=45)
    z = _unit(X)
    pairs = [(i, j) for i in range(45) for j in range(45) if i != j and y[i] == y[j]]
    assert tolerance(X, y) == pytest.approx(np.mean([z[i] @ z[j] for i, j in pairs]), rel=1e-10)
    assert class_alignment(X, y) == pytest.approx(
        np.mean([np.sum((z[i] - z[j]) ** 2) for i, j in pairs]), rel=1e-10)
    assert class_alignment(X, y) == pytest.approx(2 - 2 * tolerance(X, y), rel=1e-10)


def test_tolerance_needs_a_class_with_two_samples():
    with pytest.raises(RepscopeValueError, match="at least one class with two or more samples"):
        tolerance(np.eye(3), [0, 1, 2])


def test_effective_number_of_negatives_grows_with_temperature(rng):
    Z = rng.standard_normal((120, 16))
    P = Z + 0.3 * rng.standard_normal((120, 16))
    res = effective_negatives(Z, P, temperatures=(2.0, 0.02, 0.1, 0.5, 10.0, 1000.0))
    eff = np.asarray(res.effective_negatives)
    assert res.temperatures == (0.02, 0.1, 0.5, 2.0, 10.0, 1000.0)
    assert np.all(np.diff(eff) > 0)
    assert eff[0] < 3 and eff[-1] > 0.99 * 119          # hardest only vs (almost) all equal
    assert np.all(np.diff(res.hardest_weight) < 0)
    assert res.n_negatives == 119


def test_hardness_weights_are_a_boltzmann_distribution_over_negatives(rng):
    Z = rng.standard_normal((10, 4))
    W = hardness_weights(Z, tau=0.5)
    z = _unit(Z)
    s = z @ z.T
    i = 3
    e = np.exp(np.delete(s[i], i) / 0.5)
    assert np.allclose(np.delete(W[i], i), e / e.sum())
    assert np.allclose(W.sum(axis=1), 1) and np.allclose(np.diag(W), 0)
    res = effective_negatives(Z, temperatures=(0.5,))
    h = -(W * np.log(np.where(W > 0, W, 1))).sum(axis=1)
    assert res.effective_negatives[0] == pytest.approx(np.exp(h).mean(), rel=1e-10)


def test_registered_contrastive_measures_carry_direction_metadata(rng):
    X, y = rng.standard_normal((30, 4)), rng.integers(0, 3, 30)
    assert geometry_info("uniformity")["higher_is_better"] is False
    assert geometry_info("tolerance")["labels"] == "required"
    assert get_geometry_measure("tolerance")(X, y) == pytest.approx(tolerance(X, y))
    assert get_geometry_measure("alignment")(X, y) == pytest.approx(class_alignment(X, y))
    assert get_geometry_measure("uniformity")(X) == pytest.approx(uniformity(X))


def test_contrastive_bad_input_is_named(rng):
    X = rng.standard_normal((10, 3))
    with pytest.raises(RepscopeValueError, match="same shape"):
        alignment(X, X[:5])
    with pytest.raises(RepscopeValueError, match="max_samples=5"):
        uniformity(X, max_samples=5)
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(RepscopeValueError, match="finite"):
        uniformity(bad)
    with pytest.raises(RepscopeValueError, match="'tau' parameter"):
        hardness_weights(X, tau=0)
    with pytest.raises(RepscopeValueError, match="needs labels"):
        tolerance(X, None)
