"""JumpReLU SAE trained on L0 with straight-through estimators (Rajamanoharan et al. 2024,
"Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU Sparse Autoencoders"; the
``jumprelu`` architecture of SAELens and Gemma Scope).

Encoder, with a per-latent threshold ``theta = exp(log_threshold) > 0``:

.. math::

    \\pi = (x - b_{dec}) W_{enc} + b_{enc}, \\qquad
    z = \\mathrm{JumpReLU}_\\theta(\\pi) = \\pi \\, H(\\pi - \\theta),

decoder ``x_hat = z @ W_dec + b_dec``, and loss

.. math::

    L = \\frac{1}{n} \\sum_i \\lVert x_i - \\hat x_i \\rVert_2^2
        + \\lambda \\frac{1}{n} \\sum_i \\lVert z_i \\rVert_0 .

The threshold gets a gradient only through the paper's pseudo-derivatives with the rectangle
kernel ``K(u) = 1{|u| < 1/2}`` and bandwidth ``eps``:

.. math::

    \\frac{\\partial}{\\partial\\theta} \\mathrm{JumpReLU}_\\theta(\\pi) :=
        -\\frac{\\theta}{\\varepsilon} K\\!\\left(\\frac{\\pi - \\theta}{\\varepsilon}\\right),
    \\qquad
    \\frac{\\partial}{\\partial\\theta} H(\\pi - \\theta) :=
        -\\frac{1}{\\varepsilon} K\\!\\left(\\frac{\\pi - \\theta}{\\varepsilon}\\right),

while the pre-activation gets the true gradient ``H(pi - theta)`` through JumpReLU and none
through the step in the L0 term. ``log_threshold`` is kept in float32 whatever the SAE's dtype
(a bfloat16 threshold is too coarse for its small updates); it is saved as SAELens's
``threshold`` tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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

__all__ = ["JumpReLUConfig", "JumpReLUSAE", "jumprelu", "rectangle", "step"]


def rectangle(u: Tensor) -> Tensor:
    """The rectangle kernel ``K(u) = 1{-1/2 < u < 1/2}`` (same dtype as ``u``)."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


