"""The threshold-family SAEs (ReLU/L1, JumpReLU, Gated, BatchTopK, Matryoshka BatchTopK)
against naive re-implementations of their papers' formulas, written here with plain torch ops
on the modules' parameters (float64), plus folding round trips, the BatchTopK/JumpReLU
equivalence, a short training run on synthetic sparse data and config errors.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch
from torch import Tensor

from repscope.exceptions import RepscopeValueError
from repscope.sae.archs._base import SparseAutoencoder, TrainState, architectures, create_sae
from repscope.sae.archs.batchtopk import BatchTopKConfig, BatchTopKSAE
from repscope.sae.archs.gated import GatedConfig, GatedSAE
from repscope.sae.archs.jumprelu import JumpReLUConfig, JumpReLUSAE
from repscope.sae.archs.matryoshka import MatryoshkaConfig, MatryoshkaSAE, default_group_sizes
from repscope.sae.archs.relu import SAELENS_NAME, ReLUConfig, ReLUSAE

D_IN, D_SAE, N = 24, 48, 64
F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _p(t: Tensor) -> Tensor:
    """A parameter as float64 (detached) for the naive references."""
    return t.detach().to(F64)


@torch.no_grad()
def _randomise(sae: SparseAutoencoder, seed: int, *, dec_scale: float = 0.3) -> None:
    """Non-trivial parameters: random encoder/decoder (decoder rows of varied norms) and biases,
    so that some latents fire and some do not."""
    g = _gen(seed)
    sae.W_enc.copy_(torch.randn(sae.W_enc.shape, generator=g) / math.sqrt(sae.d_in))
    sae.W_dec.copy_(torch.randn(sae.W_dec.shape, generator=g) * dec_scale)
    sae.b_dec.copy_(torch.randn(sae.d_in, generator=g) * 0.5)
    if sae.b_enc is not None:
        sae.b_enc.copy_(torch.randn(sae.d_sae, generator=g) * 0.5)
    if isinstance(sae, JumpReLUSAE):
        thr = 0.05 + 0.9 * torch.rand(sae.d_sae, generator=g)
        sae.log_threshold.copy_(torch.log(thr))
    if isinstance(sae, GatedSAE):
        sae.b_gate.copy_(torch.randn(sae.d_sae, generator=g) * 0.5)
        sae.r_mag.copy_(torch.randn(sae.d_sae, generator=g) * 0.3)
        sae.b_mag.copy_(torch.randn(sae.d_sae, generator=g) * 0.5)


def _x(seed: int, n: int = N, d: int = D_IN) -> Tensor:
    return torch.randn(n, d, generator=_gen(seed))


def _pre(xn: Tensor, w_enc: Tensor, bias: Tensor, b_dec: Tensor) -> Tensor:
    return (xn.to(F64) - _p(b_dec)) @ _p(w_enc) + _p(bias)


def _close(actual: Tensor | None, expected: Tensor | None, tol: float = 1e-5) -> None:
    """Agreement to ``tol`` relative to the reference's scale."""
    assert actual is not None
    assert expected is not None
    scale = float(expected.detach().abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.detach().to(F64), expected.to(F64), rtol=tol, atol=tol * max(scale, 1.0)
    )


def _naive_dense_recon(z: Tensor, sae: SparseAutoencoder) -> Tensor:
    return z @ _p(sae.W_dec) + _p(sae.b_dec)


def _sq(a: Tensor, b: Tensor) -> Tensor:
    """Squared error summed over features, mean over samples."""
    return (a - b).pow(2).sum(-1).mean()


# ---------------------------------------------------------------------------- registry


