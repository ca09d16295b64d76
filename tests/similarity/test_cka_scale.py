"""Linear CKA is scale invariant in floating point too: inputs scaled by 1e-100 or 1e76 give the
value of the unscaled inputs (no overflow to 0/NaN, no underflow to "constant")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.similarity import (
    compare_layers,
    jackknife,
    linear_cka,
    linear_cka_debiased,
    minibatch_cka,
    permutation_test,
)
from repscope.similarity._cka import linear_cka_matrix
from repscope.stats import Moments

SCALES = [1e-100, 1.0, 1e76]


def _pair(n: int = 60, dx: int = 5, dy: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, dx)) + 3.0
    Y = np.tanh(X @ rng.standard_normal((dx, dy))) + 0.5 * rng.standard_normal((n, dy))
    return X, Y


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("n", [60, 6], ids=["feature_space", "gram"])
@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_unchanged_by_extreme_input_scale(scale, n, debiased) -> None:
    X, Y = _pair(n=n)
    ref = linear_cka(X, Y, debiased=debiased)
    assert abs(ref) > 0.05  # a value that a 0.0 or a NaN would visibly miss
    assert _rel(linear_cka(X * scale, Y * scale, debiased=debiased), ref) < 1e-10
    assert _rel(linear_cka(X * scale, Y, debiased=debiased), ref) < 1e-10
    if debiased:
        assert _rel(linear_cka_debiased(X * scale, Y * scale), ref) < 1e-10
    got_torch = linear_cka(torch.as_tensor(X * scale), torch.as_tensor(Y), debiased=debiased)
    assert _rel(got_torch, ref) < 1e-10


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_linear_cka_unchanged_by_scale_of_float32_torch_input(scale) -> None:
    X, Y = _pair()
    ref = linear_cka(X.astype(np.float32), Y.astype(np.float32), debiased=True)
    Xt = torch.as_tensor(X * scale, dtype=torch.float32)
    Yt = torch.as_tensor(Y, dtype=torch.float32)
    assert _rel(linear_cka(Xt, Yt, debiased=True), ref) < 1e-5


def test_the_issue_example_1e76_is_not_zero() -> None:
    X, Y = _pair()
    truth = linear_cka(X, Y)
    assert truth > 0.3
    assert linear_cka(X * 1e76, Y * 1e76) == pytest.approx(truth, rel=1e-10)
    assert linear_cka(X * 1e-100, Y * 1e-100) == pytest.approx(truth, rel=1e-10)


@pytest.mark.parametrize("scale", SCALES)
def test_linear_cka_matrix_unchanged_by_extreme_layer_scale(scale) -> None:
    X, Y = _pair()
    blocks_x, blocks_y = [X[:, :3], X[:, 3:]], [Y[:, :2], Y]
    ref = linear_cka_matrix(blocks_x, blocks_y)
    got = linear_cka_matrix([blocks_x[0] * scale, blocks_x[1]], [blocks_y[0], blocks_y[1] * scale])
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    # the Moments form of the same matrix (scatters already accumulated)
    m = Moments().update(np.hstack([blocks_x[0] * scale, blocks_x[1]]),
                         np.hstack([blocks_y[0], blocks_y[1] * scale]))
    np.testing.assert_allclose(linear_cka_matrix(m, widths=([3, 2], [2, 4])), ref, rtol=1e-10)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("products", ["float64", "float32"])
def test_compare_layers_cka_unchanged_by_extreme_layer_scale(scale, products) -> None:
    X, Y = _pair()
    A = {"a0": X[:, :3], "a1": X}
    B = {"b0": Y, "b1": Y[:, :2]}
    ref = compare_layers(A, B, products=products).values
    A2 = {"a0": X[:, :3] * scale, "a1": X}
    B2 = {"b0": Y, "b1": Y[:, :2] * scale}
    tol = 1e-10 if products == "float64" else 1e-5
    np.testing.assert_allclose(compare_layers(A2, B2, products=products, batch_size=16).values,
                               ref, rtol=tol)
    np.testing.assert_allclose(compare_layers(A2, products=products, batch_size=16).values,
                               compare_layers(A, products=products).values, rtol=tol)


@pytest.mark.parametrize("scale", SCALES)
def test_cka_permutation_test_and_jackknife_unchanged_by_scale(scale) -> None:
    X, Y = _pair()
    p_ref = permutation_test(X, Y, n_permutations=20)
    p = permutation_test(X * scale, Y, n_permutations=20)
    assert _rel(p.value, p_ref.value) < 1e-10
    np.testing.assert_allclose(p.null, p_ref.null, rtol=1e-9)
    j_ref, j = jackknife(X, Y), jackknife(X * scale, Y)
    assert _rel(j.value, j_ref.value) < 1e-10
    np.testing.assert_allclose(j.values, j_ref.values, rtol=1e-9)


@pytest.mark.parametrize("scale", SCALES)
def test_minibatch_cka_unchanged_by_scale(scale) -> None:
    X, Y = _pair(n=200)
    ref = minibatch_cka(X, Y, batch_size=50)
    assert _rel(minibatch_cka(X * scale, Y * scale, batch_size=50), ref) < 1e-10
