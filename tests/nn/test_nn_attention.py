"""Linear attention (NaLaFormer, ReLU kernel), the CARE-style block's cost and ULSAM: the
norm-entropy claims, exact invariances, agreement with the explicit quadratic forms, closed
forms, shapes, gradients, cost accounting against torch's FLOP counter, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.nn._linear_attention import (
    ULSAM,
    CAREBlock,
    NormAwareLinearAttention,
    ReLULinearAttention,
    attention_weights,
    nala_feature_maps,
    norm_aware_linear_attention,
    norm_entropy_correlation,
    relu_linear_attention,
    row_entropy,
    softmax_attention,
)


@pytest.fixture(scope="module")
def qkv() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(256, 32, generator=g, dtype=torch.float64)
    k = torch.randn(256, 32, generator=g, dtype=torch.float64)
    v = torch.randn(256, 16, generator=g, dtype=torch.float64)
    return q / q.norm(dim=-1, keepdim=True), k, v


# --------------------------------------------------------------------------- the paper's claims
def test_softmax_row_entropy_falls_with_query_norm(qkv):
    q, k, _ = qkv
    r = norm_entropy_correlation(q, k, kind="softmax")
    assert r.spearman < -0.9
    assert r.spearman_rows < -0.9  # pooled over rows too: the norm alone orders the entropies
    assert r.entropies.shape == (12, 256)
    assert np.all(np.diff(r.entropies.mean(axis=1)) < 0)


def test_relu_linear_attention_is_exactly_invariant_to_rescaling_q(qkv):
    q, k, v = qkv
    base = relu_linear_attention(q, k, v, eps=0.0)
    for s in (1e-3, 0.5, 3.0, 100.0):  # exact without the normaliser's eps
        assert torch.max(torch.abs(relu_linear_attention(q * s, k, v, eps=0.0) - base)) < 1e-12
    base = relu_linear_attention(q, k, v)
    for s in (0.5, 3.0, 100.0):  # and to 1e-6 with it, at these norms
        assert torch.max(torch.abs(relu_linear_attention(q * s, k, v) - base)) < 1e-6
    r = norm_entropy_correlation(q, k, kind="relu")
    assert r.spearman == 0.0
    np.testing.assert_allclose(r.entropies, r.entropies[:1].repeat(12, axis=0), rtol=1e-12)


def test_nala_entropy_falls_with_query_norm_like_softmax(qkv):
    q, k, v = qkv
    r = norm_entropy_correlation(q, k, kind="nala")
    assert r.spearman < -0.9
    assert np.all(np.diff(r.entropies.mean(axis=1)) < 0)
    # and unlike the ReLU kernel, the output depends on the norm
    assert torch.max(torch.abs(norm_aware_linear_attention(3 * q, k, v)
                               - norm_aware_linear_attention(q, k, v))) > 1e-2


# --------------------------------------------------------------------------- reference agreement
@pytest.mark.parametrize(("kind", "fn"), [("relu", relu_linear_attention),
                                         ("nala", norm_aware_linear_attention)])
def test_linear_forms_equal_the_explicit_attention_matrix(qkv, kind, fn):
    q, k, v = qkv
    q = q * 1.7
    w = attention_weights(q, k, kind=kind, eps=0.0)
    torch.testing.assert_close(w.sum(-1), torch.ones(256, dtype=torch.float64))
    assert torch.all(w >= 0)
    torch.testing.assert_close(fn(q, k, v, eps=0.0), w @ v, rtol=1e-10, atol=1e-12)


def test_softmax_attention_equals_torch_sdpa(qkv):
    q, k, v = qkv
    ref = torch.nn.functional.scaled_dot_product_attention(q[None], k[None], v[None])[0]
    torch.testing.assert_close(softmax_attention(q * 4, k, v),
                               torch.nn.functional.scaled_dot_product_attention(
                                   q[None] * 4, k[None], v[None])[0])
    torch.testing.assert_close(softmax_attention(q, k, v), ref)


def test_nala_feature_maps_closed_form():
    q = torch.tensor([[3.0, -4.0]], dtype=torch.float64)      # ||q|| = 5
    k = torch.tensor([[0.5, -2.0]], dtype=torch.float64)
    phi_q, phi_k = nala_feature_maps(q, k)
    p = 3 * (0.5 + math.tanh(5.0))
    torch.testing.assert_close(phi_q, torch.tensor([[0.6**p, 0.0, 0.0, 0.8**p]],
                                                   dtype=torch.float64))
    torch.testing.assert_close(phi_k, torch.tensor([[0.125, 0.0, 0.0, 8.0]],
                                                   dtype=torch.float64))


def test_row_entropy_of_uniform_and_one_hot_rows():
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 0.0, 0.0]])
    torch.testing.assert_close(row_entropy(w), torch.tensor([math.log(4), 0.0]))


# --------------------------------------------------------------------------- modules
@pytest.mark.parametrize("module", [ReLULinearAttention(32, num_heads=4),
                                    NormAwareLinearAttention(32, num_heads=2),
                                    NormAwareLinearAttention(32, num_heads=1, lepe_kernel=0)])
def test_attention_modules_shapes_and_gradients(module):
    torch.manual_seed(0)
    x = torch.randn(2, 20, 32, requires_grad=True)
    y = module(x)
    assert y.shape == (2, 20, 32)
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_relu_attention_module_equals_per_head_functional():
    torch.manual_seed(1)
    m = ReLULinearAttention(12, num_heads=3).double()
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    q, k, v = m.qkv(x).chunk(3, dim=-1)
    heads = [relu_linear_attention(q[..., h * 4:(h + 1) * 4], k[..., h * 4:(h + 1) * 4],
                                   v[..., h * 4:(h + 1) * 4]) for h in range(3)]
    torch.testing.assert_close(m(x), m.proj(torch.cat(heads, dim=-1)))


def test_care_block_shapes_gradients_and_split():
    torch.manual_seed(0)
    blk = CAREBlock(32, local_ratio=0.25, num_heads=2)
    assert (blk.c_local, blk.c_global) == (8, 24)
    x = torch.randn(2, 32, 6, 5, requires_grad=True)
    y = blk(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    for name, p in blk.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("hw", "heads", "batch"),
                         [((6, 5), 2, 2), ((8, 8), 1, 1), ((4, 12), 3, 3)])
def test_care_cost_matches_torch_flop_counter(hw, heads, batch):
    blk = CAREBlock(24, local_ratio=0.25, num_heads=heads, kernel_size=3)
    x = torch.randn(batch, 24, *hw)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        blk(x)
    assert blk.cost(*hw, batch=batch).total * 2 == counter.get_total_flops()


def test_care_attention_cost_linear_softmax_quadratic():
    blk = CAREBlock(64, num_heads=4)
    small, big = blk.cost(16, 16), blk.cost(32, 16)
    assert big.n_tokens == 2 * small.n_tokens
    assert big.attention == 2 * small.attention
    assert big.total == 2 * small.total
    assert big.softmax_attention == 4 * small.softmax_attention


def _ulsam_reference(m: ULSAM, x: torch.Tensor) -> torch.Tensor:
    """ULSAM written subspace by subspace, with the module's own parameters (eval mode)."""
    g, c = m.groups, m.channels
    s = c // g
    outs = []
    for i in range(g):
        ch = slice(i * s, (i + 1) * s)
        xi = x[:, ch]
        a = xi * m.depthwise.weight[ch].reshape(1, s, 1, 1) + m.depthwise.bias[ch].reshape(
            1, s, 1, 1)
        a = (a - m.bn1.running_mean[ch].reshape(1, s, 1, 1)) / torch.sqrt(
            m.bn1.running_var[ch].reshape(1, s, 1, 1) + m.bn1.eps)
        a = torch.relu(a * m.bn1.weight[ch].reshape(1, s, 1, 1)
                       + m.bn1.bias[ch].reshape(1, s, 1, 1))
        a = torch.nn.functional.max_pool2d(a, 3, stride=1, padding=1)
        a = (a * m.pointwise.weight[i].reshape(1, s, 1, 1)).sum(1, keepdim=True) \
            + m.pointwise.bias[i]
        a = (a - m.bn2.running_mean[i]) / torch.sqrt(m.bn2.running_var[i] + m.bn2.eps)
        a = torch.relu(a * m.bn2.weight[i] + m.bn2.bias[i])
        a = torch.softmax(a.flatten(1), dim=-1).reshape(a.shape)
        outs.append(xi + xi * a)
    return torch.cat(outs, dim=1)


