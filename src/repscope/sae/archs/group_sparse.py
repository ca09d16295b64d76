r"""Group-sparse SAE for paired modalities (Kaushik, Barch, Fanelli, "Decomposing multimodal
embedding spaces with group-sparse autoencoders", ICLR 2026).

One TopK SAE (shared encoder and decoder, :class:`~repscope.sae.archs.topk.TopKSAE`) is trained on
*pairs* ``(x_a, x_b)`` of embeddings of the same item in two modalities (image/text) living in
one space. A training sample has shape ``(2, d_in)`` (:attr:`GroupSparseSAE.sample_shape`);
each modality is encoded on its own with TopK (``k`` active latents each, so L0 matches a
vanilla TopK SAE exactly), and two terms push the pair towards one shared support:

- the **group-sparse (l2,1) penalty** over the pair's codes,

  .. math:: \Omega(z_a, z_b) = \sum_j \sqrt{z_{a,j}^2 + z_{b,j}^2},

  averaged over pairs and weighted by ``group_coefficient``. For fixed per-modality
  magnitudes it is smallest when the two supports coincide (``sqrt(a^2 + b^2) <= a + b``);
- **cross-modal masking**: in training mode, each pair independently with probability
  ``mask_prob`` has one modality (a or b with probability 1/2) decoded from the *other*
  modality's code instead of its own, and that reconstruction replaces the own-code one in
  the squared error, so each code must also reconstruct its partner. The paper's exact
  masking scheme is not public; this code-swap is our reconstruction of it.

The loss is

.. math::

    L = \frac{1}{2n} \sum_{i, m} \lVert \hat x_{i,m} - x_{i,m} \rVert^2
        + \gamma \frac{1}{n} \sum_i \Omega(z_{i,a}, z_{i,b}) + \alpha\, L_{auxk},

with the swapped reconstructions in the first sum for masked pairs. ``terms["mse"]`` reports
the plain (unswapped) squared error per vector, comparable with other SAEs, ``terms["group"]``
the penalty and ``terms["cross_mse"]`` the swapped error of the masked vectors.

Shapes: inputs are ``(n, 2, d_in)`` (or ``(2n, d_in)`` with each pair in consecutive rows);
codes are per vector: ``values``/``indices`` have shape ``(2n, k)``, row ``2i`` holding
modality a of pair ``i`` and row ``2i + 1`` modality b; the reconstruction has the input's
shape. :meth:`encode` and :meth:`forward` accept any number of single vectors (no pairing
needed outside training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from repscope.exceptions import RepscopeValueError
from repscope.sae.archs._base import SAELoss, SAEOutput, TrainState, register_architecture
from repscope.sae.archs.topk import TopKConfig, TopKSAE

__all__ = ["GroupSparseConfig", "GroupSparseSAE", "group_l21"]


@dataclass
class GroupSparseConfig(TopKConfig):
    """Group-sparse SAE settings (besides :class:`~repscope.sae.archs.topk.TopKConfig`'s).

    Parameters
    ----------
    group_coefficient : float
        Weight of the l2,1 penalty over each pair's codes (>= 0).
    mask_prob : float
        Probability, per pair and training step, of decoding one modality from the other's
        code (in [0, 1]).
    """

    group_coefficient: float = 0.05
    mask_prob: float = 0.1

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        g = self.group_coefficient
        if (
            not isinstance(g, (int, float))
            or isinstance(g, bool)
            or not (g >= 0 and math.isfinite(g))
        ):
            raise RepscopeValueError(
                f"The 'group_coefficient' parameter of {owner} must be a finite float >= 0. "
                f"Got {g!r} instead."
            )
        p = self.mask_prob
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
            raise RepscopeValueError(
                f"The 'mask_prob' parameter of {owner} must be a float in [0, 1]. Got {p!r} "
                "instead."
            )


def group_l21(values_a: Tensor, indices_a: Tensor, values_b: Tensor, indices_b: Tensor) -> Tensor:
    r"""Per-pair :math:`\sum_j \sqrt{z_{a,j}^2 + z_{b,j}^2}` from sparse codes, shape (n,).

    Parameters
    ----------
    values_a, values_b : Tensor of shape (n, k)
    indices_a, indices_b : Tensor of int64, shape (n, k)
        Distinct within each row (TopK codes).

    Returns
    -------
    Tensor of shape (n,)
        Differentiable in the values (zero gradient where both codes are zero).
    """
    match = indices_a[:, :, None] == indices_b[:, None, :]  # (n, k_a, k_b)
    zb_at_a = (match * values_b[:, None, :]).sum(-1)  # b's value on each of a's latents
    b_only = ~match.any(1)  # b's latents that a does not use
    sq = values_a.pow(2) + zb_at_a.pow(2)
    shared = torch.where(sq > 0, sq.clamp_min(1e-30).sqrt(), torch.zeros_like(sq)).sum(-1)
    return shared + (values_b.abs() * b_only).sum(-1)


@register_architecture("group_sparse", family="topk", sparse_codes=True)
class GroupSparseSAE(TopKSAE):
    """TopK SAE trained on paired modalities with a group-sparse penalty (module docstring).

    Examples
    --------
    >>> import torch
    >>> from repscope.sae import GroupSparseConfig, GroupSparseSAE
    >>> sae = GroupSparseSAE(GroupSparseConfig(d_in=16, d_sae=64, k=4))
    >>> out = sae(torch.randn(8, 2, 16))
    >>> sae.sample_shape, out.values.shape, out.reconstruction.shape
    ((2, 16), torch.Size([16, 4]), torch.Size([16, 16]))
    """

    config_class = GroupSparseConfig
    cfg: GroupSparseConfig

    def __init__(self, cfg: GroupSparseConfig) -> None:
        super().__init__(cfg)
        self._mask_generator = torch.Generator().manual_seed(int(cfg.seed) + 7919)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One training sample is a pair: (2, d_in)."""
        return (2, self.d_in)

    # ------------------------------------------------------------------ init on pairs
    def fit_normalizer(self, sample: Tensor, *, shrinkage: float = 1e-3) -> None:
        """Fit the normaliser on the vectors of both modalities (pairs are flattened)."""
        super().fit_normalizer(sample.reshape(-1, self.d_in), shrinkage=shrinkage)

    @torch.no_grad()
    def init_from_data(self, xn: Tensor) -> None:
        super().init_from_data(xn.reshape(-1, self.d_in))

    # ------------------------------------------------------------------ forward
    def forward_normalized(self, xn: Tensor) -> SAEOutput:
        """Codes per vector ((2n, k) for n pairs) and the reconstruction in ``xn``'s shape."""
        out = super().forward_normalized(xn.reshape(-1, self.d_in))
        return out._replace(reconstruction=out.reconstruction.reshape(xn.shape))

    def _pairs(self, xn: Tensor) -> Tensor:
        if xn.ndim == 3 and tuple(xn.shape[1:]) == (2, self.d_in):
            return xn
        if xn.ndim == 2 and xn.shape[1] == self.d_in and xn.shape[0] % 2 == 0:
            return xn.reshape(-1, 2, self.d_in)
        raise RepscopeValueError(
            f"{type(self).__name__} trains on pairs: inputs of shape (n, 2, {self.d_in}) or "
            f"(2n, {self.d_in}) with each pair in consecutive rows. Got shape "
            f"{tuple(xn.shape)} instead."
        )

    # ------------------------------------------------------------------ loss
    def loss(self, xn: Tensor, out: SAEOutput, state: TrainState) -> SAELoss:
        pairs = self._pairs(xn)
        n = pairs.shape[0]
        flat_x = pairs.reshape(-1, self.d_in)
        recon = out.reconstruction.reshape(-1, self.d_in)
        err = (recon - flat_x).pow(2).sum(-1)  # (2n,)
        mse = err.mean()
        terms = {"mse": mse.detach()}
        values, indices = out.values, out.indices
        if indices is None:  # the TopK encoder always returns sparse codes
            raise RepscopeValueError("GroupSparseSAE.loss needs sparse (values, indices) codes.")
        rec_err = err.sum()
        if self.training and self.cfg.mask_prob > 0:
            masked = torch.rand(n, generator=self._mask_generator) < self.cfg.mask_prob
            which = torch.randint(0, 2, (n,), generator=self._mask_generator)
            sel = torch.nonzero(masked).squeeze(1)
            if sel.numel() > 0:
                target = (2 * sel + which[sel]).to(flat_x.device)
                source = (2 * sel + 1 - which[sel]).to(flat_x.device)
                swapped = self.decode_normalized(values[source], indices[source])
                cross = (swapped - flat_x[target]).pow(2).sum(-1)
                rec_err = rec_err - err[target].sum() + cross.sum()
                terms["cross_mse"] = cross.mean().detach()
        total = rec_err / (2 * n)
        group = group_l21(values[0::2], indices[0::2], values[1::2], indices[1::2]).mean()
        terms["group"] = group.detach()
        if self.cfg.group_coefficient > 0:
            total = total + self.cfg.group_coefficient * group
        if self.cfg.aux_coefficient > 0 and state.n_dead > 0:
            flat_out = out._replace(reconstruction=recon)
            auxk = self.auxk_loss(flat_x, flat_out, state.dead, state.n_dead)
            terms["auxk"] = auxk.detach()
            total = total + self.cfg.aux_coefficient * auxk
        return SAELoss(total, terms)