def test_sae_threshold_family_registry_metadata() -> None:
    expected = {
        "relu": (ReLUSAE, "l1"),
        "jumprelu": (JumpReLUSAE, "jumprelu"),
        "gated": (GatedSAE, "gated"),
        "batchtopk": (BatchTopKSAE, "topk"),
        "matryoshka_batchtopk": (MatryoshkaSAE, "topk"),
    }
    for name, (cls, family) in expected.items():
        assert architectures.get(name) is cls
        meta = architectures.meta(name)
        assert meta["family"] == family
        assert meta["sparse_codes"] is False
        assert meta["config"] is cls.config_class
        assert cls.architecture == name
    assert SAELENS_NAME == "standard"
    assert ReLUConfig(d_in=4, d_sae=8).normalize_decoder is False
    sae = create_sae("jumprelu", d_in=8, d_sae=16, bandwidth=0.2)
    assert isinstance(sae, JumpReLUSAE)
    assert sae.cfg.bandwidth == 0.2


# ---------------------------------------------------------------------------- ReLU / L1


def test_sae_relu_forward_loss_and_gradients_match_naive() -> None:
    cfg = ReLUConfig(d_in=D_IN, d_sae=D_SAE, l1_coefficient=0.7, l1_warmup_steps=20)
    sae = ReLUSAE(cfg)
    _randomise(sae, 1)
    x = _x(2)
    out = sae.forward_normalized(x)
    pre = _pre(x, sae.W_enc, sae.b_enc, sae.b_dec)
    z = torch.relu(pre)
    recon = _naive_dense_recon(z, sae)
    fired = (z > 0).double().mean()
    assert 0.2 < fired < 0.8
    _close(out.values, z)
    _close(out.pre_acts, pre)
    _close(out.reconstruction, recon)
    assert out.indices is None

    state = TrainState(D_SAE, sae.device)
    state.step = 5  # warm-up: coefficient 0.7 * 5 / 20
    coef = 0.7 * 5 / 20
    norms = _p(sae.W_dec).norm(dim=1)
    l1 = (z.abs() * norms).sum(-1).mean()
    mse = _sq(recon, x.to(F64))
    loss = sae.loss(x, out, state)
    _close(loss.total, mse + coef * l1)
    _close(loss.terms["mse"], mse)
    _close(loss.terms["l1"], coef * l1)
    loss.total.backward()

    # closed-form gradients: d/dW_dec_j and d/db_enc_j of MSE + coef * sum_j z_j ||W_dec_j||
    resid = recon - x.to(F64)  # (n, d)
    w_dec = _p(sae.W_dec)
    g_wdec = 2.0 / N * z.T @ resid + coef * z.mean(0)[:, None] * w_dec / norms[:, None]
    g_z = 2.0 / N * resid @ w_dec.T + coef / N * norms  # dL/dz (n, d_sae)
    g_benc = ((pre > 0).double() * g_z).sum(0)
    _close(sae.W_dec.grad, g_wdec)
    _close(sae.b_enc.grad, g_benc)


def test_sae_relu_warmup_reaches_full_coefficient() -> None:
    sae = ReLUSAE(ReLUConfig(d_in=D_IN, d_sae=D_SAE, l1_coefficient=2.0, l1_warmup_steps=10))
    _randomise(sae, 3)
    x = _x(4)
    with torch.no_grad():
        out = sae.forward_normalized(x)
        mse = float(_sq(out.reconstruction.double(), x.double()))
        penalty = float(sae.sparsity_penalty(out.values))
    for step, factor in ((0, 0.0), (4, 0.4), (10, 1.0), (50, 1.0)):
        state = TrainState(D_SAE, sae.device)
        state.step = step
        with torch.no_grad():
            total = float(sae.loss(x, out, state).total)
        assert total == pytest.approx(mse + 2.0 * factor * penalty, rel=1e-5)


# ---------------------------------------------------------------------------- JumpReLU


