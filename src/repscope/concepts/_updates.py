r"""Geometry of layer updates: how well restricted tokenwise maps predict each block's update.

Recipe: Jun-Sik Yoo, "On the Geometric Structure of Layer Updates in Deep Language Models"
(arXiv 2604.02459; reconstructed from the abstract and a summary,
checked against the abstract: "layerwise updates admit a decomposition into a dominant
tokenwise component and a residual that is not captured by restricted tokenwise function
classes ... the full layer update is almost perfectly aligned with the tokenwise component,
while the residual exhibits substantially weaker alignment, larger angular deviation, and
significantly lower projection onto the dominant tokenwise subspace").

For a pair of residual-stream layers with hidden states :math:`h_\ell` and :math:`h_{\ell+1}`
of the same tokens, the update is :math:`\Delta = h_{\ell+1} - h_\ell`. A restricted map
:math:`T` predicts :math:`\hat\Delta_i = T(h_{\ell,i})` from the token's own state only (no
other positions), and :math:`r_i = \Delta_i - \hat\Delta_i` is the residual. Maps, all fitted
on training tokens and scored on held-out tokens (split by ``groups``, e.g. the sequence, when
given, so no sequence is on both sides):

* ``mean``: the training mean update (a control: how much a constant direction already explains);
* ``global``: an affine map, ridge with GCV (:class:`repscope.align.LinearMap`);
* ``lowrank``: reduced-rank regression, the global map restricted to the top-``rank`` principal
  directions of its fitted (centred) training predictions;
* ``diagonal``: one affine map per coordinate, :math:`\hat\Delta_j = a_j h_j + b_j`;
* ``knn``: a local affine map fitted, for each held-out token, on its ``k`` nearest training
  tokens (cosine in :math:`h_\ell`), ridge in dual form (k x k); the ridge strength is chosen by
  leave-one-out on training tokens (a training token's neighbours exclude itself), so no token
  is ever predicted by a map that saw it.

The recipe writes the map as :math:`\hat\Delta = A(x)x`; the affine maps here also fit an
intercept (the mean update is large in a residual stream), which the ``mean`` control isolates.

Metrics per map (held-out tokens; medians over tokens):

* ``cos_median``: :math:`\cos(\Delta_i, \hat\Delta_i)`;
* ``spearman_median``: Spearman correlation across coordinates between :math:`\Delta_i` and
  :math:`\hat\Delta_i`;
* ``r2``: :math:`1 - \sum\lVert r_i\rVert^2 / \sum\lVert\Delta_i - \bar\Delta\rVert^2`;
* ``rel_error_median``: :math:`\lVert r_i\rVert / \lVert\Delta_i\rVert`;
* ``cos_residual_median`` and ``angle_residual_median`` (degrees): :math:`\cos(\Delta_i, r_i)`;
* ``residual_projection_median``: :math:`\lVert P_k r_i\rVert / \lVert r_i\rVert` with
  :math:`P_k` the projector onto the top-``k`` right singular vectors of the (uncentred)
  held-out predictions :math:`\hat\Delta` (the dominant tokenwise subspace), beside
  ``update_projection_median`` :math:`\lVert P_k \Delta_i\rVert / \lVert\Delta_i\rVert` for
  reference.

The recipe's functional metric (patching :math:`h_\ell + \hat\Delta` into the model and
correlating the approximation error with the output change) needs the model and is not part of
this function. The recipe's targets (median cosine > 0.9 for the global map, > 0.5 for local
maps) come from GPT-2 and Pythia and are unverified; tests report what SmolLM2 gives.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from repscope._progress import ProgressLike, progress_for
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.results import RecordedResult

__all__ = ["MAPS", "LayerUpdatesResult", "layer_updates"]

MAPS = ("mean", "global", "lowrank", "diagonal", "knn")

_METRICS = ("cos_median", "spearman_median", "r2", "rel_error_median", "cos_residual_median",
            "angle_residual_median", "residual_projection_median", "update_projection_median")


@dataclass(frozen=True)
class LayerUpdatesResult(RecordedResult):
    """Restricted-map fits of each block's update, per layer pair and map.

    Record keys (one record per layer pair and map; layer = the later layer of the pair):
    ``map`` (one of ``mean``, ``global``, ``lowrank``, ``diagonal``, ``knn``), ``from_layer``,
    ``n_train``, ``n_test``, ``rank``, ``k``, ``pca_k``, ``update_norm_median``, and the
    metrics ``cos_median``, ``spearman_median``, ``r2``, ``rel_error_median``,
    ``cos_residual_median``, ``angle_residual_median``, ``residual_projection_median``,
    ``update_projection_median`` (module docstring).

    Attributes
    ----------
    pairs : list of (str, str)
        (earlier, later) layer of each pair, in order.
    metrics : dict
        ``metrics[later][map][metric]``.
    n_train, n_test : int
    rank, k, pca_k : int
    update_norm_median : dict
        Median held-out update norm per later layer.
    """

    analysis: ClassVar[str] = "concepts_layer_updates"

    pairs: list[tuple[str, str]]
    metrics: dict[str, dict[str, dict[str, float]]]
    n_train: int
    n_test: int
    rank: int
    k: int
    pca_k: int
    update_norm_median: dict[str, float] = field(default_factory=dict)

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        rows = []
        for before, after in self.pairs:
            for name, vals in self.metrics[after].items():
                rows.append((after, {
                    "map": name, "from_layer": before, "n_train": self.n_train,
                    "n_test": self.n_test, "rank": self.rank, "k": self.k,
                    "pca_k": self.pca_k,
                    "update_norm_median": float(self.update_norm_median[after]),
                    **{m: float(vals[m]) for m in _METRICS},
                }))
        return rows

    def table(self, metric: str = "cos_median") -> dict[str, dict[str, float]]:
        """``{later layer: {map: metric}}``."""
        return {a: {m: v[metric] for m, v in self.metrics[a].items()} for _, a in self.pairs}


def _as_matrix(a: Any, name: str) -> np.ndarray:
    from repscope._array import as_float64_numpy

    try:
        x = as_float64_numpy(a)
    except Exception as err:
        raise RepscopeTypeError(
            f"layer_updates: hidden[{name!r}] must be an array of shape (tokens, width); got "
            f"{type(a).__name__}."
        ) from err
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise RepscopeValueError(
            f"layer_updates: hidden[{name!r}] must be a finite 2-D array (tokens, width); got "
            f"shape {x.shape}."
        )
    return x


def _rowwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    ra = rankdata(a, axis=1)
    rb = rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    return np.where(den > 0, (ra * rb).sum(1) / np.maximum(den, 1e-300), 0.0)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, (a * b).sum(1) / np.maximum(den, 1e-300), 0.0)


def _top_right_vectors(a: np.ndarray, k: int) -> np.ndarray:
    """The top-``k`` right singular vectors of ``a`` as columns (from the eigh of a^T a); fewer
    when ``a``'s rank is lower (the ``mean`` map's predictions have rank 1)."""
    from repscope._kernels.eigenpath import eigh_psd

    basis = eigh_psd(a.T @ a)  # eigenvalues ascending
    lam, vec = basis.values[::-1], basis.vectors[:, ::-1]
    keep = min(k, int(np.sum(lam > 1e-12 * max(float(lam[0]), 1e-300))))  # within the rank
    return vec[:, : max(keep, 1)]


def _metrics(u: np.ndarray, uh: np.ndarray, pca_k: int) -> dict[str, float]:
    r = u - uh
    cr = _cos(u, r)
    nu = np.linalg.norm(u, axis=1)
    nr = np.linalg.norm(r, axis=1)
    basis = _top_right_vectors(uh, pca_k)
    pr = np.linalg.norm(r @ basis, axis=1) / np.maximum(nr, 1e-300)
    pu = np.linalg.norm(u @ basis, axis=1) / np.maximum(nu, 1e-300)
    sst = float(((u - u.mean(axis=0)) ** 2).sum())
    return {
        "cos_median": float(np.median(_cos(u, uh))),
        "spearman_median": float(np.median(_rowwise_spearman(u, uh))),
        "r2": 1.0 - float((r * r).sum()) / sst if sst > 0 else float("nan"),
        "rel_error_median": float(np.median(nr / np.maximum(nu, 1e-300))),
        "cos_residual_median": float(np.median(cr)),
        "angle_residual_median": float(np.median(np.degrees(np.arccos(np.clip(cr, -1, 1))))),
        "residual_projection_median": float(np.median(pr)),
        "update_projection_median": float(np.median(pu)),
    }


def _local_predict(u_tr: np.ndarray, gram: np.ndarray, gq: np.ndarray, idx: np.ndarray,
                   alphas: np.ndarray) -> np.ndarray:
    """Local affine ridge predictions (len(alphas), n_q, d) from neighbours ``idx`` (n_q, k).

    Dual form per query: mean_u + (q - mean_h) Hc^T (Hc Hc^T + lam I)^{-1} Uc over the query's
    neighbours, lam = alpha * trace(Hc Hc^T) / k. Every inner product comes from ``gram``
    (training x training) and ``gq`` (queries x training), so the cost per query is k x k, not
    k x k x width.
    """
    out = np.empty((len(alphas), gq.shape[0], u_tr.shape[1]))
    block = 512
    k = idx.shape[1]
    for s in range(0, gq.shape[0], block):
        ii = idx[s:s + block]
        raw = gram[ii[:, :, None], ii[:, None, :]]  # (b, k, k) = h_i . h_j
        r = raw.mean(2)  # mean_h . h_j
        m = r.mean(1, keepdims=True)  # mean_h . mean_h
        K = raw - r[:, :, None] - r[:, None, :] + m[:, :, None]
        g = np.take_along_axis(gq[s:s + block], ii, axis=1)  # q . h_j
        qk = g - g.mean(1, keepdims=True) - r + m  # (q - mean_h) . (h_j - mean_h)
        lam_k, vec = np.linalg.eigh(K)  # one per query serves every alpha
        lam_k = np.clip(lam_k, 0.0, None)
        qv = np.einsum("bk,bkj->bj", qk, vec)
        un = u_tr[ii]  # (b, k, d)
        mu = un.mean(1)
        uc = un - mu[:, None, :]
        tr = lam_k.sum(1, keepdims=True) / k
        for j, a in enumerate(alphas):
            w = 1.0 / (lam_k + np.maximum(float(a) * tr, 1e-12))
            t = np.einsum("bj,bkj->bk", qv * w, vec)
            out[j, s:s + block] = mu + np.einsum("bk,bkd->bd", t, uc)
    return out


def _split(n: int, groups: np.ndarray | None, test_fraction: float,
           seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        n_test = max(1, round(test_fraction * n))
        return np.sort(perm[n_test:]), np.sort(perm[:n_test])
    uniq = np.unique(groups)
    if len(uniq) < 2:
        raise RepscopeValueError(
            f"layer_updates: groups must hold at least 2 distinct groups to hold some out; got "
            f"{len(uniq)}."
        )
    perm = rng.permutation(uniq)
    n_test = min(len(uniq) - 1, max(1, round(test_fraction * len(uniq))))
    test = np.isin(groups, perm[:n_test])
    return np.flatnonzero(~test), np.flatnonzero(test)


def layer_updates(
    hidden: Mapping[str, Any],
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    maps: Sequence[str] = MAPS,
    rank: int = 64,
    k: int = 64,
    pca_k: int = 10,
    test_fraction: float = 0.25,
    groups: Any = None,
    alphas: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0),
    n_select: int = 300,
    seed: int = 0,
    progress: ProgressLike = False,
) -> LayerUpdatesResult:
    """Fit restricted tokenwise maps to each layer pair's update; held-out geometry metrics.

    Parameters
    ----------
    hidden : mapping of str to array (tokens, width)
        Residual-stream states of the same tokens (same order) at each layer.
    pairs : sequence of (str, str), optional
        (earlier, later) layers; default each consecutive pair of ``hidden``'s keys.
    maps : sequence of str
        Any of ``mean``, ``global``, ``lowrank``, ``diagonal``, ``knn``.
    rank : int
        Rank of the ``lowrank`` map.
    k : int
        Neighbours of the ``knn`` map.
    pca_k : int
        Dimension of the dominant tokenwise subspace for the projection metrics.
    test_fraction : float
        Fraction of tokens (or of groups) held out.
    groups : array (tokens,), optional
        Group of each token (its sequence); whole groups are held out.
    alphas : sequence of float
        Relative ridge strengths tried for the ``knn`` map (chosen by leave-one-out on up to
        ``n_select`` training tokens).
    seed : int
    progress : bool or callable
        A bar over layer pairs.

    Returns
    -------
    LayerUpdatesResult

    Raises
    ------
    RepscopeValueError
        Fewer than two layers, an unknown map, mismatched shapes, a bad rank/k/fraction.
    UnknownNameError
        A pair names a layer not in ``hidden`` (close names suggested).
    """
    from repscope.extract._hooks import unknown_layer_error

    if not isinstance(hidden, Mapping):
        raise RepscopeTypeError(
            f"layer_updates: hidden must be a mapping of layer name to (tokens, width) array; "
            f"got {type(hidden).__name__}."
        )
    names = list(hidden)
    if pairs is None:
        if len(names) < 2:
            raise RepscopeValueError(
                f"layer_updates: hidden must hold at least 2 layers; got {len(names)}."
            )
        pairs = list(itertools.pairwise(names))
    pairs = [(str(a), str(b)) for a, b in pairs]
    if not pairs:
        raise RepscopeValueError("layer_updates: pairs must name at least one (earlier, later) "
                                 "pair of layers; got none.")
    for a, b in pairs:
        for nm in (a, b):
            if nm not in hidden:
                raise unknown_layer_error(nm, names, "layer_updates hidden")
    bad = [m for m in maps if m not in MAPS]
    if bad or not maps:
        raise RepscopeValueError(
            f"layer_updates: maps must be a non-empty selection of {', '.join(MAPS)}; got "
            f"{list(maps)!r}."
        )
    if not 0 < test_fraction < 1:
        raise RepscopeValueError(
            f"layer_updates: test_fraction must be in (0, 1); got {test_fraction!r}."
        )
    first = _as_matrix(hidden[pairs[0][0]], pairs[0][0])
    n, d = first.shape
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= d:
        raise RepscopeValueError(f"layer_updates: rank must be an int in [1, {d}]; got {rank!r}.")
    g = None if groups is None else np.asarray(groups)
    if g is not None and g.shape != (n,):
        raise RepscopeValueError(
            f"layer_updates: groups must have one entry per token ({n}); got shape {g.shape}."
        )
    tr, te = _split(n, g, test_fraction, seed)
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= len(tr) - 1:
        raise RepscopeValueError(
            f"layer_updates: k must be an int in [2, {len(tr) - 1}] (training tokens - 1); got "
            f"{k!r}."
        )
    alphas_arr = np.asarray(alphas, dtype=np.float64)
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    norms: dict[str, float] = {}
    rng = np.random.default_rng(seed)
    with progress_for(progress, "layer pairs", len(pairs)) as advance:
        for a, b in pairs:
            metrics[b], norms[b] = _one_pair(hidden, a, b, n, d, pairs[0][0], tr, te, maps,
                                             rank, k, pca_k, alphas_arr, n_select, rng)
            advance(1)
    return LayerUpdatesResult(pairs=list(pairs), metrics=metrics, n_train=len(tr),
                              n_test=len(te), rank=rank, k=k, pca_k=pca_k,
                              update_norm_median=norms)


def _one_pair(hidden: Mapping[str, Any], a: str, b: str, n: int, d: int, ref: str,
              tr: np.ndarray, te: np.ndarray, maps: Sequence[str], rank: int, k: int,
              pca_k: int, alphas_arr: np.ndarray, n_select: int,
              rng: np.random.Generator) -> tuple[dict[str, dict[str, float]], float]:
    """Every map's held-out metrics for one (earlier, later) pair, and the median update norm."""
    from repscope.align import LinearMap

    h = _as_matrix(hidden[a], a)
    h_next = _as_matrix(hidden[b], b)
    if h.shape != (n, d) or h_next.shape != (n, d):
        raise RepscopeValueError(
            f"layer_updates: every layer must be ({n}, {d}) like {ref!r}; got "
            f"{h.shape} for {a!r} and {h_next.shape} for {b!r}."
        )
    u = h_next - h
    h_tr, u_tr, h_te, u_te = h[tr], u[tr], h[te], u[te]
    preds: dict[str, np.ndarray] = {}
    need_global = "global" in maps or "lowrank" in maps
    if "mean" in maps:
        preds["mean"] = np.broadcast_to(u_tr.mean(0), u_te.shape).copy()
    if need_global:
        lm = LinearMap().fit(h_tr, u_tr)
        W, mx, my = lm.weight_, lm.mean_x_, lm.mean_y_
        if "global" in maps:
            preds["global"] = (h_te - mx) @ W + my
        if "lowrank" in maps:
            vr = _top_right_vectors((h_tr - mx) @ W, rank)
            preds["lowrank"] = (h_te - mx) @ (W @ vr) @ vr.T + my
    if "diagonal" in maps:
        mh, mu = h_tr.mean(0), u_tr.mean(0)
        hc, uc = h_tr - mh, u_tr - mu
        var = (hc * hc).mean(0)
        slope = (hc * uc).mean(0) / np.maximum(var + 1e-6 * var.mean(), 1e-300)
        preds["diagonal"] = (h_te - mh) * slope + mu
    if "knn" in maps:
        from repscope._kernels.knn import knn_search

        sel = rng.choice(len(tr), size=min(n_select, len(tr)), replace=False)
        gram = h_tr @ h_tr.T
        near = np.asarray(knn_search(h_tr[sel], h_tr, k + 1, metric="cosine").indices)
        # leave-one-out: a training token's own row never enters its neighbourhood
        loo = np.stack([row[row != i][:k] for row, i in zip(near, sel)])
        val = _local_predict(u_tr, gram, gram[sel], loo, alphas_arr)
        err = ((val - u_tr[sel][None]) ** 2).sum(axis=(1, 2))
        best = alphas_arr[int(np.argmin(err))]
        idx = np.asarray(knn_search(h_te, h_tr, k, metric="cosine").indices)
        preds["knn"] = _local_predict(u_tr, gram, h_te @ h_tr.T, idx, np.array([best]))[0]
    return ({m: _metrics(u_te, preds[m], pca_k) for m in maps},
            float(np.median(np.linalg.norm(u_te, axis=1))))
