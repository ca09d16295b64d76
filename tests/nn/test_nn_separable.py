"""CP-separable networks: the forward pass against a per-component reference, rank-R models are
rank-R functions, and the separability-rank probe on sin(x1) cos(x2) + x3^2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope._threads import single_thread
from repscope.exceptions import RepscopeValueError
from repscope.nn._separable import CPSeparable, separability_rank


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def test_rank_two_fits_sin_cos_plus_square_and_rank_one_does_not():
    g = torch.Generator().manual_seed(0)
    X = (torch.rand(1280, 3, generator=g) * 2 - 1) * 2
    y = torch.sin(X[:, 0]) * torch.cos(X[:, 1]) + X[:, 2] ** 2
    res = separability_rank(X, y, max_rank=2, tol=1e-3, hidden=16, steps=1000, seed=0)
    assert res.ranks == (1, 2)
    assert res.mse[1] < 1e-3  # held-out
    assert res.mse[0] > 1e-2
    assert res.rank == 2
    assert res.fvu[0] > 10 * res.fvu[1]


def test_forward_equals_the_sum_of_products_of_univariate_mlps():
    torch.manual_seed(0)
    f = CPSeparable(3, rank=2, out_features=2, hidden=5, depth=2, dtype=torch.float64)
    X = torch.randn(11, 3, dtype=torch.float64)

    def g(r: int, d: int, t: torch.Tensor) -> torch.Tensor:  # one univariate MLP, by hand
        k = r * 3 + d
        h = t[:, None]
        for i, (w, b) in enumerate(zip(f.weights, f.biases)):
            h = h @ w[k] + b[k, 0]
            if i < len(f.weights) - 1:
                h = torch.tanh(h)
        return h

    expected = sum(g(r, 0, X[:, 0]) * g(r, 1, X[:, 1]) * g(r, 2, X[:, 2]) for r in range(2))
    assert torch.allclose(f(X), expected, atol=1e-12)
    assert f(X.reshape(11, 1, 3)).shape == (11, 1, 2)


@pytest.mark.parametrize("rank", [1, 3])
def test_a_rank_r_model_is_a_rank_r_function(rank):
    """On a grid, f(a_i, b_j) is a matrix of rank at most R (and exactly R for random MLPs)."""
    f = CPSeparable(2, rank=rank, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # move the components away from their near-constant start
        for w in f.weights:
            w.mul_(5.0)
    a = torch.linspace(-2, 2, 40, dtype=torch.float64)
    grid = torch.cartesian_prod(a, a)
    with torch.no_grad():
        F = f(grid)[:, 0].reshape(40, 40).numpy()
    s = np.linalg.svd(F, compute_uv=False)
    assert s[rank] < 1e-10 * s[0]
    assert s[rank - 1] > 1e-6 * s[0]


def test_bad_input_is_a_named_error():
    with pytest.raises(RepscopeValueError, match=r"in_features=3 entries; got shape \(4, 2\)"):
        CPSeparable(3, rank=1)(torch.zeros(4, 2))
    with pytest.raises(RepscopeValueError, match="'rank' parameter of CPSeparable"):
        CPSeparable(3, rank=0)
    X = np.zeros((10, 2))
    with pytest.raises(RepscopeValueError, match=r"y must have one row per row of X \(10\)"):
        separability_rank(X, np.zeros(9))
    with pytest.raises(RepscopeValueError, match="'holdout' parameter of separability_rank"):
        separability_rank(X, np.zeros(10), holdout=1.0)
    with pytest.raises(RepscopeValueError, match="X must be finite"):
        separability_rank(np.full((10, 2), np.nan), np.zeros(10))
    with pytest.raises(RepscopeValueError, match="X must be a 2-D array"):
        separability_rank(np.zeros(10), np.zeros(10))
