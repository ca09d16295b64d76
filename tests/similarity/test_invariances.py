"""Invariance, identity, symmetry and metric tests generated from the registry metadata."""

from __future__ import annotations

import numpy as np
import pytest
from _strategies import one_blas_thread, paired_data, transform  # noqa: F401
from hypothesis import given, settings
from hypothesis import strategies as st

from repscope.similarity import INVARIANCES, get_measure, list_measures, measure_info

MEASURES = list_measures()
DECLARED = [(m, inv) for m in MEASURES for inv in sorted(measure_info(m)["invariances"])]
UNDECLARED = [(m, inv) for m in MEASURES for inv in sorted(INVARIANCES - measure_info(m)["invariances"])]
TOL = 1e-6


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOL * max(1.0, abs(a), abs(b))


def test_registry_covers_the_issue_measures():
    expected = {"linear_cka", "linear_cka_debiased", "rbf_cka", "minibatch_cka", "cca", "svcca",
                "pwcca", "procrustes", "shape_angular", "shape_cca", "rsa", "rsa_euclidean",
                "linear_r2", "ridge_predictivity", "hsic", "kjem"}
    assert expected <= set(MEASURES)
    for m in MEASURES:
        meta = measure_info(m)
        assert meta["invariances"] <= INVARIANCES
        assert (meta["direction"] == "distance") == (not meta["higher_is_better"])


@pytest.mark.parametrize(("name", "invariance"), DECLARED)
@settings(max_examples=15, deadline=None)
@given(data=paired_data(), tseed=st.integers(0, 2**31 - 1))
def test_declared_invariance_holds(name, invariance, data, tseed):
    X, Y, _ = data
    rng = np.random.default_rng(tseed)
    fx, fy = transform(invariance, X.shape[1], rng), transform(invariance, Y.shape[1], rng)
    m = get_measure(name)
    base, moved = m(X, Y), m(fx(X), fy(Y))
    assert _close(base, moved), f"{name} changed under {invariance}: {base} -> {moved}"


def _structured(seed: int = 7, n: int = 80, dy: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5)) * np.array([4.0, 2.0, 1.0, 0.5, 0.25]) + 1.0
    Y = np.tanh(X @ rng.standard_normal((5, dy))) + 0.3 * rng.standard_normal((n, dy))
    return X, Y


@pytest.mark.parametrize(("name", "invariance"), UNDECLARED)
def test_undeclared_transform_changes_the_value(name, invariance):
    X, Y = _structured()
    m = get_measure(name)
    base = m(X, Y)
    changes = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        fx, fy = transform(invariance, X.shape[1], rng), transform(invariance, Y.shape[1], rng)
        changes.append(abs(m(fx(X), fy(Y)) - base))
    assert max(changes) > 1e-4 * max(1.0, abs(base)), (name, invariance, changes)


@pytest.mark.parametrize("name", [m for m in MEASURES if measure_info(m)["identity"] is not None])
@settings(max_examples=15, deadline=None)
@given(data=paired_data())
def test_identity_value(name, data):
    X, _, _ = data
    assert get_measure(name)(X, X) == pytest.approx(measure_info(name)["identity"], abs=TOL)


@pytest.mark.parametrize("name", [m for m in MEASURES if measure_info(m)["symmetric"]])
@settings(max_examples=15, deadline=None)
@given(data=paired_data())
def test_symmetry(name, data):
    X, Y, _ = data
    m = get_measure(name)
    assert _close(m(X, Y), m(Y, X))


@pytest.mark.parametrize("name", [m for m in MEASURES if not measure_info(m)["symmetric"]])
def test_declared_asymmetric_measures_are_asymmetric(name):
    X, Y = _structured(n=60, dy=5)  # equal widths (PWCCA weights the narrower side)
    m = get_measure(name)
    assert abs(m(X, Y) - m(Y, X)) > 1e-6


@pytest.mark.parametrize("name", [m for m in MEASURES if measure_info(m)["is_metric"]])
@settings(max_examples=15, deadline=None)
@given(data=paired_data(), zseed=st.integers(0, 2**31 - 1), dz=st.integers(2, 6))
def test_triangle_inequality(name, data, zseed, dz):
    X, Y, _ = data
    rng = np.random.default_rng(zseed)
    Z = np.hstack([X, Y]) @ rng.standard_normal((X.shape[1] + Y.shape[1], dz))
    Z += rng.standard_normal(Z.shape)
    d = get_measure(name)
    assert d(X, Z) <= d(X, Y) + d(Y, Z) + 1e-9
    assert d(X, Y) >= 0.0
