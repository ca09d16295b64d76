"""Attention metrics per layer and head: mean attention distance, entropy, query-key NMI, head
diversity and attention allocation between token groups.

Papers: Hybrid Distillation (Shi et al., arXiv 2306.15876: attention
distance, query-key NMI and the cross-head spread of attention distance as diversity and
collapse measures; the metric details are not given in full, and the abstract
only says MIM teachers give "more local and diverse attention" and that token relations
guard against "attention collapse", so the exact definitions below are ours and written out
in full) and SGT (Yu et al., arXiv 2605.18714: the fraction of attention mass from one token group
onto another, per layer and head).

Definitions, for one head and one sequence with valid (unpadded) tokens ``1..n``, attention
rows ``a_q`` (``a_qk >= 0``, ``sum_k a_qk = 1``):

- **distance** ``d_q = sum_k a_qk ||pos_q - pos_k||`` (token positions ``|q - k|`` by default,
  or any coordinates, e.g. a ViT's patch grid through :func:`grid_positions`). Keys without a
  position (NaN, e.g. a class token) are left out and the remaining weights renormalised;
  queries without a position are left out.
- **entropy** ``H_q = -sum_k a_qk log a_qk`` (nats); **entropy_norm** ``H_q / log m_q`` with
  ``m_q`` the number of keys the query may attend to (all valid keys, or ``q`` of them in a
  causal model: keys after the query carry no weight), 0 where ``m_q = 1``.
- **query-key NMI**: treat the head as a joint distribution of a query position ``Q`` (uniform
  over the ``n`` valid queries) and a key position ``K`` with ``p(k | q) = a_qk``. Then
  ``I(Q; K) = H(K) - mean_q H_q`` with ``p(k) = mean_q a_qk``, and
  ``NMI = I(Q; K) / sqrt(H(Q) H(K))``, ``H(Q) = log n``. 1: every query attends to its own
  key set (no collapse); 0: all queries share one attention distribution (collapse).
  Computed per sequence (``n >= 2``) and averaged over sequences.
- **head diversity** (per layer): the standard deviation across heads of the mean attention
  distance (the recipe's "cross-head spread"); **head_js**: the mean over head pairs and valid
  queries of the Jensen-Shannon divergence (nats) between the two heads' attention rows.
- **allocation** ``[g, h]``: the mean over queries in group ``g`` of the attention mass on keys
  in group ``h`` (rows sum to 1 when every key is in a group).

Every per-query value is averaged over all valid queries of all sequences.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import RecordedResult

if TYPE_CHECKING:
    import torch

__all__ = [
    "AttentionResult",
    "attention_metrics",
    "eager_attention",
    "grid_positions",
    "model_attention",
    "model_attention_metrics",
]

_ROW_TOL = 1e-3


@dataclass(frozen=True)
class AttentionResult(RecordedResult):
    """Attention metrics per layer and head (analysis ``"concepts_attention"``).

    Attributes
    ----------
    layers : tuple of str
        Layer names in depth order.
    distance, entropy, entropy_norm, nmi : ndarray, shape (n_layers, n_heads)
        Mean attention distance (in ``distance_unit``), entropy (nats), entropy normalised by
        the log of the number of attendable keys, and query-key NMI (module docstring).
    head_diversity, head_js : ndarray, shape (n_layers,)
        Std across heads of ``distance``; mean pairwise Jensen-Shannon divergence of heads.
    allocation : ndarray, shape (n_layers, n_heads, n_groups, n_groups), or None
        ``allocation[l, h, g, g2]``: mean attention mass from queries in group ``g`` onto keys
        in group ``g2``.
    group_names : tuple of str
        Names of the token groups (empty without groups).
    distance_unit : str
        ``"tokens"`` or ``"positions"`` (given coordinates).
    n_sequences, n_tokens : int
        Sequences and valid tokens (queries) seen.

    Records: one per layer with keys ``distance``, ``entropy``, ``entropy_norm``, ``nmi``
    (lists over heads), ``mean_distance``, ``mean_entropy``, ``mean_nmi``,
    ``head_diversity``, ``head_js``, ``allocation`` (per head a nested group-by-group list, or
    None), ``group_names``, ``distance_unit``, ``n_heads``, ``n_sequences``, ``n_tokens``.
    """

    analysis: ClassVar[str] = "concepts_attention"

    layers: tuple[str, ...]
    distance: np.ndarray
    entropy: np.ndarray
    entropy_norm: np.ndarray
    nmi: np.ndarray
    head_diversity: np.ndarray
    head_js: np.ndarray
    allocation: np.ndarray | None
    group_names: tuple[str, ...]
    distance_unit: str
    n_sequences: int
    n_tokens: int

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``concepts_attention`` record per layer (keys in the class docstring)."""
        rows = []
        for i, layer in enumerate(self.layers):
            rows.append((layer, {
                "distance": [float(v) for v in self.distance[i]],
                "entropy": [float(v) for v in self.entropy[i]],
                "entropy_norm": [float(v) for v in self.entropy_norm[i]],
                "nmi": [float(v) for v in self.nmi[i]],
                "mean_distance": float(np.mean(self.distance[i])),
                "mean_entropy": float(np.mean(self.entropy[i])),
                "mean_nmi": float(np.nanmean(self.nmi[i])) if np.isfinite(self.nmi[i]).any()
                else float("nan"),
                "head_diversity": float(self.head_diversity[i]),
                "head_js": float(self.head_js[i]),
                "allocation": (None if self.allocation is None
                               else [[[float(v) for v in row] for row in head]
                                     for head in self.allocation[i]]),
                "group_names": list(self.group_names),
                "distance_unit": self.distance_unit,
                "n_heads": int(self.distance.shape[1]),
                "n_sequences": self.n_sequences,
                "n_tokens": self.n_tokens,
            }))
        return rows


