r"""Hyper-connections whose stream-mixing matrix lies on the spectral sphere (sHC), and the
doubly-stochastic (Birkhoff polytope) baseline (mHC).

A hyper-connection widens the residual stream into :math:`n` parallel streams
:math:`X \in \mathbb R^{n \times d}` and updates them around a layer :math:`f` by

.. math::

    X' = H_{\rm res} X + h_{\rm post}\, f(h_{\rm pre}^\top X),

with a residual mixing matrix :math:`H_{\rm res} \in \mathbb R^{n \times n}`, a read-in
:math:`h_{\rm pre} \in \mathbb R^n` and a write-out :math:`h_{\rm post} \in \mathbb R^n`.
Unconstrained, :math:`H_{\rm res}` can amplify the residual path across depth. mHC keeps it
doubly stochastic (non-negative, rows and columns summing to 1: Sinkhorn iterations on
:math:`\exp W`); sHC keeps it on the spectral sphere :math:`\lVert H_{\rm res}\rVert_2 = 1`:
:math:`H_{\rm res} = W / \sigma_{\max}(W)`, so entries may be negative (subtractive mixing,
e.g. :math:`x_1 - x_2`) while no product of mixing matrices amplifies a vector,
:math:`\lVert H^{(L)} \cdots H^{(1)} x\rVert \le \lVert x\rVert`.

References
----------
.. [1] Liu, Zhang and Li, "Beyond the Birkhoff Polytope: Spectral-Sphere-Constrained
   Hyper-Connections", 2026, arXiv:2603.20896.
.. [2] Zhu et al., "Hyper-Connections", ICLR 2025, arXiv:2409.19606.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from repscope._validation import check_positive_int
from repscope.exceptions import RepscopeValueError
from repscope.results import Result

__all__ = [
    "BirkhoffHyperConnection",
    "MixingDiagnosticsResult",
    "SpectralSphereHyperConnection",
    "mixing_diagnostics",
    "sinkhorn_doubly_stochastic",
]


def sinkhorn_doubly_stochastic(logits: Tensor, n_iter: int = 20) -> Tensor:
    r"""The doubly-stochastic matrix :math:`\mathrm{diag}(a)\, e^{W} \mathrm{diag}(b)` by
    ``n_iter`` alternating row and column normalisations in the log domain (differentiable).

    Parameters
    ----------
    logits : Tensor of shape (n, n)
    n_iter : int, default=20

    Returns
    -------
    Tensor of shape (n, n)
        Non-negative; its columns sum to 1 exactly and its rows to within the Sinkhorn
        residual after ``n_iter`` iterations.

    Examples
    --------
    >>> P = sinkhorn_doubly_stochastic(torch.randn(4, 4, dtype=torch.float64), 200)
    >>> torch.allclose(P.sum(0), torch.ones(4, dtype=torch.float64))
    True
    """
    log_p = logits
    for _ in range(n_iter):
        log_p = log_p - torch.logsumexp(log_p, dim=1, keepdim=True)
        log_p = log_p - torch.logsumexp(log_p, dim=0, keepdim=True)
    return log_p.exp()


class _HyperConnection(nn.Module, abc.ABC):
    """Shared forward of the static hyper-connections: read-in, layer, write-out, mixing."""

    def __init__(self, n_streams: int, layer: nn.Module | None, caller: str, device: Any,
                 dtype: torch.dtype | None) -> None:
        super().__init__()
        self.n_streams = check_positive_int(n_streams, "n_streams", caller=caller)
        self.layer = layer
        dtype = torch.float32 if dtype is None else dtype
        n = self.n_streams
        self.h_pre = nn.Parameter(torch.full((n,), 1.0 / n, dtype=dtype, device=device))
        self.h_post = nn.Parameter(torch.ones(n, dtype=dtype, device=device))
        self._caller = caller

    @abc.abstractmethod
    def mixing_matrix(self) -> Tensor:
        """The (n_streams, n_streams) matrix that mixes the streams after the layer."""

    def forward(self, x: Tensor) -> Tensor:
        """Update the streams.

        Parameters
        ----------
        x : Tensor of shape (*, n_streams, d)

        Returns
        -------
        Tensor of shape (*, n_streams, d)
            :math:`H_{\\rm res} X + h_{\\rm post} f(h_{\\rm pre}^\\top X)`, or
            :math:`H_{\\rm res} X` without a layer.

        Raises
        ------
        RepscopeValueError
            If ``x`` has fewer than 2 axes or its second-to-last axis is not ``n_streams``.
        """
        if x.ndim < 2 or x.shape[-2] != self.n_streams:
            raise RepscopeValueError(
                f"{self._caller} expected an input of shape (*, n_streams={self.n_streams}, d); "
                f"got shape {tuple(x.shape)}.")
        H = self.mixing_matrix().to(x.dtype)
        out = torch.einsum("ij,...jd->...id", H, x)
        if self.layer is not None:
            h = torch.einsum("j,...jd->...d", self.h_pre.to(x.dtype), x)
            out = out + self.h_post.to(x.dtype)[:, None] * self.layer(h).unsqueeze(-2)
        return out


class SpectralSphereHyperConnection(_HyperConnection):
    r"""A hyper-connection whose residual mixing matrix has spectral norm exactly 1 (sHC).

    :math:`H_{\rm res} = W / \sigma_{\max}(W)`, with :math:`\sigma_{\max}` from an exact SVD
    (cheap for the few streams a hyper-connection has; power iteration would give a lower
    bound on :math:`\sigma_{\max}`, so a norm slightly above 1 when the top singular values are
    close, as they are near the identity). The normalisation is part of the forward pass, so
    gradients see the constraint; after each optimiser step call :meth:`project_` (the retraction :math:`W \leftarrow W /
    \sigma_{\max}(W)`), which keeps the stored :math:`W` itself on the sphere and so equal to
    :math:`H_{\rm res}`. :math:`W` starts at the identity (a plain residual connection).

    Parameters
    ----------
    n_streams : int
    layer : nn.Module, optional
        :math:`f`, mapping ``(*, d)`` to ``(*, d)``; None: the module only mixes the streams.
    device, dtype
        Of the parameters (float32 by default).

    Shapes
    ------
    - input: ``(*, n_streams, d)``;
    - output: ``(*, n_streams, d)``.

    Examples
    --------
    >>> hc = SpectralSphereHyperConnection(4)
    >>> float(torch.linalg.matrix_norm(hc.mixing_matrix().detach(), ord=2))
    1.0
    >>> hc(torch.randn(8, 4, 16)).shape
    torch.Size([8, 4, 16])

    References
    ----------
    .. [1] Liu, Zhang and Li, "Beyond the Birkhoff Polytope: Spectral-Sphere-Constrained
       Hyper-Connections", 2026, arXiv:2603.20896.
    """

    def __init__(self, n_streams: int, layer: nn.Module | None = None, *, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(n_streams, layer, "SpectralSphereHyperConnection", device, dtype)
        self.weight = nn.Parameter(torch.eye(self.n_streams, dtype=self.h_pre.dtype,
                                             device=device))

    def spectral_norm(self) -> Tensor:
        """:math:`\\sigma_{\\max}(W)` from the SVD (differentiable)."""
        return torch.linalg.matrix_norm(self.weight, ord=2)

    def mixing_matrix(self) -> Tensor:
        """:math:`H_{\\rm res} = W / \\sigma_{\\max}(W)`, shape (n_streams, n_streams)."""
        return self.weight / self.spectral_norm()

    @torch.no_grad()
    def project_(self) -> SpectralSphereHyperConnection:
        """Retract :math:`W` onto the spectral sphere in place (call after each optimiser
        step); returns the module."""
        self.weight.div_(torch.linalg.matrix_norm(self.weight, ord=2))
        return self


class BirkhoffHyperConnection(_HyperConnection):
    r"""A hyper-connection whose residual mixing matrix is doubly stochastic (the mHC
    baseline): :math:`H_{\rm res} = \mathrm{Sinkhorn}(\exp W)`.

    Every such matrix is a convex combination of permutation matrices (Birkhoff–von Neumann),
    so :math:`\lVert H_{\rm res}\rVert_2 = 1` too, but its entries are non-negative: no stream
    can be subtracted from another. :math:`W` starts at ``init_scale`` times the identity
    (:math:`H_{\rm res}` near the identity).

    Parameters
    ----------
    n_streams : int
    layer : nn.Module, optional
        :math:`f`, mapping ``(*, d)`` to ``(*, d)``; None: the module only mixes the streams.
    sinkhorn_iterations : int, default=20
    init_scale : float, default=4.0
    device, dtype
        Of the parameters (float32 by default).

    Shapes
    ------
    - input: ``(*, n_streams, d)``;
    - output: ``(*, n_streams, d)``.

    Examples
    --------
    >>> hc = BirkhoffHyperConnection(3)
    >>> bool((hc.mixing_matrix() >= 0).all())
    True

    References
    ----------
    .. [1] Xie et al., "mHC: Manifold-Constrained Hyper-Connections", 2025, arXiv:2512.24880.
    """

    def __init__(self, n_streams: int, layer: nn.Module | None = None, *,
                 sinkhorn_iterations: int = 20, init_scale: float = 4.0, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        caller = "BirkhoffHyperConnection"
        super().__init__(n_streams, layer, caller, device, dtype)
        self.sinkhorn_iterations = check_positive_int(sinkhorn_iterations,
                                                      "sinkhorn_iterations", caller=caller)
        n = self.n_streams
        self.weight = nn.Parameter(float(init_scale) * torch.eye(n, dtype=self.h_pre.dtype,
                                                                 device=device))

    def mixing_matrix(self) -> Tensor:
        """:math:`\\mathrm{Sinkhorn}(\\exp W)`, shape (n_streams, n_streams)."""
        return sinkhorn_doubly_stochastic(self.weight, self.sinkhorn_iterations)


@dataclass(frozen=True)
class MixingDiagnosticsResult(Result):
    """What a learned mixing matrix does (:func:`mixing_diagnostics`).

    Attributes
    ----------
    spectral_norm : float
        :math:`\\lVert H\\rVert_2`.
    distance_from_identity : float
        :math:`\\lVert H - I\\rVert_F / \\sqrt n` (0 for a plain residual connection; identity
        degeneration keeps it near 0).
    negative_mass : float
        The sum of the absolute values of the negative entries over the sum of all absolute
        values (0 for a doubly-stochastic matrix).
    row_sum_deviation : float
        :math:`\\max_i \\lvert \\sum_j H_{ij} - 1\\rvert`.
    """

    spectral_norm: float
    distance_from_identity: float
    negative_mass: float
    row_sum_deviation: float


def mixing_diagnostics(H: Any) -> MixingDiagnosticsResult:
    """Spectral norm, distance from the identity and negative mass of a mixing matrix.

    Parameters
    ----------
    H : Tensor of shape (n, n), or a hyper-connection module (its mixing matrix)

    Returns
    -------
    MixingDiagnosticsResult

    Raises
    ------
    RepscopeValueError
        If ``H`` is not a square matrix.

    Examples
    --------
    >>> d = mixing_diagnostics(torch.tensor([[1.0, -1.0], [1.0, 1.0]]) / 2 ** 0.5)
    >>> round(d.spectral_norm, 6), round(d.negative_mass, 6)
    (1.0, 0.25)
    """
    if isinstance(H, _HyperConnection):
        H = H.mixing_matrix()
    M = torch.as_tensor(H).detach().to(torch.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise RepscopeValueError(f"H must be a square matrix; got shape {tuple(M.shape)}.")
    n = M.shape[0]
    absolute = M.abs().sum()
    return MixingDiagnosticsResult(
        spectral_norm=float(torch.linalg.matrix_norm(M, ord=2)),
        distance_from_identity=float((M - torch.eye(n, dtype=M.dtype)).norm() / n ** 0.5),
        negative_mass=float((-M).clamp_min(0).sum() / absolute) if absolute > 0 else 0.0,
        row_sum_deviation=float((M.sum(1) - 1).abs().max()),
    )
