"""Linear attention and subspace attention: NaLaFormer, ReLU kernel attention, a CARE-style
block (shapes and cost) and ULSAM; the query-norm / row-entropy diagnostic beside them.

Softmax attention weighs key ``j`` for query ``i`` by ``exp(q_i . k_j / sqrt(d))``: a longer
query gives a spikier (lower-entropy) row. Kernel linear attention replaces the exponential by
a product of feature maps, ``phi(q_i) . phi(k_j)``, and computes ``phi(Q) (phi(K)^T V)`` in
``O(N d^2)`` instead of ``O(N^2 d)``; with ``phi = ReLU`` the row is invariant to the query's
norm (the norm cancels in the normalisation), which NaLaFormer calls the missing entropy
control. Its norm-aware map raises the query's direction to a power that grows with the norm,
restoring the norm -> spikiness relation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import Result

__all__ = [
    "ULSAM",
    "CAREBlock",
    "CARECost",
    "NormAwareLinearAttention",
    "NormEntropyResult",
    "ReLULinearAttention",
    "attention_weights",
    "kernel_linear_attention",
    "nala_feature_maps",
    "norm_aware_linear_attention",
    "norm_entropy_correlation",
    "relu_linear_attention",
    "row_entropy",
    "softmax_attention",
]

AttentionKind = Literal["softmax", "relu", "nala"]
_KINDS = ("softmax", "relu", "nala")


# --------------------------------------------------------------------------- checks
def _check_tensor(x: object, name: str, *, min_dim: int = 2) -> Tensor:
    if not isinstance(x, Tensor):
        raise RepscopeTypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}.")
    if x.ndim < min_dim:
        raise RepscopeValueError(
            f"{name} must have at least {min_dim} dimensions (..., n_tokens, head_dim); "
            f"got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise RepscopeTypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}.")
    return x


def _check_qkv(q: Tensor, k: Tensor, v: Tensor | None) -> None:
    _check_tensor(q, "q")
    _check_tensor(k, "k")
    if q.shape[-1] != k.shape[-1]:
        raise RepscopeValueError(
            f"q and k must have the same head dimension (last axis); got q.shape="
            f"{tuple(q.shape)} and k.shape={tuple(k.shape)}.")
    if q.shape[:-2] != k.shape[:-2]:
        raise RepscopeValueError(
            f"q and k must have the same leading (batch, head) dimensions; got q.shape="
            f"{tuple(q.shape)} and k.shape={tuple(k.shape)}.")
    if v is not None:
        _check_tensor(v, "v")
        if v.shape[:-1] != k.shape[:-1]:
            raise RepscopeValueError(
                f"v must have one row per key (v.shape[:-1] == k.shape[:-1]); got k.shape="
                f"{tuple(k.shape)} and v.shape={tuple(v.shape)}.")


def _check_kind(kind: object) -> str:
    if kind not in _KINDS:
        raise RepscopeValueError(f"kind must be one of {', '.join(_KINDS)}; got {kind!r}.")
    return str(kind)


def _check_heads(dim: int, num_heads: int, dim_name: str = "dim") -> None:
    if not isinstance(dim, int) or dim < 1:
        raise RepscopeValueError(f"{dim_name} must be a positive integer; got {dim!r}.")
    if not isinstance(num_heads, int) or num_heads < 1 or dim % num_heads:
        raise RepscopeValueError(
            f"num_heads must be a positive divisor of {dim_name}={dim}; got {num_heads!r}.")


# --------------------------------------------------------------------------- functional maths
def softmax_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None) -> Tensor:
    """Softmax attention ``softmax(q k^T * scale) v`` (the quadratic reference).

    Parameters
    ----------
    q : Tensor of shape (..., n_queries, head_dim)
    k : Tensor of shape (..., n_keys, head_dim)
    v : Tensor of shape (..., n_keys, value_dim)
    scale : float, optional
        Logit scale; default ``1 / sqrt(head_dim)``.

    Returns
    -------
    Tensor of shape (..., n_queries, value_dim)
    """
    _check_qkv(q, k, v)
    return attention_weights(q, k, kind="softmax", scale=scale) @ v


def nala_feature_maps(q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """NaLaFormer's norm-aware feature maps ``phi_q(q)`` and ``phi_k(k)``.

    .. math::

        p(q) = 3\\,(0.5 + \\tanh\\lVert q \\rVert),\\quad
        \\phi_q(q) = \\Big[\\big(\\tfrac{q_+}{\\lVert q \\rVert}\\big)^{p(q)},
                          \\big(\\tfrac{q_-}{\\lVert q \\rVert}\\big)^{p(q)}\\Big],\\quad
        \\phi_k(k) = [(k^3)_+, (k^3)_-]

    with ``x_+ = relu(x)`` and ``x_- = relu(-x)`` (the sign split keeps same-sign products, a
    non-negative cosine-like similarity). The norm enters only through the power, so a longer
    query gives a spikier attention row.

    Parameters
    ----------
    q : Tensor of shape (..., n_queries, head_dim)
    k : Tensor of shape (..., n_keys, head_dim)

    Returns
    -------
    phi_q : Tensor of shape (..., n_queries, 2 * head_dim)
    phi_k : Tensor of shape (..., n_keys, 2 * head_dim)
    """
    _check_qkv(q, k, None)
    norm = q.norm(dim=-1, keepdim=True)
    power = 3.0 * (0.5 + torch.tanh(norm))
    direction = q / norm.clamp_min(torch.finfo(q.dtype).tiny)
    phi_q = torch.cat([torch.relu(direction), torch.relu(-direction)], dim=-1) ** power
    k3 = k ** 3
    phi_k = torch.cat([torch.relu(k3), torch.relu(-k3)], dim=-1)
    return phi_q, phi_k


def kernel_linear_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor, *,
                            eps: float = 1e-6) -> Tensor:
    """Normalised linear attention from feature maps, in ``O(N d e)``.

    .. math:: \\mathrm{out}_i = \\frac{\\phi_q(q_i)^T \\, \\tfrac1M\\sum_j \\phi_k(k_j) v_j^T}
                                      {\\phi_q(q_i)^T \\, \\tfrac1M\\sum_j \\phi_k(k_j) + \\epsilon}

    (the ``1/M`` keeps the sums at the scale of one key, as in NaLaFormer).

    Parameters
    ----------
    phi_q : Tensor of shape (..., n_queries, n_features), non-negative
    phi_k : Tensor of shape (..., n_keys, n_features), non-negative
    v : Tensor of shape (..., n_keys, value_dim)
    eps : float, default=1e-6

    Returns
    -------
    Tensor of shape (..., n_queries, value_dim)
    """
    m = phi_k.shape[-2]
    kv = phi_k.transpose(-2, -1) @ v / m                     # (..., F, e)
    k_mean = phi_k.mean(dim=-2, keepdim=True)                # (..., 1, F)
    denom = phi_q @ k_mean.transpose(-2, -1)                 # (..., N, 1)
    return (phi_q @ kv) / (denom + eps)


def relu_linear_attention(q: Tensor, k: Tensor, v: Tensor, *, eps: float = 1e-6) -> Tensor:
    """Standard kernel linear attention with ``phi = ReLU`` (Katharopoulos et al. style).

    Exactly invariant to rescaling the queries by ``s > 0`` (up to ``eps``): ``phi(s q) = s
    phi(q)`` cancels between numerator and denominator.

    Parameters
    ----------
    q : Tensor of shape (..., n_queries, head_dim)
    k : Tensor of shape (..., n_keys, head_dim)
    v : Tensor of shape (..., n_keys, value_dim)
    eps : float, default=1e-6

    Returns
    -------
    Tensor of shape (..., n_queries, value_dim)
    """
    _check_qkv(q, k, v)
    return kernel_linear_attention(torch.relu(q), torch.relu(k), v, eps=eps)


def norm_aware_linear_attention(q: Tensor, k: Tensor, v: Tensor, *,
                                eps: float = 1e-6) -> Tensor:
    """NaLaFormer's norm-aware linear attention (:func:`nala_feature_maps` +
    :func:`kernel_linear_attention`), without RoPE.

    Parameters
    ----------
    q : Tensor of shape (..., n_queries, head_dim)
    k : Tensor of shape (..., n_keys, head_dim)
    v : Tensor of shape (..., n_keys, value_dim)
    eps : float, default=1e-6

    Returns
    -------
    Tensor of shape (..., n_queries, value_dim)

    References
    ----------
    .. [1] Meng, Luo, Huo, Li, Wang, Li, Zhang (2025). NaLaFormer: Norm-Aware Linear Attention
       for Transformer Models. arXiv:2506.21137.
    """
    _check_qkv(q, k, v)
    phi_q, phi_k = nala_feature_maps(q, k)
    return kernel_linear_attention(phi_q, phi_k, v, eps=eps)


def attention_weights(q: Tensor, k: Tensor, *, kind: AttentionKind = "softmax",
                      scale: float | None = None, eps: float = 1e-6) -> Tensor:
    """The explicit ``(n_queries, n_keys)`` attention matrix of ``kind`` (rows sum to 1).

    Quadratic in memory: a diagnostic, not the way the linear kinds are computed.

    Parameters
    ----------
    q : Tensor of shape (..., n_queries, head_dim)
    k : Tensor of shape (..., n_keys, head_dim)
    kind : {"softmax", "relu", "nala"}, default="softmax"
    scale : float, optional
        Softmax logit scale (default ``1 / sqrt(head_dim)``); ignored by the linear kinds.
    eps : float, default=1e-6
        Added to the linear kinds' normaliser, as in their forward.

    Returns
    -------
    Tensor of shape (..., n_queries, n_keys)

    Raises
    ------
    RepscopeValueError
        On an unknown ``kind`` or mismatched shapes.
    """
    kind = _check_kind(kind)  # type: ignore[assignment]
    _check_qkv(q, k, None)
    if kind == "softmax":
        s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        return torch.softmax((q @ k.transpose(-2, -1)) * s, dim=-1)
    if kind == "relu":
        phi_q, phi_k = torch.relu(q), torch.relu(k)
    else:
        phi_q, phi_k = nala_feature_maps(q, k)
    scores = phi_q @ phi_k.transpose(-2, -1)
    m = phi_k.shape[-2]
    return (scores / m) / (scores.mean(dim=-1, keepdim=True) + eps)


def row_entropy(weights: Tensor) -> Tensor:
    """Shannon entropy (nats) of each row of an attention matrix.

    Parameters
    ----------
    weights : Tensor of shape (..., n_queries, n_keys)
        Non-negative rows; each is normalised to sum to 1 first.

    Returns
    -------
    Tensor of shape (..., n_queries)
    """
    _check_tensor(weights, "weights")
    p = weights / weights.sum(dim=-1, keepdim=True)
    return -torch.special.xlogy(p, p).sum(dim=-1)


@dataclass(frozen=True)
class NormEntropyResult(Result):
    """How attention-row entropy follows the query norm (NaLaFormer's diagnostic).

    Attributes
    ----------
    kind : str
        The attention kind.
    scales : ndarray of shape (n_scales,)
        The factors the queries were multiplied by.
    query_norms : ndarray of shape (n_scales,)
        Mean ``||q_i||`` at each scale.
    entropies : ndarray of shape (n_scales, n_queries)
        The entropy (nats) of every attention row at every scale.
    spearman : float
        Spearman rank correlation, over the scales, of the mean query norm and the mean row
        entropy: -1 when rescaling the queries up makes every layer's rows spikier (softmax,
        NaLa), 0 when the rows ignore the norm (ReLU kernel: the entropies are equal, ties).
    spearman_rows : float
        The same correlation pooled over every (scale, row) pair: how much of the spread of
        entropies across rows and scales the norm alone explains.
    """

    kind: str
    scales: np.ndarray
    query_norms: np.ndarray
    entropies: np.ndarray
    spearman: float
    spearman_rows: float


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    # values equal up to rounding are ties (a norm-invariant kind gives entropies that differ
    # only in the last bits); a constant side means no dependence: 0
    def snap(a: np.ndarray) -> np.ndarray:
        tol = 1e-9 * max(1.0, float(np.abs(a).max()))
        return np.round(a / tol) * tol

    x, y = snap(x), snap(y)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def norm_entropy_correlation(q: Tensor, k: Tensor, *, kind: AttentionKind = "softmax",
                             scales: tuple[float, ...] | np.ndarray | None = None
                             ) -> NormEntropyResult:
    """How the entropy of attention rows follows the query norm as the queries are rescaled.

    Every query is multiplied by each of ``scales`` in turn (the same directions at several
    norms), the attention rows of ``kind`` are formed against ``k`` and their entropies taken.

    Parameters
    ----------
    q : Tensor of shape (..., n_queries, head_dim)
    k : Tensor of shape (..., n_keys, head_dim)
    kind : {"softmax", "relu", "nala"}, default="softmax"
    scales : sequence of float, optional
        Default: 12 values geometrically from 0.05 to 3.
        Positive factors applied to ``q`` (NaLa's power ``3 (0.5 + tanh ||q||)`` saturates
        for norms above about 2, so unit-norm queries and this range cover its change).

    Returns
    -------
    NormEntropyResult

    Raises
    ------
    RepscopeValueError
        On an unknown ``kind``, fewer than two scales, a non-positive scale or mismatched
        shapes.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> q, k = torch.randn(64, 16, generator=g), torch.randn(64, 16, generator=g)
    >>> norm_entropy_correlation(q, k, kind="softmax", scales=(0.5, 1.0, 2.0)).spearman
    -1.0
    >>> norm_entropy_correlation(q, k, kind="relu", scales=(0.5, 1.0, 2.0)).spearman
    0.0
    """
    _check_kind(kind)
    _check_qkv(q, k, None)
    factors = np.asarray(np.geomspace(0.05, 3.0, 12) if scales is None else scales,
                         dtype=float).ravel()
    if factors.size < 2 or not np.all(np.isfinite(factors)) or np.any(factors <= 0):
        raise RepscopeValueError(
            f"scales must hold at least two positive finite numbers; got {scales!r}.")
    norms, ents = [], []
    q, k = q.detach().double(), k.detach().double()  # float64: ties stay ties
    with torch.no_grad():
        for s in factors:
            qs = q * float(s)
            norms.append(qs.norm(dim=-1).reshape(-1).double().cpu().numpy())
            w = attention_weights(qs, k, kind=kind)
            ents.append(row_entropy(w).reshape(-1).double().cpu().numpy())
    n, h = np.stack(norms), np.stack(ents)
    return NormEntropyResult(kind=str(kind), scales=factors, query_norms=n.mean(axis=1),
                             entropies=h, spearman=_spearman(n.mean(axis=1), h.mean(axis=1)),
                             spearman_rows=_spearman(n.ravel(), h.ravel()))


# --------------------------------------------------------------------------- modules
class ReLULinearAttention(nn.Module):
    """Multi-head kernel linear attention with ``phi = ReLU`` over a token sequence.

    Parameters
    ----------
    dim : int
        Model width ``C``.
    num_heads : int, default=1
        Must divide ``dim``.
    qkv_bias : bool, default=True
    eps : float, default=1e-6

    Shapes
    ------
    ``x``: (batch, n_tokens, dim) -> (batch, n_tokens, dim).

    Examples
    --------
    >>> import torch
    >>> m = ReLULinearAttention(32, num_heads=4)
    >>> m(torch.randn(2, 10, 32)).shape
    torch.Size([2, 10, 32])
    """

    def __init__(self, dim: int, num_heads: int = 1, *, qkv_bias: bool = True,
                 eps: float = 1e-6) -> None:
        super().__init__()
        _check_heads(dim, num_heads)
        self.dim, self.num_heads, self.eps = dim, num_heads, float(eps)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _split(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.num_heads, -1).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over the tokens of ``x`` of shape (batch, n_tokens, dim)."""
        _check_tokens(x, self.dim)
        q, k, v = (self._split(t) for t in self.qkv(x).chunk(3, dim=-1))
        out = kernel_linear_attention(torch.relu(q), torch.relu(k), v, eps=self.eps)
        return self.proj(out.transpose(1, 2).reshape(x.shape))