# ------------------------------------------------------------------------------ accumulation


def _xlogx(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


class _Accumulator:
    """Sums of the per-query metrics of one layer over batches."""

    def __init__(self, n_heads: int, n_groups: int) -> None:
        self.n_heads = n_heads
        self.dist = np.zeros(n_heads)
        self.dist_n = 0
        self.ent = np.zeros(n_heads)
        self.ent_norm = np.zeros(n_heads)
        self.js = 0.0
        self.n_q = 0
        self.nmi = np.zeros(n_heads)
        self.nmi_n = 0
        self.n_seq = 0
        self.alloc = np.zeros((n_heads, n_groups, n_groups))
        self.alloc_n = np.zeros(n_groups)

    def add(self, A: np.ndarray, valid: np.ndarray, positions: np.ndarray | None,
            groups: np.ndarray | None) -> None:
        """``A`` (B, H, T, T), ``valid`` (B, T) bool, ``positions`` (B, T, p) float with NaN for
        none (None: token index), ``groups`` (B, T) int, -1 for no group."""
        B, H, T, _ = A.shape
        A = A * valid[:, None, None, :]  # padded keys carry no weight
        vq = valid.astype(np.float64)  # (B, T) query weights
        n_q = int(vq.sum())
        self.n_q += n_q
        self.n_seq += B
        # entropy
        h_q = -_xlogx(A).sum(-1)  # (B, H, T)
        self.ent += np.einsum("bht,bt->h", h_q, vq)
        allowed = _attendable(A, valid)  # (B, T) keys a query may attend to
        with np.errstate(divide="ignore", invalid="ignore"):
            hn = np.where(allowed[:, None, :] > 1, h_q / np.log(np.maximum(allowed, 2))[:, None, :],
                          0.0)
        self.ent_norm += np.einsum("bht,bt->h", hn, vq)
        # distance
        if positions is None:
            idx = np.arange(T, dtype=np.float64)
            D = np.abs(idx[:, None] - idx[None, :])[None, None]
            d_q = (A * D).sum(-1)
            qd = vq
        else:
            has = np.isfinite(positions).all(-1)  # (B, T)
            P = np.nan_to_num(positions)
            D = np.sqrt(((P[:, :, None, :] - P[:, None, :, :]) ** 2).sum(-1))[:, None]  # B,1,T,T
            Ak = A * has[:, None, None, :]
            mass = Ak.sum(-1)
            with np.errstate(divide="ignore", invalid="ignore"):
                d_q = np.where(mass > 0, (Ak * D).sum(-1) / mass, 0.0)
            qd = vq * has
        self.dist += np.einsum("bht,bt->h", d_q, qd)
        self.dist_n += int(qd.sum())
        # JS divergence between head pairs
        if H > 1:
            tot = 0.0
            for h1 in range(H):
                for h2 in range(h1 + 1, H):
                    m = 0.5 * (A[:, h1] + A[:, h2])
                    js = -_xlogx(m).sum(-1) - 0.5 * (h_q[:, h1] + h_q[:, h2])
                    tot += float((js * vq).sum())
            self.js += tot / (H * (H - 1) / 2)
        # NMI per sequence
        for b in range(B):
            v = np.flatnonzero(valid[b])
            n = len(v)
            if n < 2:
                continue
            a = A[b][:, v][:, :, v]  # H, n, n
            p_k = a.mean(1)  # H, n
            h_k = -_xlogx(p_k).sum(-1)
            i_qk = h_k - h_q[b][:, v].mean(-1)
            with np.errstate(divide="ignore", invalid="ignore"):
                nmi = np.where(h_k > 0, i_qk / np.sqrt(np.log(n) * h_k), 0.0)
            self.nmi += np.clip(nmi, 0.0, 1.0)
            self.nmi_n += 1
        # allocation
        if groups is not None:
            G = self.alloc.shape[1]
            onehot = np.zeros((B, T, G))
            bi, ti = np.nonzero((groups >= 0) & valid)
            onehot[bi, ti, groups[bi, ti]] = 1.0
            mass_to = A @ onehot[:, None]  # B, H, T, G (to-groups per query)
            self.alloc += np.einsum("bhtg,btf->hfg", mass_to, onehot)
            self.alloc_n += onehot.sum((0, 1))

    def result(self) -> dict[str, Any]:
        nq = max(self.n_q, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            alloc = self.alloc / self.alloc_n[None, :, None]
        dist = self.dist / max(self.dist_n, 1)
        return {
            "distance": dist,
            "entropy": self.ent / nq,
            "entropy_norm": self.ent_norm / nq,
            "nmi": self.nmi / self.nmi_n if self.nmi_n else np.full(self.n_heads, np.nan),
            "head_diversity": float(np.std(dist)),
            "head_js": self.js / nq if self.n_heads > 1 else 0.0,
            "allocation": alloc,
        }


def _attendable(A: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per query, the number of keys it may attend to: all valid keys, or in a causal pattern
    (no weight above the diagonal in any head) the valid keys up to and including itself."""
    T = A.shape[-1]
    upper = np.triu(np.ones((T, T), dtype=bool), 1)
    rows = A * valid[:, None, :, None]  # padded queries (whatever they attend to) do not count
    causal = not bool((rows[..., upper] > 1e-12).any())
    n_valid = valid.sum(-1, keepdims=True)  # B, 1
    if not causal:
        return np.broadcast_to(n_valid, valid.shape).astype(np.float64)
    return np.cumsum(valid, axis=-1).astype(np.float64)


# ------------------------------------------------------------------------------ public API


def grid_positions(height: int, width: int, *, prefix: int = 1) -> np.ndarray:
    """Coordinates of a ViT-like token sequence: ``prefix`` tokens without a position (class or
    register tokens, NaN) followed by a row-major ``height`` x ``width`` patch grid; shape
    (prefix + height * width, 2), in patch units."""
    if height < 1 or width < 1 or prefix < 0:
        raise RepscopeValueError(
            f"grid_positions: expected height, width >= 1 and prefix >= 0; got height={height}, "
            f"width={width}, prefix={prefix}.")
    rows, cols = np.divmod(np.arange(height * width), width)
    grid = np.stack([rows, cols], 1).astype(np.float64)
    return np.concatenate([np.full((prefix, 2), np.nan), grid])


def _as_numpy(a: Any, what: str) -> np.ndarray:
    from repscope._array import is_torch, to_numpy

    arr = to_numpy(a.detach().float()) if is_torch(a) else np.asarray(a)
    if arr.dtype.kind not in "fiu":
        raise RepscopeTypeError(f"{what}: expected a numeric array; got dtype {arr.dtype}.")
    return arr.astype(np.float64)


def _check_groups(groups: Any, B: int, T: int, group_names: Sequence[str] | None
                  ) -> tuple[np.ndarray | None, tuple[str, ...]]:
    if groups is None:
        return None, ()
    g = np.asarray(groups)
    if g.shape == (T,):
        g = np.broadcast_to(g, (B, T))
    if g.shape != (B, T) or g.dtype.kind not in "iu":
        raise RepscopeValueError(
            f"groups: expected integer token-group labels of shape ({B}, {T}) or ({T},) "
            f"(-1 for no group); got shape {np.shape(groups)} and dtype {g.dtype}.")
    n = int(g.max()) + 1 if g.size else 0
    names = tuple(group_names) if group_names is not None else tuple(f"group {i}" for i in range(n))
    if len(names) < n:
        raise RepscopeValueError(
            f"group_names: expected at least {n} names for the group labels 0..{n - 1}; got "
            f"{len(names)}.")
    return g.astype(np.int64), names


def attention_metrics(
    attentions: Sequence[Any],
    *,
    mask: Any = None,
    positions: Any = None,
    groups: Any = None,
    group_names: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
) -> AttentionResult:
    """Metrics of given attention patterns (one array per layer).

    Parameters
    ----------
    attentions : sequence of array, each (batch, heads, T, T) or (heads, T, T)
        Attention weights (rows sum to 1 over the valid keys), numpy or torch, e.g.
        ``model(..., output_attentions=True).attentions``.
    mask : array (batch, T) or (T,), optional
        1 for valid tokens, 0 for padding (default: all valid).
    positions : array (T, p) or (batch, T, p), optional
        Token coordinates for the distance (NaN rows: no position); default the token index.
    groups : int array (batch, T) or (T,), optional
        Token-group labels for the allocation (-1: in no group).
    group_names : sequence of str, optional
        Names of the groups ``0, 1, ...``.
    layers : sequence of str, optional
        Layer names (default ``"layer.<i>"``).

    Returns
    -------
    AttentionResult
    """
    if len(attentions) == 0:
        raise RepscopeValueError("attentions: expected one attention array per layer; got none.")
    names = tuple(layers) if layers is not None else tuple(f"layer.{i}" for i in range(len(attentions)))
    if len(names) != len(attentions):
        raise RepscopeValueError(
            f"layers: expected {len(attentions)} names (one per attention array); got {len(names)}.")
    acc: list[_Accumulator] = []
    grp: np.ndarray | None = None
    gnames: tuple[str, ...] = ()
    valid = pos = None
    for i, a in enumerate(attentions):
        A = _as_numpy(a, f"attentions[{i}]")
        if A.ndim == 3:
            A = A[None]
        if A.ndim != 4 or A.shape[-1] != A.shape[-2]:
            raise RepscopeValueError(
                f"attentions[{i}]: expected shape (batch, heads, T, T); got {A.shape}.")
        B, H, T, _ = A.shape
        if i == 0:
            valid = np.ones((B, T), bool)
            if mask is not None:
                m = _as_numpy(mask, "mask") > 0
                if m.shape not in ((T,), (B, T)):
                    raise RepscopeValueError(
                        f"mask: expected shape ({B}, {T}) or ({T},); got {m.shape}.")
                valid = np.broadcast_to(m, (B, T)).copy()
            if positions is not None:
                p = _as_numpy(positions, "positions")
                if p.ndim == 2:
                    p = np.broadcast_to(p, (B, *p.shape))
                if p.shape[:2] != (B, T):
                    raise RepscopeValueError(
                        f"positions: expected shape ({T}, p) or ({B}, {T}, p); got {p.shape}.")
                pos = p
            grp, gnames = _check_groups(groups, B, T, group_names)
        assert valid is not None
        if valid.shape != (B, T):
            raise RepscopeValueError(
                f"attentions[{i}]: expected batch and length {valid.shape}; got {A.shape}.")
        rows = (A * valid[:, None, None, :]).sum(-1)[np.broadcast_to(valid[:, None, :], (B, H, T))]
        if rows.size and (np.abs(rows - 1.0).max() > _ROW_TOL or A.min() < -1e-6):
            raise RepscopeValueError(
                f"attentions[{i}]: expected non-negative attention rows summing to 1 over the "
                f"valid keys; got row sums from {rows.min():.4g} to {rows.max():.4g}.")
        acc.append(_Accumulator(H, len(gnames)))
        acc[-1].add(A, valid, pos, grp)
    return _finish(names, acc, gnames, "tokens" if positions is None else "positions")


def _finish(names: tuple[str, ...], acc: Sequence[_Accumulator], gnames: tuple[str, ...],
            unit: str) -> AttentionResult:
    res = [a.result() for a in acc]
    n_heads = {a.n_heads for a in acc}
    stack = (lambda k: np.stack([r[k] for r in res])) if len(n_heads) == 1 else (
        lambda k: _ragged_stack([r[k] for r in res]))
    return AttentionResult(
        layers=names, distance=stack("distance"), entropy=stack("entropy"),
        entropy_norm=stack("entropy_norm"), nmi=stack("nmi"),
        head_diversity=np.asarray([r["head_diversity"] for r in res]),
        head_js=np.asarray([r["head_js"] for r in res]),
        allocation=stack("allocation") if gnames else None, group_names=gnames,
        distance_unit=unit, n_sequences=acc[0].n_seq, n_tokens=acc[0].n_q)


def _ragged_stack(xs: list[np.ndarray]) -> np.ndarray:
    """Layers with different head counts: pad with NaN to the widest."""
    h = max(x.shape[0] for x in xs)
    out = np.full((len(xs), h, *xs[0].shape[1:]), np.nan)
    for i, x in enumerate(xs):
        out[i, : x.shape[0]] = x
    return out


@contextlib.contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Switch a Hugging Face model to eager attention inside the block (SDPA and flash
    attention return no weights), restoring its implementation on exit; other models pass
    through unchanged."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = hasattr(model, "set_attn_implementation") and before not in (None, "eager")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(before)


def _unwrap(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    """A zoo ``LoadedModel`` gives its torch model and tokenizer."""
    if hasattr(model, "info") and hasattr(model, "model") and hasattr(model, "kind"):
        if not hasattr(model.model, "forward"):
            raise RepscopeTypeError(
                f"model: expected a torch model that returns attention weights; got the "
                f"{model.kind} zoo model {model.name!r}.")
        return model.model, tokenizer if tokenizer is not None else model.tokenizer
    return model, tokenizer


def model_attention(model: Any, inputs: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
    """Attention weights of one forward pass: one (batch, heads, T, T) tensor per layer.

    ``model`` is a Hugging Face model (or a zoo ``LoadedModel``); it runs under
    :func:`eager_attention` with ``output_attentions=True``.

    Raises
    ------
    RepscopeTypeError
        The model returns no attention weights.
    """
    import torch

    model, _ = _unwrap(model, None)
    name = type(model).__name__
    if not isinstance(model, torch.nn.Module):
        raise RepscopeTypeError(
            f"model: expected a torch model that returns attention weights; got {name}.")
    try:
        with eager_attention(model), torch.no_grad():
            out = model(**inputs, output_attentions=True)
    except TypeError as err:
        raise RepscopeTypeError(
            f"model: expected a model that returns attention weights (output_attentions); "
            f"{name} does not accept it ({err}).") from err
    att = getattr(out, "attentions", None)
    if att is None and isinstance(out, Mapping):
        att = out.get("attentions")
    if not att or any(a is None for a in att):
        raise RepscopeTypeError(
            f"model: expected a model that returns attention weights (output_attentions); "
            f"{name} returned none.")
    return tuple(att)


def _groups_for(kind: Any, enc: Mapping[str, Any], tokenizer: Any, start: int
                ) -> tuple[np.ndarray | None, tuple[str, ...]]:
    ids = np.asarray(enc["input_ids"])
    valid = np.asarray(enc["attention_mask"]).astype(bool)
    B, T = ids.shape
    if kind is None:
        return None, ()
    if kind == "halves":
        g = np.full((B, T), -1, np.int64)
        for b in range(B):
            v = np.flatnonzero(valid[b])
            half = (len(v) + 1) // 2
            g[b, v[:half]], g[b, v[half:]] = 0, 1
        return g, ("prompt", "continuation")
    if kind == "special":
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        g = np.where(np.isin(ids, list(special)), 0, 1).astype(np.int64)
        return np.where(valid, g, -1), ("special", "text")
    labels = list(kind)[start: start + B]
    g = np.full((B, T), -1, np.int64)
    for b, lab in enumerate(labels):
        lab = np.asarray(lab, np.int64)
        v = np.flatnonzero(valid[b])
        if len(lab) != len(v):
            raise RepscopeValueError(
                f"groups: expected one label per token of text {start + b} ({len(v)} tokens "
                f"after tokenisation); got {len(lab)}.")
        g[b, v] = lab
    return g, ()


def model_attention_metrics(
    model: Any,
    texts: Sequence[str],
    *,
    tokenizer: Any = None,
    groups: str | Sequence[Sequence[int]] | None = "halves",
    group_names: Sequence[str] | None = None,
    max_length: int = 64,
    batch_size: int = 8,
    progress: Any = False,
) -> AttentionResult:
    """Attention metrics of a text model on ``texts``, per layer and head.

    Parameters
    ----------
    model : Hugging Face model or zoo LoadedModel
        Any model that returns attention weights with ``output_attentions=True`` (run with
        eager attention for the call, e.g. SmolLM2 and MiniLM, which load with SDPA).
    texts : sequence of str
    tokenizer : tokenizer, optional
        Default the zoo model's.
    groups : {"halves", "special"}, sequence of int sequences, or None
        Token groups for the allocation: ``"halves"`` splits each text's tokens into a prompt
        (first half) and a continuation (second half); ``"special"`` separates special tokens
        ([CLS], [SEP]) from text tokens; or one label per token of each text (-1: none).
    group_names : sequence of str, optional
        Names of explicit group labels.
    max_length, batch_size : int
        Truncation and batch size.
    progress : bool or callable
        A progress bar over batches.

    Returns
    -------
    AttentionResult
        Layers named ``"layer.<i>"`` (the i-th attention module in depth order).
    """
    import torch

    from repscope._progress import progress_for

    model, tokenizer = _unwrap(model, tokenizer)
    if tokenizer is None:
        raise RepscopeValueError("tokenizer: expected the model's tokenizer; got None.")
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise RepscopeValueError("texts: expected a non-empty sequence of str.")
    if isinstance(groups, str) and groups not in ("halves", "special"):
        raise RepscopeValueError(
            f"groups: expected 'halves', 'special', per-token labels or None; got {groups!r}.")
    if groups is not None and not isinstance(groups, str) and len(groups) != len(texts):
        raise RepscopeValueError(
            f"groups: expected one label sequence per text ({len(texts)}); got {len(groups)}.")
    if tokenizer.pad_token is None and getattr(tokenizer, "eos_token", None) is not None:
        tokenizer.pad_token = tokenizer.eos_token
    acc: list[_Accumulator] | None = None
    gnames: tuple[str, ...] = ()
    if groups is not None and not isinstance(groups, str):
        top = max((int(np.max(g)) for g in groups if len(g)), default=-1)
        gnames = tuple(group_names) if group_names is not None else tuple(
            f"group {i}" for i in range(top + 1))
        if len(gnames) < top + 1:
            raise RepscopeValueError(
                f"group_names: expected a name for each group label 0..{top}; got "
                f"{len(gnames)}.")
    starts = list(range(0, len(texts), batch_size))
    with progress_for(progress, "attention batches", len(starts)) as advance:
        for s in starts:
            enc = tokenizer(texts[s: s + batch_size], return_tensors="pt", padding=True,
                            truncation=True, max_length=max_length)
            att = model_attention(model, dict(enc))
            enc_np = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in enc.items()}
            grp, names = _groups_for(groups, enc_np, tokenizer, s)
            gnames = gnames or names
            valid = enc_np["attention_mask"].astype(bool)
            if acc is None:
                acc = [_Accumulator(a.shape[1], len(gnames)) for a in att]
            for a, layer_acc in zip(att, acc):
                layer_acc.add(a.detach().double().numpy(), valid, None, grp)
            advance(1)
    assert acc is not None
    names_l = tuple(f"layer.{i}" for i in range(len(acc)))
    return _finish(names_l, acc, gnames, "tokens")
