"""LinearScope: f(x) = A(x) x + c(x) on piecewise-linear modules, exact to 1e-5."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from repscope.concepts._linearscope import LinearScopeResult, linear_scope
from repscope.exceptions import RepscopeTypeError, RepscopeValueError

torch.set_num_threads(1)


def _mlp(act: type[nn.Module] = nn.ReLU, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), act(), nn.Linear(16, 12), act(),
                         nn.Linear(12, 4)).double().eval()


def _cnn() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.LeakyReLU(0.1), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6, 5), nn.ReLU6(),
    ).double()
    with torch.no_grad():  # non-trivial running statistics
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_relu_mlp_matrix_and_bias_path_reproduce_output():
    net = _mlp()
    x = torch.randn(7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    res = linear_scope(net, x, matrix=True)
    assert res.method == "gates" and res.piecewise_linear
    with torch.no_grad():
        f = net(x).numpy()
    # A(x) from reverse-mode Jacobians, c(x) from the gate-frozen forward at x' = 0
    recon = np.einsum("nmp,np->nm", res.matrix, x.numpy()) + res.bias
    assert np.abs(recon - f).max() < 1e-5
    assert res.reconstruction_error < 1e-5
    # c(x) is the bias path: with every bias zeroed the module is linear in x, so c vanishes
    zero = _mlp()
    for m in zero:
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
    assert np.abs(linear_scope(zero, x).bias).max() < 1e-12
    # the local map is exact around x: inside the same gate pattern f(x + e) = A(x)(x + e) + c(x)
    e = 1e-6 * torch.randn(7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        f2 = net(x + e).numpy()
    pred = np.einsum("nmp,np->nm", res.matrix, (x + e).numpy()) + res.bias
    assert np.abs(pred - f2).max() < 1e-9


def test_float32_mlp_within_1e5():
    net = _mlp().float()
    x = torch.randn(20, 6, generator=torch.Generator().manual_seed(4))
    res = linear_scope(net, x, matrix=True)
    with torch.no_grad():
        f = net(x).double().numpy()
    recon = np.einsum("nmp,np->nm", res.matrix, x.double().numpy()) + res.bias
    assert np.abs(recon - f).max() < 1e-5


def test_small_cnn_reproduced():
    net = _cnn()
    x = torch.randn(5, 1, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    res = linear_scope(net, x, matrix=True)
    assert res.method == "gates" and res.matrix.shape == (5, 5, 100)
    with torch.no_grad():
        f = net(x).numpy()
    recon = np.einsum("nmp,np->nm", res.matrix, x.reshape(5, -1).numpy()) + res.bias
    assert np.abs(recon - f).max() < 1e-5
    # the bias path goes through the gates of x: it differs between inputs
    assert np.abs(res.bias[0] - res.bias[1]).max() > 1e-3
    # shares are per-sample and bounded where defined so
    assert np.all((res.bias_fraction >= 0) & (res.bias_fraction <= 1))
    assert np.all((res.class_bias_share >= 0) & (res.class_bias_share <= 1))


def test_shares_match_definitions():
    net = _mlp(seed=3)
    x = torch.randn(9, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    res = linear_scope(net, x)
    f, lin, c = res.output, res.linear, res.bias
    np.testing.assert_allclose(res.bias_share, np.linalg.norm(c, axis=1) / np.linalg.norm(f, axis=1))
    y = f.argmax(axis=1)
    cy, ly = np.abs(c[np.arange(9), y]), np.abs(lin[np.arange(9), y])
    np.testing.assert_allclose(res.class_bias_share, cy / (cy + ly))
    (layer, rec), = res.record_rows()
    assert layer == "" and rec["n_samples"] == 9 and rec["piecewise_linear"] is True
    assert LinearScopeResult.analysis == "concepts_linearscope"
    assert rec["bias_share_median"] == pytest.approx(float(np.median(res.bias_share)))


def test_gelu_is_tangent_plane_not_bias_path():
    net = _mlp(nn.GELU)
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    res = linear_scope(net, x)
    assert res.method == "jacobian" and not res.piecewise_linear
    # identity holds by construction ...
    assert np.abs(res.linear + res.bias - res.output).max() < 1e-12
    # ... but the affine map does not reproduce f at another point (unlike ReLU)
    res_b = linear_scope(net, x, matrix=True)
    xs = (1.5 * x).numpy()
    with torch.no_grad():
        f_far = net(1.5 * x).numpy()
    pred = np.einsum("nmp,np->nm", res_b.matrix, xs) + res_b.bias
    assert np.abs(pred - f_far).max() > 1e-3
    with pytest.raises(RepscopeValueError, match="GELU"):
        linear_scope(net, x, method="gates")


class _HiddenRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def test_refusals():
    torch.manual_seed(0)
    hidden = _HiddenRelu().double().eval()
    x = torch.randn(6, 4, dtype=torch.float64)
    # every leaf looks affine, but forward applies a functional ReLU the hooks cannot freeze
    with pytest.raises(RepscopeValueError, match="misses f"):
        linear_scope(hidden, x, method="gates")
    # the Jacobian route still gives the exact (piecewise-linear) decomposition
    res = linear_scope(hidden, x, method="jacobian", matrix=True)
    assert res.reconstruction_error < 1e-10
    train = _cnn().train()
    with pytest.raises(RepscopeValueError, match="training mode"):
        linear_scope(train, torch.randn(2, 1, 10, 10, dtype=torch.float64))
    with pytest.raises(RepscopeValueError, match="method"):
        linear_scope(_mlp(), torch.zeros(2, 6, dtype=torch.float64), method="exact")  # type: ignore[arg-type]
    with pytest.raises(RepscopeValueError, match="max_matrix_entries"):
        linear_scope(_mlp(), torch.zeros(2, 6, dtype=torch.float64), matrix=True,
                     max_matrix_entries=10)
    with pytest.raises(RepscopeValueError, match="floating"):
        linear_scope(_mlp(), torch.zeros(2, 6, dtype=torch.int64))
    with pytest.raises(RepscopeTypeError, match=r"torch\.nn\.Module"):
        linear_scope(lambda t: t, torch.zeros(2, 6))  # type: ignore[arg-type]
