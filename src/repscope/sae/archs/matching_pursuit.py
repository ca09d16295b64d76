"""Matching-pursuit SAE (MP-SAE; Costa, Fel, Lubana, Tolooshams, Ba, "From Flat to
Hierarchical: Extracting Sparse Representations with Matching Pursuit", arXiv 2506.03093).

The encoder is ``k`` greedy steps of matching pursuit over the decoder's atoms instead of one
linear map and a threshold. With unit atoms ``u_j`` and ``r_0 = x - b_dec``::

    for t in 1..k:
        c = r_{t-1} @ u.T              # correlations with every atom
        j_t = argmax(c)                # signed max, as in the reference implementation
        z[j_t] += c[j_t]
        r_t = r_{t-1} - c[j_t] u_{j_t}
    x_hat = z @ W_dec + b_dec

Each step leaves the residual orthogonal to the atom it chose, so once a parent direction is
explained the encoder sees the *conditionally orthogonal* child directions that a linear
threshold encoder cannot separate. Training back-propagates through the unrolled steps.

**Memory.** The correlations of every step are computed under ``no_grad`` in one reused
(n, d_sae) buffer; the backward pass is a hand-written reverse recurrence that rebuilds the
residuals from the last one. Only the last residual (n, d_in), the chosen coefficients and
indices (n, k) and the normalised atoms (d_sae, d_in) are saved for backward — never a dense
(n, d_sae) tensor per step (the naive unrolled loop saves ``k`` of them).

**Atom norms.** Atoms are ``u_j = W_dec[j] / ||W_dec[j]||`` and the code of a chosen atom is
the coefficient on the *unnormalised* row: ``z_j = c_j / ||W_dec[j]||`` (so
``z @ W_dec = sum_t c_t u_{j_t}``). During training the rows have unit norm and this is the
recipe exactly; it also makes the ``"scale"`` normaliser fold exactly into the weights the
standard way (``W_dec / s``, ``b_dec / s``, codes unchanged). Whitening cannot be folded (MP
picks atoms by Euclidean correlations, which a non-orthogonal map changes), so
``normalize_activations="whiten"`` is rejected.

**W_enc and b_enc.** MP has no linear encoder. ``W_enc`` is kept (SAELens layout) as the
first step's coefficient map ``W_enc[:, j] = W_dec[j] / ||W_dec[j]||^2`` (``= W_dec.T`` for
unit atoms): frozen (``requires_grad=False``), refreshed after every optimiser step, and
consistent under folding. ``b_enc`` is frozen at zero and unused.

**Adaptive sparsity.** ``encode(x, residual_threshold=tau)`` stops a sample once
``||r_t|| / ||x - b_dec|| < tau``; its remaining steps have value 0 (index 0).
Indices may repeat (MP can pick an atom again); :meth:`SAEOutput.dense` sums repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from repscope._validation import check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.sae.archs._base import (
    SAEConfig,
    SAEOutput,
    SparseAutoencoder,
    check_k,
    register_architecture,
)
from repscope.sae.archs._sparse import sparse_decode

__all__ = ["MPSAE", "MPConfig", "matching_pursuit"]


@dataclass
class MPConfig(SAEConfig):
    """Matching-pursuit SAE settings (besides :class:`~repscope.sae.SAEConfig`'s).

    Parameters
    ----------
    k : int
        Greedy steps (active atoms) per sample, in [1, d_sae].
    """

    k: int = 32

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        check_k(self.k, self.d_sae, owner=owner)
        if self.normalize_activations == "whiten":
            raise RepscopeValueError(
                f"The 'normalize_activations' parameter of {owner} must be 'scale' or 'none'. "
                "Got 'whiten' instead: matching pursuit chooses atoms by Euclidean "
                "correlations, so a whitening map cannot be folded into its weights."
            )


class _MatchingPursuit(torch.autograd.Function):
    """k unrolled MP steps with an O(n (d + k)) backward (see the module docstring)."""

    @staticmethod
    def forward(
        ctx: Any, r0: Tensor, atoms: Tensor, k: int, threshold: float | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        n = r0.shape[0]
        r = r0.clone()
        vals = r0.new_empty((n, k))
        idx = torch.empty((n, k), dtype=torch.int64, device=r0.device)
        pre = r @ atoms.T
        buf = torch.empty_like(pre) if k > 1 else pre
        mask = None
        if threshold is not None:
            ref = torch.linalg.vector_norm(r0, dim=1)
            mask = torch.empty((n, k), dtype=torch.bool, device=r0.device)
        for t in range(k):
            c = pre if t == 0 else torch.mm(r, atoms.T, out=buf)
            val, j = c.max(dim=1)
            if mask is not None:
                live = torch.linalg.vector_norm(r, dim=1) >= threshold * ref
                live &= ref > 0
                mask[:, t] = live
                val = val * live
                j = j * live
            vals[:, t] = val
            idx[:, t] = j
            r.addcmul_(val[:, None], atoms[j], value=-1.0)
        ctx.save_for_backward(r, atoms, vals, idx, mask)
        ctx.mark_non_differentiable(idx, pre)
        return vals, idx, pre

    @staticmethod
    def backward(
        ctx: Any, g_vals: Tensor, _g_idx: Any, _g_pre: Any
    ) -> tuple[Tensor | None, Tensor | None, None, None]:
        r, atoms, vals, idx, mask = ctx.saved_tensors
        k = vals.shape[1]
        rho = torch.zeros_like(r)  # dL/dr_t, starting from the last residual (unused: 0)
        g_atoms = torch.zeros_like(atoms) if ctx.needs_input_grad[1] else None
        r = r.clone()
        for t in range(k - 1, -1, -1):
            j = idx[:, t]
            u = atoms[j]
            c = vals[:, t]
            r.addcmul_(c[:, None], u)  # r is now r_{t-1}
            g_hat = g_vals[:, t] - (rho * u).sum(1)
            if mask is not None:
                g_hat = g_hat * mask[:, t]
            if g_atoms is not None:
                g_atoms.index_add_(0, j, g_hat[:, None] * r - c[:, None] * rho)
            rho.addcmul_(g_hat[:, None], u)
        return rho if ctx.needs_input_grad[0] else None, g_atoms, None, None


def matching_pursuit(
    residual: Tensor, atoms: Tensor, k: int, *, residual_threshold: float | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``k`` steps of matching pursuit of ``residual`` over unit ``atoms``, differentiable.

    Parameters
    ----------
    residual : Tensor of shape (n, d)
        What to explain (``x - b_dec``).
    atoms : Tensor of shape (m, d)
        Unit-norm atoms (not checked).
    k : int
        Steps.
    residual_threshold : float, optional
        Stop a sample once ``||r_t|| < residual_threshold * ||residual||`` (later values 0,
        indices 0).

    Returns
    -------
    values : Tensor of shape (n, k)
        The coefficient chosen at each step (differentiable in ``residual`` and ``atoms``).
    indices : Tensor of int64, shape (n, k)
        The atom chosen at each step.
    first_correlations : Tensor of shape (n, m)
        ``residual @ atoms.T`` (no gradient).
    """
    out: tuple[Tensor, Tensor, Tensor] = _MatchingPursuit.apply(
        residual, atoms, int(k), residual_threshold
    )
    return out


@register_architecture("matching_pursuit", family="matching_pursuit", sparse_codes=True)
class MPSAE(SparseAutoencoder):
    """Matching-pursuit sparse autoencoder (see the module docstring).

    Examples
    --------
    >>> import torch
    >>> from repscope.sae import MPConfig, MPSAE
    >>> sae = MPSAE(MPConfig(d_in=16, d_sae=64, k=4))
    >>> out = sae(torch.randn(8, 16))
    >>> out.values.shape, out.indices.shape, out.reconstruction.shape
    (torch.Size([8, 4]), torch.Size([8, 4]), torch.Size([8, 16]))
    """

    config_class = MPConfig
    cfg: MPConfig

    def __init__(self, cfg: MPConfig) -> None:
        super().__init__(cfg)
        self.W_enc.requires_grad_(False)
        self.b_enc.requires_grad_(False)
        self._sync_encoder()

    # ------------------------------------------------------------------ helpers
    def _atoms(self) -> tuple[Tensor, Tensor]:
        """Unit atoms (d_sae, d_in) and the decoder row norms (d_sae,), differentiable."""
        norms = torch.linalg.vector_norm(self.W_dec, dim=1).clamp_min(1e-12)
        return self.W_dec / norms[:, None], norms

    @torch.no_grad()
    def _sync_encoder(self) -> None:
        """``W_enc[:, j] = W_dec[j] / ||W_dec[j]||^2`` (the first step's coefficient map)."""
        sq = self.W_dec.pow(2).sum(1).clamp_min(1e-24)
        self.W_enc.copy_((self.W_dec / sq[:, None]).T)

    # ------------------------------------------------------------------ forward
    def encode_normalized(
        self, xn: Tensor, *, residual_threshold: float | None = None, k: int | None = None
    ) -> SAEOutput:
        steps = self.cfg.k if k is None else check_k(k, self.d_sae, owner=type(self).__name__)
        if residual_threshold is not None:
            residual_threshold = float(
                check_scalar(
                    residual_threshold,
                    "residual_threshold",
                    caller=f"{type(self).__name__}.encode",
                    min_value=0.0,
                )
            )
        r0 = xn - self.b_dec
        atoms, norms = self._atoms()
        vals, idx, pre = matching_pursuit(r0, atoms, steps, residual_threshold=residual_threshold)
        return SAEOutput(vals / norms[idx], idx, pre, xn.new_empty(0))

    def decode_normalized(self, values: Tensor, indices: Tensor | None) -> Tensor:
        if indices is None:
            return values @ self.W_dec + self.b_dec
        if values.ndim == 2:
            return sparse_decode(values, indices, self.W_dec) + self.b_dec
        dense = values.new_zeros((*values.shape[:-1], self.d_sae)).scatter_add(-1, indices, values)
        return dense @ self.W_dec + self.b_dec

    def encode(
        self, x: Tensor, *, residual_threshold: float | None = None, k: int | None = None
    ) -> SAEOutput:
        """Codes of raw inputs of shape (..., d_in) (``reconstruction`` is empty).

        Parameters
        ----------
        x : Tensor of shape (..., d_in)
        residual_threshold : float, optional
            Adaptive sparsity: stop a sample once ``||r|| / ||x_n - b_dec||`` (normalised
            space) falls below this; its remaining values are 0.
        k : int, optional
            Maximum steps (default ``cfg.k``).
        """
        flat, _ = self._flatten(x)
        out = self.encode_normalized(
            self.normalize(flat), residual_threshold=residual_threshold, k=k
        )
        return out._replace(reconstruction=flat.new_empty(0))

    # ------------------------------------------------------------------ hooks
    @torch.no_grad()
    def init_from_data(self, xn: Tensor) -> None:
        super().init_from_data(xn)
        self._sync_encoder()

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        self._sync_encoder()

    def _fold(self, state: dict[str, Tensor], p: Tensor, pinv: Tensor, mu: Tensor) -> None:
        if self.whitened:
            raise RepscopeValueError(
                "A whitening normaliser cannot be folded into a matching-pursuit SAE (its "
                "atom choice is not invariant to non-orthogonal maps); train it with "
                "normalize_activations='scale' or 'none'."
            )
        super()._fold(state, p, pinv, mu)