def test_ulsam_equals_per_subspace_reference():
    torch.manual_seed(0)
    m = ULSAM(16, groups=4).double()
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for bn in (m.bn1, m.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    m.eval()
    x = torch.randn(3, 16, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(m(x), _ulsam_reference(m, x))
    a = m.attention_maps(x)
    assert a.shape == (3, 4, 5, 7)
    torch.testing.assert_close(a.sum(dim=(-2, -1)), torch.ones(3, 4, dtype=torch.float64))


@pytest.mark.parametrize(("c", "g"), [(64, 4), (32, 1), (48, 6), (10, 10)])
def test_ulsam_parameter_count_is_5c_plus_3g(c, g):
    n = sum(p.numel() for p in ULSAM(c, g).parameters())
    assert n == 5 * c + 3 * g
    if (c, g) == (64, 4):
        assert n == 332


def test_ulsam_zero_pointwise_gives_uniform_map():
    torch.manual_seed(0)
    m = ULSAM(8, groups=2)
    with torch.no_grad():
        m.pointwise.weight.zero_()
        m.pointwise.bias.zero_()
    x = torch.randn(2, 8, 4, 5)
    for mode in (m.train, m.eval):
        mode()
        torch.testing.assert_close(m(x), x * (1 + 1 / 20))


def test_ulsam_shapes_and_gradients():
    torch.manual_seed(0)
    m = ULSAM(64, groups=4)
    x = torch.randn(2, 64, 7, 7, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    (y * torch.randn_like(y)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- bad input
def test_bad_input_is_named():
    q = torch.randn(4, 8)
    with pytest.raises(RepscopeValueError, match="kind must be one of softmax, relu, nala; "
                                                 "got 'cosine'"):
        attention_weights(q, q, kind="cosine")  # type: ignore[arg-type]
    with pytest.raises(RepscopeValueError, match="same head dimension"):
        relu_linear_attention(q, torch.randn(4, 6), torch.randn(4, 2))
    with pytest.raises(RepscopeValueError, match="one row per key"):
        relu_linear_attention(q, q, torch.randn(5, 2))
    with pytest.raises(RepscopeTypeError, match="q must be a torch.Tensor; got ndarray"):
        softmax_attention(np.zeros((4, 8)), q, q)  # type: ignore[arg-type]
    with pytest.raises(RepscopeValueError, match="scales must hold at least two positive"):
        norm_entropy_correlation(q, q, scales=(1.0, -2.0))
    with pytest.raises(RepscopeValueError, match="num_heads must be a positive divisor of "
                                                 "dim=32; got 5"):
        NormAwareLinearAttention(32, num_heads=5)
    with pytest.raises(RepscopeValueError, match="lepe_kernel must be 0"):
        NormAwareLinearAttention(32, lepe_kernel=4)
    with pytest.raises(RepscopeValueError, match=r"x must have shape \(batch, n_tokens, 32\); "
                                                 r"got \(2, 32\)"):
        ReLULinearAttention(32)(torch.randn(2, 32))
    with pytest.raises(RepscopeValueError, match=r"local_ratio must be in \(0, 1\); got 1.5"):
        CAREBlock(16, local_ratio=1.5)
    with pytest.raises(RepscopeValueError, match="num_heads must be a positive divisor of the "
                                                 "attention channels=12"):
        CAREBlock(16, local_ratio=0.25, num_heads=5)
    with pytest.raises(RepscopeValueError, match="height must be a positive integer; got 0"):
        CAREBlock(16).cost(0, 4)
    with pytest.raises(RepscopeValueError, match="groups must be a positive divisor of "
                                                 "channels=64; got 5"):
        ULSAM(64, groups=5)
    with pytest.raises(RepscopeValueError, match=r"x must have shape \(batch, 64, height, "
                                                 r"width\); got \(1, 32, 4, 4\)"):
        ULSAM(64)(torch.randn(1, 32, 4, 4))
