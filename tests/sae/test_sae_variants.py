"""Matching-pursuit, PolySAE, group-sparse SAEs and the BOWS tied autoencoder against naive
reference implementations written from the papers' recipes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.sae.archs._base import TrainState
from repscope.sae.archs.bows import TiedAutoencoder, train_tied_autoencoder
from repscope.sae.archs.group_sparse import GroupSparseConfig, GroupSparseSAE, group_l21
from repscope.sae.archs.matching_pursuit import MPSAE, MPConfig, matching_pursuit
from repscope.sae.archs.poly import PolyConfig, PolySAE, orthonormalize_columns
from repscope.sae.archs.topk import TopKConfig, TopKSAE


def _perturb(sae: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    """Move every trainable tensor away from its (structured) initialisation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _fresh(sae_cls, cfg, state):
    """A copy of an SAE on raw inputs, from a folded state dict."""
    other = sae_cls(cfg)
    missing, unexpected = other.load_state_dict(state, strict=False)
    assert not unexpected
    assert set(missing) <= {"input_mean", "input_scale", "input_transform", "input_inverse"}
    return other


# ---------------------------------------------------------------------------- matching pursuit


def _naive_mp(x: np.ndarray, W: np.ndarray, b: np.ndarray, k: int):
    """The MP-SAE recipe, one sample at a time: r = x - b; k times pick argmax r.u_j, take the
    coefficient, subtract it; codes on the (possibly unnormalised) rows, x_hat = z W + b."""
    norms = np.linalg.norm(W, axis=1)
    U = W / norms[:, None]
    vals = np.zeros((x.shape[0], k))
    idx = np.zeros((x.shape[0], k), dtype=np.int64)
    residuals = np.zeros((x.shape[0], k, x.shape[1]))
    for i in range(x.shape[0]):
        r = x[i] - b
        for t in range(k):
            c = U @ r
            j = int(np.argmax(c))
            vals[i, t] = c[j] / norms[j]
            idx[i, t] = j
            r = r - c[j] * U[j]
            residuals[i, t] = r
    recon = np.stack([vals[i] @ W[idx[i]] for i in range(x.shape[0])]) + b
    return vals, idx, residuals, recon


def _mp(d=6, m=15, k=3, dtype="float64", **kw):
    sae = MPSAE(MPConfig(d_in=d, d_sae=m, k=k, normalize_activations="none", dtype=dtype, **kw))
    with torch.no_grad():
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(5))
    return sae


def test_mp_forward_equals_naive_greedy_loop():
    sae = _mp()
    with torch.no_grad():  # rows of different norms: the codes refer to the raw rows
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, 15, dtype=torch.float64)[:, None])
    x = torch.randn(12, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = sae.forward_normalized(x)
    vals, idx, _, recon = _naive_mp(
        x.numpy(), sae.W_dec.detach().numpy(), sae.b_dec.detach().numpy(), 3
    )
    np.testing.assert_array_equal(out.indices.numpy(), idx)
    np.testing.assert_allclose(out.values.detach().numpy(), vals, atol=1e-12)
    np.testing.assert_allclose(out.reconstruction.detach().numpy(), recon, atol=1e-12)
    first = (x - sae.b_dec) @ (sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)).T
    np.testing.assert_allclose(out.pre_acts.numpy(), first.detach().numpy(), atol=1e-12)


