"""Matryoshka BatchTopK SAE (Bussmann, Nabeshima, Karvonen, Nanda 2025, "Learning Multi-Level
Features with Matryoshka Sparse Autoencoders"; Nabeshima 2024, "Matryoshka Sparse
Autoencoders"; SAELens ``matryoshka_batchtopk``).

The latents are split into consecutive groups of sizes ``g_1, ..., g_G`` (summing to
``d_sae``); prefix ``m`` is the first ``w_m = g_1 + ... + g_m`` latents. Codes come from one
BatchTopK pass over the whole dictionary (:mod:`.batchtopk`), and every prefix must
reconstruct the input on its own:

.. math::

    \\hat x^{(m)} = z_{:, :w_m} W_{dec, :w_m} + b_{dec}, \\qquad
    L = \\frac{1}{G} \\sum_{m=1}^{G} \\frac{1}{n} \\sum_i
        \\lVert x_i - \\hat x_i^{(m)} \\rVert^2 + \\alpha L_{aux},

so early latents learn general, frequent features and later groups refine them instead of
absorbing them. ``L_aux`` is AuxK on the full reconstruction's residual. Inference (eval mode)
is BatchTopK's global-threshold JumpReLU rule, and :meth:`~BatchTopKSAE.to_jumprelu` exports
the same way.

Default groups: sizes ``d_sae/16, d_sae/16, d_sae/8, d_sae/4, d_sae/2`` (the last absorbing any
remainder), i.e. prefixes of ``1/16, 1/8, 1/4, 1/2`` and all of the dictionary: each prefix
doubles the previous one, so every level gets as many new latents as all coarser levels
together and the smallest level still holds a general-purpose dictionary of ``d_sae / 16``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from repscope.exceptions import RepscopeValueError
from repscope.sae.archs._base import SAELoss, SAEOutput, TrainState, register_architecture
from repscope.sae.archs.batchtopk import BatchTopKConfig, BatchTopKSAE

__all__ = ["MatryoshkaConfig", "MatryoshkaSAE", "default_group_sizes"]


def default_group_sizes(d_sae: int) -> list[int]:
    """Doubling prefixes: ``[d/16, d/16, d/8, d/4, rest]`` with empty groups dropped.

    Examples
    --------
    >>> default_group_sizes(256)
    [16, 16, 32, 64, 128]
    >>> default_group_sizes(10)
    [1, 2, 7]
    """
    sizes = [d_sae // 16, d_sae // 16, d_sae // 8, d_sae // 4]
    sizes.append(d_sae - sum(sizes))
    return [s for s in sizes if s > 0]


@dataclass
class MatryoshkaConfig(BatchTopKConfig):
    """Matryoshka BatchTopK settings, besides :class:`~.batchtopk.BatchTopKConfig`'s.

    Parameters
    ----------
    group_sizes : list of int or None
        Sizes of the consecutive latent groups, positive ints summing to ``d_sae``; None means
        :func:`default_group_sizes`.
    """

    group_sizes: list[int] | None = None

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        g = self.group_sizes
        if g is None:
            return
        ok = isinstance(g, (list, tuple)) and len(g) > 0
        ok = ok and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in g)
        if not ok or sum(g) != self.d_sae:
            raise RepscopeValueError(
                f"The 'group_sizes' parameter of {owner} must be a non-empty list of positive "
                f"ints summing to d_sae={self.d_sae}. Got {g!r} instead."
            )

    @property
    def resolved_group_sizes(self) -> list[int]:
        if self.group_sizes is None:
            return default_group_sizes(self.d_sae)
        return [int(s) for s in self.group_sizes]


@register_architecture("matryoshka_batchtopk", family="topk", sparse_codes=False)
class MatryoshkaSAE(BatchTopKSAE):
    """Matryoshka BatchTopK SAE (see the module docstring); dense codes.

    Examples
    --------
    >>> import torch
    >>> from repscope.sae import MatryoshkaConfig, MatryoshkaSAE
    >>> sae = MatryoshkaSAE(MatryoshkaConfig(d_in=16, d_sae=64, k=4))
    >>> sae.cfg.resolved_group_sizes
    [4, 4, 8, 16, 32]
    """

    config_class = MatryoshkaConfig
    cfg: MatryoshkaConfig

    def prefix_reconstructions(self, codes: Tensor) -> list[Tensor]:
        """Reconstructions (normalised space) from each prefix of dense codes (n, d_sae).

        Returns
        -------
        list of Tensor of shape (n, d_in)
            One per group, the last using every latent.
        """
        recon = self.b_dec.expand(codes.shape[0], self.d_in)
        out = []
        start = 0
        for size in self.cfg.resolved_group_sizes:
            end = start + size
            recon = recon + codes[:, start:end] @ self.W_dec[start:end]
            out.append(recon)
            start = end
        return out

    def loss(self, xn: Tensor, out: SAEOutput, state: TrainState) -> SAELoss:
        """Mean of the prefix squared errors plus AuxK; in training mode also updates the
        inference threshold.

        Terms: ``"mse"`` (the full reconstruction's squared error, for monitoring),
        ``"prefix_mse"`` (the mean over prefixes) and, when latents are dead, ``"auxk"``
        (coefficient included); ``total = prefix_mse + auxk``.
        """
        mse = (out.reconstruction - xn).pow(2).sum(-1).mean()
        per_prefix = [
            (recon - xn).pow(2).sum(-1).mean() for recon in self.prefix_reconstructions(out.dense())
        ]
        prefix = torch.stack(per_prefix).mean()
        total = prefix
        terms = {"mse": mse.detach(), "prefix_mse": prefix.detach()}
        for name, value in self._auxiliary(xn, out, state).items():
            total = total + value
            terms[name] = value.detach()
        return SAELoss(total, terms)
