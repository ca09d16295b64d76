"""SAE optimisers: schedule-free sign-SGD (the default), Adam and sign-SGD train a TopK SAE;
the sign-based updates equal naive references step by step; the defaults are the documented
ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from repscope.exceptions import RepscopeValueError
from repscope.sae import TopKConfig, TopKSAE, TrainSettings, default_lr, fit
from repscope.sae.training import ScheduleFreeSignSGD, SignSGD


def _problem(n: int = 6000, d: int = 24, n_atoms: int = 96, seed: int = 0) -> torch.Tensor:
    """Sparse sums of unit atoms (3 active per row) on an offset, plus a little noise."""
    g = np.random.default_rng(seed)
    atoms = g.standard_normal((n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n, n_atoms))
    for i in range(n):
        codes[i, g.choice(n_atoms, 3, replace=False)] = g.exponential(1.0, 3) + 0.5
    x = codes @ atoms + 0.05 * g.standard_normal((n, d)) + 2.0
    return torch.as_tensor(x, dtype=torch.float32)


def _fvu(sae: TopKSAE, x: torch.Tensor) -> float:
    with torch.no_grad():
        r = sae(x).reconstruction
    return float((x - r).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


@pytest.mark.parametrize("optimizer", ["schedule_free_sign_sgd", "adam", "sign_sgd"])
def test_each_optimizer_lowers_held_out_fvu(optimizer: str) -> None:
    x = _problem()
    train, held = x[:5000], x[5000:]
    sae = TopKSAE(TopKConfig(d_in=24, d_sae=96, k=3, seed=0))
    start = TopKSAE(TopKConfig(d_in=24, d_sae=96, k=3, seed=0))
    start.fit_normalizer(train)
    with torch.no_grad():
        start.init_from_data(start.normalize(train))
    before = _fvu(start, held)
    res = fit(train, sae, TrainSettings(n_steps=150, batch_size=256, optimizer=optimizer))
    after = _fvu(res.sae, held)
    assert math.isfinite(after)
    assert after < 0.7 * before, (optimizer, before, after)


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(5, 3, generator=g)),
        torch.nn.Parameter(torch.randn(4, generator=g)),
    ]


def _grads(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(5, 3, generator=g), torch.randn(4, generator=g)]


def test_sign_sgd_step_equals_naive_update() -> None:
    ps = _params()
    start = [p.detach().clone() for p in ps]
    opt = SignSGD(ps, lr=0.01)
    for p, g in zip(ps, _grads(0)):
        p.grad = g.clone()
    opt.step()
    for p, p0, g in zip(ps, start, _grads(0)):
        torch.testing.assert_close(p.detach(), p0 - 0.01 * torch.sign(g), rtol=0, atol=1e-7)


def test_schedule_free_sign_sgd_equals_naive_reference() -> None:
    """Explicit z and x sequences in float64 (uniform averaging at a constant lr), the
    parameters holding y = (1 - b) z + b x while training and x after eval()."""
    lr, b, steps = 0.02, 0.9, 4
    ps = _params()
    z = [p.detach().double().clone() for p in ps]
    xs = [p.detach().double().clone() for p in ps]
    opt = ScheduleFreeSignSGD(ps, lr=lr, momentum=b)
    for t in range(steps):
        for p, g in zip(ps, _grads(t)):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(_grads(t)):
            z[i] = z[i] - lr * torch.sign(g).double()
            c = 1.0 / (t + 1)  # uniform weights: x is the mean of z_1..z_t
            xs[i] = (1 - c) * xs[i] + c * z[i]
        for p, zi, xi in zip(ps, z, xs):
            y = (1 - b) * zi + b * xi
            torch.testing.assert_close(p.detach().double(), y, rtol=0, atol=1e-6)
    opt.eval()
    for p, xi in zip(ps, xs):
        torch.testing.assert_close(p.detach().double(), xi, rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()


def test_schedule_free_sign_sgd_equals_the_schedulefree_wrapper() -> None:
    schedulefree = pytest.importorskip("schedulefree")
    ours, theirs = _params(), _params()
    opt = ScheduleFreeSignSGD(ours, lr=0.01, momentum=0.95)
    ref = schedulefree.ScheduleFreeWrapper(SignSGD(theirs, lr=0.01), momentum=0.95)
    ref.train()
    for t in range(5):
        for a, bb, g in zip(ours, theirs, _grads(t)):
            a.grad, bb.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    for a, bb in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), bb.detach(), rtol=0, atol=1e-6)
    opt.eval()
    ref.eval()
    for a, bb in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), bb.detach(), rtol=0, atol=1e-6)


def test_defaults_are_the_documented_ones() -> None:
    s = TrainSettings()
    assert s.optimizer == "schedule_free_sign_sgd"  # chosen by time to a held-out FVU
    assert s.momentum == 0.95
    assert s.lr is None
    assert default_lr(2**14, "schedule_free_sign_sgd") == pytest.approx(4.7e-3)
    assert default_lr(4 * 2**14, "sign_sgd") == pytest.approx(4.7e-3)  # width-independent
    assert default_lr(2**14, "adam") == pytest.approx(2e-4)
    assert default_lr(2**12, "adam") == pytest.approx(4e-4)
    assert default_lr(2**12) == pytest.approx(4.7e-3)  # the default optimiser's when not named
    x = _problem(n=1024)
    for optimizer in ("schedule_free_sign_sgd", "adam"):
        sae = TopKSAE(TopKConfig(d_in=24, d_sae=96, k=3))
        settings = TrainSettings(n_steps=2, batch_size=512, log_every=1, optimizer=optimizer)
        res = fit(x, sae, settings)
        assert res.history["lr"][-1] == pytest.approx(default_lr(96, optimizer))
    res = fit(x, TopKSAE(TopKConfig(d_in=24, d_sae=96, k=3)),
              TrainSettings(n_steps=2, batch_size=512, log_every=1))
    assert res.history["lr"][-1] == pytest.approx(4.7e-3)  # no optimiser named: sign-based


def test_bad_optimizer_settings_are_named() -> None:
    with pytest.raises(RepscopeValueError, match="'optimizer' parameter of TrainSettings"):
        TrainSettings(optimizer="sgd")
    with pytest.raises(RepscopeValueError, match="'momentum' parameter of TrainSettings"):
        TrainSettings(momentum=0.0)
    with pytest.raises(RepscopeValueError, match="'optimizer' parameter of default_lr"):
        default_lr(64, "adagrad")
    with pytest.raises(RepscopeValueError, match="'weight_decay' parameter of TrainSettings "
                       "applies to optimizer 'adam' only"):
        TrainSettings(weight_decay=1e-4)  # the default optimiser is sign-based
    assert TrainSettings(optimizer="adam", weight_decay=1e-4).weight_decay == 1e-4


def test_topk_encoder_starts_at_the_documented_norm() -> None:
    sae = TopKSAE(TopKConfig(d_in=24, d_sae=96, k=3))  # the default: 0.58
    enc = torch.linalg.vector_norm(sae.W_enc.detach(), dim=0)
    dec = torch.linalg.vector_norm(sae.W_dec.detach(), dim=1)
    torch.testing.assert_close(enc, torch.full((96,), 0.58))
    torch.testing.assert_close(dec, torch.ones(96))
    # still tied in direction: each encoder column is its decoder row scaled
    torch.testing.assert_close(sae.W_enc.detach(), 0.58 * sae.W_dec.detach().T)
    unit = TopKSAE(TopKConfig(d_in=24, d_sae=96, k=3, encoder_init_norm=None))  # unit, tied
    torch.testing.assert_close(unit.W_enc.detach(), unit.W_dec.detach().T)
    with pytest.raises(RepscopeValueError, match="'encoder_init_norm' parameter of TopKConfig"):
        TopKConfig(d_in=24, d_sae=96, k=3, encoder_init_norm=0.0).validate()
