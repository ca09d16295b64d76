"""Additive-margin cosine heads: ArcFace, CosFace and ElasticFace.

A cosine head scores class ``j`` by ``s * cos(theta_j)``, the cosine between the L2-normalised
embedding and the L2-normalised class weight ``w_j``. During training the target class gets a
margin that it must win by:

- ArcFace (Deng et al., CVPR 2019, arXiv 1801.07698): ``s * cos(theta_y + m)``;
- CosFace (Wang et al., CVPR 2018, arXiv 1801.09414): ``s * (cos(theta_y) - m)``;
- ElasticFace (Boutros et al., CVPRW 2022, arXiv 2109.09416): the same with a margin drawn per
  sample, ``m_i ~ N(m, sigma)`` (ElasticArc and ElasticCos).

Other classes keep ``s * cos(theta_j)``; the loss is the cross-entropy of these logits. At
inference there is no margin: the head predicts ``argmax_j cos(theta_j)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from repscope.exceptions import RepscopeValueError

__all__ = ["MARGIN_DEFAULTS", "MarginHead", "margin_logits"]

MarginKind = Literal["arcface", "cosface", "elasticarc", "elasticcos"]

#: The papers' defaults: (m, sigma) per kind; the scale s is 64 in all of them.
MARGIN_DEFAULTS: dict[str, tuple[float, float]] = {
    "arcface": (0.5, 0.0),
    "cosface": (0.35, 0.0),
    "elasticarc": (0.5, 0.05),
    "elasticcos": (0.35, 0.05),
}


def _check(kind: str, scale: float, margin: float, margin_std: float) -> None:
    if kind not in MARGIN_DEFAULTS:
        raise RepscopeValueError(
            f"kind must be one of {sorted(MARGIN_DEFAULTS)}; got {kind!r}.")
    if not (isinstance(margin, (int, float)) and 0 < margin < math.pi / 2):
        raise RepscopeValueError(
            f"margin must be in (0, pi/2) radians (ArcFace uses 0.5, CosFace 0.35); got "
            f"{margin!r}.")
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise RepscopeValueError(f"scale must be > 0 (the papers use 64); got {scale!r}.")
    if not (isinstance(margin_std, (int, float)) and margin_std >= 0):
        raise RepscopeValueError(f"margin_std must be >= 0; got {margin_std!r}.")
    if margin_std > 0 and not kind.startswith("elastic"):
        raise RepscopeValueError(
            f"margin_std is the spread of ElasticFace's per-sample margin; kind {kind!r} has a "
            "fixed margin. Use kind='elasticarc' or 'elasticcos', or margin_std=0.")


def margin_logits(
    cos: torch.Tensor,
    target: torch.Tensor,
    kind: MarginKind = "arcface",
    *,
    scale: float = 64.0,
    margin: float | None = None,
    margin_std: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training logits of a margin head from the cosines.

    Parameters
    ----------
    cos : Tensor of shape (n, n_classes)
        Cosines between normalised embeddings and normalised class weights.
    target : Tensor of shape (n,)
        Integer class of each row.
    kind : {"arcface", "cosface", "elasticarc", "elasticcos"}
    scale : float, default 64
        ``s``.
    margin : float, optional
        ``m`` in radians (arc) or cosine units (cos), in (0, pi/2); default the paper's.
    margin_std : float, optional
        ElasticFace's ``sigma`` (default 0.05); 0 for ArcFace/CosFace.
    generator : torch.Generator, optional
        Draws ElasticFace's per-sample margins (seed it for reproducible logits).

    Returns
    -------
    Tensor of shape (n, n_classes)
        ``s * cos`` with the target entries replaced by ``s * cos(theta_y + m_i)`` (arc) or
        ``s * (cos theta_y - m_i)`` (cos). ``theta_y + m_i`` is capped at pi, so the target
        logit never rises as the angle grows.
    """
    m0, sd0 = MARGIN_DEFAULTS.get(kind, (0.5, 0.0))
    m = m0 if margin is None else margin
    sd = sd0 if margin_std is None else margin_std
    _check(kind, scale, m, sd)
    if cos.ndim != 2 or target.shape != (cos.shape[0],):
        raise RepscopeValueError(
            f"cos must be (n, n_classes) and target (n,); got {tuple(cos.shape)} and "
            f"{tuple(target.shape)}.")
    n = cos.shape[0]
    if sd > 0:
        noise = torch.randn(n, generator=generator, dtype=cos.dtype, device="cpu").to(cos.device)
        m_i = m + sd * noise
    else:
        m_i = torch.full((n,), m, dtype=cos.dtype, device=cos.device)
    rows = torch.arange(n, device=cos.device)
    c_y = cos[rows, target].clamp(-1.0, 1.0)
    if kind in ("arcface", "elasticarc"):
        eps = 1e-7
        theta = torch.acos(c_y.clamp(-1.0 + eps, 1.0 - eps))
        new = torch.cos(torch.clamp(theta + m_i, max=math.pi))
    else:
        new = c_y - m_i
    out = cos.clone()
    out[rows, target] = new
    return scale * out


class MarginHead(nn.Module):
    """A cosine classifier trained with an additive margin (ArcFace, CosFace, ElasticFace).

    Parameters
    ----------
    in_features : int
    n_classes : int
    kind : {"arcface", "cosface", "elasticarc", "elasticcos"}, default "arcface"
    scale, margin, margin_std : float
        See :func:`margin_logits`; defaults from the papers (s=64; m=0.5 arc, 0.35 cos;
        sigma=0.05 elastic).
    seed : int, default 0
        Seed of ElasticFace's margin draws (one generator per head).

    Shapes
    ------
    forward(x, target=None): x (n, in_features), target (n,) -> logits (n, n_classes). With
    ``target`` (training) the target logits carry the margin; without it they are ``s * cos``.

    Examples
    --------
    >>> head = MarginHead(8, 3, kind="cosface")
    >>> head(torch.randn(4, 8), torch.tensor([0, 1, 2, 0])).shape
    torch.Size([4, 3])
    """

    def __init__(self, in_features: int, n_classes: int, kind: MarginKind = "arcface", *,
                 scale: float = 64.0, margin: float | None = None,
                 margin_std: float | None = None, seed: int = 0) -> None:
        super().__init__()
        m0, sd0 = MARGIN_DEFAULTS.get(kind, (0.5, 0.0))
        self.kind, self.scale = kind, float(scale)
        self.margin = m0 if margin is None else float(margin)
        self.margin_std = sd0 if margin_std is None else float(margin_std)
        _check(kind, self.scale, self.margin, self.margin_std)
        if in_features < 1 or n_classes < 2:
            raise RepscopeValueError(
                f"in_features must be >= 1 and n_classes >= 2; got {in_features} and "
                f"{n_classes}.")
        gen = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(n_classes, in_features, generator=gen)
                                   / math.sqrt(in_features))
        self._gen = torch.Generator().manual_seed(seed + 1)

    def cosines(self, x: torch.Tensor) -> torch.Tensor:
        """``cos(theta)`` between each row of ``x`` and each class weight, (n, n_classes)."""
        return nn.functional.normalize(x, dim=1) @ nn.functional.normalize(self.weight, dim=1).T

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosines(x)
        if target is None:
            return self.scale * cos
        return margin_logits(cos, target, self.kind, scale=self.scale,
                             margin=self.margin, margin_std=self.margin_std,
                             generator=self._gen)
