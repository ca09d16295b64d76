"""Report section ``readout``: held-out R^2 of the cross-attention readout beside ridge on pooled
and flattened tokens, and each target's mean attention map as a small image (an inline SVG
holding one PNG data URI; no external links). Renders stored records only."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._sections import esc, html_table

__all__ = ["render_readout"]

_SCALE = 4      # screen pixels per token
_GAP = 2        # tokens between two maps


def _png_gray(img: np.ndarray) -> bytes:
    """A grayscale 8-bit PNG of ``img`` (values in [0, 255])."""
    h, w = img.shape
    raw = b"".join(b"\x00" + bytes(row) for row in img.astype(np.uint8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _maps_svg(att: np.ndarray, token_grid: tuple[int, int], target_grid: tuple[int, int] | None,
              ) -> str:
    """Every target's attention map (each scaled to its own maximum, dark = more attention),
    tiled in the targets' grid (or in rows of 8), with each target's cell outlined."""
    h, w = token_grid
    k = att.shape[0]
    rows, cols = target_grid if target_grid else (-(-k // 8), min(k, 8))
    H, W = rows * (h + _GAP) - _GAP, cols * (w + _GAP) - _GAP
    img = np.full((H, W), 255.0)
    boxes = []
    for t in range(k):
        r, c = divmod(t, cols)
        m = att[t].reshape(h, w)
        y0, x0 = r * (h + _GAP), c * (w + _GAP)
        img[y0:y0 + h, x0:x0 + w] = 255.0 * (1.0 - m / max(float(m.max()), 1e-12))
        if target_grid:
            R, C = target_grid
            ry0, ry1 = (r * h) // R, -((-(r + 1) * h) // R)
            cx0, cx1 = (c * w) // C, -((-(c + 1) * w) // C)
            boxes.append(f'<rect x="{(x0 + cx0) * _SCALE}" y="{(y0 + ry0) * _SCALE}" '
                         f'width="{(cx1 - cx0) * _SCALE}" height="{(ry1 - ry0) * _SCALE}" '
                         'fill="none" stroke="#d62728" stroke-width="1"/>')
    uri = "data:image/png;base64," + base64.b64encode(_png_gray(np.round(img))).decode()
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * _SCALE}" '
            f'height="{H * _SCALE}" viewBox="0 0 {W * _SCALE} {H * _SCALE}" role="img" '
            f'aria-label="readout attention maps"><image href="{uri}" width="{W * _SCALE}" '
            f'height="{H * _SCALE}" style="image-rendering:pixelated" '
            f'preserveAspectRatio="none"/>{"".join(boxes)}</svg>')


def _f(v: Any) -> float:
    return float("nan") if v is None else float(v)


def render_readout(records: Sequence[RecordLike]) -> str:
    """Per record: a table of held-out R^2 (readout vs the two ridge baselines) and, when the
    tokens form a grid, the attention maps of every target."""
    out = []
    for r in records:
        v = r.values
        mass = v.get("region_mass")
        names = ["readout", "ridge, pooled tokens", "ridge, flattened tokens"]
        keys = ["r2_readout", "r2_ridge_pooled", "r2_ridge_flat"]
        headers = ["model", "layer", "dataset", "train", "test", "targets", *names, *names]
        row: list[Any] = [r.model, r.layer, r.dataset, int(v.get("n_train", 0)),
                          int(v.get("n_test", 0)), int(v.get("n_targets", 0)),
                          *(_f(v.get(f"{k}_weighted")) for k in keys),
                          *(_f(v.get(k)) for k in keys)]
        groups = [("", 6), ("held-out R², all targets together", 3),
                  ("held-out R², mean over targets", 3)]
        if mass:
            headers += ["lowest", "cells ≥ 0.5"]
            row += [min(mass), f"{sum(m >= 0.5 for m in mass)} / {len(mass)}"]
            groups.append(("attention within one patch of the cell", 2))
        parts = [html_table(headers, [row], digits=3, header_groups=groups)]
        grid, tgrid = v.get("token_grid"), v.get("target_grid")
        att = v.get("attention")
        if grid and att:
            svg = _maps_svg(np.asarray(att, dtype=np.float64), (int(grid[0]), int(grid[1])),
                            (int(tgrid[0]), int(tgrid[1])) if tgrid else None)
            cap = ("Mean attention of each target's query over the held-out images, one map "
                   "per target (darker = more attention, each map scaled to its maximum)"
                   + (", laid out as the target grid; red: the target's cell." if tgrid else "."))
            parts.append(f'<figure class="chart">{svg}<figcaption>{esc(cap)}'
                         "</figcaption></figure>")
        note = ("The readout: one learned query per target cross-attends to the patch tokens "
                "(content, a learned positional embedding and a learned receptive field: a "
                "centre and a width on the token grid) and a linear map reads its pooled value. "
                "Ridge baselines: one alpha per target, on mean-pooled tokens (5-fold CV) and on "
                "all tokens flattened (dual form, GCV). R² of all targets together is "
                "1 − ΣSSE / ΣSS over the targets (variance-weighted); the mean over targets is "
                "swamped by targets that barely vary in the held-out set.")
        parts.append(f'<p class="note">{esc(note)}</p>')
        out.append(f'<div class="block">{"".join(parts)}</div>')
    return "".join(out)
