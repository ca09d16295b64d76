"""Spectral-sphere (sHC) and doubly-stochastic (mHC) hyper-connections: the constraint holds
after every optimiser step, and only the spectral sphere can subtract one stream from another."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from repscope._kernels.sinkhorn import sinkhorn_symmetric
from repscope._threads import single_thread
from repscope.exceptions import RepscopeValueError
from repscope.nn._hyperconn import (
    BirkhoffHyperConnection,
    SpectralSphereHyperConnection,
    mixing_diagnostics,
    sinkhorn_doubly_stochastic,
)

C = 1 / np.sqrt(2)


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def sigma(M: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(M.detach().double(), ord=2))


def streams(n_samples: int, n_streams: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_samples, n_streams, d, dtype=torch.float64, generator=g)


def test_spectral_norm_is_one_after_every_step():
    """A short training of a 4-stream hyper-connection around a linear layer toward a random
    target: ||H||_2 = 1 at every step (H in the forward pass and the stored, retracted W)."""
    torch.manual_seed(0)
    layer = nn.Linear(8, 8, dtype=torch.float64)
    hc = SpectralSphereHyperConnection(4, layer, dtype=torch.float64)
    X = streams(256, 4, 8, 1)
    target = torch.einsum("ij,njd->nid", torch.randn(4, 4, dtype=torch.float64,
                                                     generator=torch.Generator().manual_seed(2)),
                          X)
    opt = torch.optim.Adam(hc.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        loss = (hc(X) - target).pow(2).mean()
        loss.backward()
        opt.step()
        hc.project_()
        assert abs(sigma(hc.weight) - 1) < 1e-9  # the retraction puts W itself on the sphere
        assert abs(sigma(hc.mixing_matrix()) - 1) < 1e-9
    assert mixing_diagnostics(hc).distance_from_identity > 0.1  # H moved: the test is not idle


def subtraction_fit(hc: nn.Module, steps: int = 400) -> float:
    """Fit stream 1 of H x to (x1 - x2)/sqrt 2 (independent standard normal streams): the
    mean squared error on fresh samples after training."""
    X = streams(512, 2, 4, 3)
    y = (X[:, 0] - X[:, 1]) * C
    opt = torch.optim.Adam([p for n, p in hc.named_parameters() if n == "weight"], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = (hc(X)[:, 0] - y).pow(2).mean()
        loss.backward()
        opt.step()
        if isinstance(hc, SpectralSphereHyperConnection):
            hc.project_()
    Xt = streams(4096, 2, 4, 4)
    with torch.no_grad():
        return float((hc(Xt)[:, 0] - (Xt[:, 0] - Xt[:, 1]) * C).pow(2).mean())


def test_spectral_sphere_represents_subtraction_and_birkhoff_cannot():
    # every 2x2 doubly stochastic matrix is [[p, 1-p], [1-p, p]], p in [0, 1]: stream 1 of H x is
    # p x1 + (1-p) x2, whose error against (x1 - x2)/sqrt 2 is (p - c)^2 + (1 - p + c)^2
    p = np.linspace(0, 1, 100001)
    best_birkhoff = float(((p - C) ** 2 + (1 - p + C) ** 2).min())
    assert best_birkhoff == pytest.approx((1 - C) ** 2 + C**2, abs=1e-9)  # at p = 1: 0.586
    spectral = subtraction_fit(SpectralSphereHyperConnection(2, dtype=torch.float64))
    birkhoff = subtraction_fit(BirkhoffHyperConnection(2, dtype=torch.float64))
    assert spectral < 1e-6
    assert birkhoff > 0.95 * best_birkhoff  # bounded away from 0: the polytope's best is 0.586
    assert birkhoff < best_birkhoff + 0.05  # and training did reach that best


def test_products_never_amplify_and_only_the_sphere_has_negative_entries():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 16, dtype=torch.float64, generator=g)
    y_s, y_b = x.clone(), x.clone()
    for _ in range(12):
        s = SpectralSphereHyperConnection(4, dtype=torch.float64)
        b = BirkhoffHyperConnection(4, dtype=torch.float64, sinkhorn_iterations=200)
        with torch.no_grad():
            s.weight.normal_(generator=g)
            b.weight.normal_(generator=g)
        y_s, y_b = s(y_s), b(y_b)
        assert y_s.norm(dim=0).le(x.norm(dim=0) + 1e-12).all()
        assert y_b.norm(dim=0).le(x.norm(dim=0) + 1e-9).all()
        assert bool((b.mixing_matrix() >= 0).all())
        assert mixing_diagnostics(b).negative_mass == 0.0
    assert mixing_diagnostics(s).negative_mass > 0.05


def test_sinkhorn_agrees_with_the_symmetric_kernel_reference():
    A = np.random.default_rng(0).standard_normal((5, 5))
    L = (A + A.T) / 2
    ours = sinkhorn_doubly_stochastic(torch.from_numpy(L), n_iter=500).numpy()
    ref = sinkhorn_symmetric(L, tol=1e-12, max_iter=10000).matrix
    assert np.allclose(ours, ref, atol=1e-9)
    assert np.allclose(ours.sum(0), 1, atol=1e-12) and np.allclose(ours.sum(1), 1, atol=1e-9)


def test_forward_matches_the_hyper_connection_formula():
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(6, 6), nn.Tanh()).double()
    hc = SpectralSphereHyperConnection(3, layer, dtype=torch.float64)
    with torch.no_grad():
        hc.weight.normal_()
        hc.h_pre.normal_()
        hc.h_post.normal_()
    X = streams(7, 3, 6, 0).reshape(7, 3, 6)
    H = hc.weight / sigma(hc.weight)
    expected = torch.stack([H @ x + hc.h_post[:, None] * layer(hc.h_pre @ x)[None] for x in X])
    assert torch.allclose(hc(X), expected, atol=1e-12)
    assert hc(X.reshape(7, 1, 3, 6)).shape == (7, 1, 3, 6)
    # a fresh module is the identity on the residual path (W = I)
    assert torch.equal(SpectralSphereHyperConnection(3, dtype=torch.float64)(X), X)


def test_mixing_diagnostics_of_a_rotation():
    d = mixing_diagnostics(torch.tensor([[C, -C], [C, C]]))
    assert d.spectral_norm == pytest.approx(1.0)
    assert d.negative_mass == pytest.approx(0.25)
    assert d.row_sum_deviation == pytest.approx(1.0)  # row 1 sums to 0, row 2 to sqrt 2


def test_bad_input_is_a_named_error():
    with pytest.raises(RepscopeValueError, match=r"n_streams=4, d\); got shape \(2, 3, 5\)"):
        SpectralSphereHyperConnection(4)(torch.zeros(2, 3, 5))
    with pytest.raises(RepscopeValueError, match="'n_streams' parameter"):
        BirkhoffHyperConnection(0)
    with pytest.raises(RepscopeValueError, match="H must be a square matrix"):
        mixing_diagnostics(torch.zeros(2, 3))
