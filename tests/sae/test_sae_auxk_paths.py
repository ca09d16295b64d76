"""TopK AuxK on the sparse path takes one of three routes by how many latents are dead (all of
them, a top-k of them by dense products over their columns, or the sparse kernels); each equals
the dense autograd reference, loss and gradients."""

from __future__ import annotations

import pytest
import torch

from repscope.sae import TopKConfig, TopKSAE, TrainState


def _pair(aux_k: int) -> tuple[TopKSAE, TopKSAE]:
    kw = {"d_in": 24, "d_sae": 96, "k": 6, "aux_k": aux_k, "normalize_activations": "none"}
    sparse = TopKSAE(TopKConfig(**kw))  # type: ignore[arg-type]
    dense = TopKSAE(TopKConfig(**kw, sparse=False))  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in sparse.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
        dense.load_state_dict(sparse.state_dict())
    return sparse, dense


@pytest.mark.parametrize(
    ("aux_k", "dead"),
    [
        (12, torch.arange(0, 96, 12)),  # 8 dead <= aux_k: every dead latent, no selection
        (12, torch.arange(5, 65)),  # 60 dead, top 12 of them: dense products over 60 columns
        (1, torch.arange(0, 96, 2)),  # 48 dead > 32 * aux_k: the sparse kernels
    ],
)
def test_auxk_routes_equal_the_dense_reference(aux_k: int, dead: torch.Tensor) -> None:
    x = torch.randn(64, 24, generator=torch.Generator().manual_seed(3)) + 2.0
    losses, grads = [], []
    for sae in _pair(aux_k):
        st = TrainState(96, torch.device("cpu"), dead_after=10)
        st.since_fired[dead] = 100
        st.refresh()
        out = sae.forward_normalized(x)
        loss = sae.loss(x, out, st)
        loss.total.backward()
        losses.append(loss)
        grads.append({n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                      for n, p in sae.named_parameters()})
    assert float(losses[0].terms["auxk"]) > 0
    torch.testing.assert_close(losses[0].terms["auxk"], losses[1].terms["auxk"], rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(losses[0].total, losses[1].total, rtol=1e-5, atol=1e-5)
    for name in grads[1]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-5,
                                   msg=name)
    # only dead latents' encoder columns get the AuxK gradient beyond the main loss's: a
    # latent neither dead nor selected by the main top-k has a zero encoder gradient
    with torch.no_grad():
        active = torch.zeros(96, dtype=torch.bool)
        indices = _pair(aux_k)[0].forward_normalized(x).indices
        assert indices is not None
        active[indices.reshape(-1)] = True
    untouched = ~active
    untouched[dead] = False
    assert torch.all(grads[0]["W_enc"][:, untouched] == 0)
