"""BatchTopK SAE (Bussmann, Leask, Nanda 2024, "BatchTopK Sparse Autoencoders"; the
``batchtopk`` architecture of SAELens).

In training, the ``n * k`` largest ReLU'd pre-activations of the whole batch of ``n`` samples
are kept (k active latents per sample *on average*, adaptively more for dense samples and
fewer for simple ones):

.. math::

    \\pi = (x - b_{dec}) W_{enc} + b_{enc}, \\qquad
    z = \\mathrm{BatchTopK}_{nk}(\\mathrm{ReLU}(\\pi)), \\qquad \\hat x = z W_{dec} + b_{dec}.

Because the batch rule makes a sample's code depend on the rest of its batch, inference uses a
single global threshold instead: ``theta`` is an exponential moving average (rate
``threshold_lr``, started at the first batch's value) of the smallest positive activation the
batch rule kept, and in eval mode (``module.eval()``) the encoder is the JumpReLU rule
``z = pi * 1[pi > theta]``. :meth:`BatchTopKSAE.to_jumprelu` returns the equivalent
:class:`~repscope.sae.archs.jumprelu.JumpReLUSAE` (the form SAELens saves BatchTopK SAEs in).

The loss is the squared error plus ``aux_coefficient`` times AuxK (Gao et al. 2024), as for
:class:`~repscope.sae.archs.topk.TopKSAE`: the ``aux_k`` largest pre-activations among dead latents
(no firing in ``dead_after`` training vectors, from :attr:`TrainState.dead`) reconstruct the
detached residual ``e = x - x_hat``,

.. math::

    L_{aux} = \\frac{\\sum_i \\lVert e_i - \\hat e_i \\rVert^2}
                   {\\sum_i \\lVert e_i - \\bar e \\rVert^2}.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from repscope.exceptions import RepscopeValueError
from repscope.sae.archs._base import (
    SAEConfig,
    SAELoss,
    SAEOutput,
    SparseAutoencoder,
    TrainState,
    check_coefficient,
    check_k,
    dense_codes,
    encoder_input,
    register_architecture,
)
from repscope.sae.archs._sparse import sparse_decode
from repscope.sae.archs.jumprelu import JumpReLUConfig, JumpReLUSAE, jump

__all__ = ["BatchTopKConfig", "BatchTopKSAE", "auxk_loss", "batch_topk"]


def batch_topk(pre: Tensor, k: int) -> Tensor:
    """Keep the ``n * k`` largest entries of ``ReLU(pre)`` over the whole batch.

    Parameters
    ----------
    pre : Tensor of shape (n, d_sae)
        Pre-activations.
    k : int
        Mean number of active latents per sample.

    Returns
    -------
    Tensor of shape (n, d_sae)
        Dense codes: the kept values, zero elsewhere (differentiable in the kept entries).
    """
    acts = torch.relu(pre)
    flat = acts.reshape(-1)
    top = flat.topk(min(k * pre.shape[0], flat.numel()), sorted=False)
    return torch.zeros_like(flat).scatter(0, top.indices, top.values).reshape(acts.shape)


def auxk_loss(xn: Tensor, out: SAEOutput, w_dec: Tensor, dead: Tensor, k_aux: int) -> Tensor:
    """AuxK for dense codes: the ``k_aux`` largest pre-activations among ``dead`` latents of
    each sample reconstruct the detached residual, normalised by its variance about the batch
    mean.

    Parameters
    ----------
    xn : Tensor of shape (n, d_in)
        Normalised inputs.
    out : SAEOutput
        The forward's output (``pre_acts`` (n, d_sae) with gradient, ``reconstruction``).
    w_dec : Tensor of shape (d_sae, d_in)
        Decoder rows.
    dead : Tensor of bool, shape (d_sae,)
        Dead latents.
    k_aux : int
        Latents per sample, at most the number of dead latents.

    Returns
    -------
    Tensor
        Scalar loss.
    """
    residual = (xn - out.reconstruction).detach()
    with torch.no_grad():
        masked = out.pre_acts.detach().masked_fill(~dead, float("-inf"))
        idx = masked.topk(k_aux, dim=-1, sorted=False).indices
    vals = out.pre_acts.gather(1, idx).relu()
    e_hat = sparse_decode(vals, idx, w_dec)
    num = (e_hat - residual).pow(2).sum()
    den = (residual - residual.mean(0)).pow(2).sum().clamp_min(1e-12)
    return num / den


@dataclass
class BatchTopKConfig(SAEConfig):
    """BatchTopK SAE settings, besides :class:`~repscope.sae.SAEConfig`'s.

    Parameters
    ----------
    k : int
        Mean active latents per sample in training, in [1, d_sae].
    aux_k : int or None
        Dead latents used by AuxK per sample; None means ``min(d_in // 2, d_sae)``.
    aux_coefficient : float
        Weight of AuxK (1/32 as in Gao et al.); 0 switches it off.
    dead_after : int or None
        Training vectors without firing after which a latent counts as dead; None means
        ``min(10_000_000, 32 * d_sae)`` (as :class:`~repscope.sae.archs.topk.TopKConfig`).
    threshold_lr : float
        Rate of the moving average that estimates the inference threshold, in (0, 1]
        (SAELens ``topk_threshold_lr``).
    """

    k: int = 32
    aux_k: int | None = None
    aux_coefficient: float = 1.0 / 32.0
    dead_after: int | None = None
    threshold_lr: float = 0.01

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        check_k(self.k, self.d_sae, owner=owner)
        if self.aux_k is not None:
            check_k(self.aux_k, self.d_sae, name="aux_k", owner=owner)
        check_coefficient(self.aux_coefficient, name="aux_coefficient", owner=owner)
        if self.dead_after is not None and (
            not isinstance(self.dead_after, int)
            or isinstance(self.dead_after, bool)
            or self.dead_after < 1
        ):
            raise RepscopeValueError(
                f"The 'dead_after' parameter of {owner} must be a positive int or None. "
                f"Got {self.dead_after!r} instead."
            )
        lr = self.threshold_lr
        if (
            not isinstance(lr, (int, float))
            or isinstance(lr, bool)
            or not math.isfinite(lr)
            or not 0 < lr <= 1
        ):
            raise RepscopeValueError(
                f"The 'threshold_lr' parameter of {owner} must be a float in (0, 1]. "
                f"Got {lr!r} instead."
            )

    @property
    def resolved_aux_k(self) -> int:
        return self.aux_k if self.aux_k is not None else max(1, min(self.d_in // 2, self.d_sae))

    @property
    def resolved_dead_after(self) -> int:
        return self.dead_after if self.dead_after is not None else min(10_000_000, 32 * self.d_sae)


@register_architecture("batchtopk", family="topk", sparse_codes=False)
class BatchTopKSAE(SparseAutoencoder):
    """BatchTopK SAE (see the module docstring); dense codes.

    Attributes
    ----------
    topk_threshold : Tensor of float64, shape ()
        The running inference threshold ``theta`` (0 before the first training step).

    Examples
    --------
    >>> import torch
    >>> from repscope.sae import BatchTopKConfig, BatchTopKSAE
    >>> sae = BatchTopKSAE(BatchTopKConfig(d_in=16, d_sae=64, k=4))
    >>> int(sae(torch.randn(8, 16)).l0().sum())  # training mode: 8 * 4 over the batch
    32
    """

    config_class = BatchTopKConfig
    cfg: BatchTopKConfig
    extra_tensors = ("topk_threshold",)
    topk_threshold: Tensor

    def __init__(self, cfg: BatchTopKConfig) -> None:
        super().__init__(cfg)
        # float64: the moving average of small values drifts in float32.
        self.register_buffer("topk_threshold", torch.zeros((), dtype=torch.float64))

    # ------------------------------------------------------------------ threshold
    def _log_threshold(self) -> Tensor:
        """``log(theta)`` as a float32 (d_sae,) vector: the exact JumpReLU parameter."""
        log_t = torch.log(self.topk_threshold.detach()).to(torch.float32)
        return log_t.expand(self.d_sae).contiguous()

    def inference_threshold(self) -> Tensor:
        """The eval-mode threshold, float32 of shape (d_sae,): ``theta`` rounded exactly as
        :meth:`to_jumprelu`'s ``exp(log_threshold)``, so both encoders agree bit for bit."""
        return torch.exp(self._log_threshold())

    @torch.no_grad()
    def update_threshold(self, values: Tensor) -> None:
        """Move ``theta`` towards the smallest positive value in the batch codes (n, d_sae);
        the first update sets it. No host synchronisation."""
        inf = torch.tensor(float("inf"), dtype=values.dtype, device=values.device)
        smallest = torch.where(values > 0, values, inf).min().to(torch.float64)
        theta = self.topk_threshold
        lr = self.cfg.threshold_lr
        new = torch.where(theta > 0, (1 - lr) * theta + lr * smallest, smallest)
        self.topk_threshold.copy_(torch.where(torch.isfinite(smallest), new, theta))

    # ------------------------------------------------------------------ forward
    def encode_normalized(self, xn: Tensor) -> SAEOutput:
        """Codes of normalised inputs ``xn`` (n, d_in): the batch rule in training mode, the
        threshold rule in eval mode; values and pre_acts of shape (n, d_sae)."""
        pre = torch.addmm(self.b_enc, encoder_input(self, xn), self.W_enc)
        if self.training:
            values = batch_topk(pre, self.cfg.k)
        else:
            values = jump(pre, self.inference_threshold())
        return SAEOutput(values, None, pre, xn.new_empty(0))

    def decode_normalized(self, values: Tensor, indices: Tensor | None) -> Tensor:
        """Reconstruction (n, d_in) in the normalised space from dense (or sparse) codes."""
        return dense_codes(values, indices, self.d_sae) @ self.W_dec + self.b_dec

    # ------------------------------------------------------------------ loss
    def _auxiliary(self, xn: Tensor, out: SAEOutput, state: TrainState) -> dict[str, Tensor]:
        """Training side effects and extra loss terms shared with Matryoshka: updates the
        threshold (training mode) and returns ``{"auxk": coefficient * AuxK}`` when latents are
        dead."""
        if self.training:
            self.update_threshold(out.values.detach())
        if self.cfg.aux_coefficient > 0 and state.n_dead > 0:
            k_aux = min(self.cfg.resolved_aux_k, state.n_dead)
            aux = auxk_loss(xn, out, self.W_dec, state.dead, k_aux)
            return {"auxk": self.cfg.aux_coefficient * aux}
        return {}

    def loss(self, xn: Tensor, out: SAEOutput, state: TrainState) -> SAELoss:
        """Squared error plus AuxK; in training mode also updates the inference threshold.

        Terms: ``"mse"`` and, when latents are dead, ``"auxk"`` (coefficient included); they
        add up to ``total``.
        """
        mse = (out.reconstruction - xn).pow(2).sum(-1).mean()
        total = mse
        terms = {"mse": mse.detach()}
        for name, value in self._auxiliary(xn, out, state).items():
            total = total + value
            terms[name] = value.detach()
        return SAELoss(total, terms)

    # ------------------------------------------------------------------ export
    @torch.no_grad()
    def to_jumprelu(self) -> JumpReLUSAE:
        """The equivalent JumpReLU SAE: same weights and normaliser, every latent's threshold
        ``theta``; its forward equals this SAE's eval-mode forward exactly.

        Returns
        -------
        JumpReLUSAE
            On this SAE's device, in this SAE's train/eval mode.
        """
        shared = {f.name: getattr(self.cfg, f.name) for f in dataclasses.fields(SAEConfig)}
        shared["metadata"] = dict(self.cfg.metadata)
        jr = JumpReLUSAE(JumpReLUConfig(**shared)).to(self.device)
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(jr, name).copy_(getattr(self, name))
        for name in ("input_mean", "input_scale", "input_transform", "input_inverse"):
            setattr(jr, name, getattr(self, name).detach().clone())
        jr.log_threshold.copy_(self._log_threshold())
        return jr.train(self.training)
