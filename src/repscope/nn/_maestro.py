"""Maestro's ordered low-rank linear layer and the low-rank spectrum of any linear/conv layer.

:class:`OrderedLowRankLinear` factorises a linear map as ``W = U V`` and trains it with ordered
(nested) dropout over the rank, so every prefix of its components is a usable low-rank layer
(Horváth et al., 2024). :func:`low_rank_spectrum` reads the singular-value structure of any
trained ``nn.Linear`` / ``nn.Conv*d`` weight: how much of it a rank-k layer can keep at best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import RecordedResult

__all__ = ["LowRankSpectrumResult", "OrderedLowRankLinear", "low_rank_spectrum"]


def _check_rank(value: Any, name: str, full: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise RepscopeTypeError(
            f"{name} must be an integer in [1, {full}] ({what}); got {value!r} "
            f"({type(value).__name__}).")
    if not 1 <= int(value) <= full:
        raise RepscopeValueError(f"{name} must be in [1, {full}] ({what}); got {int(value)}.")
    return int(value)


class OrderedLowRankLinear(nn.Module):
    r"""A linear layer ``y = U (V x) + b`` trained with ordered dropout over its rank (Maestro).

    The weight is kept factorised, :math:`W = U V` with :math:`U \in \mathbb{R}^{d_{out}\times r}`
    (``out_factor``) and :math:`V \in \mathbb{R}^{r\times d_{in}}` (``in_factor``). In training
    mode each forward call samples a rank :math:`b \sim \mathrm{Uniform}\{1, \dots, r\}` and uses
    only the first ``b`` components (ordered, or nested, dropout):

    .. math:: y = U_{:, :b}\, V_{:b, :}\, x + \mathrm{bias}.

    Minimising the expected loss over ``b`` makes every prefix a good low-rank layer on its
    own. For a linear map learnt from isotropic inputs the minimiser is the truncated SVD,
    :math:`U_{:, :k} V_{:k, :} = W_k` (Eckart–Young) for every ``k`` at once (the paper's
    theorem), so after training :meth:`truncate` gives a rank-``k`` layer for any ``k`` without
    another decomposition. A plain factorisation (``ordered_dropout=False``) fits the same map,
    but its prefixes carry no order.

    Parameters
    ----------
    in_features, out_features : int
        Input and output widths.
    rank : int, optional
        Number of components ``r``, in ``[1, min(in_features, out_features)]``; default the
        smaller width (a full-rank factorisation).
    bias : bool, default=True
        Learn an additive bias (never dropped).
    ordered_dropout : bool, default=True
        Sample the rank in training mode. ``False`` gives a plain ``U V`` factorisation.
    init_scale : float, optional
        Draw both factors from :math:`\mathcal{N}(0, \text{init\_scale}^2)`. A small scale
        (e.g. ``1e-3``) lets gradient descent learn the components one after another, in
        order. Default: each factor initialised like an ``nn.Linear`` of its shape, uniform in
        :math:`\pm 1/\sqrt{\text{fan\_in}}`.
    device, dtype : optional
        Where and in which dtype to create the parameters.

    Attributes
    ----------
    in_factor : Parameter of shape (rank, in_features)
        ``V``, the rows that project the input onto the components.
    out_factor : Parameter of shape (out_features, rank)
        ``U``, the columns that map the components to the output.
    bias : Parameter of shape (out_features,) or None

    Shapes
    ------
    - input: ``(*, in_features)``
    - output: ``(*, out_features)``

    Raises
    ------
    RepscopeValueError
        ``rank`` outside ``[1, min(in_features, out_features)]``, or a non-positive
        ``in_features``, ``out_features`` or ``init_scale``.

    Examples
    --------
    >>> import torch
    >>> layer = OrderedLowRankLinear(8, 6)
    >>> layer(torch.randn(5, 8)).shape
    torch.Size([5, 6])
    >>> layer.truncate(2)(torch.randn(5, 8)).shape
    torch.Size([5, 6])

    References
    ----------
    .. [1] S. Horváth, S. Laskaridis, S. Rajput, H. Wang. "Maestro: Uncovering Low-Rank
       Structures via Trainable Decomposition." ICML 2024, arXiv:2308.14929.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int | None = None,
        *,
        bias: bool = True,
        ordered_dropout: bool = True,
        init_scale: float | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise RepscopeValueError(f"{name} must be a positive integer; got {value!r}.")
        full = min(int(in_features), int(out_features))
        r = full if rank is None else _check_rank(
            rank, "rank", full, "the layer's smaller dimension")
        if init_scale is not None and not (isinstance(init_scale, (int, float))
                                           and math.isfinite(init_scale) and init_scale > 0):
            raise RepscopeValueError(f"init_scale must be a positive number; got {init_scale!r}.")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.rank = r
        self.ordered_dropout = bool(ordered_dropout)
        self.init_scale = init_scale
        kw = {"device": device, "dtype": dtype}
        self.in_factor = nn.Parameter(torch.empty(r, self.in_features, **kw))
        self.out_factor = nn.Parameter(torch.empty(self.out_features, r, **kw))
        self.bias = nn.Parameter(torch.empty(self.out_features, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the factors (see ``init_scale``) and the bias (uniform, like nn.Linear)."""
        with torch.no_grad():
            if self.init_scale is None:
                for p in (self.in_factor, self.out_factor):
                    bound = 1.0 / math.sqrt(p.shape[1])
                    p.uniform_(-bound, bound)
            else:
                self.in_factor.normal_(0.0, float(self.init_scale))
                self.out_factor.normal_(0.0, float(self.init_scale))
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.in_features)
                self.bias.uniform_(-bound, bound)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, rank: int | None = None, *, ordered_dropout: bool = True
    ) -> OrderedLowRankLinear:
        r"""Factorise a trained ``nn.Linear`` by its SVD, :math:`U \sqrt{S}` and
        :math:`\sqrt{S} V^\top` (the paper's initialisation from a pretrained layer).

        With ``rank`` below the full rank this keeps the top ``rank`` singular components, the
        Eckart–Young optimum. The bias is copied. The SVD runs in float64; the parameters take
        the linear layer's dtype and device.

        Raises
        ------
        RepscopeTypeError
            ``linear`` is not an ``nn.Linear``.
        RepscopeValueError
            ``rank`` outside ``[1, min(in_features, out_features)]``.
        """
        if not isinstance(linear, nn.Linear):
            raise RepscopeTypeError(
                f"from_linear expects an nn.Linear; got {type(linear).__name__}.")
        w = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, rank,
                    bias=linear.bias is not None, ordered_dropout=ordered_dropout,
                    device=w.device, dtype=w.dtype)
        u, s, vh = torch.linalg.svd(w.to(torch.float64), full_matrices=False)
        root = s[: layer.rank].sqrt()
        with torch.no_grad():
            layer.out_factor.copy_((u[:, : layer.rank] * root).to(w.dtype))
            layer.in_factor.copy_((root[:, None] * vh[: layer.rank]).to(w.dtype))
            if linear.bias is not None and layer.bias is not None:
                layer.bias.copy_(linear.bias.detach())
        return layer

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, bias={self.bias is not None}, "
                f"ordered_dropout={self.ordered_dropout}")

    def sample_rank(self) -> int:
        """A rank drawn uniformly from ``{1, ..., rank}`` (torch's global generator)."""
        return int(torch.randint(1, self.rank + 1, (1,)).item())

    def forward(self, x: Tensor, rank: int | None = None) -> Tensor:
        """Apply the first ``b`` components.

        Parameters
        ----------
        x : Tensor of shape (*, in_features)
        rank : int, optional
            Use exactly the first ``rank`` components. Default: in training mode with
            ``ordered_dropout``, a rank sampled uniformly from ``{1, ..., self.rank}`` per call
            (one for the whole batch, as in the paper); otherwise all components.

        Returns
        -------
        Tensor of shape (*, out_features)

        Raises
        ------
        RepscopeValueError
            ``rank`` outside ``[1, self.rank]``.
        """
        if rank is not None:
            b = _check_rank(rank, "rank", self.rank, "the layer's rank")
        elif self.training and self.ordered_dropout:
            b = self.sample_rank()
        else:
            b = self.rank
        return F.linear(F.linear(x, self.in_factor[:b]), self.out_factor[:, :b], self.bias)

    def low_rank_weight(self, rank: int | None = None) -> Tensor:
        """``U[:, :k] V[:k]`` of shape (out_features, in_features); ``k`` defaults to all
        components. Differentiable (no detach)."""
        k = self.rank if rank is None else _check_rank(rank, "rank", self.rank,
                                                       "the layer's rank")
        return self.out_factor[:, :k] @ self.in_factor[:k]

    def importance(self) -> Tensor:
        r"""Importance of each component, :math:`\lVert U_{:, b}\rVert\,\lVert V_{b, :}\rVert`,
        shape (rank,), detached.

        It is the Frobenius norm of the rank-one term :math:`U_{:, b} V_{b, :}`; after ordered
        dropout training it approximates the singular values of the learnt map, in order.
        """
        with torch.no_grad():
            return self.out_factor.norm(dim=0) * self.in_factor.norm(dim=1)

    def group_lasso_penalty(self) -> Tensor:
        r"""Maestro's hierarchical group-lasso penalty (differentiable scalar).

        .. math:: \sum_{b=1}^{r} \big(\lVert V_{b:, :}\rVert_F + \lVert U_{:, b:}\rVert_F\big),

        the norms of every tail of components; adding ``lambda * penalty`` to the loss pushes
        the last components towards zero, so :meth:`prune` can drop them.
        """
        v_tail = torch.flip(torch.cumsum(torch.flip(self.in_factor.pow(2).sum(1), [0]), 0), [0])
        u_tail = torch.flip(torch.cumsum(torch.flip(self.out_factor.pow(2).sum(0), [0]), 0), [0])
        return v_tail.sqrt().sum() + u_tail.sqrt().sum()

    def truncate(self, rank: int) -> nn.Sequential:
        """A plain rank-``rank`` layer: ``nn.Sequential(nn.Linear(in, rank, bias=False),
        nn.Linear(rank, out))`` holding copies of the first ``rank`` components and the bias.

        Raises
        ------
        RepscopeValueError
            ``rank`` outside ``[1, self.rank]``.
        """
        k = _check_rank(rank, "rank", self.rank, "the layer's rank")
        p = self.in_factor
        down = nn.Linear(self.in_features, k, bias=False, device=p.device, dtype=p.dtype)
        up = nn.Linear(k, self.out_features, bias=self.bias is not None, device=p.device,
                       dtype=p.dtype)
        with torch.no_grad():
            down.weight.copy_(self.in_factor[:k])
            up.weight.copy_(self.out_factor[:, :k])
            if self.bias is not None:
                up.bias.copy_(self.bias)
        return nn.Sequential(down, up)

    def prune(self, threshold: float = 1e-5) -> OrderedLowRankLinear:
        """A new layer keeping the components whose :meth:`importance` is at least
        ``threshold`` (the paper's progressive shrinking; default its 1e-5), in order, and
        at least the first component.

        Raises
        ------
        RepscopeValueError
            ``threshold`` negative or not finite.
        """
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold)
                and threshold >= 0):
            raise RepscopeValueError(
                f"threshold must be a non-negative number; got {threshold!r}.")
        keep = torch.nonzero(self.importance() >= threshold).flatten()
        if keep.numel() == 0:
            keep = torch.zeros(1, dtype=torch.long, device=self.in_factor.device)
        p = self.in_factor
        layer = type(self)(self.in_features, self.out_features, int(keep.numel()),
                           bias=self.bias is not None, ordered_dropout=self.ordered_dropout,
                           init_scale=self.init_scale, device=p.device, dtype=p.dtype)
        with torch.no_grad():
            layer.in_factor.copy_(self.in_factor[keep])
            layer.out_factor.copy_(self.out_factor[:, keep])
            if self.bias is not None and layer.bias is not None:
                layer.bias.copy_(self.bias)
        return layer


@dataclass(frozen=True)
class LowRankSpectrumResult(RecordedResult):
    """Singular-value structure of a layer weight and what a rank-k layer can keep of it.

    Attributes
    ----------
    singular_values : ndarray of shape (r,)
        Descending, ``r = min(n_out, n_in)``.
    energy_fraction : ndarray of shape (r,)
        :math:`\\sigma_i^2 / \\sum_j \\sigma_j^2`.
    cumulative_energy : ndarray of shape (r,)
        Energy kept by the best rank-``k`` layer, ``k = 1..r``.
    eckart_young_error : ndarray of shape (r,)
        :math:`\\min_{\\mathrm{rank}\\,A \\le k} \\lVert W - A\\rVert_F =
        \\sqrt{\\sum_{i>k} \\sigma_i^2}` for ``k = 1..r`` (the last entry is 0).
    relative_error : ndarray of shape (r,)
        ``eckart_young_error / ||W||_F``.
    effective_rank : float
        :math:`\\exp(-\\sum_i p_i \\log p_i)`, :math:`p_i = \\sigma_i / \\sum_j \\sigma_j`
        (Roy & Vetterli, 2007).
    stable_rank : float
        :math:`\\lVert W\\rVert_F^2 / \\sigma_1^2`.
    n_components_90 : int
        Smallest ``k`` keeping 90% of the energy.
    shape : tuple of int
        ``(n_out, n_in)`` of the matrix analysed (a conv weight reshaped).
    """

    analysis: ClassVar[str] = "low_rank_spectrum"

    singular_values: np.ndarray
    energy_fraction: np.ndarray
    cumulative_energy: np.ndarray
    eckart_young_error: np.ndarray
    relative_error: np.ndarray
    effective_rank: float
    stable_rank: float
    n_components_90: int
    shape: tuple[int, int]

    def rank_for_energy(self, fraction: float) -> int:
        """Smallest rank keeping at least ``fraction`` (in (0, 1]) of the energy.

        Raises
        ------
        RepscopeValueError
            ``fraction`` outside (0, 1].
        """
        if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise RepscopeValueError(f"fraction must be in (0, 1]; got {fraction!r}.")
        if self.cumulative_energy[-1] <= 0:
            return 0
        k = int(np.searchsorted(self.cumulative_energy, fraction - 1e-12) + 1)
        return min(k, self.singular_values.size)

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``low_rank_spectrum`` record: the spectrum, its energy and the rank summaries."""
        return [("", {
            "singular_values": self.singular_values,
            "energy_fraction": self.energy_fraction,
            "relative_error": self.relative_error,
            "effective_rank": self.effective_rank,
            "stable_rank": self.stable_rank,
            "n_components_90": self.n_components_90,
            "shape": list(self.shape)})]


def _weight_matrix(module: Any) -> Tensor:
    if isinstance(module, OrderedLowRankLinear):
        return module.low_rank_weight().detach()
    if isinstance(module, nn.Linear):
        return module.weight.detach()
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        w = module.weight.detach()  # (in, out/groups, *kernel)
        return w.transpose(0, 1).reshape(w.shape[1], -1)
    if isinstance(module, nn.modules.conv._ConvNd):
        w = module.weight.detach()  # (out, in/groups, *kernel)
        return w.reshape(w.shape[0], -1)
    if isinstance(module, (Tensor, np.ndarray)):
        w = torch.as_tensor(module).detach() if isinstance(module, np.ndarray) else module.detach()
        if w.ndim < 2:
            raise RepscopeValueError(
                f"low_rank_spectrum needs a weight of at least 2 dimensions; got shape "
                f"{tuple(w.shape)}.")
        return w.reshape(w.shape[0], -1)
    raise RepscopeTypeError(
        f"low_rank_spectrum expects an nn.Linear, an nn.Conv1d/2d/3d (or transposed), an "
        f"OrderedLowRankLinear or a weight tensor; got {type(module).__name__}.")


def low_rank_spectrum(module: Any) -> LowRankSpectrumResult:
    r"""Singular values of a layer's weight and the best error at every rank (Eckart–Young).

    A convolution weight of shape (out, in, kh, kw) is read as the matrix
    out x (in * kh * kw) that multiplies each unfolded input patch (a transposed convolution's
    weight is transposed first); a grouped convolution gives the spectrum of its stacked group
    blocks. For :class:`OrderedLowRankLinear` the product ``U V`` is analysed.

    .. math:: \min_{\mathrm{rank}\,A \le k} \lVert W - A\rVert_F
              = \sqrt{\textstyle\sum_{i > k} \sigma_i^2}

    Parameters
    ----------
    module : nn.Linear, nn.Conv1d/2d/3d, nn.ConvTranspose*d, OrderedLowRankLinear, or tensor
        A layer, or a weight (torch tensor or numpy array) of 2 or more dimensions read as
        out x rest.

    Returns
    -------
    LowRankSpectrumResult

    Raises
    ------
    RepscopeTypeError
        Anything else.
    RepscopeValueError
        A weight with fewer than 2 dimensions, or with NaN/inf.

    Examples
    --------
    >>> import torch
    >>> res = low_rank_spectrum(torch.nn.Conv2d(3, 16, 3))
    >>> res.shape, res.singular_values.shape
    ((16, 27), (16,))

    References
    ----------
    .. [1] C. Eckart, G. Young. "The approximation of one matrix by another of lower rank."
       Psychometrika 1(3), 1936.
    .. [2] O. Roy, M. Vetterli. "The effective rank: a measure of effective dimensionality."
       EUSIPCO 2007.
    """
    from repscope.stats import effective_rank

    w = _weight_matrix(module).to(device="cpu", dtype=torch.float64).numpy()
    if not np.isfinite(w).all():
        raise RepscopeValueError(
            f"low_rank_spectrum got a weight of shape {w.shape} with NaN or inf entries.")
    s = np.linalg.svd(w, compute_uv=False)
    sq = s**2
    total = float(sq.sum())
    # the sum of the tail directly, so small tails do not lose digits to cancellation
    tail = np.sqrt(np.cumsum(sq[::-1])[::-1][1:]) if s.size > 1 else np.zeros(0)
    tail = np.append(tail, 0.0)
    frob = math.sqrt(total)
    energy = sq / total if total > 0 else np.zeros_like(sq)
    cum = np.cumsum(energy)
    k90 = int(np.searchsorted(cum, 0.9 - 1e-12) + 1) if total > 0 else 0
    return LowRankSpectrumResult(
        singular_values=s,
        energy_fraction=energy,
        cumulative_energy=cum,
        eckart_young_error=tail,
        relative_error=tail / frob if frob > 0 else np.zeros_like(tail),
        effective_rank=effective_rank(s),
        stable_rank=total / float(sq[0]) if s.size and sq[0] > 0 else 0.0,
        n_components_90=min(k90, s.size),
        shape=(int(w.shape[0]), int(w.shape[1])),
    )