def jump(pre: Tensor, threshold: Tensor) -> Tensor:
    """``pre * H(pre - threshold)`` with no gradient rules: the inference-time rule shared with
    :class:`~repscope.sae.archs.batchtopk.BatchTopKSAE` (bit-identical outputs for equal inputs)."""
    return pre * (pre > threshold).to(pre.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return jump(pre, threshold)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        g_pre = g_thr = None
        if ctx.needs_input_grad[0]:
            g_pre = grad * (pre > threshold).to(grad.dtype)
        if ctx.needs_input_grad[1]:
            p32, t32 = pre.to(torch.float32), threshold.to(torch.float32)
            kern = rectangle((p32 - t32) / eps)
            g_thr = (-(t32 / eps) * kern * grad.to(torch.float32)).sum(0).to(threshold.dtype)
        return g_pre, g_thr, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor | None, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        g_thr = None
        if ctx.needs_input_grad[1]:
            p32, t32 = pre.to(torch.float32), threshold.to(torch.float32)
            kern = rectangle((p32 - t32) / eps)
            g_thr = (-(1.0 / eps) * kern * grad.to(torch.float32)).sum(0).to(threshold.dtype)
        return None, g_thr, None


def jumprelu(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """``pre * H(pre - threshold)`` with the paper's straight-through gradients.

    Parameters
    ----------
    pre : Tensor of shape (n, d_sae)
        Pre-activations; their gradient is ``H(pre - threshold)`` times the incoming one.
    threshold : Tensor of shape (d_sae,)
        Positive thresholds; gradient ``-(threshold / bandwidth) K((pre - threshold) /
        bandwidth)`` times the incoming one, summed over samples.
    bandwidth : float
        Width ``eps`` of the rectangle kernel.

    Returns
    -------
    Tensor of shape (n, d_sae)
    """
    out: Tensor = _JumpReLU.apply(pre, threshold, bandwidth)
    return out


def step(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """``H(pre - threshold)`` (as ``pre``'s dtype) with the paper's straight-through gradient:
    none to ``pre``, ``-(1 / bandwidth) K((pre - threshold) / bandwidth)`` to ``threshold``.

    Parameters and shapes as :func:`jumprelu`.
    """
    out: Tensor = _Step.apply(pre, threshold, bandwidth)
    return out


@dataclass
class JumpReLUConfig(SAEConfig):
    """JumpReLU SAE settings, besides :class:`~repscope.sae.SAEConfig`'s.

    Parameters
    ----------
    l0_coefficient : float
        Weight ``lambda`` of the L0 penalty, >= 0 (SAELens ``l0_coefficient``). The squared
        error is summed over features, so under the ``"scale"`` normaliser (squared norms about
        ``d_in``) one latent is worth ``lambda / d_in`` of the fraction of variance explained;
        sweep it to choose the sparsity.
    l0_warmup_steps : int
        Steps over which the coefficient ramps linearly from 0 (SAELens ``l0_warm_up_steps``).
    bandwidth : float
        Width ``eps`` of the rectangle kernel, > 0. The paper uses ``eps = 0.001`` on inputs
        scaled to unit mean squared norm. Pre-activations scale with the input norm and the
        ``"scale"`` normaliser sets the mean norm to ``sqrt(d_in)``, so the equivalent width is
        ``0.001 * sqrt(d_in)``: 0.028 for d_in = 768, 0.048 for 2304, 0.064 for 4096. The
        default 0.05 is that value for the residual widths SAEs are usually trained on; set
        ``0.001 * sqrt(d_in)`` for much smaller or larger inputs.
    init_threshold : float
        Initial threshold of every latent, > 0, stored as its log. The default is the paper's
        0.001, which under the ``"scale"`` normaliser starts the SAE close to a ReLU SAE; a
        larger start (about the bandwidth or more) sparsifies sooner.
    """

    l0_coefficient: float = 1.0
    l0_warmup_steps: int = 0
    bandwidth: float = 0.05
    init_threshold: float = 0.001

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        check_coefficient(self.l0_coefficient, name="l0_coefficient", owner=owner)
        check_count(self.l0_warmup_steps, name="l0_warmup_steps", owner=owner)
        check_coefficient(self.bandwidth, name="bandwidth", owner=owner, positive=True)
        check_coefficient(self.init_threshold, name="init_threshold", owner=owner, positive=True)


@register_architecture("jumprelu", family="jumprelu", sparse_codes=False)
class JumpReLUSAE(SparseAutoencoder):
    """JumpReLU SAE (see the module docstring); dense codes.

    Attributes
    ----------
    log_threshold : nn.Parameter of float32, shape (d_sae,)
        Log of the per-latent thresholds.

    Examples
    --------
    >>> import torch
    >>> from repscope.sae import JumpReLUConfig, JumpReLUSAE
    >>> sae = JumpReLUSAE(JumpReLUConfig(d_in=16, d_sae=64))
    >>> out = sae(torch.randn(8, 16))
    >>> out.values.shape, sae.threshold.dtype
    (torch.Size([8, 64]), torch.float32)
    """

    config_class = JumpReLUConfig
    cfg: JumpReLUConfig
    extra_tensors = ("threshold",)

    def __init__(self, cfg: JumpReLUConfig) -> None:
        super().__init__(cfg)
        self.log_threshold = nn.Parameter(
            torch.full((cfg.d_sae,), math.log(cfg.init_threshold), dtype=torch.float32)
        )

    @property
    def threshold(self) -> Tensor:
        """``exp(log_threshold)``, float32 of shape (d_sae,)."""
        return torch.exp(self.log_threshold)

    def encode_normalized(self, xn: Tensor) -> SAEOutput:
        """Codes of normalised inputs ``xn`` (n, d_in): values and pre_acts of shape (n, d_sae)."""
        pre = torch.addmm(self.b_enc, encoder_input(self, xn), self.W_enc)
        values = jumprelu(pre, self.threshold, self.cfg.bandwidth)
        return SAEOutput(values, None, pre, xn.new_empty(0))

    def decode_normalized(self, values: Tensor, indices: Tensor | None) -> Tensor:
        """Reconstruction (n, d_in) in the normalised space from dense (or sparse) codes."""
        return dense_codes(values, indices, self.d_sae) @ self.W_dec + self.b_dec

    def loss(self, xn: Tensor, out: SAEOutput, state: TrainState) -> SAELoss:
        """Squared error plus ``lambda`` times the mean L0 (through the step estimator).

        Terms: ``"mse"`` and ``"l0_penalty"`` (coefficient included); they add up to ``total``.
        """
        mse = (out.reconstruction - xn).pow(2).sum(-1).mean()
        coef = self.cfg.l0_coefficient * warmup_factor(state.step, self.cfg.l0_warmup_steps)
        l0 = step(out.pre_acts, self.threshold, self.cfg.bandwidth).sum(-1).mean()
        penalty = coef * l0
        return SAELoss(mse + penalty, {"mse": mse.detach(), "l0_penalty": penalty.detach()})

    @torch.no_grad()
    def saved_tensors(self) -> dict[str, Tensor]:
        """SAELens's JumpReLU layout: ``threshold`` instead of ``log_threshold`` (thresholds
        act on pre-activations, which folding leaves unchanged)."""
        state = super().saved_tensors()
        state.pop("log_threshold", None)
        return state

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Accept SAELens's ``threshold`` (as saved by folded_state_dict) for ``log_threshold``.
        key, log_key = prefix + "threshold", prefix + "log_threshold"
        if key in state_dict and log_key not in state_dict and isinstance(state_dict, dict):
            thr = state_dict.pop(key)
            state_dict[log_key] = torch.log(thr.detach().to(torch.float32))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