def test_sae_jumprelu_forward_loss_and_ste_gradients_match_paper() -> None:
    eps, lam = 0.3, 0.8
    cfg = JumpReLUConfig(d_in=D_IN, d_sae=D_SAE, l0_coefficient=lam, bandwidth=eps)
    sae = JumpReLUSAE(cfg)
    _randomise(sae, 5)
    x = _x(6)
    out = sae.forward_normalized(x)
    theta = _p(sae.log_threshold).exp()
    pre = _pre(x, sae.W_enc, sae.b_enc, sae.b_dec)
    active = (pre > theta).double()
    z = pre * active
    recon = _naive_dense_recon(z, sae)
    assert 0.1 < float(active.mean()) < 0.7
    _close(out.values, z)
    _close(out.reconstruction, recon)

    mse = _sq(recon, x.to(F64))
    l0 = active.sum(-1).mean()
    loss = sae.loss(x, out, TrainState(D_SAE, sae.device))
    _close(loss.total, mse + lam * l0)
    _close(loss.terms["l0_penalty"], lam * l0)
    loss.total.backward()

    # The paper's rectangle-kernel pseudo-derivatives:
    #   dJumpReLU/dtheta = -(theta/eps) K((pre - theta)/eps),  dH/dtheta = -(1/eps) K(...)
    # and d/dlog_theta = theta * d/dtheta.
    kern = (((pre - theta) / eps).abs() < 0.5).double()
    assert kern.sum() > 50  # the window holds enough samples for a non-trivial check
    g_z = 2.0 / N * (recon - x.to(F64)) @ _p(sae.W_dec).T
    g_theta = (-(theta / eps) * kern * g_z).sum(0) + lam / N * (-(1.0 / eps) * kern).sum(0)
    _close(sae.log_threshold.grad, theta * g_theta)
    # pre-activations get the true gradient where active, none from the L0 term
    _close(sae.b_enc.grad, (active * g_z).sum(0))