def test_mp_residual_is_orthogonal_to_each_chosen_atom_after_its_step():
    sae = _mp(d=8, m=30, k=5)
    x = torch.randn(20, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = sae.encode_normalized(x)
    W = sae.W_dec.detach()
    r = x - sae.b_dec.detach()
    for t in range(5):
        j = out.indices[:, t]
        r = r - out.values[:, t, None].detach() * W[j]
        unit = W[j] / W[j].norm(dim=1, keepdim=True)
        np.testing.assert_allclose((r * unit).sum(1).numpy(), 0.0, atol=1e-12)
    # and the residual norm never grows
    assert (
        torch.linalg.vector_norm(r, dim=1).le(torch.linalg.vector_norm(x - sae.b_dec, dim=1)).all()
    )


def _naive_mp_autograd(x, W, b, k):
    """The unrolled loop as plain autograd with dense one-hot codes (the memory-hungry way)."""
    norms = W.norm(dim=1)
    U = W / norms[:, None]
    r = x - b
    z = torch.zeros(x.shape[0], W.shape[0], dtype=x.dtype)
    for _ in range(k):
        c = r @ U.T
        j = c.argmax(1)
        onehot = torch.nn.functional.one_hot(j, W.shape[0]).to(x.dtype)
        cj = (c * onehot).sum(1)
        z = z + onehot * (cj / norms[j])[:, None]
        r = r - cj[:, None] * U[j]
    return z @ W + b


def test_mp_gradients_equal_naive_unrolled_autograd():
    sae = _mp(d=7, m=20, k=4)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.7, 1.6, 20, dtype=torch.float64)[:, None])
    x = torch.randn(16, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    target = torch.randn(16, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    (sae.forward_normalized(x).reconstruction - target).pow(2).sum().backward()
    g_w, g_b = sae.W_dec.grad.clone(), sae.b_dec.grad.clone()
    W = sae.W_dec.detach().clone().requires_grad_(True)
    b = sae.b_dec.detach().clone().requires_grad_(True)
    (_naive_mp_autograd(x, W, b, 4) - target).pow(2).sum().backward()
    np.testing.assert_allclose(g_w.numpy(), W.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(g_b.numpy(), b.grad.numpy(), atol=1e-10)
    assert sae.W_enc.grad is None and sae.b_enc.grad is None


def test_mp_function_passes_gradcheck_with_adaptive_stopping():
    gen = torch.Generator().manual_seed(0)
    r0 = torch.randn(5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    a = torch.randn(9, 4, dtype=torch.float64, generator=gen)
    atoms = (a / a.norm(dim=1, keepdim=True)).requires_grad_(True)
    for thr in (None, 0.5):
        assert torch.autograd.gradcheck(
            lambda r, u, thr=thr: matching_pursuit(r, u, 4, residual_threshold=thr)[0], (r0, atoms)
        )


def test_mp_adaptive_stopping_pads_with_zeros_once_the_residual_is_small():
    sae = _mp(d=8, m=40, k=8)
    x = torch.randn(30, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    full = sae.encode(x)
    out = sae.encode(x, residual_threshold=0.6)
    l0 = out.l0()
    assert (l0 < 8).any() and (l0 >= 1).all()
    r0 = torch.linalg.vector_norm(x - sae.b_dec.detach(), dim=1)
    for i in range(30):
        n = int(l0[i])
        # the same first steps as without stopping, then zeros (index 0)
        np.testing.assert_allclose(out.values[i, :n].detach(), full.values[i, :n].detach())
        assert (out.values[i, n:] == 0).all() and (out.indices[i, n:] == 0).all()
        recon = (out.values[i, :n, None].detach() * sae.W_dec.detach()[out.indices[i, :n]]).sum(0)
        rel = torch.linalg.vector_norm(x[i] - sae.b_dec.detach() - recon) / r0[i]
        assert rel < 0.6
        if n > 1:
            prev = (
                out.values[i, : n - 1, None].detach() * sae.W_dec.detach()[out.indices[i, : n - 1]]
            ).sum(0)
            assert torch.linalg.vector_norm(x[i] - sae.b_dec.detach() - prev) / r0[i] >= 0.6
    assert sae.encode(x, k=2).values.shape == (30, 2)
    with pytest.raises(RepscopeValueError, match="residual_threshold"):
        sae.encode(x, residual_threshold=-1.0)


def _saved_bytes(fn):
    """Bytes of the distinct storages autograd saves for backward while running ``fn``."""
    storages: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    return loss, sum(storages.values())


def _mp_memory_bound(n, d, m, k):
    # O(n (d + k) + m d) floats with a generous constant; one dense (n, m) copy per step would
    # be k * n * m floats.
    return 8 * 4 * (n * (d + k) + m * d)


def test_mp_backward_saves_no_dense_copy_per_step():
    n, d, m, k = 4096, 16, 4096, 16
    sae = MPSAE(MPConfig(d_in=d, d_sae=m, k=k, normalize_activations="none"))
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    loss, nbytes = _saved_bytes(lambda: (sae.forward_normalized(x).reconstruction - x).pow(2).sum())
    assert nbytes < _mp_memory_bound(n, d, m, k)
    assert nbytes < n * m * 4  # less than a single dense (n, d_sae) float32 tensor
    loss.backward()
    assert torch.isfinite(sae.W_dec.grad).all() and sae.W_dec.grad.abs().sum() > 0
    # the check does catch the naive unrolled loop (k dense one-hot codes saved)
    n, m = 512, 512
    W = torch.randn(m, d, requires_grad=True)
    b = torch.zeros(d, requires_grad=True)
    xs = torch.randn(n, d)
    _, naive = _saved_bytes(lambda: _naive_mp_autograd(xs, W, b, k).sum())
    assert naive > _mp_memory_bound(n, d, m, k)


def test_mp_scale_normaliser_folds_exactly_and_whitening_is_refused():
    gen = torch.Generator().manual_seed(0)
    X = 7.0 * torch.randn(300, 10, generator=gen) + 2.0
    sae = MPSAE(MPConfig(d_in=10, d_sae=40, k=4, normalize_activations="scale"))
    sae.fit_normalizer(X)
    sae.init_from_data(sae.normalize(X))
    _perturb(sae, scale=0.05)
    sae.after_optimizer_step()
    folded = sae.folded_state_dict()
    raw = _fresh(MPSAE, MPConfig(d_in=10, d_sae=40, k=4, normalize_activations="none"), folded)
    a, b = sae(X), raw(X)
    np.testing.assert_array_equal(a.indices.numpy(), b.indices.numpy())
    np.testing.assert_allclose(a.values.detach(), b.values.detach(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        a.reconstruction.detach(), b.reconstruction.detach(), rtol=1e-4, atol=1e-4
    )
    # W_enc stays the first step's coefficient map W_dec / ||W_dec||^2 after folding
    w = folded["W_dec"]
    np.testing.assert_allclose(folded["W_enc"], (w / w.pow(2).sum(1, keepdim=True)).T, rtol=1e-4)
    with pytest.raises(RepscopeValueError, match="normalize_activations.*whiten"):
        MPConfig(d_in=10, d_sae=40, normalize_activations="whiten").validate()


def test_mp_encoder_weights_are_frozen_and_tied_to_the_decoder():
    sae = MPSAE(MPConfig(d_in=5, d_sae=12, k=2))
    assert not sae.W_enc.requires_grad and not sae.b_enc.requires_grad
    _perturb(sae)
    sae.after_optimizer_step()
    np.testing.assert_allclose(sae.W_dec.norm(dim=1).detach(), 1.0, atol=1e-6)
    np.testing.assert_allclose(sae.W_enc.detach(), sae.W_dec.detach().T, atol=1e-6)
    x = torch.randn(4, 5)
    out = sae(x)
    np.testing.assert_allclose(
        sae.decode(out.dense()).detach(), out.reconstruction.detach(), atol=1e-5
    )


# ---------------------------------------------------------------------------- PolySAE


def _naive_poly(z, sae, shared, order, ranks):
    """The PolySAE decoder (Koromilas et al.) in numpy from the recipe's formulas."""
    _, r2, r3 = ranks
    g = {n: p.detach().numpy().astype(np.float64) for n, p in sae.named_parameters()}
    out = g["b_dec"] + 0.0
    if shared:
        a = z @ g["U"]
        out = out + a @ g["C1"].T
        if order >= 2:
            out = out + g["lambda2"] * (a[:, :r2] ** 2) @ g["C2"].T
        if order >= 3:
            out = out + g["lambda3"] * (a[:, :r3] ** 3) @ g["C3"].T
        return out
    a1 = z @ g["U1"]
    out = out + a1 @ g["C1"].T
    if order >= 2:
        out = out + g["lambda2"] * (a1[:, :r2] * (z @ g["U2"])) @ g["C2"].T
    if order >= 3:
        h = a1[:, :r3] * (z @ g["U2"][:, :r3]) * (z @ g["U3"])
        out = out + g["lambda3"] * h @ g["C3"].T
    return out


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_poly_forward_equals_naive_decoder(shared, order):
    ranks = (12, 6, 4)
    sae = PolySAE(
        PolyConfig(
            d_in=8,
            d_sae=20,
            k=5,
            order=order,
            ranks=ranks,
            shared_u=shared,
            normalize_activations="none",
            dtype="float64",
        )
    )
    _perturb(sae, scale=0.2)
    x = torch.randn(10, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = sae.forward_normalized(x)
    # TopK encoder as in the TopK SAE
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    top = pre.topk(5, dim=1)
    np.testing.assert_array_equal(np.sort(out.indices.numpy(), 1), np.sort(top.indices.numpy(), 1))
    z = out.dense().detach().numpy()
    np.testing.assert_allclose(
        out.reconstruction.detach().numpy(), _naive_poly(z, sae, shared, order, ranks), atol=1e-10
    )
    np.testing.assert_allclose(
        sae.decode_normalized(out.dense(), None).detach().numpy(),
        out.reconstruction.detach().numpy(),
        atol=1e-10,
    )
    if order > 1:
        assert set(sae.extra_tensors) >= {"C1", "C2", "lambda2"}
    assert "W_dec" not in sae.extra_tensors


@pytest.mark.parametrize("shared", [True, False])
def test_poly_u_is_orthonormal_after_a_step_and_w_dec_is_the_linear_term(shared):
    sae = PolySAE(PolyConfig(d_in=6, d_sae=16, k=3, ranks=(8, 4, 3), shared_u=shared))
    names = ["U"] if shared else ["U1", "U2", "U3"]
    for n in names:
        u = getattr(sae, n).detach()
        np.testing.assert_allclose(u.T @ u, np.eye(u.shape[1]), atol=1e-5)
    x = torch.randn(32, 6)
    opt = torch.optim.Adam([p for p in sae.parameters() if p.requires_grad], lr=0.1)
    loss = sae.loss(x, sae.forward_normalized(x), TrainState(16, torch.device("cpu")))
    loss.total.backward()
    assert sae.W_dec.grad is None
    sae.before_optimizer_step()
    opt.step()
    assert any(
        not torch.allclose(
            getattr(sae, n).T @ getattr(sae, n), torch.eye(getattr(sae, n).shape[1]), atol=1e-3
        )
        for n in names
    )
    sae.after_optimizer_step()
    for n in names:
        u = getattr(sae, n).detach()
        np.testing.assert_allclose(u.T @ u, np.eye(u.shape[1]), atol=1e-5)
    lin = sae.U if shared else sae.U1
    np.testing.assert_allclose(sae.W_dec.detach(), (lin @ sae.C1.T).detach(), atol=1e-6)


def test_orthonormalize_columns_keeps_orthonormal_input_and_skips_collapsed_blocks():
    q, _ = torch.linalg.qr(torch.randn(10, 4, dtype=torch.float64))
    np.testing.assert_allclose(orthonormalize_columns(q), q, atol=1e-12)
    m = torch.randn(10, 4, dtype=torch.float64)
    out = orthonormalize_columns(m)
    np.testing.assert_allclose(out.T @ out, np.eye(4), atol=1e-12)
    assert (torch.diagonal(out.T @ m) > 0).all()  # positive diagonal of R: no sign flips
    tiny = 1e-9 * torch.ones(10, 4)
    assert orthonormalize_columns(tiny) is tiny


@pytest.mark.parametrize("mode", ["scale", "whiten"])
@pytest.mark.parametrize("shared", [True, False])
def test_poly_normaliser_folds_into_c_exactly(mode, shared):
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(8, 8, generator=gen)
    X = torch.randn(400, 8, generator=gen, dtype=torch.float64).float() @ mix + 3.0
    cfg = dict(d_in=8, d_sae=24, k=4, order=3, ranks=(10, 6, 4), shared_u=shared)
    sae = PolySAE(PolyConfig(**cfg, normalize_activations=mode))
    sae.fit_normalizer(X)
    sae.init_from_data(sae.normalize(X))
    _perturb(sae, scale=0.1)
    sae.after_optimizer_step()
    raw = _fresh(PolySAE, PolyConfig(**cfg, normalize_activations="none"), sae.folded_state_dict())
    a, b = sae(X), raw(X)
    np.testing.assert_array_equal(np.sort(a.indices.numpy(), 1), np.sort(b.indices.numpy(), 1))
    np.testing.assert_allclose(
        a.reconstruction.detach(), b.reconstruction.detach(), rtol=1e-3, atol=2e-3
    )
    np.testing.assert_allclose(raw.W_dec.detach(), (raw._u(1) @ raw.C1.T).detach(), atol=1e-4)


def test_poly_config_validation():
    with pytest.raises(RepscopeValueError, match="'ranks' parameter of PolyConfig"):
        PolySAE(PolyConfig(d_in=4, d_sae=8, k=2, ranks=(4, 6, 2)))
    with pytest.raises(RepscopeValueError, match="'ranks' parameter of PolyConfig"):
        PolySAE(PolyConfig(d_in=4, d_sae=8, k=2, ranks=(9, 2, 2)))
    with pytest.raises(RepscopeValueError, match="'order' parameter"):
        PolySAE(PolyConfig(d_in=4, d_sae=8, k=2, order=4))
    with pytest.raises(RepscopeValueError, match="'normalize_decoder' parameter"):
        PolySAE(PolyConfig(d_in=4, d_sae=8, k=2, normalize_decoder=True))
    with pytest.raises(RepscopeTypeError, match="must be a PolyConfig"):
        PolySAE(TopKConfig(d_in=4, d_sae=8, k=2))
    assert PolyConfig(d_in=100, d_sae=300).resolved_ranks == (100, 64, 64)
    assert PolyConfig(d_in=4, d_sae=8, ranks=[4, 2, 2]).to_dict()["ranks"] == [4, 2, 2]


# ---------------------------------------------------------------------------- group sparse


def _gs(**kw):
    cfg = dict(d_in=6, d_sae=18, k=3, normalize_activations="none", dtype="float64")
    cfg.update(kw)
    return GroupSparseSAE(GroupSparseConfig(**cfg))


def test_group_l21_equals_dense_formula():
    gen = torch.Generator().manual_seed(0)
    va, vb = torch.rand(7, 3, generator=gen), torch.rand(7, 3, generator=gen)
    ia = torch.stack([torch.randperm(6, generator=gen)[:3] for _ in range(7)])
    ib = torch.stack([torch.randperm(6, generator=gen)[:3] for _ in range(7)])
    za = torch.zeros(7, 6).scatter(1, ia, va)
    zb = torch.zeros(7, 6).scatter(1, ib, vb)
    np.testing.assert_allclose(group_l21(va, ia, vb, ib), (za**2 + zb**2).sqrt().sum(1), rtol=1e-6)
    # identical supports and values: sqrt(2) |z|; disjoint supports: |z_a| + |z_b|
    assert float(group_l21(va, ia, va, ia)[0]) == pytest.approx(float(2**0.5 * va[0].sum()))


@pytest.mark.parametrize("mask_prob", [0.0, 0.5, 1.0])
def test_group_sparse_loss_equals_naive_reimplementation(mask_prob):
    sae = _gs(group_coefficient=0.3, mask_prob=mask_prob)
    _perturb(sae, scale=0.1)
    x = torch.randn(9, 2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = sae.forward_normalized(x)
    assert out.values.shape == (18, 3) and out.reconstruction.shape == (9, 2, 6)
    state_rng = sae._mask_generator.get_state()
    loss = sae.loss(x, out, TrainState(18, torch.device("cpu")))
    # naive: dense codes, both modalities, swapped codes for masked pairs
    z = out.dense().detach()
    flat = x.reshape(18, 6)
    W, b = sae.W_dec.detach(), sae.b_dec.detach()
    err = ((z @ W + b - flat) ** 2).sum(1)
    gen = torch.Generator().manual_seed(0)
    gen.set_state(state_rng)
    masked = torch.rand(9, generator=gen) < mask_prob
    which = torch.randint(0, 2, (9,), generator=gen)
    for i in torch.nonzero(masked).flatten().tolist():
        t, s = 2 * i + int(which[i]), 2 * i + 1 - int(which[i])
        err[t] = ((z[s] @ W + b - flat[t]) ** 2).sum()
    group = (z[0::2] ** 2 + z[1::2] ** 2).sqrt().sum(1).mean()
    expected = err.sum() / 18 + 0.3 * group
    assert float(loss.total.detach()) == pytest.approx(float(expected), rel=1e-10)
    assert float(loss.terms["group"]) == pytest.approx(float(group), rel=1e-10)
    plain = ((z @ W + b - flat) ** 2).sum(1).mean()
    assert float(loss.terms["mse"]) == pytest.approx(float(plain), rel=1e-10)
    assert ("cross_mse" in loss.terms) == bool(masked.any())


def test_group_sparse_pairs_layout_and_eval_mode():
    sae = _gs(mask_prob=1.0)
    x = torch.randn(5, 2, 6, dtype=torch.float64)
    assert sae.sample_shape == (2, 6)
    out = sae(x)  # raw forward flattens pairs into consecutive rows
    assert out.values.shape == (10, 3) and out.reconstruction.shape == (10, 6)
    single = sae.encode(x[:, 1])  # single vectors need no pairing
    np.testing.assert_allclose(single.values.detach(), out.values[1::2].detach())
    sae.eval()  # no masking outside training: loss is the plain objective
    o = sae.forward_normalized(x)
    loss = sae.loss(x, o, TrainState(18, torch.device("cpu")))
    assert "cross_mse" not in loss.terms
    with pytest.raises(RepscopeValueError, match="trains on pairs"):
        sae.loss(
            x.reshape(10, 6)[:9],
            sae.forward_normalized(x.reshape(10, 6)[:9]),
            TrainState(18, torch.device("cpu")),
        )
    with pytest.raises(RepscopeValueError, match="'mask_prob' parameter"):
        _gs(mask_prob=1.5)


def test_group_sparse_normaliser_is_fitted_on_both_modalities():
    x = torch.randn(50, 2, 6) * 3.0
    a = GroupSparseSAE(GroupSparseConfig(d_in=6, d_sae=12, k=2))
    b = TopKSAE(TopKConfig(d_in=6, d_sae=12, k=2))
    a.fit_normalizer(x)
    b.fit_normalizer(x.reshape(-1, 6))
    assert float(a.input_scale) == pytest.approx(float(b.input_scale))
    a.init_from_data(a.normalize(x))
    b.init_from_data(b.normalize(x.reshape(-1, 6)))
    np.testing.assert_allclose(a.b_dec.detach(), b.b_dec.detach(), atol=1e-5)


# ---------------------------------------------------------------------------- BOWS tied AE


def test_tied_autoencoder_forward_and_gram():
    model = TiedAutoencoder(5, 2, output="relu", seed=3)
    with torch.no_grad():
        model.b.normal_()
    x = torch.rand(7, 5)
    W, b = model.W.detach(), model.b.detach()
    np.testing.assert_allclose(model(x).detach(), torch.relu(x @ W.T @ W + b), atol=1e-6)
    np.testing.assert_allclose(model.gram(), W.T @ W, atol=1e-6)
    lin = TiedAutoencoder(5, 2, output="linear", seed=3)
    np.testing.assert_allclose(lin.W.detach(), W)  # same seed, same initialisation
    assert (lin(x) - (x @ W.T @ W)).abs().max() < 1e-5
    with pytest.raises(RepscopeValueError, match="'output' parameter"):
        TiedAutoencoder(5, 2, output="tanh")


def test_train_tied_autoencoder_is_seeded_and_lowers_the_loss():
    gen = np.random.default_rng(0)
    X = (gen.random((300, 6)) < 0.4).astype(np.float32)
    a = train_tied_autoencoder(X, 3, epochs=15, batch_size=64, weight_decay=0.0, seed=1)
    b = train_tied_autoencoder(
        torch.from_numpy(X), 3, epochs=15, batch_size=64, weight_decay=0.0, seed=1
    )
    np.testing.assert_allclose(a.model.W.detach(), b.model.W.detach())
    assert len(a.history) == 15 and a.history[-1] < 0.8 * a.history[0]
    with pytest.raises(RepscopeTypeError, match="'X' parameter of train_tied_autoencoder"):
        train_tied_autoencoder([[0.0, 1.0]], 2)
    with pytest.raises(RepscopeValueError, match="shape \\(n, n_features\\)"):
        train_tied_autoencoder(np.zeros(4), 2)


# ---------------------------------------------------------------------------- saving


@pytest.mark.parametrize(
    ("arch", "params"),
    [
        ("matching_pursuit", {"k": 3}),
        ("poly", {"k": 3, "ranks": (8, 4, 2), "shared_u": False}),
        ("poly", {"k": 3, "ranks": (8, 4, 2), "shared_u": True, "order": 2}),
        ("group_sparse", {"k": 3, "group_coefficient": 0.1}),
    ],
)
def test_variants_round_trip_through_save_and_load(arch, params, tmp_path):
    from repscope.sae import create_sae
    from repscope.sae.io import load_sae, save_sae

    X = 3.0 * torch.randn(200, 8, generator=torch.Generator().manual_seed(0)) + 1.0
    sae = create_sae(arch, d_in=8, d_sae=24, **params)
    sample = X.reshape(-1, *sae.sample_shape)
    sae.fit_normalizer(sample)
    sae.init_from_data(sae.normalize(sample))
    _perturb(sae, scale=0.05)
    sae.after_optimizer_step()
    save_sae(sae, tmp_path / "sae")
    back = load_sae(tmp_path / "sae")
    assert type(back) is type(sae) and back.cfg.normalize_activations == "none"
    a, b = sae(X), back(X)
    np.testing.assert_array_equal(a.indices.numpy(), b.indices.numpy())
    np.testing.assert_allclose(a.reconstruction.detach(), b.reconstruction.detach(), atol=1e-4)
