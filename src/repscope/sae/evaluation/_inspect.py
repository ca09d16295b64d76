"""Inspect a trained SAE: the inputs that activate each latent most, and what to record.

:func:`top_activations` streams inputs through an SAE once and keeps, for every latent it
tracks, a fixed-size running top-``top`` of activations and their row indices (never the
codes). By default it then picks a handful of alive latents spread over the firing-density
range, so a report shows frequent and rare latents alike.

:func:`sae_record_values` turns a training run, an evaluation and top activations into the
values of one ``"sae"`` record (what ``repscope sae train``, ``repscope sae eval`` and the demo
store, and what the report's "Sparse autoencoders" section renders). :func:`encode_png` is a
dependency-free PNG writer for the image thumbnails examples may carry.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from repscope._validation import check_positive_int
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import Result
from repscope.sae._words import DEAD_WORDS
from repscope.sae.archs._base import SparseAutoencoder, firing_counts
from repscope.sae.evaluation._interpret import _eval_mode
from repscope.sae.evaluation._metrics import SAEEvaluationResult, _batches

__all__ = [
    "DEAD_WORDS",
    "TopActivations",
    "TopActivationsResult",
    "encode_png",
    "never_fired_fraction",
    "png_base64",
    "sae_record_values",
    "subsample_history",
    "top_activations",
    "top_latents_values",
]


# ---------------------------------------------------------------------------- top activations


@dataclass(frozen=True)
class TopActivationsResult(Result):
    """The highest activations of some latents over a data set, with their row indices.

    Attributes
    ----------
    latents : ndarray of int64, shape (m,)
        The latents described, in the order of the rows below.
    density : ndarray of float64, shape (m,)
        Firing frequency of each latent (share of rows where it is non-zero).
    max_activation : ndarray of float64, shape (m,)
        Largest activation of each latent (NaN if it never fired).
    values : ndarray of float64, shape (m, top)
        The ``top`` highest non-zero activations per latent, in decreasing order; NaN where a
        latent fired on fewer than ``top`` rows.
    indices : ndarray of int64, shape (m, top)
        Row of the input (counted over the whole stream, from 0) of each activation; -1 where
        ``values`` is NaN.
    n_found : ndarray of int64, shape (m,)
        Number of valid entries per latent (``min(top, rows where it fired)``).
    n : int
        Rows seen.
    d_sae : int
        Width of the SAE.
    """

    latents: np.ndarray
    density: np.ndarray
    max_activation: np.ndarray
    values: np.ndarray
    indices: np.ndarray
    n_found: np.ndarray
    n: int
    d_sae: int

    def examples(self, i: int) -> list[tuple[int, float]]:
        """``(row, activation)`` pairs of the ``i``-th described latent, highest first."""
        c = int(self.n_found[i])
        return [(int(r), float(v)) for r, v in zip(self.indices[i, :c], self.values[i, :c])]


#: The former name of :class:`TopActivationsResult` (kept for one release).
TopActivations = TopActivationsResult


def _check_latents(latents: Any, d_sae: int) -> np.ndarray:
    if isinstance(latents, (str, bytes)) or not isinstance(latents, (Sequence, np.ndarray, Tensor)):
        raise RepscopeTypeError(
            "The 'latents' parameter of top_activations must be a sequence of latent indices or "
            f"None. Got {type(latents).__name__} instead."
        )
    arr = np.asarray(latents.tolist() if isinstance(latents, Tensor) else latents)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise RepscopeValueError(
            "The 'latents' parameter of top_activations must be a non-empty 1-D sequence of "
            f"ints. Got an array of shape {arr.shape} and dtype {arr.dtype} instead."
        )
    bad = arr[(arr < 0) | (arr >= d_sae)]
    if bad.size:
        raise RepscopeValueError(
            f"The 'latents' parameter of top_activations must hold indices in [0, d_sae={d_sae}). "
            f"Got {int(bad[0])} instead."
        )
    _, first = np.unique(arr, return_index=True)
    return arr[np.sort(first)].astype(np.int64)


def _spread_latents(counts: np.ndarray, n_latents: int, seed: int) -> np.ndarray:
    """``n_latents`` alive latents, one drawn (seeded) from each of ``n_latents`` equal strata
    of the latents sorted by firing count; returned most frequent first."""
    alive = np.flatnonzero(counts > 0)
    if alive.size == 0:
        return alive.astype(np.int64)
    order = alive[np.lexsort((alive, counts[alive]))]  # by count, then by index
    m = min(n_latents, order.size)
    rng = np.random.default_rng(seed)
    picks = [int(part[rng.integers(part.size)]) for part in np.array_split(order, m)]
    return np.asarray(picks[::-1], dtype=np.int64)


def _merge(
    buf_v: Tensor, buf_r: Tensor, cand_v: Tensor, cand_r: Tensor, cand_l: Tensor, top: int
) -> None:
    """Fold candidate (value, row, latent) triples into the per-latent top-``top`` buffers."""
    if cand_v.numel() == 0:
        return
    d_sae = buf_v.shape[0]
    touched = torch.zeros(d_sae, dtype=torch.bool, device=buf_v.device)
    touched[cand_l] = True
    lat = torch.nonzero(touched).squeeze(1)
    old_v, old_r = buf_v[lat], buf_r[lat]
    old_l = lat[:, None].expand_as(old_r)
    ok = old_r >= 0
    all_v = torch.cat([old_v[ok], cand_v])
    all_r = torch.cat([old_r[ok], cand_r])
    all_l = torch.cat([old_l[ok], cand_l])
    o = torch.argsort(all_v, descending=True, stable=True)
    all_v, all_r, all_l = all_v[o], all_r[o], all_l[o]
    o = torch.argsort(all_l, stable=True)
    all_v, all_r, all_l = all_v[o], all_r[o], all_l[o]
    rank = torch.arange(all_l.numel(), device=all_l.device) - torch.searchsorted(all_l, all_l)
    keep = rank < top
    buf_v[lat] = -math.inf
    buf_r[lat] = -1
    buf_v[all_l[keep], rank[keep]] = all_v[keep]
    buf_r[all_l[keep], rank[keep]] = all_r[keep]


def top_activations(
    sae: SparseAutoencoder,
    X: Any,
    *,
    latents: Sequence[int] | np.ndarray | None = None,
    n_latents: int = 8,
    top: int = 6,
    batch_size: int = 4096,
    seed: int = 0,
) -> TopActivationsResult:
    """The rows of ``X`` that activate some latents most, in one streamed pass.

    For each tracked latent a running top-``top`` of (activation, row) is kept on the SAE's
    device and merged batch by batch (a stable sort by value, then by latent), so memory is
    ``O(d_sae * top)`` whatever the number of rows; firing counts of every latent are summed
    alongside. Only non-zero activations count.

    Parameters
    ----------
    sae : SparseAutoencoder
        Run in eval mode (its previous mode is restored) on its device.
    X : Tensor, ndarray / memmap of shape (n, d_in), or iterable of such batches
        Inputs in the raw space (as for :func:`~repscope.sae.metrics.evaluate`). Row indices
        count over the whole stream.
    latents : sequence of int, optional
        Which latents to describe, in this order (repeats dropped). By default ``n_latents``
        alive latents are chosen after the pass: the alive latents are sorted by firing
        frequency, cut into ``n_latents`` equal strata, and one latent is drawn from each with
        ``seed``; they are returned most frequent first.
    n_latents : int, default=8
        How many latents to choose when ``latents`` is None (fewer if fewer are alive).
    top : int, default=6
        Activations kept per latent.
    batch_size : int, default=4096
        Rows per forward pass.
    seed : int, default=0
        Seed of the latent choice.

    Returns
    -------
    TopActivationsResult

    Raises
    ------
    RepscopeTypeError
        ``sae`` is not a SparseAutoencoder, ``X`` is not array data, or ``latents`` is not a
        sequence of ints.
    RepscopeValueError
        NaN/inf inputs, no rows, a latent index out of range, or a non-positive count.

    Examples
    --------
    >>> import torch
    >>> from repscope.sae import TopKConfig, TopKSAE
    >>> sae = TopKSAE(TopKConfig(d_in=8, d_sae=32, k=2))
    >>> res = top_activations(sae, torch.randn(100, 8), n_latents=4, top=3)
    >>> res.values.shape[1], bool((res.indices < 100).all())
    (3, True)
    """
    if not isinstance(sae, SparseAutoencoder):
        raise RepscopeTypeError(
            "The 'sae' parameter of top_activations must be a SparseAutoencoder. Got "
            f"{type(sae).__name__} instead."
        )
    n_latents = check_positive_int(n_latents, "n_latents", caller="top_activations")
    top = check_positive_int(top, "top", caller="top_activations")
    batch_size = check_positive_int(batch_size, "batch_size", caller="top_activations")
    chosen = None if latents is None else _check_latents(latents, sae.d_sae)
    with torch.inference_mode(), _eval_mode(sae):
        return _top_activations(sae, X, chosen, n_latents, top, batch_size, seed)


def _top_activations(
    sae: SparseAutoencoder,
    X: Any,
    chosen: np.ndarray | None,
    n_latents: int,
    top: int,
    batch_size: int,
    seed: int,
) -> TopActivationsResult:
    dev, d_sae = sae.device, sae.d_sae
    want: Tensor | None = None
    if chosen is not None:
        want = torch.zeros(d_sae, dtype=torch.bool, device=dev)
        want[torch.as_tensor(chosen, device=dev)] = True
    buf_v = torch.full((d_sae, top), -math.inf, dtype=torch.float64, device=dev)
    buf_r = torch.full((d_sae, top), -1, dtype=torch.int64, device=dev)
    counts = torch.zeros(d_sae, dtype=torch.int64, device=dev)
    all_latents = torch.arange(d_sae, device=dev)
    n = 0
    for i, x in enumerate(_batches(X, batch_size, sae.d_in)):
        b = int(x.shape[0])
        if b == 0:
            continue
        x = x.to(dev)
        if not bool(torch.isfinite(x).all()):
            raise RepscopeValueError(
                f"X must be finite; batch {i} (rows {n}..{n + b}) holds NaN or inf values. "
                "Drop or impute those samples first."
            )
        out = sae.encode(x)
        counts += firing_counts(out)
        if out.indices is None:
            t = min(top, b)
            tv, tr = out.values.topk(t, dim=0)
            cand_v, cand_r = tv.reshape(-1), tr.reshape(-1) + n
            cand_l = all_latents.expand(t, d_sae).reshape(-1)
        else:
            k = out.indices.shape[-1]
            cand_v, cand_l = out.values.reshape(-1), out.indices.reshape(-1)
            cand_r = torch.arange(n, n + b, device=dev).repeat_interleave(k)
        keep = cand_v != 0
        if want is not None:
            keep &= want[cand_l]
        _merge(buf_v, buf_r, cand_v[keep].to(torch.float64), cand_r[keep], cand_l[keep], top)
        n += b
    if n == 0:
        raise RepscopeValueError("X must hold at least one sample; got no rows.")
    count_np = counts.cpu().numpy()
    lat = chosen if chosen is not None else _spread_latents(count_np, n_latents, seed)
    sel = torch.as_tensor(lat, dtype=torch.int64, device=dev)
    values = buf_v[sel].cpu().numpy()
    rows = buf_r[sel].cpu().numpy()
    found = (rows >= 0).sum(1).astype(np.int64)
    values = np.where(rows >= 0, values, np.nan)
    return TopActivationsResult(
        latents=np.asarray(lat, dtype=np.int64),
        density=count_np[lat] / n,
        max_activation=values[:, 0].copy() if values.size else np.zeros(0),
        values=values,
        indices=rows,
        n_found=found,
        n=n,
        d_sae=d_sae,
    )


# ---------------------------------------------------------------------------- PNG thumbnails


def encode_png(image: Any) -> bytes:
    """Encode a uint8 image as PNG bytes (no dependency beyond zlib).

    Parameters
    ----------
    image : array-like of uint8, shape (h, w), (h, w, 3) or (h, w, 4)
        Greyscale, RGB or RGBA pixels.

    Returns
    -------
    bytes
        A PNG file: signature, IHDR (bit depth 8), one zlib-compressed IDAT (filter 0 on every
        scanline), IEND.
    """
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise RepscopeTypeError(
            f"The 'image' parameter of encode_png must hold uint8 pixels. Got dtype {a.dtype} "
            "instead; scale to 0..255 and cast with .astype(np.uint8)."
        )
    colour: int | None = None  # PNG colour type: 0 grey, 2 RGB, 6 RGBA
    if a.ndim == 2:
        colour = 0
    elif a.ndim == 3:
        colour = {3: 2, 4: 6}.get(int(a.shape[2]))
    if colour is None or a.shape[0] < 1 or a.shape[1] < 1:
        raise RepscopeValueError(
            "The 'image' parameter of encode_png must have shape (h, w), (h, w, 3) or "
            f"(h, w, 4) with h, w >= 1. Got shape {a.shape} instead."
        )
    h, w = int(a.shape[0]), int(a.shape[1])
    rows = np.ascontiguousarray(a).reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), rows], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def png_base64(image: Any) -> str:
    """:func:`encode_png` as base64 text, for an ``<img src="data:image/png;base64,...">``."""
    return base64.b64encode(encode_png(image)).decode("ascii")


# ---------------------------------------------------------------------------- record values


def subsample_history(
    history: Mapping[str, Sequence[float]], max_rows: int = 200
) -> dict[str, list[float]]:
    """At most ``max_rows`` evenly spaced rows of a training history (first and last kept).

    The same rows are taken from every key, so the columns stay aligned.
    """
    max_rows = check_positive_int(max_rows, "max_rows", caller="subsample_history")
    cols = {str(k): [float(v) for v in vals] for k, vals in history.items()}
    n = min((len(v) for v in cols.values()), default=0)
    if n <= max_rows:
        return {k: v[:n] for k, v in cols.items()}
    idx = np.unique(np.linspace(0, n - 1, max_rows).round().astype(np.int64))
    return {k: [v[int(i)] for i in idx] for k, v in cols.items()}


def top_latents_values(
    top: TopActivationsResult, describe: Callable[[int], Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The ``top_latents`` entry of an ``"sae"`` record.

    Parameters
    ----------
    top : TopActivationsResult
    describe : callable
        ``describe(row) -> mapping`` for each example row: what to show for it (``text``,
        ``position``, ``id``, ``image_png``, ...); its ``index`` key, if any, replaces the
        row as the example's index.

    Returns
    -------
    list of dict
        ``{latent, density, max, examples: [{index, activation, ...}]}`` per latent.
    """
    out = []
    for i, lat in enumerate(top.latents):
        examples = []
        for row, act in top.examples(i):
            examples.append({"index": row, "activation": act, **dict(describe(row))})
        mx = float(top.max_activation[i])
        out.append(
            {
                "latent": int(lat),
                "density": float(top.density[i]),
                "max": mx if math.isfinite(mx) else None,
                "examples": examples,
            }
        )
    return out