class NormAwareLinearAttention(nn.Module):
    """NaLaFormer's norm-aware linear attention block over a token sequence.

    ``q, k, v, g = Linear(x)`` (one projection to ``4 dim``); per head the norm-aware maps of
    :func:`nala_feature_maps` and :func:`kernel_linear_attention`; plus a locally enhanced
    positional term (a depthwise convolution of ``v`` over the tokens, LePE), LayerNorm, a SiLU
    output gate ``silu(g)`` and the output projection, as in the paper's block. RoPE on the
    numerator's feature maps is left out (a sequence-position choice of the backbone).

    Parameters
    ----------
    dim : int
        Model width ``C``.
    num_heads : int, default=1
        Must divide ``dim``.
    lepe_kernel : int, default=5
        Odd kernel size of the depthwise token convolution on ``v``; 0 turns it off.
    eps : float, default=1e-6

    Shapes
    ------
    ``x``: (batch, n_tokens, dim) -> (batch, n_tokens, dim).

    Raises
    ------
    RepscopeValueError
        If ``num_heads`` does not divide ``dim`` or ``lepe_kernel`` is even or negative.

    Examples
    --------
    >>> import torch
    >>> m = NormAwareLinearAttention(32, num_heads=2)
    >>> m(torch.randn(2, 10, 32)).shape
    torch.Size([2, 10, 32])

    References
    ----------
    .. [1] Meng, Luo, Huo, Li, Wang, Li, Zhang (2025). NaLaFormer: Norm-Aware Linear Attention
       for Transformer Models. arXiv:2506.21137.
    """

    def __init__(self, dim: int, num_heads: int = 1, *, lepe_kernel: int = 5,
                 eps: float = 1e-6) -> None:
        super().__init__()
        _check_heads(dim, num_heads)
        if not isinstance(lepe_kernel, int) or lepe_kernel < 0 or (
                lepe_kernel and lepe_kernel % 2 == 0):
            raise RepscopeValueError(
                f"lepe_kernel must be 0 (off) or a positive odd integer; got {lepe_kernel!r}.")
        self.dim, self.num_heads, self.eps = dim, num_heads, float(eps)
        self.qkvg = nn.Linear(dim, 4 * dim)
        self.lepe = (nn.Conv1d(dim, dim, lepe_kernel, padding=lepe_kernel // 2, groups=dim)
                     if lepe_kernel else None)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over the tokens of ``x`` of shape (batch, n_tokens, dim)."""
        _check_tokens(x, self.dim)
        b, n, c = x.shape
        q, k, v, g = self.qkvg(x).chunk(4, dim=-1)
        heads = [t.reshape(b, n, self.num_heads, -1).transpose(1, 2) for t in (q, k, v)]
        out = norm_aware_linear_attention(*heads, eps=self.eps).transpose(1, 2).reshape(b, n, c)
        if self.lepe is not None:
            out = out + self.lepe(v.transpose(1, 2)).transpose(1, 2)
        return self.proj(self.norm(out) * nn.functional.silu(g))


def _check_tokens(x: object, dim: int) -> None:
    if not isinstance(x, Tensor):
        raise RepscopeTypeError(f"x must be a torch.Tensor; got {type(x).__name__}.")
    if x.ndim != 3 or x.shape[-1] != dim:
        raise RepscopeValueError(
            f"x must have shape (batch, n_tokens, {dim}); got {tuple(x.shape)}.")


# --------------------------------------------------------------------------- CARE block
@dataclass(frozen=True)
class CARECost(Result):
    """Multiply-accumulates of one :class:`CAREBlock` forward, by part.

    Counts the matrix products and convolutions only (what ``torch.utils.flop_counter``
    counts, at 2 FLOPs per MAC); element-wise work (activations, normalisation, the sums
    of the attention's normaliser) is left out.

    Attributes
    ----------
    n_tokens : int
        ``H * W``.
    local_conv, qkv_projection, attention, output_projection, fuse : int
        MACs of the depthwise local branch, the q/k/v projection, the linear-attention core
        (``phi(K)^T V``, ``phi(Q) (.)`` and the normaliser ``phi(Q) mean phi(K)``), the
        attention output projection and the 1x1 fusion.
    total : int
        Their sum.
    softmax_attention : int
        MACs a softmax attention core on the same heads would cost (``Q K^T`` and ``A V``):
        quadratic in ``n_tokens``, for comparison.
    """

    n_tokens: int
    local_conv: int
    qkv_projection: int
    attention: int
    output_projection: int
    fuse: int
    total: int
    softmax_attention: int


class CAREBlock(nn.Module):
    """A CARE-style decoupled block: a depthwise-convolution local branch on a smaller share
    of the channels, ReLU linear attention on the rest, fused by a 1x1 convolution.

    ``y = x + Fuse([DWConv(x_local), LinAttn(x_global)])`` with ``x = [x_local, x_global]``
    split along channels (asymmetric: ``local_ratio`` of them go local). The paper's dynamic
    memory unit (carrying features across stages) belongs to the backbone and is not part of
    this block. Use it for shapes and cost accounting (:meth:`cost`).

    Parameters
    ----------
    dim : int
        Channels ``C``.
    local_ratio : float, default=0.25
        Share of the channels in the local branch, in (0, 1); rounded, at least 1 channel
        each side.
    num_heads : int, default=1
        Heads of the attention branch; must divide its channels.
    kernel_size : int, default=3
        Odd kernel of the depthwise convolution.

    Shapes
    ------
    ``x``: (batch, dim, height, width) -> (batch, dim, height, width).

    Raises
    ------
    RepscopeValueError
        On a ratio outside (0, 1), an even kernel or heads that do not divide the attention
        channels.

    Examples
    --------
    >>> import torch
    >>> blk = CAREBlock(32, local_ratio=0.25, num_heads=2)
    >>> blk(torch.randn(1, 32, 8, 8)).shape
    torch.Size([1, 32, 8, 8])
    >>> blk.cost(16, 16).attention == 2 * blk.cost(8, 16).attention
    True

    References
    ----------
    .. [1] Zhou et al. (2025). CARE Transformer: Mobile-Friendly Linear Visual Transformer via
       Decoupled Dual Interaction. CVPR 2025.
    """

    def __init__(self, dim: int, *, local_ratio: float = 0.25, num_heads: int = 1,
                 kernel_size: int = 3) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 2:
            raise RepscopeValueError(f"dim must be an integer >= 2; got {dim!r}.")
        if not 0.0 < float(local_ratio) < 1.0:
            raise RepscopeValueError(f"local_ratio must be in (0, 1); got {local_ratio!r}.")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise RepscopeValueError(
                f"kernel_size must be a positive odd integer; got {kernel_size!r}.")
        c_local = min(max(round(dim * float(local_ratio)), 1), dim - 1)
        c_global = dim - c_local
        _check_heads(c_global, num_heads, "the attention channels")
        self.dim, self.c_local, self.c_global = dim, c_local, c_global
        self.num_heads, self.kernel_size = num_heads, kernel_size
        self.local = nn.Conv2d(c_local, c_local, kernel_size, padding=kernel_size // 2,
                               groups=c_local)
        self.attn = ReLULinearAttention(c_global, num_heads)
        self.fuse = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to ``x`` of shape (batch, dim, height, width)."""
        if not isinstance(x, Tensor):
            raise RepscopeTypeError(f"x must be a torch.Tensor; got {type(x).__name__}.")
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise RepscopeValueError(
                f"x must have shape (batch, {self.dim}, height, width); got {tuple(x.shape)}.")
        b, _, h, w = x.shape
        xl, xg = x.split([self.c_local, self.c_global], dim=1)
        tokens = xg.flatten(2).transpose(1, 2)                       # (b, h*w, c_global)
        g = self.attn(tokens).transpose(1, 2).reshape(b, self.c_global, h, w)
        return x + self.fuse(torch.cat([self.local(xl), g], dim=1))

    def cost(self, height: int, width: int, *, batch: int = 1) -> CARECost:
        """MACs of one forward on a ``batch`` of ``height x width`` maps (see :class:`CARECost`).

        The attention terms grow linearly in the number of tokens ``N = height * width``;
        ``softmax_attention`` (for comparison) quadratically.
        """
        for name, val in (("height", height), ("width", width), ("batch", batch)):
            if not isinstance(val, int) or val < 1:
                raise RepscopeValueError(f"{name} must be a positive integer; got {val!r}.")
        n = height * width
        cg, dh = self.c_global, self.c_global // self.num_heads
        local = batch * n * self.c_local * self.kernel_size ** 2
        qkv = batch * n * cg * 3 * cg
        attention = batch * self.num_heads * n * (2 * dh * dh + dh)
        out = batch * n * cg * cg
        fuse = batch * n * self.dim * self.dim
        softmax = batch * self.num_heads * 2 * n * n * dh
        return CARECost(n_tokens=n, local_conv=local, qkv_projection=qkv, attention=attention,
                        output_projection=out, fuse=fuse,
                        total=local + qkv + attention + out + fuse, softmax_attention=softmax)


# --------------------------------------------------------------------------- ULSAM
class ULSAM(nn.Module):
    """Ultra-lightweight subspace attention: one spatial attention map per channel group.

    The ``C`` channels are split into ``g`` subspaces. Per subspace: a depthwise 1x1
    convolution, BatchNorm, ReLU, 3x3 max-pool (stride 1), a pointwise convolution to one
    channel, BatchNorm, ReLU and a softmax over the ``H W`` positions give a map ``A``; the
    subspace's output is ``x + x * A``, and the subspaces are concatenated. The groups are
    implemented as grouped convolutions (identical to separate per-subspace layers).

    Extra parameters: exactly ``5 C + 3 g`` (depthwise weight and bias ``2C``, its BN ``2C``,
    pointwise weight ``C`` and bias ``g``, its BN ``2g``); 332 for ``C = 64, g = 4``.

    Parameters
    ----------
    channels : int
        ``C``.
    groups : int, default=4
        ``g``; must divide ``channels``.

    Shapes
    ------
    ``x``: (batch, channels, height, width) -> (batch, channels, height, width).

    Raises
    ------
    RepscopeValueError
        If ``groups`` does not divide ``channels``.

    Examples
    --------
    >>> import torch
    >>> m = ULSAM(64, groups=4)
    >>> sum(p.numel() for p in m.parameters())
    332
    >>> m(torch.randn(2, 64, 7, 7)).shape
    torch.Size([2, 64, 7, 7])

    References
    ----------
    .. [1] Saini, Jha, Das, Mittal, Mohan (2020). ULSAM: Ultra-Lightweight Subspace Attention
       Module for Compact Convolutional Neural Networks. WACV 2020, arXiv:2006.15102.
    """

    def __init__(self, channels: int, groups: int = 4) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise RepscopeValueError(f"channels must be a positive integer; got {channels!r}.")
        if not isinstance(groups, int) or groups < 1 or channels % groups:
            raise RepscopeValueError(
                f"groups must be a positive divisor of channels={channels}; got {groups!r}.")
        self.channels, self.groups = channels, groups
        self.depthwise = nn.Conv2d(channels, channels, 1, groups=channels)
        self.bn1 = nn.BatchNorm2d(channels)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.pointwise = nn.Conv2d(channels, groups, 1, groups=groups)
        self.bn2 = nn.BatchNorm2d(groups)

    def attention_maps(self, x: Tensor) -> Tensor:
        """The per-subspace spatial maps ``A`` (each sums to 1 over positions).

        Shapes: (batch, channels, height, width) -> (batch, groups, height, width).
        """
        if not isinstance(x, Tensor):
            raise RepscopeTypeError(f"x must be a torch.Tensor; got {type(x).__name__}.")
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise RepscopeValueError(
                f"x must have shape (batch, {self.channels}, height, width); "
                f"got {tuple(x.shape)}.")
        a = self.pool(torch.relu(self.bn1(self.depthwise(x))))
        a = torch.relu(self.bn2(self.pointwise(a)))                  # (b, g, h, w)
        return torch.softmax(a.flatten(2), dim=-1).reshape(a.shape)

    def forward(self, x: Tensor) -> Tensor:
        """Reweight ``x`` of shape (batch, channels, height, width) by its subspace maps."""
        a = self.attention_maps(x)
        a = a.repeat_interleave(self.channels // self.groups, dim=1)
        return x + x * a
