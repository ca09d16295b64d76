"""TopK SAE: the sparse path against the dense autograd reference and the paper's formulas."""

from __future__ import annotations

import pytest
import torch

from repscope.exceptions import RepscopeTypeError, RepscopeValueError, UnknownNameError
from repscope.sae import SAEOutput, TopKConfig, TopKSAE, TrainState, create_sae
from repscope.sae.archs._sparse import sparse_decode, sparse_gather_linear


def _pair(d: int = 24, m: int = 96, k: int = 6, seed: int = 0) -> tuple[TopKSAE, TopKSAE]:
    sparse = TopKSAE(TopKConfig(d_in=d, d_sae=m, k=k, normalize_activations="none", seed=seed))
    dense = TopKSAE(
        TopKConfig(d_in=d, d_sae=m, k=k, normalize_activations="none", seed=seed, sparse=False)
    )
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in sparse.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
        dense.load_state_dict(sparse.state_dict())
    return sparse, dense


def _state(m: int, dead: slice | None) -> TrainState:
    st = TrainState(m, torch.device("cpu"), dead_after=10)
    if dead is not None:
        st.since_fired[dead] = 100
    st.refresh()
    return st


@pytest.mark.parametrize("dead", [None, slice(0, 60)])
def test_sparse_path_matches_dense_loss_and_gradients(dead: slice | None) -> None:
    sparse, dense = _pair()
    x = torch.randn(64, 24, generator=torch.Generator().manual_seed(3)) + 2.0
    grads = []
    losses = []
    for sae in (sparse, dense):
        st = _state(96, dead)
        out = sae.forward_normalized(x)
        loss = sae.loss(x, out, st)
        loss.total.backward()
        losses.append(loss)
        grads.append({n: p.grad.clone() for n, p in sae.named_parameters()})
    assert ("auxk" in losses[0].terms) == (dead is not None)
    torch.testing.assert_close(losses[0].total, losses[1].total, rtol=1e-5, atol=1e-5)
    for name in grads[1]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-5)
        assert grads[1][name].abs().sum() > 0, name


def test_forward_matches_the_papers_formula() -> None:
    sae, _ = _pair(seed=4)
    x = torch.randn(50, 24, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = sae.forward_normalized(x)
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        keep = pre.topk(6, dim=-1).indices
        z = torch.zeros_like(pre).scatter(1, keep, pre.gather(1, keep)).relu()
        ref = z @ sae.W_dec + sae.b_dec
    torch.testing.assert_close(out.dense(), z)
    torch.testing.assert_close(out.reconstruction, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.pre_acts, pre)
    assert out.values.shape == (50, 6) and out.indices.shape == (50, 6)
    assert torch.equal(out.active(), z != 0)
    assert torch.equal(out.l0(), (z != 0).sum(1))


def test_kernels_match_dense_autograd() -> None:
    g = torch.Generator().manual_seed(0)
    n, d, m, k = 40, 16, 80, 5
    x = torch.randn(n, d, generator=g, requires_grad=True)
    w = torch.randn(d, m, generator=g, requires_grad=True)
    b = torch.randn(m, generator=g, requires_grad=True)
    wd = torch.randn(m, d, generator=g, requires_grad=True)
    shift = torch.randn(d, generator=g, requires_grad=True)
    idx = torch.stack([torch.randperm(m, generator=g)[:k] for _ in range(n)])
    gout = torch.randn(n, d, generator=g)

    pre = (x - shift) @ w + b
    vals = pre.gather(1, idx)
    dense = torch.zeros(n, m).scatter(1, idx, vals)
    ((dense @ wd) * gout).sum().backward()
    params = (x, w, b, wd, shift)
    ref = [t.grad.clone() for t in params]
    for t in params:
        t.grad = None
    with torch.no_grad():
        gathered = ((x - shift) @ w + b).gather(1, idx)
    v2 = sparse_gather_linear(x, w, b, idx, gathered, shift=shift)
    (sparse_decode(v2, idx, wd) * gout).sum().backward()
    for t, r in zip(params, ref):
        torch.testing.assert_close(t.grad, r, rtol=1e-5, atol=1e-5)


def test_leading_dimensions_are_flattened_and_raw_space_is_restored() -> None:
    sae = TopKSAE(TopKConfig(d_in=8, d_sae=32, k=3))
    x = torch.randn(4, 5, 8) * 10 + 3
    with torch.no_grad():
        sae.fit_normalizer(x.reshape(-1, 8))
        out = sae(x)
        direct = sae.forward_normalized(sae.normalize(x.reshape(-1, 8)))
    assert isinstance(out, SAEOutput)
    assert out.reconstruction.shape == (20, 8)
    torch.testing.assert_close(out.reconstruction, sae.denormalize(direct.reconstruction))
    # the scale normaliser makes the mean input norm sqrt(d_in)
    norms = torch.linalg.vector_norm(sae.normalize(x.reshape(-1, 8)), dim=1)
    assert abs(float(norms.mean()) - 8**0.5) < 1e-4


def test_bad_input_is_named() -> None:
    with pytest.raises(RepscopeValueError, match=r"'k' parameter of TopKConfig .* d_sae=16"):
        TopKSAE(TopKConfig(d_in=8, d_sae=16, k=17))
    sae = TopKSAE(TopKConfig(d_in=8, d_sae=16, k=2))
    with pytest.raises(RepscopeValueError, match=r"d_in=8.*\(3, 9\)"):
        sae(torch.randn(3, 9))
    with pytest.raises(RepscopeTypeError, match="torch.Tensor"):
        sae([[0.0] * 8])  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="topk"):
        create_sae("topkk", d_in=8, d_sae=16)
    with pytest.raises(RepscopeTypeError, match="parameters are"):
        create_sae("topk", d_in=8, d_sae=16, kk=3)
    assert create_sae("topk", d_in=8, width=16, k=3).d_sae == 16