def test_sae_jumprelu_threshold_stays_float32_and_saves_as_threshold() -> None:
    sae = JumpReLUSAE(JumpReLUConfig(d_in=8, d_sae=16, dtype="float64", init_threshold=0.25))
    assert sae.log_threshold.dtype == torch.float32
    assert sae.W_enc.dtype == torch.float64
    x = _x(7, n=10, d=8).double()
    out = sae.forward_normalized(x)
    assert out.values.dtype == torch.float64
    sae.loss(x, out, TrainState(16, sae.device)).total.backward()
    assert sae.log_threshold.grad is not None
    assert sae.log_threshold.grad.dtype == torch.float32
    state = sae.folded_state_dict()
    assert "log_threshold" not in state
    torch.testing.assert_close(state["threshold"], torch.full((16,), 0.25), rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------- Gated


def test_sae_gated_forward_loss_and_gradients_match_naive() -> None:
    lam = 0.6
    sae = GatedSAE(GatedConfig(d_in=D_IN, d_sae=D_SAE, l1_coefficient=lam))
    assert sae.b_enc is None
    assert sorted(sae.folded_state_dict()) == [
        "W_dec",
        "W_enc",
        "b_dec",
        "b_gate",
        "b_mag",
        "r_mag",
    ]
    _randomise(sae, 8)
    x = _x(9)
    out = sae.forward_normalized(x)
    x_in = x.to(F64) - _p(sae.b_dec)
    w_enc = _p(sae.W_enc)
    pi_gate = x_in @ w_enc + _p(sae.b_gate)
    pi_mag = x_in @ (w_enc * _p(sae.r_mag).exp()) + _p(sae.b_mag)
    gate = (pi_gate > 0).double()
    z = gate * torch.relu(pi_mag)
    recon = _naive_dense_recon(z, sae)
    assert 0.1 < float((z > 0).double().mean()) < 0.6
    _close(out.values, z)
    _close(out.pre_acts, pi_mag)
    _close(out.reconstruction, recon)

    norms = _p(sae.W_dec).norm(dim=1)
    via_gate = torch.relu(pi_gate) @ _p(sae.W_dec) + _p(sae.b_dec)
    mse = _sq(recon, x.to(F64))
    l1 = (torch.relu(pi_gate) * norms).sum(-1).mean()
    aux = _sq(via_gate, x.to(F64))
    loss = sae.loss(x, out, TrainState(D_SAE, sae.device))
    _close(loss.total, mse + lam * l1 + aux)
    _close(loss.terms["aux_recon"], aux)
    loss.total.backward()

    w_dec = _p(sae.W_dec)
    resid = recon - x.to(F64)
    # b_gate: only the L1 and the auxiliary reconstruction reach the gate
    g_gate = gate * (lam * norms + 2.0 * (via_gate - x.to(F64)) @ w_dec.T) / N
    _close(sae.b_gate.grad, g_gate.sum(0))
    # b_mag: the main reconstruction through the open gates
    g_z = 2.0 / N * resid @ w_dec.T
    _close(sae.b_mag.grad, (gate * (pi_mag > 0).double() * g_z).sum(0))
    # W_dec: the main reconstruction and the weighted L1, nothing from the frozen-decoder aux
    g_wdec = (
        2.0 / N * z.T @ resid + lam * torch.relu(pi_gate).mean(0)[:, None] * w_dec / norms[:, None]
    )
    _close(sae.W_dec.grad, g_wdec)
    # b_dec's frozen copy in the aux path: only the main reconstruction and pi_gate/pi_mag
    assert sae.b_dec.grad is not None


# ---------------------------------------------------------------------------- BatchTopK


def _naive_batch_topk(pre: Tensor, k: int) -> Tensor:
    """Keep the n*k largest ReLU'd entries of the whole batch (threshold at the (n*k)-th)."""
    acts = torch.relu(pre)
    cut = torch.sort(acts.reshape(-1), descending=True).values[k * pre.shape[0] - 1]
    return acts * (acts >= cut).double()


def test_sae_batchtopk_training_forward_keeps_n_times_k_over_the_batch() -> None:
    k = 4
    sae = BatchTopKSAE(BatchTopKConfig(d_in=D_IN, d_sae=D_SAE, k=k))
    _randomise(sae, 10)
    x = _x(11)
    sae.train()
    out = sae.forward_normalized(x)
    pre = _pre(x, sae.W_enc, sae.b_enc, sae.b_dec)
    z = _naive_batch_topk(pre, k)
    _close(out.values, z)
    _close(out.reconstruction, _naive_dense_recon(z, sae))
    per_sample = out.l0()
    assert int(per_sample.sum()) == N * k
    assert int(per_sample.min()) < k < int(per_sample.max())  # k on average, not per sample

    # loss (no dead latents: MSE only) and the closed-form encoder-bias gradient
    recon = _naive_dense_recon(z, sae)
    loss = sae.loss(x, out, TrainState(D_SAE, sae.device))
    _close(loss.total, _sq(recon, x.to(F64)))
    assert set(loss.terms) == {"mse"}
    loss.total.backward()
    g_z = 2.0 / N * (recon - x.to(F64)) @ _p(sae.W_dec).T
    _close(sae.b_enc.grad, ((z > 0).double() * g_z).sum(0))


def test_sae_batchtopk_threshold_is_a_running_average_of_min_kept_activation() -> None:
    sae = BatchTopKSAE(BatchTopKConfig(d_in=D_IN, d_sae=D_SAE, k=3, threshold_lr=0.25))
    _randomise(sae, 12)
    sae.train()
    state = TrainState(D_SAE, sae.device)
    mins = []
    for seed in (13, 14, 15):
        x = _x(seed)
        out = sae.forward_normalized(x)
        mins.append(float(out.values.detach()[out.values.detach() > 0].min()))
        sae.loss(x, out, state)
    expected = mins[0]  # the first batch sets it
    for m in mins[1:]:
        expected = 0.75 * expected + 0.25 * m
    assert float(sae.topk_threshold) == pytest.approx(expected, rel=1e-6)
    # evaluation mode neither uses the batch rule nor moves the threshold
    sae.eval()
    x = _x(16)
    out = sae.forward_normalized(x)
    sae.loss(x, out, state)
    assert float(sae.topk_threshold) == pytest.approx(expected, rel=1e-6)
    pre = _pre(x, sae.W_enc, sae.b_enc, sae.b_dec)
    _close(out.values, pre * (pre > expected).double())


def test_sae_batchtopk_eval_equals_its_jumprelu_export_exactly() -> None:
    sae = BatchTopKSAE(BatchTopKConfig(d_in=D_IN, d_sae=D_SAE, k=5))
    x = _x(17, n=512) * 3.0 + 2.0
    sae.fit_normalizer(x)
    sae.init_from_data(sae.normalize(x))
    _randomise(sae, 18)
    sae.train()
    for i in range(4):  # a few training batches set the threshold
        xb = x[i * 128 : (i + 1) * 128]
        xn = sae.normalize(xb)
        sae.loss(xn, sae.forward_normalized(xn), TrainState(D_SAE, sae.device))
    theta = float(sae.topk_threshold)
    assert theta > 0
    sae.eval()
    jr = sae.to_jumprelu()
    assert isinstance(jr, JumpReLUSAE)
    assert not jr.training
    torch.testing.assert_close(jr.threshold, torch.full((D_SAE,), theta), rtol=1e-6, atol=0)
    a, b = sae(x), jr(x)
    assert torch.equal(a.values, b.values)
    assert torch.equal(a.reconstruction, b.reconstruction)
    frac = float((a.values != 0).double().mean())
    assert 0.0 < frac < 0.5


def test_sae_batchtopk_auxk_matches_naive_on_dead_latents() -> None:
    aux_k, coef = 5, 0.5
    cfg = BatchTopKConfig(d_in=D_IN, d_sae=D_SAE, k=3, aux_k=aux_k, aux_coefficient=coef)
    sae = BatchTopKSAE(cfg)
    _randomise(sae, 19)
    x = _x(20)
    sae.train()
    out = sae.forward_normalized(x)
    state = TrainState(D_SAE, sae.device)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[torch.randperm(D_SAE, generator=_gen(21))[:12]] = True
    state.dead, state.n_dead = dead, int(dead.sum())
    loss = sae.loss(x, out, state)

    pre = _pre(x, sae.W_enc, sae.b_enc, sae.b_dec)
    e = x.to(F64) - out.reconstruction.detach().to(F64)
    e_hat = torch.zeros_like(e)
    for i in range(N):
        cand = torch.nonzero(dead).flatten()
        top = cand[torch.argsort(pre[i, cand], descending=True)[:aux_k]]
        e_hat[i] = torch.relu(pre[i, top]) @ _p(sae.W_dec)[top]
    auxk = (e - e_hat).pow(2).sum() / (e - e.mean(0)).pow(2).sum()
    _close(loss.terms["auxk"], coef * auxk)
    _close(loss.total, _sq(out.reconstruction.detach().double(), x.double()) + coef * auxk)
    # AuxK trains the dead latents only: live latents' encoder biases get no AuxK gradient
    loss.total.backward()
    g_main = 2.0 / N * (out.reconstruction.detach().double() - x.double()) @ _p(sae.W_dec).T
    live = ~dead
    grad = sae.b_enc.grad
    assert grad is not None
    _close(grad[live], ((out.values.detach() > 0).double() * g_main).sum(0)[live])


# ---------------------------------------------------------------------------- Matryoshka


def test_sae_matryoshka_loss_is_mean_of_prefix_losses() -> None:
    groups = [4, 12, 16, 16]
    cfg = MatryoshkaConfig(d_in=D_IN, d_sae=D_SAE, k=4, group_sizes=groups)
    sae = MatryoshkaSAE(cfg)
    _randomise(sae, 22)
    x = _x(23)
    sae.train()
    out = sae.forward_normalized(x)
    loss = sae.loss(x, out, TrainState(D_SAE, sae.device))

    # naive: BatchTopK codes over the full width, then each prefix alone, with autograd
    params = {n: p.detach().to(F64).requires_grad_() for n, p in sae.named_parameters()}
    pre = (x.to(F64) - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
    mask = (_naive_batch_topk(pre.detach(), 4) > 0).double()
    z = torch.relu(pre) * mask
    _close(out.values, z.detach())
    losses = []
    for width in torch.cumsum(torch.tensor(groups), 0).tolist():
        recon = z[:, :width] @ params["W_dec"][:width] + params["b_dec"]
        losses.append(_sq(recon, x.to(F64)))
    naive = torch.stack(losses).mean()
    _close(loss.total, naive.detach())
    _close(loss.terms["prefix_mse"], naive.detach())
    _close(loss.terms["mse"], losses[-1].detach())
    stacked = torch.stack(losses).detach()
    spread = float(stacked.max() - stacked.min())
    assert spread > 1.0  # the prefixes really differ

    loss.total.backward()
    naive.backward()
    for name, p in sae.named_parameters():
        _close(p.grad, params[name].grad)


def test_sae_matryoshka_group_sizes_default_and_eval_rule() -> None:
    assert default_group_sizes(256) == [16, 16, 32, 64, 128]
    assert sum(default_group_sizes(100)) == 100
    assert MatryoshkaConfig(d_in=4, d_sae=64).resolved_group_sizes == [4, 4, 8, 16, 32]
    sae = MatryoshkaSAE(MatryoshkaConfig(d_in=D_IN, d_sae=D_SAE, k=4))
    _randomise(sae, 24)
    with torch.no_grad():
        sae.topk_threshold.fill_(0.4)
    sae.eval()
    x = _x(25)
    pre = _pre(x, sae.W_enc, sae.b_enc, sae.b_dec)
    _close(sae.forward_normalized(x).values, pre * (pre > 0.4).double())
    assert torch.equal(sae(x).values, sae.to_jumprelu()(x).values)


# ---------------------------------------------------------------------------- folding


def _build(name: str, **overrides: Any) -> SparseAutoencoder:
    extra: dict[str, dict[str, Any]] = {
        "relu": {},
        "jumprelu": {},
        "gated": {},
        "batchtopk": {"k": 6},
        "matryoshka_batchtopk": {"k": 6},
    }
    return create_sae(name, d_in=D_IN, d_sae=D_SAE, **extra[name], **overrides)


@pytest.mark.parametrize("mode", ["scale", "whiten"])
@pytest.mark.parametrize("name", ["relu", "jumprelu", "gated", "batchtopk", "matryoshka_batchtopk"])
def test_sae_threshold_folded_state_dict_round_trip(name: str, mode: str) -> None:
    g = _gen(26)
    mix = torch.randn(D_IN, D_IN, generator=g) * 0.5 + torch.eye(D_IN) * 2.0
    x = torch.randn(1024, D_IN, generator=g) @ mix + 20.0  # a large mean
    sae = _build(name, normalize_activations=mode)
    sae.fit_normalizer(x)
    sae.init_from_data(sae.normalize(x))
    _randomise(sae, 27, dec_scale=1.0)
    with torch.no_grad():
        sae.b_dec.copy_(sae.normalize(x).mean(0))
        if isinstance(sae, BatchTopKSAE):
            sae.topk_threshold.fill_(0.5)
    sae.eval()
    ref = sae(x)
    frac = float((ref.values != 0).double().mean())
    assert 0.02 < frac < 0.8

    state = sae.folded_state_dict()
    fresh = type(sae)(dataclasses.replace(sae.cfg, normalize_activations="none"))
    res = fresh.load_state_dict(state, strict=False)
    assert res.unexpected_keys == []
    assert set(res.missing_keys) <= {
        "input_mean",
        "input_scale",
        "input_transform",
        "input_inverse",
    }
    fresh.eval()
    got = fresh(x)
    _close(got.values, ref.values, tol=1e-4)
    _close(got.reconstruction, ref.reconstruction, tol=1e-4)
    # the folded SAE really works on raw inputs: its decoder bias absorbed the mean
    assert float(state["b_dec"].mean()) > 10.0


# ---------------------------------------------------------------------------- training


def _sparse_data(n: int, seed: int, *, d: int = 64, m: int = 128, k: int = 3) -> Tensor:
    """``x = s @ D`` with ``m`` fixed random unit directions in R^d and ``k`` active per sample
    (magnitudes uniform in [0.5, 1.5])."""
    dictionary = torch.randn(m, d, generator=_gen(0))
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    g = _gen(seed)
    idx = torch.rand(n, m, generator=g).argsort(1)[:, :k]
    s = torch.zeros(n, m).scatter(1, idx, 0.5 + torch.rand(n, k, generator=g))
    return s @ dictionary


def _fvu(sae: SparseAutoencoder, x: Tensor) -> tuple[float, float]:
    with torch.no_grad():
        out = sae(x)
    fvu = float((out.reconstruction - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    return fvu, float(out.l0().double().mean())


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("relu", {"l1_coefficient": 2.0}),
        ("jumprelu", {"l0_coefficient": 3.0, "bandwidth": 0.1, "init_threshold": 1.0}),
        ("gated", {"l1_coefficient": 3.0}),
        ("batchtopk", {"k": 3}),
        ("matryoshka_batchtopk", {"k": 3}),
    ],
)
def test_sae_threshold_training_recovers_sparse_data(name: str, params: dict[str, Any]) -> None:
    """64-d data from 128 unit directions, 3 active per sample: 400 Adam steps bring the
    held-out FVU (eval mode) under 0.2 at an L0 near 3; the untrained SAE is far off."""
    from repscope.sae import TrainSettings, fit

    torch.manual_seed(0)
    x_train, x_test = _sparse_data(16_384, 1), _sparse_data(2048, 2)
    sae = create_sae(name, d_in=64, d_sae=128, **params)
    sae.eval()
    fvu0, _ = _fvu(sae, x_test)
    res = fit(x_train, sae, TrainSettings(n_steps=400, batch_size=256, lr=1e-2, log_every=100,
                                          optimizer="adam"))
    fvu, l0 = _fvu(res.sae, x_test)
    assert fvu0 > 0.8
    assert fvu < 0.2
    assert l0 < 8.0


# ---------------------------------------------------------------------------- bad configs


@pytest.mark.parametrize(
    ("cls", "params", "match"),
    [
        (BatchTopKConfig, {"k": 49}, "'k' parameter of BatchTopKConfig"),
        (MatryoshkaConfig, {"k": 100}, "'k' parameter of MatryoshkaConfig"),
        (BatchTopKConfig, {"aux_k": 0}, "'aux_k'"),
        (BatchTopKConfig, {"aux_coefficient": -0.1}, "'aux_coefficient'"),
        (BatchTopKConfig, {"threshold_lr": 0.0}, "'threshold_lr'"),
        (BatchTopKConfig, {"dead_after": 0}, "'dead_after'"),
        (ReLUConfig, {"l1_coefficient": -1.0}, "'l1_coefficient' parameter of ReLUConfig"),
        (ReLUConfig, {"l1_warmup_steps": -5}, "'l1_warmup_steps'"),
        (GatedConfig, {"l1_coefficient": float("nan")}, "'l1_coefficient' parameter of Gated"),
        (JumpReLUConfig, {"l0_coefficient": -2.0}, "'l0_coefficient'"),
        (JumpReLUConfig, {"bandwidth": 0.0}, "'bandwidth'"),
        (JumpReLUConfig, {"init_threshold": -0.1}, "'init_threshold'"),
        (MatryoshkaConfig, {"group_sizes": [16, 16]}, "'group_sizes'.*d_sae=48"),
        (MatryoshkaConfig, {"group_sizes": [0, 48]}, "'group_sizes'"),
    ],
)
def test_sae_threshold_bad_config_names_the_parameter(
    cls: type, params: dict[str, Any], match: str
) -> None:
    cfg = cls(d_in=D_IN, d_sae=D_SAE, **params)
    module = {
        BatchTopKConfig: BatchTopKSAE,
        MatryoshkaConfig: MatryoshkaSAE,
        ReLUConfig: ReLUSAE,
        GatedConfig: GatedSAE,
        JumpReLUConfig: JumpReLUSAE,
    }[cls]
    with pytest.raises(RepscopeValueError, match=match):
        module(cfg)
