"""TopK SAE with the AuxK dead-latent loss (Gao et al. 2024, "Scaling and evaluating sparse
autoencoders"; the ``topk`` architecture of SAELens and EleutherAI sparsify).

Encoder ``z = TopK(ReLU((x - b_dec) @ W_enc + b_enc))`` keeps the k largest pre-activations of
each sample (negative ones become 0); decoder ``x_hat = z @ W_dec + b_dec``. The loss is the
squared error plus ``aux_coefficient`` times AuxK: the ``aux_k`` largest pre-activations among
dead latents (no firing in ``dead_after`` training vectors) reconstruct the residual
``e = x - x_hat``, normalised by the residual's variance, so dead latents get a gradient that
pulls them back towards the data.

With ``sparse=True`` (default) the forward and backward run through
:mod:`._sparse`: one dense encoder matmul under ``no_grad`` to choose the k latents,
then gradients over the selected entries only (decode by ``embedding_bag``; ``W_enc``/``W_dec``
gradients by CSR products). ``sparse=False`` is the dense autograd reference; both give the same
loss and gradients to float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from repscope.exceptions import RepscopeValueError
from repscope.sae.archs._base import (
    SAEConfig,
    SAELoss,
    SAEOutput,
    SparseAutoencoder,
    TrainState,
    check_k,
    encoder_input,
    register_architecture,
    residual_variance,
)
from repscope.sae.archs._sparse import sparse_decode, sparse_gather_linear

__all__ = ["TopKConfig", "TopKSAE"]


@dataclass
class TopKConfig(SAEConfig):
    """TopK SAE settings (besides :class:`~repscope.sae.SAEConfig`'s).

    Parameters
    ----------
    k : int
        Active latents per sample, in [1, d_sae].
    aux_k : int or None
        Dead latents used by the AuxK loss per sample; None means ``min(d_in // 2, d_sae)``.
    aux_coefficient : float
        Weight of the AuxK loss (1/32 as in the paper); 0 switches it off.
    dead_after : int or None
        Training vectors without firing after which a latent counts as dead; None means
        ``min(10_000_000, 32 * d_sae)`` (with k/d_sae of 1 %, a live latent fires hundreds of
        times in that span).
    sparse : bool
        Use the sparse kernels (default); False is the dense reference.
    encoder_init_norm : float or None
        Norm each latent's encoder vector (a column of ``W_enc``) starts at; the decoder rows
        start at 1 either way. 0.58 (default), about ``nn.Linear``'s scale (``1/sqrt(3)``) that
        EleutherAI sparsify keeps, reached a given held-out FVU on SmolLM2 activations in fewer
        steps than unit norm (``benchmarks/sae_train.py --time-to-fvu``); None keeps the base
        class's initialisation (unit norm when ``tied_init``).
    """

    k: int = 32
    aux_k: int | None = None
    aux_coefficient: float = 1.0 / 32.0
    dead_after: int | None = None
    sparse: bool = True
    encoder_init_norm: float | None = 0.58

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        check_k(self.k, self.d_sae, owner=owner)
        if self.aux_k is not None:
            check_k(self.aux_k, self.d_sae, name="aux_k", owner=owner)
        if not isinstance(self.aux_coefficient, (int, float)) or not self.aux_coefficient >= 0:
            raise RepscopeValueError(
                f"The 'aux_coefficient' parameter of {owner} must be a float >= 0. "
                f"Got {self.aux_coefficient!r} instead."
            )
        if self.encoder_init_norm is not None and (
            isinstance(self.encoder_init_norm, bool)
            or not isinstance(self.encoder_init_norm, (int, float))
            or not 0 < self.encoder_init_norm < float("inf")
        ):
            raise RepscopeValueError(
                f"The 'encoder_init_norm' parameter of {owner} must be a float > 0 or None. "
                f"Got {self.encoder_init_norm!r} instead."
            )
        if self.dead_after is not None and (
            not isinstance(self.dead_after, int) or self.dead_after < 1
        ):
            raise RepscopeValueError(
                f"The 'dead_after' parameter of {owner} must be a positive int or None. "
                f"Got {self.dead_after!r} instead."
            )

    @property
    def resolved_aux_k(self) -> int:
        return self.aux_k if self.aux_k is not None else max(1, min(self.d_in // 2, self.d_sae))

    @property
    def resolved_dead_after(self) -> int:
        return self.dead_after if self.dead_after is not None else min(10_000_000, 32 * self.d_sae)


def topk_select(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest entries of each row (unsorted): (values, indices)."""
    top = pre.topk(k, dim=-1, sorted=False)
    return top.values, top.indices


@register_architecture("topk", family="topk", sparse_codes=True)
class TopKSAE(SparseAutoencoder):
    """TopK sparse autoencoder (see the module docstring).

    Examples
    --------
    >>> import torch
    >>> from repscope.sae import TopKConfig, TopKSAE
    >>> sae = TopKSAE(TopKConfig(d_in=16, d_sae=64, k=4))
    >>> out = sae(torch.randn(8, 16))
    >>> out.values.shape, out.indices.shape, out.reconstruction.shape
    (torch.Size([8, 4]), torch.Size([8, 4]), torch.Size([8, 16]))
    """

    config_class = TopKConfig
    cfg: TopKConfig

    def __init__(self, cfg: TopKConfig) -> None:
        super().__init__(cfg)
        if cfg.encoder_init_norm is not None:
            with torch.no_grad():
                w = self.W_enc
                norms = torch.linalg.vector_norm(w, dim=0, keepdim=True).clamp_min(1e-12)
                w.mul_(float(cfg.encoder_init_norm) / norms)
        if cfg.sparse:
            # Keep W_enc (d_in, d_sae) as the transpose of a contiguous (d_sae, d_in) matrix:
            # the sparse backward produces its gradient in that layout, so the optimiser gets
            # it without a transpose copy (12 ms a step at d_sae=2304); the encoder matmul
            # reads either layout at full speed.
            self.W_enc = nn.Parameter(self.W_enc.detach().T.contiguous().T)

    def encode_normalized(self, xn: Tensor) -> SAEOutput:
        x_in = encoder_input(self, xn)
        k = self.cfg.k
        if not self.cfg.sparse or not torch.is_grad_enabled():
            pre = torch.addmm(self.b_enc, x_in, self.W_enc)
            vals, idx = topk_select(pre, k)
            return SAEOutput(vals.relu(), idx, pre, xn.new_empty(0))
        with torch.no_grad():
            pre = torch.addmm(self.b_enc, x_in, self.W_enc)
            vals, idx = topk_select(pre, k)
        vals = self._gather(xn, idx, vals).relu()
        return SAEOutput(vals, idx, pre, xn.new_empty(0))

    def _gather(self, xn: Tensor, idx: Tensor, vals: Tensor) -> Tensor:
        """Differentiable pre-activations at ``idx`` (``vals`` holds their values)."""
        shift = self.b_dec if self.cfg.apply_b_dec_to_input else None
        return sparse_gather_linear(xn, self.W_enc, self.b_enc, idx, vals, shift=shift)

    def decode_normalized(self, values: Tensor, indices: Tensor | None) -> Tensor:
        if indices is None:
            return values @ self.W_dec + self.b_dec
        if self.cfg.sparse and values.ndim == 2:
            return sparse_decode(values, indices, self.W_dec) + self.b_dec
        dense = values.new_zeros((*values.shape[:-1], self.d_sae)).scatter(-1, indices, values)
        return dense @ self.W_dec + self.b_dec

    def loss(self, xn: Tensor, out: SAEOutput, state: TrainState) -> SAELoss:
        mse = (out.reconstruction - xn).pow(2).sum(-1).mean()
        terms = {"mse": mse.detach()}
        total = mse
        if self.cfg.aux_coefficient > 0 and state.n_dead > 0:
            auxk = self.auxk_loss(xn, out, state.dead, state.n_dead)
            terms["auxk"] = auxk.detach()
            total = total + self.cfg.aux_coefficient * auxk
        return SAELoss(total, terms)

    def auxk_loss(self, xn: Tensor, out: SAEOutput, dead: Tensor, n_dead: int) -> Tensor:
        """AuxK: the top ``aux_k`` of the ``n_dead`` dead latents reconstruct the (detached)
        residual; normalised by the residual's total variance about its batch mean.

        The sparse kernels work on the dead latents' columns only: the selection is a top-k
        over the ``(n, n_dead)`` pre-activations of the dead latents (all of them when
        ``n_dead <= aux_k``), and when the selected entries are at least 1/32 of those columns
        the loss is computed with dense products over the dead latents' encoder columns and
        decoder rows (on a CPU a dense product does many times more multiply-adds per second
        than the sparse kernels: at 8x on SmolLM2 activations, d_in 576, batch 1,024, one
        thread, a training step with 288 of 4,608 latents dead took 115 ms instead of 200 ms).
        Either way the loss is the same function of the weights, to float32 rounding.
        """
        k_aux = min(self.cfg.resolved_aux_k, n_dead)
        residual = (xn - out.reconstruction).detach()
        if not self.cfg.sparse:
            with torch.no_grad():
                masked = out.pre_acts.detach().masked_fill(~dead, float("-inf"))
                _, idx = topk_select(masked, k_aux)
            pre = torch.addmm(self.b_enc, encoder_input(self, xn), self.W_enc)
            vals = pre.gather(1, idx).relu()
            dense = vals.new_zeros(pre.shape).scatter(1, idx, vals)
            e_hat = dense @ self.W_dec
        else:
            # the dead latents' indices without a host sync (n_dead is known on the host)
            cols = torch.nonzero_static(dead, size=n_dead).reshape(-1)
            with torch.no_grad():
                pre_dead = out.pre_acts.detach().index_select(1, cols)
                pos = topk_select(pre_dead, k_aux)[1] if k_aux < n_dead else None
            if pos is None or 32 * k_aux >= n_dead:
                x_in = encoder_input(self, xn)
                w_enc, w_dec = self.W_enc.index_select(1, cols), self.W_dec.index_select(0, cols)
                acts = torch.addmm(self.b_enc.index_select(0, cols), x_in, w_enc).relu()
                if pos is not None:
                    keep = torch.zeros_like(pre_dead, dtype=torch.bool).scatter_(1, pos, True)
                    acts = acts * keep
                e_hat = acts @ w_dec
            else:
                idx = cols[pos]
                vals = self._gather(xn, idx, pre_dead.gather(1, pos)).relu()
                e_hat = sparse_decode(vals, idx, self.W_dec)
        num = (e_hat - residual).pow(2).sum()
        den, world = residual_variance(residual)
        return world * num / den