def never_fired_fraction(result: Any) -> float:
    """Share of latents that no training vector activated (from a TrainResult's counters):
    the record's ``never_fired_in_training``."""
    state = getattr(result, "state", None)
    if state is None:
        return float("nan")
    return float((state.fire_count == 0).float().mean())


def _training_values(training: Any) -> dict[str, Any]:
    """What a record keeps of a TrainResult's firing counters (the history's last row agrees:
    it is logged at the last step from the same counters)."""
    state = getattr(training, "state", None)
    if state is None:
        return {}
    return {
        "dead_in_training": float(state.dead_mask().float().mean()),
        "never_fired_in_training": float((state.fire_count == 0).float().mean()),
        "dead_after": int(state.dead_after),
        "n_seen": int(state.n_seen),
    }


def sae_record_values(
    sae: SparseAutoencoder,
    evaluation: SAEEvaluationResult,
    *,
    history: Mapping[str, Sequence[float]] | None = None,
    top_latents: list[dict[str, Any]] | None = None,
    training: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """The values of one ``"sae"`` record.

    A latent is "dead" in one of three senses, each with one name in every view
    (:data:`DEAD_WORDS`): **dead in training** (``dead_in_training``: no firing in the last
    ``dead_after`` training vectors, the window the trainer's AuxK uses, at the end of
    training; the history's ``dead_in_training`` curve ends at this value), **never fired in
    training** (``never_fired_in_training``: no firing over all of training) and **not firing
    on the evaluation set** (``dead_fraction``: no firing on the evaluated inputs;
    ``density_histogram["n_dead"]`` latents).

    Parameters
    ----------
    sae : SparseAutoencoder
    evaluation : SAEEvaluationResult
        Its evaluation (on held-out data).
    history : mapping of str to list of float, optional
        Training history; stored subsampled to <= 200 rows.
    top_latents : list of dict, optional
        From :func:`top_latents_values`.
    training : TrainResult, optional
        The training run: its history (unless ``history`` is given) and firing counters.
    **extra
        More values (``path``, ``n_train``, ``n_eval``, ``seconds``, ``loss_recovered``, ...);
        ``dead_fraction_train`` (its former name) is stored as ``never_fired_in_training``.

    Returns
    -------
    dict
        ``architecture``, ``d_in``, ``d_sae``, ``k`` (None for architectures without one),
        ``fvu``, ``mse``, ``l0``, ``dead_fraction``, ``shrinkage``, ``explained_variance``,
        ``cosine``, ``density_histogram`` (``edges``, ``counts``, ``n_dead``), ``history``,
        ``top_latents``, with ``training``: ``dead_in_training``, ``never_fired_in_training``,
        ``dead_after`` and ``n_seen``, and ``extra``.
    """
    hist = evaluation.density_histogram
    k = getattr(sae.cfg, "k", None)
    if training is not None and history is None:
        history = getattr(training, "history", None)
    if "dead_fraction_train" in extra:
        extra["never_fired_in_training"] = extra.pop("dead_fraction_train")
    return {
        "architecture": type(sae).architecture,
        "d_in": int(sae.d_in),
        "d_sae": int(sae.d_sae),
        "k": int(k) if isinstance(k, int) else None,
        "fvu": float(evaluation.fvu),
        "mse": float(evaluation.mse),
        "l0": float(evaluation.l0),
        "dead_fraction": float(evaluation.dead_fraction),
        "shrinkage": float(evaluation.shrinkage),
        "explained_variance": float(evaluation.explained_variance),
        "cosine": float(evaluation.cosine),
        "density_histogram": {
            "edges": [float(e) for e in hist.edges],
            "counts": [int(c) for c in hist.counts],
            "n_dead": int(hist.n_dead),
        },
        "history": subsample_history(history) if history else {},
        "top_latents": top_latents or [],
        **_training_values(training),
        **extra,
    }
