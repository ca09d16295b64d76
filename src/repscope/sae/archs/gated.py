"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse
Autoencoders"; the ``gated`` architecture of SAELens).

One encoder matrix, two paths: a gate that decides *which* latents fire and a magnitude path
(the same directions, rescaled per latent by ``exp(r_mag)``) that decides *how much*:

.. math::

    \\pi_{gate} = (x - b_{dec}) W_{enc} + b_{gate}, \\qquad
    \\pi_{mag} = (x - b_{dec}) (W_{enc} \\odot e^{r_{mag}}) + b_{mag},

    z = \\mathbb{1}[\\pi_{gate} > 0] \\odot \\mathrm{ReLU}(\\pi_{mag}), \\qquad
    \\hat x = z W_{dec} + b_{dec}.

The gate has no gradient; the loss trains it through a sparsity penalty and an auxiliary
reconstruction from the gate's ReLU with a frozen decoder:

.. math::

    L = \\frac{1}{n} \\sum_i \\Big( \\lVert x_i - \\hat x_i \\rVert^2
        + \\lambda \\sum_j \\mathrm{ReLU}(\\pi_{gate, ij}) \\lVert W_{dec, j} \\rVert
        + \\lVert x_i - \\mathrm{ReLU}(\\pi_{gate, i}) \\, \\mathrm{sg}(W_{dec})
          - \\mathrm{sg}(b_{dec}) \\rVert^2 \\Big),

where ``sg`` stops the gradient. The paper's penalty has no decoder-norm factor because its
decoder rows have unit norm (``normalize_decoder=True`` here too, so the two agree); the factor,
as in SAELens, keeps the penalty meaningful when the decoder is left free. SAELens has no ``b_enc`` for this architecture, so the module
has none either (``b_enc`` is None) and the saved tensors are exactly ``W_enc``, ``W_dec``,
``b_dec``, ``b_gate``, ``r_mag`` and ``b_mag``. ``pre_acts`` in :class:`~repscope.sae.SAEOutput`
is ``pi_mag``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from repscope.sae.archs._base import (
    SAEConfig,
    SAELoss,
    SAEOutput,
    SparseAutoencoder,
    TrainState,
    check_coefficient,
    check_count,
    dense_codes,
    encoder_input,
    register_architecture,
    warmup_factor,
)

__all__ = ["GatedConfig", "GatedSAE"]


@dataclass
class GatedConfig(SAEConfig):
    """Gated SAE settings, besides :class:`~repscope.sae.SAEConfig`'s.

    Parameters
    ----------
    l1_coefficient : float
        Weight ``lambda`` of the gate's L1 penalty, >= 0. The default 5.0 matches
        :class:`~repscope.sae.archs.relu.ReLUConfig` for inputs under the ``"scale"`` normaliser;
        sweep it to choose the sparsity.
    l1_warmup_steps : int
        Steps over which the coefficient ramps linearly from 0 (SAELens ``l1_warm_up_steps``).
    """

    l1_coefficient: float = 5.0
    l1_warmup_steps: int = 0

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        check_coefficient(self.l1_coefficient, name="l1_coefficient", owner=owner)
        check_count(self.l1_warmup_steps, name="l1_warmup_steps", owner=owner)


@register_architecture("gated", family="gated", sparse_codes=False)
class GatedSAE(SparseAutoencoder):
    """Gated SAE (see the module docstring); dense codes.

    Attributes
    ----------
    b_gate, r_mag, b_mag : nn.Parameter of shape (d_sae,)
        Gate bias, log magnitude rescaling, magnitude bias (all zero at initialisation).

    Examples
    --------
    >>> import torch
    >>> from repscope.sae import GatedConfig, GatedSAE
    >>> sae = GatedSAE(GatedConfig(d_in=16, d_sae=64))
    >>> sorted(sae.folded_state_dict())
    ['W_dec', 'W_enc', 'b_dec', 'b_gate', 'b_mag', 'r_mag']
    """

    config_class = GatedConfig
    cfg: GatedConfig

    def __init__(self, cfg: GatedConfig) -> None:
        super().__init__(cfg)
        # SAELens's gated SAE has no encoder bias: b_gate and b_mag replace it.
        self.register_parameter("b_enc", None)
        dtype = self.W_enc.dtype
        self.b_gate = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))

    def gate_pre_acts(self, xn: Tensor) -> Tensor:
        """``pi_gate`` of normalised inputs (n, d_in), shape (n, d_sae)."""
        return torch.addmm(self.b_gate, encoder_input(self, xn), self.W_enc)

    def encode_normalized(self, xn: Tensor) -> SAEOutput:
        """Codes of normalised inputs ``xn`` (n, d_in); ``pre_acts`` is ``pi_mag`` (n, d_sae)."""
        x_in = encoder_input(self, xn)
        pi_gate = torch.addmm(self.b_gate, x_in, self.W_enc)
        pi_mag = torch.addmm(self.b_mag, x_in, self.W_enc * torch.exp(self.r_mag))
        values = (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag)
        return SAEOutput(values, None, pi_mag, xn.new_empty(0))

    def decode_normalized(self, values: Tensor, indices: Tensor | None) -> Tensor:
        """Reconstruction (n, d_in) in the normalised space from dense (or sparse) codes."""
        return dense_codes(values, indices, self.d_sae) @ self.W_dec + self.b_dec

    def loss(self, xn: Tensor, out: SAEOutput, state: TrainState) -> SAELoss:
        """Squared error + gate L1 (decoder-norm weighted) + frozen-decoder gate reconstruction.

        Terms: ``"mse"``, ``"l1"`` (coefficient included) and ``"aux_recon"``; they add up to
        ``total``.
        """
        mse = (out.reconstruction - xn).pow(2).sum(-1).mean()
        gate = torch.relu(self.gate_pre_acts(xn))
        coef = self.cfg.l1_coefficient * warmup_factor(state.step, self.cfg.l1_warmup_steps)
        norms = torch.linalg.vector_norm(self.W_dec, dim=1)
        l1 = coef * (gate * norms).sum(-1).mean()
        via_gate = gate @ self.W_dec.detach() + self.b_dec.detach()
        aux = (via_gate - xn).pow(2).sum(-1).mean()
        return SAELoss(
            mse + l1 + aux, {"mse": mse.detach(), "l1": l1.detach(), "aux_recon": aux.detach()}
        )
