"""Dense relational measures for patch features (DiveUp, Liu et al., arXiv 2603.13571).

Two models' patch features live in unrelated channel spaces, but both say *which neighbours
of a patch look like it*. The **local centre-of-mass (COM) field** turns that into a 2-D
vector per position, comparable across models without aligning channels:

.. math::

    w_{pq} = \\operatorname{softmax}_{q \\in N(p)} \\big(\\cos(f_p, f_q) / \\tau\\big), \\qquad
    \\mathrm{COM}(p) = \\sum_{q \\in N(p)} w_{pq}\\,(\\mathrm{pos}_q - \\mathrm{pos}_p)

over a square window :math:`N(p)` (``window`` x ``window`` positions centred on ``p``, ``p``
included, cut at the grid's edge). :func:`com_agreement` is the cosine between two fields;
:func:`compare_dense` puts it beside the linear CKA of the features themselves (positions as
samples) and a mismatched-image baseline. :func:`high_norm_tokens` flags register-type
artifact tokens (a norm far above the local median), which DiveUp drops before trusting a
model's COM field.

Reconstructed where the paper is silent (its training code is not public): the window
includes ``p`` itself; offsets are in grid cells, ``(dy, dx)``; spikiness is a token's norm
over the median norm of the other tokens of its window.

Grids are ``(n_images, height, width, channels)`` (channels last); :func:`patch_grid` makes one
from a ViT's token array ``(n, tokens, d)`` or a CNN's spatial map ``(n, c, h, w)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from repscope._validation import check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.results import RecordedResult, Result

__all__ = [
    "ArtifactTokens",
    "DenseComparisonResult",
    "com_agreement",
    "com_field",
    "compare_dense",
    "high_norm_tokens",
    "patch_grid",
    "resize_grid",
]


# ---------------------------------------------------------------------------- grids

def patch_grid(features: Any, *, prefix_tokens: int | None = None, name: str = "features") -> np.ndarray:
    """Patch features as a grid ``(n, h, w, c)`` (float64).

    Parameters
    ----------
    features : array-like
        ``(n, c, h, w)``: a CNN's spatial map (channels first, as extraction stores it);
        ``(n, tokens, d)``: a ViT's tokens, whose last ``s*s`` are the patch grid (row-major);
        ``(n, h, w, c)`` is not accepted (it cannot be told from ``(n, c, h, w)``).
    prefix_tokens : int, optional
        Tokens before the patches (CLS, registers) to drop from a token array. Default: what
        is left over above the largest square (1 for DINOv2's 257 tokens).
    name : str
        The argument's name in error messages.

    Returns
    -------
    ndarray of shape (n, h, w, c)
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if x.ndim != 3:
        raise RepscopeValueError(
            f"{name} must be tokens (n, tokens, d) or a spatial map (n, c, h, w); got an array "
            f"of shape {x.shape}.")
    t = x.shape[1]
    if prefix_tokens is None:
        side = math.isqrt(t)
        prefix_tokens = t - side * side
    else:
        check_scalar(prefix_tokens, "prefix_tokens", caller="patch_grid", kind=int, min_value=0)
    side = math.isqrt(max(t - prefix_tokens, 0))
    if side == 0 or side * side != t - prefix_tokens:
        raise RepscopeValueError(
            f"{name} has {t} tokens; after {prefix_tokens} prefix tokens the remaining "
            f"{t - prefix_tokens} are not a square patch grid.")
    return x[:, prefix_tokens:].reshape(x.shape[0], side, side, x.shape[2])


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Bilinear weights (n_out, n_in) with half-pixel centres (torch's align_corners=False)."""
    scale = n_in / n_out
    src = np.clip((np.arange(n_out) + 0.5) * scale - 0.5, 0.0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def resize_grid(grid: Any, size: tuple[int, int] | int) -> np.ndarray:
    """Bilinear resize of a grid ``(n, h, w, c)`` to ``size`` = (height, width) (or one side),
    with half-pixel centres (``torch.nn.functional.interpolate(..., align_corners=False)``)."""
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 4:
        raise RepscopeValueError(f"grid must have shape (n, h, w, c); got {g.shape}.")
    hh, ww = (size, size) if isinstance(size, (int, np.integer)) else size
    for label, v in (("height", hh), ("width", ww)):
        check_scalar(v, f"size ({label})", caller="resize_grid", kind=int, min_value=1)
    if (hh, ww) == g.shape[1:3]:
        return g
    mh, mw = _interp_matrix(g.shape[1], int(hh)), _interp_matrix(g.shape[2], int(ww))
    return np.einsum("ah,nhwc,bw->nabc", mh, g, mw, optimize=True)


def _check_window(window: int, caller: str) -> int:
    check_scalar(window, "window", caller=caller, kind=int, min_value=1)
    if window % 2 == 0:
        raise RepscopeValueError(
            f"The 'window' parameter of {caller} must be an odd side length (3, 5, ...) so "
            f"the window is centred on its position. Got {window} instead.")
    return int(window)


def _grid(x: Any, name: str) -> np.ndarray:
    g = np.asarray(x, dtype=np.float64)
    if g.ndim == 3:
        g = g[None]
    if g.ndim != 4 or min(g.shape) == 0:
        raise RepscopeValueError(
            f"{name} must be a grid (n, h, w, c) or (h, w, c) with no empty axis; got shape "
            f"{np.shape(x)}. Use patch_grid for tokens or (n, c, h, w) maps.")
    if not np.isfinite(g).all():
        raise RepscopeValueError(f"{name} holds NaN or infinite values.")
    return g


def _shifted(a: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    """``out[:, i, j] = a[:, i + dy, j + dx]`` where that is inside the grid, else ``fill``."""
    out = np.full_like(a, fill)
    h, w = a.shape[1:3]
    out[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)] = \
        a[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
    return out


# ---------------------------------------------------------------------------- COM field

def com_field(grid: Any, *, window: int = 5, tau: float = 0.1) -> np.ndarray:
    """Local centre-of-mass field of patch features.

    Parameters
    ----------
    grid : array-like of shape (n, h, w, c) or (h, w, c)
    window : int, default 5
        Odd side length of the square neighbourhood (cut at the grid's edge).
    tau : float, default 0.1
        Softmax temperature on the cosines.

    Returns
    -------
    ndarray of shape (n, h, w, 2) (or (h, w, 2))
        ``(dy, dx)`` in grid cells: where, on average, the position's look-alikes lie.
    """
    single = np.ndim(grid) == 3
    g = _grid(grid, "grid")
    window = _check_window(window, "com_field")
    check_scalar(tau, "tau", caller="com_field", min_value=0.0, include_min=False)
    norms = np.linalg.norm(g, axis=-1, keepdims=True)
    u = g / np.maximum(norms, 1e-12)  # zero vectors: cosine 0 with everything
    r = window // 2
    offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    logits = np.empty((len(offsets), *g.shape[:3]))
    for k, (dy, dx) in enumerate(offsets):
        cos = np.einsum("nhwc,nhwc->nhw", u, _shifted(u, dy, dx, 0.0))
        inside = _shifted(np.ones((*g.shape[:3], 1)), dy, dx, 0.0)[..., 0] > 0
        logits[k] = np.where(inside, cos / tau, -np.inf)
    logits -= logits.max(axis=0, keepdims=True)
    w = np.exp(logits)
    w /= w.sum(axis=0, keepdims=True)
    off = np.asarray(offsets, dtype=np.float64)  # (k, 2)
    com = np.einsum("knhw,kd->nhwd", w, off)
    return com[0] if single else com


def _interior(h: int, w: int, margin: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    if h > 2 * margin and w > 2 * margin:
        m[margin:h - margin, margin:w - margin] = True
    return m


def com_agreement(com_a: Any, com_b: Any, *, margin: int = 0, mask: Any = None) -> float:
    """Cosine between two COM fields of the same grid, over all kept positions.

    Parameters
    ----------
    com_a, com_b : array-like of shape (n, h, w, 2) or (h, w, 2)
    margin : int, default 0
        Leave out positions within ``margin`` cells of the edge (where a cut window pulls every
        field inwards, whatever the features; use ``window // 2``).
    mask : array-like of bool, shape (n, h, w) or (h, w), optional
        Positions to keep (e.g. those not flagged by :func:`high_norm_tokens`).

    Returns
    -------
    float
        In [-1, 1]; NaN when a field is zero on every kept position.
    """
    a, b = np.asarray(com_a, dtype=np.float64), np.asarray(com_b, dtype=np.float64)
    if a.shape != b.shape or a.shape[-1:] != (2,) or a.ndim not in (3, 4):
        raise RepscopeValueError(
            f"com_a and com_b must be COM fields of the same grid, (n, h, w, 2) or (h, w, 2); "
            f"got shapes {a.shape} and {b.shape}.")
    check_scalar(margin, "margin", caller="com_agreement", kind=int, min_value=0)
    keep = np.broadcast_to(_interior(a.shape[-3], a.shape[-2], margin), a.shape[:-1])
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != a.shape[:-1]:
            raise RepscopeValueError(
                f"mask must have the fields' grid shape {a.shape[:-1]}; got {m.shape}.")
        keep = keep & m
    va, vb = a[keep].ravel(), b[keep].ravel()
    den = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return float(va @ vb / den) if den > 0 else float("nan")


# ---------------------------------------------------------------------------- artifacts

@dataclass(frozen=True)
class ArtifactTokens(Result):
    """High-norm (register-type artifact) tokens of a patch grid.

    Attributes
    ----------
    norms : ndarray of shape (n, h, w)
        Each token's L2 norm.
    spikiness : ndarray of shape (n, h, w)
        Norm over the median norm of the other tokens in its window.
    flags : ndarray of bool, shape (n, h, w)
        ``spikiness > threshold``.
    threshold : float
    window : int
    """

    norms: np.ndarray
    spikiness: np.ndarray
    flags: np.ndarray
    threshold: float
    window: int

    @property
    def n_flagged(self) -> int:
        """How many tokens are flagged."""
        return int(self.flags.sum())


def high_norm_tokens(grid: Any, *, window: int = 5, threshold: float = 2.0) -> ArtifactTokens:
    """Flag tokens whose norm stands far above their neighbourhood's (DiveUp's spikiness).

    Parameters
    ----------
    grid : array-like of shape (n, h, w, c) or (h, w, c)
    window : int, default 5
        Odd side length of the neighbourhood whose median norm is the reference (the token
        itself left out; cut at the grid's edge).
    threshold : float, default 2.0
        A token is flagged when its norm exceeds ``threshold`` times that median.

    Returns
    -------
    ArtifactTokens
    """
    g = _grid(grid, "grid")
    window = _check_window(window, "high_norm_tokens")
    if window < 3:
        raise RepscopeValueError(
            "The 'window' parameter of high_norm_tokens must be at least 3 (the reference is "
            f"the median of the other tokens in the window). Got {window} instead.")
    check_scalar(threshold, "threshold", caller="high_norm_tokens", min_value=1.0,
                 include_min=False)
    norms = np.linalg.norm(g, axis=-1)
    r = window // 2
    stack = np.stack([_shifted(norms[..., None], dy, dx, np.nan)[..., 0]
                      for dy in range(-r, r + 1) for dx in range(-r, r + 1)
                      if (dy, dx) != (0, 0)])
    ref = np.nanmedian(stack, axis=0)
    spikiness = norms / np.maximum(ref, 1e-12)
    flags = spikiness > threshold
    return ArtifactTokens(norms=norms, spikiness=spikiness, flags=flags,
                          threshold=float(threshold), window=window)


# ---------------------------------------------------------------------------- comparison

@dataclass(frozen=True)
class DenseComparisonResult(RecordedResult):
    """COM-field agreement of two models' patch features, beside their linear CKA.

    Attributes
    ----------
    com_agreement : float
        Cosine between the two COM fields (interior positions, artifacts of either model
        left out).
    com_agreement_shuffled : float
        The same with the images of B shifted by one (image i of A against image i+1 of B):
        the agreement two unrelated images reach; NaN for one image.
    linear_cka : float
        Linear CKA of the features themselves, each kept position of each image a sample.
    linear_cka_shuffled : float
        The same with the images of B shifted by one; NaN for one image.
    per_image : ndarray of shape (n_images,)
        ``com_agreement`` of each image.
    grid : tuple of int
        The common (height, width) both grids were resized to.
    n_images, n_positions : int
        Images, and positions kept per image (on average) (interior, no artifact in either model).
    artifacts_a, artifacts_b : int
        Tokens flagged by :func:`high_norm_tokens` in each model's grid.
    window, tau, artifact_threshold : settings used.
    layer_a, layer_b : str
        The layers compared (set by the caller; empty when unknown).
    """

    analysis: ClassVar[str] = "dense_com"

    com_agreement: float
    com_agreement_shuffled: float
    linear_cka: float
    linear_cka_shuffled: float
    per_image: np.ndarray
    grid: tuple[int, int]
    n_images: int
    n_positions: int
    artifacts_a: int
    artifacts_b: int
    window: int
    tau: float
    artifact_threshold: float
    layer_a: str = ""
    layer_b: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``dense_com`` record per layer pair."""
        return [("", {
            "layer_a": self.layer_a, "layer_b": self.layer_b,
            "com_agreement": self.com_agreement,
            "com_agreement_shuffled": self.com_agreement_shuffled,
            "linear_cka": self.linear_cka, "linear_cka_shuffled": self.linear_cka_shuffled,
            "per_image": [float(v) for v in self.per_image],
            "grid": list(self.grid), "n_images": self.n_images, "n_positions": self.n_positions,
            "artifacts_a": self.artifacts_a, "artifacts_b": self.artifacts_b,
            "window": self.window, "tau": self.tau,
            "artifact_threshold": self.artifact_threshold,
        })]


def compare_dense(
    grid_a: Any,
    grid_b: Any,
    *,
    size: tuple[int, int] | int | None = None,
    window: int = 5,
    tau: float = 0.1,
    artifact_threshold: float = 2.0,
    layer_a: str = "",
    layer_b: str = "",
) -> DenseComparisonResult:
    """COM-field agreement and linear CKA of two models' patch grids on the same images.

    Both grids are resized (bilinear) to ``size``, their COM fields computed, and the fields
    compared on interior positions (``window // 2`` cells from the edge) where neither model
    has a high-norm token; the linear CKA uses the same positions as samples. Both measures
    are also given for mismatched images (image i of A against image i+1 of B), the level
    unrelated images reach. Prefer the default size (the smaller grid): upsampling gives
    every image the same interpolation pattern, which the COM field sees (the mismatched-image
    agreement rises).

    Parameters
    ----------
    grid_a, grid_b : array-like of shape (n, h, w, c)
        The same ``n`` images (any grids and widths; see :func:`patch_grid`).
    size : int or (int, int), optional
        The common grid; default the smaller of the two (per axis).
    window, tau :
        As in :func:`com_field`.
    artifact_threshold : float, default 2.0
        As ``threshold`` in :func:`high_norm_tokens` (on each model's own grid, before
        resizing; a flagged token leaves out the positions it reaches after resizing).
    layer_a, layer_b : str
        Names recorded with the result.

    Returns
    -------
    DenseComparisonResult
    """
    from repscope.similarity._cka import linear_cka

    a, b = _grid(grid_a, "grid_a"), _grid(grid_b, "grid_b")
    if a.shape[0] != b.shape[0]:
        raise RepscopeValueError(
            f"grid_a and grid_b must hold the same images; got {a.shape[0]} and {b.shape[0]}.")
    window = _check_window(window, "compare_dense")
    if size is None:
        size = (min(a.shape[1], b.shape[1]), min(a.shape[2], b.shape[2]))
    hh, ww = (size, size) if isinstance(size, (int, np.integer)) else size
    margin = window // 2
    if hh <= 2 * margin or ww <= 2 * margin:
        raise RepscopeValueError(
            f"the common grid {hh}x{ww} has no interior for window {window}; use a smaller "
            "window or a larger grid.")
    flags, keeps = [], []
    for g in (a, b):
        art = high_norm_tokens(g, window=max(window, 3), threshold=artifact_threshold)
        flags.append(art.n_flagged)
        # a flagged token spoils every resized position it contributes to
        spread = resize_grid(art.flags[..., None].astype(np.float64), (hh, ww))[..., 0] > 0
        keeps.append(~spread)
    ra, rb = resize_grid(a, (hh, ww)), resize_grid(b, (hh, ww))
    ca = com_field(ra, window=window, tau=tau)
    cb = com_field(rb, window=window, tau=tau)
    keep = keeps[0] & keeps[1] & _interior(hh, ww, margin)[None]
    agree = com_agreement(ca, cb, mask=keep)
    per_image = np.array([com_agreement(ca[i], cb[i], mask=keep[i]) for i in range(len(ca))])
    n = len(ca)
    cka = float(linear_cka(ra[keep], rb[keep])) if keep.sum() >= 2 else float("nan")
    shuffled = cka_shuffled = float("nan")
    if n > 1:
        both = keep & np.roll(keep, 1, axis=0)
        shuffled = com_agreement(ca, np.roll(cb, 1, axis=0), mask=both)
        if both.sum() >= 2:
            cka_shuffled = float(linear_cka(ra[both], np.roll(rb, 1, axis=0)[both]))
    return DenseComparisonResult(
        com_agreement=agree, com_agreement_shuffled=shuffled, linear_cka=cka,
        linear_cka_shuffled=cka_shuffled,
        per_image=per_image, grid=(int(hh), int(ww)), n_images=n,
        n_positions=int(keep.sum()) // max(n, 1), artifacts_a=flags[0], artifacts_b=flags[1],
        window=window, tau=float(tau), artifact_threshold=float(artifact_threshold),
        layer_a=layer_a, layer_b=layer_b)
