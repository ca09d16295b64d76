"""Maestro's ordered low-rank layer and ``low_rank_spectrum``.

The acceptance test reproduces the paper's claim for linear maps: trained with ordered dropout
on isotropic inputs, every prefix of the factorisation is the Eckart–Young optimum of its
rank, while the same factorisation trained without it has meaningless prefixes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from repscope._threads import single_thread
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.nn._maestro import OrderedLowRankLinear, low_rank_spectrum

#: A decaying spectrum: one dominant direction, then a geometric tail (ratio 0.55).
SPECTRUM = [1.0] + [0.3 * 0.55**i for i in range(7)]


def _target_and_samples(seed: int = 0, n: int = 512):
    """A fixed 8 x 8 map with singular values SPECTRUM and n inputs whitened exactly
    (sample covariance = I, the paper's isotropic data), with their noiseless targets."""
    g = torch.Generator().manual_seed(seed)
    d = len(SPECTRUM)
    q1, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    w = q1 @ torch.diag(torch.tensor(SPECTRUM, dtype=torch.float64)) @ q2.T
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    chol = torch.linalg.cholesky(x.T @ x / n)
    x = torch.linalg.solve_triangular(chol, x.T, upper=False).T
    return w, x, x @ w.T


def _train(layer: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """Full-batch regression, Adam with the learning rate decaying 1e-2 -> 1e-5."""
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1e-3 ** (i / steps))
    layer.train()
    for _ in range(steps):
        loss = (layer(x) - y).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def _truncation_errors(layer: OrderedLowRankLinear, w: torch.Tensor) -> np.ndarray:
    out = []
    for k in range(1, layer.rank):
        down, up = layer.truncate(k)
        out.append(torch.linalg.norm(up.weight @ down.weight - w).item())
    return np.array(out)


def test_ordered_dropout_truncations_reach_eckart_young_while_plain_factorisation_does_not():
    w, x, y = _target_and_samples()
    optimum = low_rank_spectrum(w).eckart_young_error[:-1]  # k = 1..7
    layers = {}
    with single_thread():
        for od in (True, False):
            # identical training: same seed, init (small: components are learnt in order),
            # data, optimiser and steps; only ordered dropout differs
            torch.manual_seed(0)
            layers[od] = OrderedLowRankLinear(8, 8, bias=False, ordered_dropout=od,
                                              init_scale=1e-3, dtype=torch.float64)
            _train(layers[od], x, y, steps=8000)
    maestro = _truncation_errors(layers[True], w) / optimum
    plain = _truncation_errors(layers[False], w) / optimum
    # every rank below full: Maestro within 10 % of the optimum, the plain factorisation at
    # least twice the optimum error
    assert maestro.max() <= 1.10, maestro
    assert plain.min() >= 2.0, plain
    # both fit the full map
    for layer in layers.values():
        assert torch.linalg.norm(layer.low_rank_weight().detach() - w).item() < 1e-3
    # the importance spectrum is the singular spectrum, in order
    np.testing.assert_allclose(layers[True].importance().numpy(), SPECTRUM, rtol=0.05)
    assert not np.all(np.diff(layers[False].importance().numpy()) <= 0)


def test_from_linear_reproduces_the_layer_and_its_truncations_are_optimal():
    torch.manual_seed(1)
    lin = nn.Linear(12, 7).double()
    layer = OrderedLowRankLinear.from_linear(lin).eval()
    x = torch.randn(20, 12, dtype=torch.float64)
    torch.testing.assert_close(layer(x), lin(x), rtol=0, atol=1e-12)
    spec = low_rank_spectrum(lin)
    np.testing.assert_allclose(layer.importance().numpy(), spec.singular_values, rtol=1e-10)
    for k in range(1, 7):
        down, up = layer.truncate(k)
        err = torch.linalg.norm(up.weight @ down.weight - lin.weight).item()
        assert err == pytest.approx(spec.eckart_young_error[k - 1], rel=1e-9)
        torch.testing.assert_close(nn.Sequential(down, up)(x), layer(x, rank=k))
    short = OrderedLowRankLinear.from_linear(lin, rank=3)
    assert short.rank == 3
    assert torch.linalg.norm(short.low_rank_weight() - lin.weight).item() == pytest.approx(
        spec.eckart_young_error[2], rel=1e-9)


def test_training_forward_uses_a_sampled_prefix_and_eval_uses_all_components():
    torch.manual_seed(2)
    layer = OrderedLowRankLinear(6, 5, dtype=torch.float64)
    x = torch.randn(4, 6, dtype=torch.float64)
    prefixes = [layer(x, rank=k).detach() for k in range(1, 6)]
    layer.train()
    seen = set()
    for _ in range(200):
        out = layer(x).detach()
        matches = [k + 1 for k, p in enumerate(prefixes) if torch.allclose(out, p)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {1, 2, 3, 4, 5}
    layer.eval()
    torch.testing.assert_close(layer(x), prefixes[-1])
    plain = OrderedLowRankLinear(6, 5, ordered_dropout=False).train()
    torch.testing.assert_close(plain(x.float()), plain(x.float(), rank=5))


def test_group_lasso_penalty_and_prune_follow_their_definitions():
    torch.manual_seed(3)
    layer = OrderedLowRankLinear(5, 4, dtype=torch.float64)
    u, v = layer.out_factor, layer.in_factor
    expected = sum(torch.linalg.norm(v[b:]) + torch.linalg.norm(u[:, b:]) for b in range(4))
    torch.testing.assert_close(layer.group_lasso_penalty(), expected)
    with torch.no_grad():
        layer.out_factor[:, 2:] *= 1e-4
        layer.in_factor[2:] *= 1e-4
    pruned = layer.prune(1e-5)
    assert pruned.rank == 2
    torch.testing.assert_close(pruned.low_rank_weight(), layer.low_rank_weight(2))
    torch.testing.assert_close(pruned.bias, layer.bias)


def test_low_rank_spectrum_of_a_conv_reads_out_by_in_times_kernel():
    torch.manual_seed(4)
    conv = nn.Conv2d(3, 16, 3)
    res = low_rank_spectrum(conv)
    w = conv.weight.detach().double().reshape(16, 27).numpy()
    u, s, vh = np.linalg.svd(w, full_matrices=False)
    assert res.shape == (16, 27)
    np.testing.assert_allclose(res.singular_values, s, rtol=1e-12)
    for k in (1, 5, 15, 16):
        best = (u[:, :k] * s[:k]) @ vh[:k]
        assert res.eckart_young_error[k - 1] == pytest.approx(np.linalg.norm(w - best), abs=1e-12)
    assert res.cumulative_energy[-1] == pytest.approx(1.0)
    assert res.relative_error[0] == pytest.approx(np.sqrt(1 - s[0] ** 2 / (s**2).sum()))
    assert res.n_components_90 == res.rank_for_energy(0.9)
    assert res.cumulative_energy[res.n_components_90 - 1] >= 0.9 > (
        res.cumulative_energy[res.n_components_90 - 2])
    # the effective rank of an isometry is its size; of a rank-one matrix, 1
    assert low_rank_spectrum(torch.eye(6)).effective_rank == pytest.approx(6.0)
    assert low_rank_spectrum(np.outer(np.arange(1.0, 5.0), np.ones(3))).effective_rank == (
        pytest.approx(1.0, abs=1e-6))
    assert low_rank_spectrum(torch.eye(6)).stable_rank == pytest.approx(6.0)
    (row,) = res.to_records(model="m", layer="conv")
    assert row.analysis == "low_rank_spectrum"
    assert row.values["shape"] == [16, 27]


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: OrderedLowRankLinear(8, 6, rank=7), RepscopeValueError,
     r"rank must be in \[1, 6\] \(the layer's smaller dimension\); got 7"),
    (lambda: OrderedLowRankLinear(8, 6, rank=0), RepscopeValueError, r"got 0\."),
    (lambda: OrderedLowRankLinear(8, 6, rank=2.5), RepscopeTypeError, "must be an integer"),
    (lambda: OrderedLowRankLinear(8, 6).truncate(7), RepscopeValueError,
     r"rank must be in \[1, 6\] \(the layer's rank\); got 7"),
    (lambda: OrderedLowRankLinear(8, 6, rank=3).truncate(0), RepscopeValueError,
     r"rank must be in \[1, 3\]"),
    (lambda: OrderedLowRankLinear(8, 6, rank=3)(torch.zeros(1, 8), rank=4), RepscopeValueError,
     r"rank must be in \[1, 3\]"),
    (lambda: OrderedLowRankLinear(8, 6, init_scale=0.0), RepscopeValueError,
     "init_scale must be a positive number"),
    (lambda: OrderedLowRankLinear.from_linear(nn.Conv2d(2, 2, 1)), RepscopeTypeError,
     "from_linear expects an nn.Linear; got Conv2d"),
    (lambda: low_rank_spectrum(nn.ReLU()), RepscopeTypeError, "got ReLU"),
    (lambda: low_rank_spectrum(torch.ones(4)), RepscopeValueError, r"got shape \(4,\)"),
    (lambda: low_rank_spectrum(torch.full((2, 2), float("nan"))), RepscopeValueError,
     "NaN or inf"),
    (lambda: low_rank_spectrum(torch.eye(3)).rank_for_energy(1.5), RepscopeValueError,
     r"fraction must be in \(0, 1\]"),
])
def test_bad_input_raises_named_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
