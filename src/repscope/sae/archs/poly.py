r"""PolySAE: a TopK SAE with a polynomial decoder that models feature interactions
(Koromilas, Demou, Oldfield, Panagakis, Nicolaou, "PolySAE: Modeling Feature Interactions in
Sparse Autoencoders via Polynomial Decoding", ICML 2026; reference code MIT-licensed,
reimplemented here).

The encoder is the TopK encoder of :class:`~repscope.sae.archs.topk.TopKSAE`; the decoder is

.. math::

    \hat x = b_{dec} + y_1 + \lambda_2 y_2 + \lambda_3 y_3

with, in the default ``shared_u=False`` mode (``U_k`` of shape (d_sae, R_k), ``C_k`` of shape
(d_in, R_k), :math:`\odot` the element-wise product),

.. math::

    y_1 = (z U_1) C_1^\top, \quad
    y_2 = \big((z U_1)_{:R_2} \odot (z U_2)\big) C_2^\top, \quad
    y_3 = \big((z U_1)_{:R_3} \odot (z U_2)_{:R_3} \odot (z U_3)\big) C_3^\top,

and with ``shared_u=True`` one ``U`` and :math:`a = zU`:
:math:`y_1 = a C_1^\top`, :math:`y_2 = a_{:R_2}^{\odot 2} C_2^\top`,
:math:`y_3 = a_{:R_3}^{\odot 3} C_3^\top`. ``order`` (1, 2 or 3) keeps the terms up to that
order; ``ranks = (R_1, R_2, R_3)`` with ``R_3 <= R_2 <= R_1 <= d_sae``.

Parameters and constraints: each ``U`` is orthogonally initialised and re-orthonormalised after
every optimiser step (reduced QR with a positive diagonal; a block whose Frobenius norm fell
below 1e-6 is left as it is). Unlike the reference code, which also makes the leading
``R_3`` columns of ``U_1``, ``U_2``, ``U_3`` mutually orthogonal, each ``U_k`` is
orthonormalised on its own. ``C_k`` start kaiming-uniform and are free; ``lambda2`` and
``lambda3`` are learnable scalars starting at -0.5 and +0.5. The decoder rows are not
renormalised (``normalize_decoder`` must stay False).

Saved tensors (besides ``W_enc``, ``b_enc``, ``b_dec``): ``U`` (shared) or ``U1``, ``U2``,
``U3``, and ``C1``, ``C2``, ``C3``, ``lambda2``, ``lambda3`` (those the order uses). ``W_dec``
is not trained: it holds the *linear term* :math:`U_1 C_1^\top` (the dictionary of
single-feature directions), refreshed after every optimiser step, so tools that read
``W_dec`` (recovery, cosines) see each latent's own direction. With ``tied_init`` the encoder
starts as the transpose of the normalised linear term.

Folding the normaliser ``xn = (x - mu) P``: the output map is :math:`\hat x = \hat x_n P^{-1}
+ \mu`, so every term's ``C_k`` becomes :math:`P^{-\top} C_k` (``C_k / s`` for the scale
normaliser), ``b_dec`` becomes ``b_dec P^{-1} + mu``, ``W_dec`` (the linear term) ``W_dec
P^{-1}`` and ``W_enc`` ``P W_enc``; codes and reconstructions are unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from repscope.exceptions import RepscopeValueError
from repscope.sae.archs._base import SAEOutput, encoder_input, register_architecture
from repscope.sae.archs._sparse import sparse_decode, sparse_gather_linear
from repscope.sae.archs.topk import TopKConfig, TopKSAE, topk_select

__all__ = ["PolyConfig", "PolySAE", "orthonormalize_columns"]


@dataclass
class PolyConfig(TopKConfig):
    """PolySAE settings (besides :class:`~repscope.sae.archs.topk.TopKConfig`'s).

    Parameters
    ----------
    order : int
        Highest polynomial order, 1, 2 or 3.
    ranks : (int, int, int) or None
        ``(R1, R2, R3)`` with ``1 <= R3 <= R2 <= R1 <= d_sae``; None means
        ``(min(d_in, d_sae), min(64, ...), min(64, ...))``.
    shared_u : bool
        One ``U`` for all orders (powers of the same projection) instead of ``U1, U2, U3``.
    lambda2_init, lambda3_init : float
        Starting values of the learnable term weights.
    normalize_decoder : bool
        Must be False (the polynomial decoder has no unit-norm rows to keep).
    """

    order: int = 3
    ranks: tuple[int, int, int] | None = None
    shared_u: bool = False
    lambda2_init: float = -0.5
    lambda3_init: float = 0.5
    normalize_decoder: bool = False

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        if self.order not in (1, 2, 3) or isinstance(self.order, bool):
            raise RepscopeValueError(
                f"The 'order' parameter of {owner} must be 1, 2 or 3. Got {self.order!r} instead."
            )
        r = self.resolved_ranks
        if not r[2] <= r[1] <= r[0] <= self.d_sae or r[2] < 1:
            raise RepscopeValueError(
                f"The 'ranks' parameter of {owner} must be (R1, R2, R3) with "
                f"1 <= R3 <= R2 <= R1 <= d_sae={self.d_sae}. Got {self.ranks!r} instead."
            )
        for f in ("lambda2_init", "lambda3_init"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise RepscopeValueError(
                    f"The {f!r} parameter of {owner} must be a finite float. Got {v!r} instead."
                )
        if self.normalize_decoder:
            raise RepscopeValueError(
                f"The 'normalize_decoder' parameter of {owner} must be False: the polynomial "
                "decoder keeps U orthonormal instead of unit-norm decoder rows. Got True "
                "instead."
            )

    @property
    def resolved_ranks(self) -> tuple[int, int, int]:
        if self.ranks is None:
            r1 = min(self.d_in, self.d_sae)
            r2 = min(64, r1)
            return (r1, r2, r2)
        r = self.ranks
        if (
            not isinstance(r, Sequence)
            or len(r) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in r)
        ):
            raise RepscopeValueError(
                f"The 'ranks' parameter of {type(self).__name__} must be None or three ints "
                f"(R1, R2, R3). Got {r!r} instead."
            )
        return (int(r[0]), int(r[1]), int(r[2]))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["ranks"] is not None:
            out["ranks"] = list(out["ranks"])
        return out


@torch.no_grad()
def orthonormalize_columns(u: Tensor, *, eps_norm: float = 1e-6) -> Tensor:
    """Orthonormal columns spanning ``u`` (d, r), by reduced QR with a positive diagonal.

    The sign convention keeps ``Q`` continuous in ``u`` (an already orthonormal ``u`` is
    returned unchanged up to rounding). A block whose Frobenius norm is below ``eps_norm`` is
    returned as it is (no NaN from a collapsed block).
    """
    if float(torch.linalg.matrix_norm(u)) < eps_norm:
        return u
    q, r = torch.linalg.qr(u.to(torch.float64), mode="reduced")
    s = torch.sign(torch.diagonal(r))
    s[s == 0] = 1
    return (q * s).to(u.dtype)


@register_architecture("poly", family="topk", sparse_codes=True)
class PolySAE(TopKSAE):
    """TopK SAE with the PolySAE polynomial decoder (see the module docstring).

    Examples
    --------
    >>> import torch
    >>> from repscope.sae import PolyConfig, PolySAE
    >>> sae = PolySAE(PolyConfig(d_in=16, d_sae=64, k=4, ranks=(16, 8, 4), shared_u=True))
    >>> out = sae(torch.randn(8, 16))
    >>> out.values.shape, out.reconstruction.shape
    (torch.Size([8, 4]), torch.Size([8, 16]))
    """

    config_class = PolyConfig
    cfg: PolyConfig

    def __init__(self, cfg: PolyConfig) -> None:
        super().__init__(cfg)
        dtype = self.W_dec.dtype
        gen = self._generator
        r1, r2, r3 = cfg.resolved_ranks
        d, m = cfg.d_in, cfg.d_sae
        ranks = (r1, r2, r3)[: cfg.order]

        def orth(rank: int) -> nn.Parameter:
            t = torch.empty(m, rank, dtype=torch.float32)
            nn.init.orthogonal_(t, generator=gen)
            return nn.Parameter(t.to(dtype))

        def kaiming(rank: int) -> nn.Parameter:
            t = torch.empty(d, rank, dtype=torch.float32)
            nn.init.kaiming_uniform_(t, generator=gen)
            return nn.Parameter(t.to(dtype))

        if cfg.shared_u:
            self.U = orth(r1)
        else:
            for i, rank in enumerate(ranks, start=1):
                setattr(self, f"U{i}", orth(rank))
        for i, rank in enumerate(ranks, start=1):
            setattr(self, f"C{i}", kaiming(rank))
        if cfg.order >= 2:
            self.lambda2 = nn.Parameter(torch.tensor(float(cfg.lambda2_init), dtype=dtype))
        if cfg.order >= 3:
            self.lambda3 = nn.Parameter(torch.tensor(float(cfg.lambda3_init), dtype=dtype))
        self.W_dec.requires_grad_(False)
        with torch.no_grad():
            lin = self.linear_decoder()
            self.W_dec.copy_(lin)
            if cfg.tied_init:
                unit = lin / torch.linalg.vector_norm(lin, dim=1, keepdim=True).clamp_min(1e-12)
                self.W_enc.copy_(unit.T)

    # ------------------------------------------------------------------ structure
    @property
    def extra_tensors(self) -> tuple[str, ...]:  # type: ignore[override]
        """Names of the polynomial-decoder tensors this configuration saves."""
        o = self.cfg.order
        us = ("U",) if self.cfg.shared_u else tuple(f"U{i}" for i in range(1, o + 1))
        cs = tuple(f"C{i}" for i in range(1, o + 1))
        lams = tuple(f"lambda{i}" for i in range(2, o + 1))
        return us + cs + lams

    def _u(self, i: int) -> Tensor:
        """The U matrix (d_sae, R_i) of order ``i`` (``U`` itself in shared mode)."""
        return self.U if self.cfg.shared_u else getattr(self, f"U{i}")

    def _c(self, i: int) -> Tensor:
        out: Tensor = getattr(self, f"C{i}")
        return out

    def linear_decoder(self) -> Tensor:
        """The linear term's dictionary ``U1 @ C1.T`` (d_sae, d_in), with gradient."""
        return self._u(1) @ self._c(1).T

    # ------------------------------------------------------------------ decoder
    def _project(self, values: Tensor, indices: Tensor | None, u: Tensor) -> Tensor:
        """``z @ u`` for sparse (values, indices) or dense codes."""
        if indices is None:
            return values @ u
        if values.ndim == 2:
            return sparse_decode(values, indices, u)
        dense = values.new_zeros((*values.shape[:-1], self.d_sae)).scatter_add(-1, indices, values)
        return dense @ u

    def decode_normalized(self, values: Tensor, indices: Tensor | None) -> Tensor:
        _, r2, r3 = self.cfg.resolved_ranks
        order = self.cfg.order
        a1 = self._project(values, indices, self._u(1))
        out = a1 @ self._c(1).T + self.b_dec
        if self.cfg.shared_u:
            if order >= 2:
                h2 = a1[..., :r2]
                out = out + self.lambda2 * ((h2 * h2) @ self._c(2).T)
            if order >= 3:
                h3 = a1[..., :r3]
                out = out + self.lambda3 * ((h3 * h3 * h3) @ self._c(3).T)
            return out
        if order >= 2:
            a2 = self._project(values, indices, self._u(2))
            out = out + self.lambda2 * ((a1[..., :r2] * a2) @ self._c(2).T)
            if order >= 3:
                a3 = self._project(values, indices, self._u(3))
                h3 = a1[..., :r3] * a2[..., :r3] * a3
                out = out + self.lambda3 * (h3 @ self._c(3).T)
        return out

    def auxk_loss(self, xn: Tensor, out: SAEOutput, dead: Tensor, n_dead: int) -> Tensor:
        """AuxK with the linear term ``U1 C1^T`` as the dead latents' decoder (so the loss
        reaches U1 and C1, not the frozen ``W_dec`` copy)."""
        k_aux = min(self.cfg.resolved_aux_k, n_dead)
        x_in = encoder_input(self, xn)
        residual = (xn - out.reconstruction).detach()
        with torch.no_grad():
            masked = out.pre_acts.detach().masked_fill(~dead, float("-inf"))
            vals, idx = topk_select(masked, k_aux)
        if self.cfg.sparse:
            vals = sparse_gather_linear(x_in, self.W_enc, self.b_enc, idx, vals).relu()
        else:
            vals = torch.addmm(self.b_enc, x_in, self.W_enc).gather(1, idx).relu()
        e_hat = self._project(vals, idx, self._u(1)) @ self._c(1).T
        num = (e_hat - residual).pow(2).sum()
        den = (residual - residual.mean(0)).pow(2).sum().clamp_min(1e-12)
        return num / den

    # ------------------------------------------------------------------ hooks
    @torch.no_grad()
    def _sync_linear_decoder(self) -> None:
        self.W_dec.copy_(self.linear_decoder())

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Nothing to project: the decoder rows are not kept at unit norm."""

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Re-orthonormalise every U, then refresh ``W_dec`` (the linear term)."""
        names = (
            ("U",) if self.cfg.shared_u else tuple(f"U{i}" for i in range(1, self.cfg.order + 1))
        )
        for name in names:
            p = getattr(self, name)
            p.copy_(orthonormalize_columns(p))
        self._sync_linear_decoder()

    def _fold(self, state: dict[str, Tensor], p: Tensor, pinv: Tensor, mu: Tensor) -> None:
        super()._fold(state, p, pinv, mu)
        for i in range(1, self.cfg.order + 1):
            name = f"C{i}"
            dt = state[name].dtype
            state[name] = (pinv.T @ state[name].to(torch.float64)).to(dt)
        u1 = state["U" if self.cfg.shared_u else "U1"].to(torch.float64)
        state["W_dec"] = (u1 @ state["C1"].to(torch.float64).T).to(state["W_dec"].dtype)
