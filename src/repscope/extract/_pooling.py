"""Pooling of captured activations: token sequences (n, t, d) and spatial maps (n, c, h, w)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.registry import closest_names

if TYPE_CHECKING:
    import torch

__all__ = [
    "POOLINGS",
    "Pooling",
    "TokenRows",
    "canonical_pooling",
    "pool",
    "resolve_pooling",
    "to_host",
]

Pooling = Literal["mean", "avg", "first", "cls", "last", "none", "tokens"]

#: Accepted pooling names and the canonical mode each one means.
POOLINGS: dict[str, str] = {
    "mean": "mean",
    "avg": "mean",
    "first": "first",
    "cls": "first",
    "last": "last",
    "none": "none",
    "tokens": "none",
}


class TokenRows(NamedTuple):
    """Kept tokens of one batch without padding: sample ``i`` owns ``lengths[i]`` rows."""

    values: np.ndarray
    lengths: np.ndarray


def canonical_pooling(pooling: Any, *, name: str = "pooling") -> str:
    """The canonical mode (``mean``, ``first``, ``last``, ``none``) of a pooling name."""
    if not isinstance(pooling, str):
        raise RepscopeTypeError(
            f"The {name!r} parameter of extract must be a str (one of {sorted(POOLINGS)}) or a "
            f"mapping of layer name to str. Got {pooling!r} ({type(pooling).__name__}) instead."
        )
    mode = POOLINGS.get(pooling.lower())
    if mode is None:
        close = closest_names(pooling, list(POOLINGS))
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise RepscopeValueError(
            f"The {name!r} parameter of extract must be one of {sorted(POOLINGS)}. Got "
            f"{pooling!r} instead.{hint}"
        )
    return mode


def resolve_pooling(pooling: str | Mapping[str, str], layers: Sequence[str]) -> dict[str, str]:
    """Per-layer canonical pooling modes from one name or a ``{layer: name}`` mapping."""
    if isinstance(pooling, Mapping):
        missing = [la for la in layers if la not in pooling]
        extra = [k for k in pooling if k not in layers]
        if missing or extra:
            raise RepscopeValueError(
                "The 'pooling' mapping of extract must name exactly the requested layers; "
                + (f"missing {missing}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"not requested {extra}" if extra else "")
                + ". Pass a single pooling name to use it for every layer."
            )
        return {la: canonical_pooling(pooling[la], name=f"pooling[{la!r}]") for la in layers}
    mode = canonical_pooling(pooling)
    return dict.fromkeys(layers, mode)


def _out_dtype(h: torch.Tensor) -> torch.dtype:
    import torch

    if h.dtype in (torch.float16, torch.float32, torch.float64):
        return h.dtype
    return torch.float32  # bfloat16 (no numpy dtype) and integer outputs


def _mean(h: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Mean over ``dims``, accumulated in float64 for many terms."""
    import torch

    n_terms = 1
    for d in dims:
        n_terms *= int(h.shape[d])
    acc = torch.float64 if n_terms > 4096 else torch.float32
    if h.dtype == torch.float64:
        acc = torch.float64
    return h.to(acc).mean(dim=dims).to(_out_dtype(h))


def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: ``sum_t mask[b, t] h[b, t] / sum_t mask[b, t]``.

    A batched matrix product (mask row times tokens) does the sum in one BLAS call; it
    accumulates in float32 for up to 4096 tokens and in float64 beyond (and for float64 input).
    """
    import torch

    b, t = mask.shape
    acc = torch.float64 if (t > 4096 or h.dtype == torch.float64) else torch.float32
    flat = h.reshape(b, t, -1).to(acc)
    m = mask.to(acc)
    sums = torch.bmm(m.unsqueeze(1), flat).squeeze(1)  # (b, d)
    counts = m.sum(dim=1, keepdim=True).clamp_min(1.0)
    return (sums / counts).reshape(b, *h.shape[2:]).to(_out_dtype(h))


def pool(
    h: torch.Tensor, mode: str, mask: torch.Tensor | None, *, layer: str
) -> torch.Tensor | TokenRows:
    """Pool one layer's batch of activations.

    Parameters
    ----------
    h : torch.Tensor
        ``(b, d)`` vectors (returned as they are), ``(b, t, d)`` token sequences or
        ``(b, c, h, w)`` (any rank >= 4) spatial maps.
    mode : {"mean", "first", "last", "none"}
        Canonical pooling mode (:func:`canonical_pooling`).
    mask : torch.Tensor of bool, shape (b, t), optional
        Real (non-padding) tokens. Given by text models; ``None`` means every token is real.
    layer : str
        Name used in error messages.

    Returns
    -------
    torch.Tensor or TokenRows
        The pooled tensor ``(b, ...)`` (float32 for bfloat16 input), or, for ``"none"`` on a
        token layer with a ``mask``, the real tokens of each sample (:class:`TokenRows`).
    """
    import torch

    if h.ndim <= 2:
        return h if h.dtype != torch.bfloat16 else h.float()
    if h.ndim == 3:
        b, t = int(h.shape[0]), int(h.shape[1])
        if mask is not None and tuple(mask.shape) != (b, t):
            raise RepscopeValueError(
                f"layer {layer!r} gave an output of shape {tuple(h.shape)}, which is not (batch, "
                f"tokens, features) for a batch of {tuple(mask.shape)} tokens, so token pooling "
                f"{mode!r} does not apply. Choose a layer that outputs hidden states."
            )
        if mode == "mean":
            return _mean(h, (1,)) if mask is None else _masked_mean(h, mask)
        if mode == "first":
            if mask is None:
                return h[:, 0].to(_out_dtype(h))
            idx = mask.to(torch.int8).argmax(dim=1)
            return h[torch.arange(b, device=h.device), idx].to(_out_dtype(h))
        if mode == "last":
            if mask is None:
                return h[:, -1].to(_out_dtype(h))
            idx = (t - 1) - mask.flip(1).to(torch.int8).argmax(dim=1)
            return h[torch.arange(b, device=h.device), idx].to(_out_dtype(h))
        if mask is None:
            return h.to(_out_dtype(h))
        lengths = mask.sum(dim=1)
        return TokenRows(to_host(h[mask]), to_host(lengths).astype(np.int64))
    # spatial maps (b, c, h, w, ...)
    if mode == "mean":
        return _mean(h, tuple(range(2, h.ndim)))
    if mode == "none":
        return h.to(_out_dtype(h))
    raise RepscopeValueError(
        f"pooling {mode!r} does not apply to layer {layer!r}, whose output of shape "
        f"{tuple(h.shape)} is a spatial map (batch, channels, *spatial). Use 'avg' (global "
        "average) or 'none' (keep the map)."
    )


def to_host(x: torch.Tensor) -> np.ndarray:
    """A numpy copy of ``x`` on the CPU (bfloat16 becomes float32)."""
    import torch

    t = x.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.cpu().numpy()
