"""The standard ReLU SAE with a decoder-norm-weighted L1 penalty (SAELens ``standard``).

Encoder ``z = ReLU((x - b_dec) @ W_enc + b_enc)``, decoder ``x_hat = z @ W_dec + b_dec``
(Bricken et al. 2023, "Towards Monosemanticity"). The loss follows Anthropic's April 2024
update ("Circuits Updates — April 2024", the recipe SAELens ships as ``standard``):

.. math::

    L = \\frac{1}{n} \\sum_i \\lVert x_i - \\hat x_i \\rVert_2^2
        + \\lambda_t \\frac{1}{n} \\sum_i \\sum_j |z_{ij}| \\, \\lVert W_{dec, j} \\rVert_2,
    \\qquad \\lambda_t = \\lambda \\min(1, t / T_{warm}).

Because the penalty weights each code by its decoder row's norm, shrinking a code while growing
its row no longer lowers the loss, so the decoder is left free (``normalize_decoder=False`` by
default, unlike the base :class:`~repscope.sae.SAEConfig`).

The registry name is ``"relu"``; :data:`SAELENS_NAME` is the name SAELens writes in
``cfg.json`` (``"standard"``) for the same architecture, which loaders map back to ``"relu"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

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

__all__ = ["SAELENS_NAME", "ReLUConfig", "ReLUSAE"]

#: The architecture name SAELens uses for this SAE in ``cfg.json``.
SAELENS_NAME = "standard"


# ---------------------------------------------------------------------------- config / module


@dataclass
class ReLUConfig(SAEConfig):
    """Standard (ReLU + L1) SAE settings, besides :class:`~repscope.sae.SAEConfig`'s.

    Parameters
    ----------
    l1_coefficient : float
        Weight ``lambda`` of the decoder-norm-weighted L1 penalty, >= 0. The default 5.0 suits
        inputs under the ``"scale"`` normaliser (mean norm ``sqrt(d_in)``), as in SAELens's
        recipes; sweep it to choose the sparsity.
    l1_warmup_steps : int
        Steps over which the coefficient ramps linearly from 0 to ``l1_coefficient``
        (SAELens ``l1_warm_up_steps``); 0 means no warm-up.
    normalize_decoder : bool
        False by default: the decoder-norm weighting makes renormalisation unnecessary.
    """

    l1_coefficient: float = 5.0
    l1_warmup_steps: int = 0
    normalize_decoder: bool = False

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        check_coefficient(self.l1_coefficient, name="l1_coefficient", owner=owner)
        check_count(self.l1_warmup_steps, name="l1_warmup_steps", owner=owner)


@register_architecture("relu", family="l1", sparse_codes=False)
class ReLUSAE(SparseAutoencoder):
    """ReLU SAE trained with a decoder-norm-weighted L1 penalty (see the module docstring).

    Codes are dense: ``values`` has shape (n, d_sae) and ``indices`` is None.

    Examples
    --------
    >>> import torch
    >>> from repscope.sae import ReLUConfig, ReLUSAE
    >>> sae = ReLUSAE(ReLUConfig(d_in=16, d_sae=64))
    >>> out = sae(torch.randn(8, 16))
    >>> out.values.shape, out.indices, out.reconstruction.shape
    (torch.Size([8, 64]), None, torch.Size([8, 16]))
    """

    config_class = ReLUConfig
    cfg: ReLUConfig

    def encode_normalized(self, xn: Tensor) -> SAEOutput:
        """Codes of normalised inputs ``xn`` (n, d_in): values and pre_acts of shape (n, d_sae)."""
        pre = torch.addmm(self.b_enc, encoder_input(self, xn), self.W_enc)
        return SAEOutput(torch.relu(pre), None, pre, xn.new_empty(0))

    def decode_normalized(self, values: Tensor, indices: Tensor | None) -> Tensor:
        """Reconstruction (n, d_in) in the normalised space from dense (or sparse) codes."""
        return dense_codes(values, indices, self.d_sae) @ self.W_dec + self.b_dec

    def sparsity_penalty(self, codes: Tensor) -> Tensor:
        """``mean_i sum_j |z_ij| * ||W_dec_j||`` for dense codes (n, d_sae); a scalar."""
        norms = torch.linalg.vector_norm(self.W_dec, dim=1)
        return (codes.abs() * norms).sum(-1).mean()

    def loss(self, xn: Tensor, out: SAEOutput, state: TrainState) -> SAELoss:
        """Squared error plus the (warmed-up) weighted L1 penalty.

        Terms: ``"mse"`` (squared error summed over features, mean over samples) and ``"l1"``
        (the penalty times its current coefficient); they add up to ``total``.
        """
        mse = (out.reconstruction - xn).pow(2).sum(-1).mean()
        coef = self.cfg.l1_coefficient * warmup_factor(state.step, self.cfg.l1_warmup_steps)
        l1 = coef * self.sparsity_penalty(out.dense())
        return SAELoss(mse + l1, {"mse": mse.detach(), "l1": l1.detach()})
