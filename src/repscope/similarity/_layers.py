"""Layer x layer (and model x model) similarity matrices with per-layer reuse.

:func:`compare_layers` fills ``M[i, j] = m(A_i, B_j)`` for every layer ``A_i`` of one source and
``B_j`` of another (or of the same source), where a source is a
:class:`~repscope.store.FeatureStore` (streamed), a mapping ``name -> array`` or a sequence of
arrays. A mapping of *models* (one layer each) gives a model x model matrix.

Per-layer work is done once:

* ``"linear_cka"`` streams every layer once in row batches and accumulates, in float64 about a
  per-layer shift, one cross-scatter block per layer pair (the whole matrix is one
  ``X_all^T Y_all`` product per batch; for ``A`` vs ``A`` only the upper triangle, through a
  symmetric rank-k update). Self terms ``||X_i~^T X_i~||_F`` are shared by every pair in a row or
  column. When the blocks exceed ``max_memory`` the rows are split into groups, one pass each.
* ``"mutual_knn"``, ``"knn_jaccard"``, ``"cknna"`` compute each layer's kNN graph (and CKNNA
  self term) once; a pair then costs ``O(n k^2)``. (CKNNA is not exactly symmetric, so both
  triangles are computed.)
* any other measure is called per pair (half of the pairs when comparing a source with itself
  and the measure is symmetric).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from repscope._array import as_float64_numpy, to_numpy
from repscope._validation import check_choice, check_features, check_positive_int
from repscope.exceptions import RepscopeValueError
from repscope.results import RecordedResult, make_record
from repscope.similarity._measures._common import pow2_exponent

if TYPE_CHECKING:
    from repscope.db import Record
    from repscope.distributed import DistContext

__all__ = ["LayerMatrix", "LayerMatrixResult", "compare_layers"]

_SYMMETRIC = {"linear_cka", "mutual_knn", "knn_jaccard"}
_KNN = {"mutual_knn", "knn_jaccard", "cknna"}
_FAST = _SYMMETRIC | _KNN


@dataclass(frozen=True)
class LayerMatrixResult(RecordedResult):
    """A layers x layers (or models x models) similarity matrix.

    Attributes
    ----------
    values : ndarray of shape (n_rows, n_cols)
        ``values[i, j] = measure(rows[i], cols[j])``.
    rows, cols : tuple of str
        Layer (or model) names of the two sources.
    measure : str
    higher_is_better : bool
    symmetric : bool
        True when a source was compared with itself by a symmetric measure.
    n_samples : int
    best_matches : tuple of (row, col, value)
        For each row, the best-matching column (excluding the diagonal when ``symmetric``).
    """

    analysis: ClassVar[str] = "similarity_matrix"

    values: np.ndarray
    rows: tuple[str, ...]
    cols: tuple[str, ...]
    measure: str
    higher_is_better: bool
    symmetric: bool
    n_samples: int
    best_matches: tuple[tuple[str, str, float], ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``similarity_matrix`` record: the matrix, its row/column layers, the measure's
        direction and the best matches."""
        return [("", {"matrix": self.values, "rows": list(self.rows), "cols": list(self.cols),
                      "measure": self.measure, "higher_is_better": self.higher_is_better,
                      "symmetric": self.symmetric, "n_samples": self.n_samples,
                      "best_matches": [list(b) for b in self.best_matches]})]

    def to_records(
        self,
        *,
        model: str = "",
        dataset: str = "",
        layer: str = "",
        run_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        model_a: str = "",
        model_b: str = "",
        stats: Sequence[Mapping[str, Any]] = (),
    ) -> list[Record]:
        """The ``similarity_matrix`` record with the two sources' names and ``stats``
        (permutation/bootstrap figures of the best-matching pairs, one mapping per pair with
        its ``row`` and ``col``). ``model`` defaults to ``"A vs B"``, or ``A`` when a source
        was compared with itself."""
        if not model:
            model = model_a if model_a == model_b or not model_b else f"{model_a} vs {model_b}"
        return [make_record(self.analysis,
                            {**values, "model_a": model_a, "model_b": model_b,
                             "stats": [dict(x) for x in stats]},
                            model=model, dataset=dataset, layer=layer, run_id=run_id,
                            params={"measure": self.measure, **dict(params or {})})
                for _, values in self.record_rows()]

    def top_pairs(self, n: int = 5) -> list[tuple[str, str, float]]:
        """The ``n`` best (row, col, value) pairs overall (upper triangle when symmetric)."""
        v = self.values.astype(np.float64).copy()
        bad = -np.inf if self.higher_is_better else np.inf
        if self.symmetric:
            v[np.tril_indices_from(v)] = bad
        flat = np.argsort(-v if self.higher_is_better else v, axis=None, kind="stable")
        out = []
        for f in flat[: int(n)]:
            i, j = np.unravel_index(int(f), v.shape)
            if v[i, j] == bad:
                break
            out.append((self.rows[i], self.cols[j], float(self.values[i, j])))
        return out


#: The former name of :class:`LayerMatrixResult` (kept for one release).
LayerMatrix = LayerMatrixResult


# --------------------------------------------------------------------------- sources
class _Source:
    """The layers of one side of :func:`compare_layers`, through a
    :class:`~repscope.store.LayerSource`: ragged token layers are refused unless the caller
    opened the source with a pooling; every layer must be one vector per sample."""

    def __init__(self, src: Any, layers: Sequence[str] | None, name: str) -> None:
        from repscope.store._layers import layer_source, ragged_error

        self.src = layer_source(src, layers, pooling="error", name=name, caller="compare_layers")
        names = list(self.src.layers)
        if not names:
            raise RepscopeValueError(f"{name} must hold at least one layer; got none.")
        self.names = names
        self.n = self.src.n_samples
        self.arrays: dict[str, Any] = {}
        for k in names:
            shape = self.src.shape(k)
            if self.src.is_ragged(k) and self.src.pooling == "none":
                raise ragged_error(k, self.src.description, "compare_layers")
            if len(shape) > 1 and not self.src.is_ragged(k):
                raise RepscopeValueError(
                    f"layer {k!r} has per-sample shape {shape}; compare_layers needs 1-D "
                    "features per sample (flatten or pool first)."
                )
            if self.src.in_memory:
                self.arrays[k] = check_features(self.src.read(k), name=f"{name}[{k!r}]",
                                                min_samples=3)
        self.widths = [self.src.width(k) for k in names]

    def read(self, layer: str) -> Any:
        if layer in self.arrays:
            return self.arrays[layer]
        return check_features(self.src.read(layer), name=layer, min_samples=3)

    def batches(self, layers: Sequence[str], batch_size: int, rows: _Rows) -> Iterator[list[np.ndarray]]:
        """``layers`` over the paired rows ``rows.start:rows.stop``, ``batch_size`` at a
        time: this source's own rows in order, or its rows ``rows.order[start:stop]``."""
        if rows.order is None:
            its = [self.src.iter_batches(lay, batch_size, start=rows.start, stop=rows.stop)
                   for lay in layers]
            for parts in zip(*its, strict=True):
                yield [as_float64_numpy(to_numpy(p)) for p in parts]
            return
        for a in range(rows.start, rows.stop, batch_size):
            idx = rows.order[a:min(a + batch_size, rows.stop)]
            yield [as_float64_numpy(to_numpy(
                self.arrays[lay][idx] if lay in self.arrays else self.src.read_rows(lay, idx)))
                for lay in layers]


@dataclass(frozen=True)
class _Rows:
    """Which paired rows a pass reads: ``start:stop`` of the paired order, where a source's
    row ``order[i]`` (None: row ``i``) is paired row ``i``."""

    start: int
    stop: int
    order: np.ndarray | None = None

    def head(self, k: int) -> _Rows:
        """The first ``k`` paired rows of the whole source (the same on every rank)."""
        return _Rows(0, k, self.order)


# --------------------------------------------------------------------------- linear CKA
def _fro2(a: np.ndarray) -> float:
    return float(np.einsum("ij,ij->", a, a))


def _rescaled(parts: list[np.ndarray], exps: list[int]) -> list[np.ndarray]:
    return [p if e == 0 else np.ldexp(p, -e) for p, e in zip(parts, exps, strict=True)]


def _reference(src: _Source, layers: Sequence[str], batch_size: int,
               rows: _Rows) -> tuple[list[int], list[np.ndarray]]:
    """Per-layer powers of two and shifts, from the first batch of the whole (paired) source.

    Linear CKA is invariant to a per-layer scale; the power brings a layer of extreme magnitude
    (1e-100, 1e76) near 1, so its products neither underflow nor overflow (a no-op otherwise).
    The shift (the rescaled first batch's mean) is what the sums are accumulated about. Every
    pass and every rank reads the same first batch, hence the same powers and shifts, so the
    ranks' sums add up to the one-process sums.
    """
    head = rows.head(min(batch_size, src.n))
    parts = next(iter(src.batches(layers, batch_size, head)))
    exps = [pow2_exponent(p) for p in parts]
    return exps, [p.mean(axis=0) for p in _rescaled(parts, exps)]


def _cka_matrix(
    sa: _Source, sb: _Source | None, batch_size: int, max_memory: int, products: str,
    order_b: np.ndarray | None = None, dist: DistContext | None = None,
) -> np.ndarray:
    """The linear-CKA matrix, streamed. ``order_b``: B's row paired with each row of A
    (None: row by row). With a multi-rank ``dist`` every rank streams its contiguous share of
    the paired rows and the float64 sums are added across ranks before centring."""
    from repscope.distributed import DistContext

    dist = dist or DistContext()
    same = sb is None
    sy = sa if sb is None else sb
    wa, wb = np.array(sa.widths), np.array(sy.widths)
    oa, ob = np.concatenate([[0], np.cumsum(wa)]), np.concatenate([[0], np.cumsum(wb)])
    La, Lb = len(wa), len(wb)
    # group rows of the matrix so that each group's accumulator fits in max_memory
    groups: list[list[int]] = []
    cur: list[int] = []
    cur_bytes = 0
    for i in range(La):
        cols = int(ob[-1] - (oa[i] if same else 0))
        b = int(wa[i]) * cols * 8
        if cur and cur_bytes + b > max_memory:
            groups.append(cur)
            cur, cur_bytes = [], 0
        cur.append(i)
        cur_bytes += b
    groups.append(cur)
    n = sa.n
    start, stop = dist.share(n)
    rows_a, rows_b = _Rows(start, stop), _Rows(start, stop, order_b)
    cross = np.zeros((La, Lb))
    self_a, self_b = np.zeros(La), np.zeros(Lb)
    for gi, g in enumerate(groups):
        c0, c1 = int(oa[g[0]]), int(oa[g[-1] + 1])
        y0 = c0 if same else 0
        acc = np.zeros((c1 - c0, int(ob[-1]) - y0))
        s1a = np.zeros(int(oa[-1]))
        s1b = np.zeros(int(ob[-1]))
        selfb_acc = [np.zeros((int(w), int(w))) for w in wb] if (not same and gi == 0) else None
        selfa_acc = None if same else [np.zeros((int(wa[i]), int(wa[i]))) for i in g]
        a_layers = [sa.names[i] for i in g] if not same else list(sa.names)
        exps_a, shift_a = _reference(sa, a_layers, batch_size, rows_a)
        it_a = (_rescaled(p, exps_a) for p in sa.batches(a_layers, batch_size, rows_a))
        it_b = None
        if not same:
            exps_b, shift_b = _reference(sy, sy.names, batch_size, rows_b)
            it_b = (_rescaled(p, exps_b) for p in sy.batches(sy.names, batch_size, rows_b))
        for parts_a in it_a:
            Xc = np.concatenate([p - s for p, s in zip(parts_a, shift_a, strict=True)], axis=1)
            if same:
                s1a += Xc.sum(axis=0)
                Xp = Xc.astype(np.float32) if products == "float32" else Xc
                Xg = Xp[:, c0:c1]
                acc += Xp.T @ Xp if (c0 == 0 and c1 == Xp.shape[1]) else Xg.T @ Xp[:, y0:]
                continue
            assert it_b is not None
            parts_b = next(it_b)
            Yc = np.concatenate([p - s for p, s in zip(parts_b, shift_b, strict=True)], axis=1)
            s1a[c0:c1] += Xc.sum(axis=0)
            s1b += Yc.sum(axis=0)
            if products == "float32":
                Xc, Yc = Xc.astype(np.float32), Yc.astype(np.float32)
            acc += Xc.T @ Yc
            assert selfa_acc is not None
            for t, i in enumerate(g):
                blk = Xc[:, int(oa[i] - c0):int(oa[i + 1] - c0)]
                selfa_acc[t] += blk.T @ blk
            if selfb_acc is not None:
                for j in range(Lb):
                    blk = Yc[:, int(ob[j]):int(ob[j + 1])]
                    selfb_acc[j] += blk.T @ blk
        if dist.is_distributed:  # every rank's sums, about the same shifts, added up
            acc, s1a, s1b = (dist.all_sum(x, "adding the linear-CKA sums")
                             for x in (acc, s1a, s1b))
            if selfa_acc is not None:
                selfa_acc = [dist.all_sum(x, "adding the linear-CKA sums") for x in selfa_acc]
            if selfb_acc is not None:
                selfb_acc = [dist.all_sum(x, "adding the linear-CKA sums") for x in selfb_acc]
        mu_a = s1a / n
        if same:
            # centre the accumulated blocks: S - s1_i s1_j^T / n (upper triangle of blocks)
            for i in g:
                ri = slice(int(oa[i] - c0), int(oa[i + 1] - c0))
                for j in range(i, La):
                    cj = slice(int(ob[j] - y0), int(ob[j + 1] - y0))
                    blk = acc[ri, cj] - n * np.outer(mu_a[oa[i]:oa[i + 1]], mu_a[ob[j]:ob[j + 1]])
                    cross[i, j] = _fro2(blk)
                    if i == j:
                        self_a[i] = np.sqrt(cross[i, i])
        else:
            mu_b = s1b / n
            for t, i in enumerate(g):
                ri = slice(int(oa[i] - c0), int(oa[i + 1] - c0))
                mi = mu_a[oa[i]:oa[i + 1]]
                for j in range(Lb):
                    blk = acc[ri, int(ob[j]):int(ob[j + 1])] - n * np.outer(
                        mi, mu_b[ob[j]:ob[j + 1]])
                    cross[i, j] = _fro2(blk)
                assert selfa_acc is not None
                self_a[i] = np.sqrt(_fro2(selfa_acc[t] - n * np.outer(mi, mi)))
            if selfb_acc is not None:
                for j in range(Lb):
                    mj = mu_b[ob[j]:ob[j + 1]]
                    self_b[j] = np.sqrt(_fro2(selfb_acc[j] - n * np.outer(mj, mj)))
    if same:
        cross = np.triu(cross) + np.triu(cross, 1).T
        self_b = self_a
    den = np.outer(self_a, self_b)
    if (den <= 0).any():
        bad = [sa.names[i] for i in range(La) if self_a[i] <= 0] + [
            sy.names[j] for j in range(Lb) if self_b[j] <= 0]
        raise RepscopeValueError(
            f"linear CKA is undefined for constant layers (zero variance): {bad}."
        )
    out = np.clip(cross / den, 0.0, 1.0)
    if same:
        np.fill_diagonal(out, 1.0)
    return out


# --------------------------------------------------------------------------- kNN measures
def _knn_matrix(
    sa: _Source, sb: _Source | None, name: str, opts: dict[str, Any], symmetric: bool
) -> np.ndarray:
    from repscope.similarity import _knn_measures as km

    k_opt = opts.pop("k", None)
    metric = str(opts.pop("metric", "cosine"))
    block_size = int(opts.pop("block_size", 4096))
    unbiased = bool(opts.pop("unbiased", True))
    if opts:
        raise RepscopeValueError(f"unexpected options for {name!r}: {sorted(opts)}.")
    n = sa.n
    k = km._check_k(k_opt, n, "compare_layers", min_k=2 if name == "cknna" else 1)

    def graphs(src: _Source) -> list[Any]:
        return [km._graph(src.read(lay), k, metric, block_size) for lay in src.names]

    ga = graphs(sa)
    gb = ga if sb is None else graphs(sb)
    if name == "cknna":
        selfs_a = [km._cknna_self(g, n, unbiased) for g in ga]
        selfs_b = selfs_a if sb is None else [km._cknna_self(g, n, unbiased) for g in gb]

        def pair(i: int, j: int) -> float:
            return km._cknna_from(ga[i], gb[j], n, unbiased, selfs_a[i], selfs_b[j])
    elif name == "mutual_knn":
        def pair(i: int, j: int) -> float:
            return km._mutual_knn_from(ga[i], gb[j])
    else:
        def pair(i: int, j: int) -> float:
            return km._jaccard_from(ga[i], gb[j])
    return _fill(len(ga), len(gb), pair, symmetric)


def _fill(La: int, Lb: int, pair: Callable[[int, int], float], symmetric: bool) -> np.ndarray:
    out = np.empty((La, Lb))
    for i in range(La):
        for j in range(i if symmetric else 0, Lb):
            out[i, j] = pair(i, j)
            if symmetric:
                out[j, i] = out[i, j]
    return out


# --------------------------------------------------------------------------- public API
def compare_layers(
    A: Any,
    B: Any = None,
    measure: str | Callable[..., float] = "linear_cka",
    *,
    layers_a: Sequence[str] | None = None,
    layers_b: Sequence[str] | None = None,
    symmetric: bool | None = None,
    batch_size: int = 4096,
    max_memory: int = 1 << 30,
    products: Literal["float64", "float32"] = "float64",
    pair_by: Literal["id", "position"] = "id",
    dist: DistContext | None = None,
    **opts: Any,
) -> LayerMatrixResult:
    """Similarity of every layer of ``A`` with every layer of ``B`` (or of ``A`` itself).

    ``A`` and ``B`` are paired by sample id when both have ids (stores with an ``id`` column):
    the same ids in another order are reordered to ``A``'s order, different sets are an error
    (``pair_by="position"`` pairs rows by position instead); see
    :func:`repscope.store.pair_sources`. What was done is in ``details["pairing"]``.

    Parameters
    ----------
    A : FeatureStore, LayerSource, path, mapping of str to array, or sequence of arrays
        Per-layer features of shape (n_samples, d_layer), same samples in every layer. A
        mapping of model names to one layer each gives a model x model matrix. Anything
        :func:`~repscope.store.open_layers` opens is accepted; ragged token layers need a
        LayerSource opened with a pooling (``open_layers(store, pooling="mean")``).
    B : same kinds as ``A``, optional
        The second source (same samples, same order). ``None`` compares ``A`` with itself.
    measure : str or callable, default="linear_cka"
        ``"linear_cka"``, ``"mutual_knn"``, ``"knn_jaccard"``, ``"cknna"`` take the fast paths
        above; any other registered name or callable ``m(X, Y, **opts)`` is called per pair.
    layers_a, layers_b : sequence of str, optional
        Subsets (and order) of layers; default all.
    symmetric : bool, optional
        Whether ``m(X, Y) == m(Y, X)``, used to halve the work when ``B`` is ``None``. Default:
        the registry's ``symmetric`` metadata (a callable's ``symmetric`` attribute, else
        False).
    batch_size : int, default=4096
        Rows per streamed batch (linear CKA).
    max_memory : int, default=1 GiB
        Budget in bytes for the float64 linear-CKA accumulators; beyond it the rows are split
        into groups and the sources are streamed once per group.
    products : {"float64", "float32"}, default="float64"
        Precision of the per-batch matrix products of linear CKA. ``"float32"`` (about 2x
        faster) multiplies the centred batches in float32 and still adds each batch's product
        into float64 accumulators; values then agree with float64 to about 1e-6.
    dist : DistContext, optional
        The ranks to share the work with (:func:`repscope.distributed.context`); default one
        process. With several ranks each streams only its contiguous share of the paired rows
        (a reordered ``B`` is read row by row, never whole) and the float64 sums are added
        across ranks, so every rank returns the one-process matrix. Only ``"linear_cka"``
        without options is a sum over rows; other measures refuse.
    **opts
        Measure options (``k``, ``metric``, ``unbiased`` for the kNN measures).

    Returns
    -------
    LayerMatrix

    Raises
    ------
    UnknownNameError
        A name in ``layers_a``/``layers_b`` is not a layer of its source.
    RepscopeValueError
        Different numbers of samples; ragged (unpooled) or constant layers.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 8))
    >>> m = compare_layers({"a": X, "b": X @ rng.standard_normal((8, 8)), "c": X ** 2})
    >>> m.values.shape, float(m.values[0, 0])
    ((3, 3), 1.0)
    """
    from repscope.similarity._stats import _is_symmetric, _resolve

    caller = "compare_layers"
    batch_size = check_positive_int(batch_size, "batch_size", caller=caller)
    max_memory = check_positive_int(max_memory, "max_memory", caller=caller)
    products = check_choice(products, "products", ("float64", "float32"),  # type: ignore[assignment]
                            caller=caller)
    same = B is None or B is A
    name, fn, hib = _resolve(measure, caller)
    builtin = isinstance(measure, str) and name in _FAST
    streamed = builtin and name == "linear_cka" and not opts
    if dist is not None and dist.is_distributed and not streamed:
        raise RepscopeValueError(
            f"{caller}: measure {name!r}{' with options' if opts else ''} needs every row at "
            f"once and runs on one process; on {dist.world_size} ranks only 'linear_cka' "
            "(without options) runs, from sums over each rank's rows.")
    sa = _Source(A, layers_a, "A")
    sb = None if same and layers_b is None else _Source(A if B is None else B, layers_b, "B")
    pairing = ""
    order_b = None
    if sb is not None and not same:
        from repscope.store import pair_sources
        from repscope.store._layers import pairing_order

        if streamed:  # B's rows are read in the paired order, batch by batch
            order_b, pairing = pairing_order(sa.src, sb.src, by=pair_by, caller=caller)
        else:
            _, paired, pairing = pair_sources(sa.src, sb.src, by=pair_by, caller=caller)
            if paired is not sb.src:
                sb = _Source(paired, None, "B")
    if symmetric is None:
        symmetric = (builtin and name in _SYMMETRIC) or _is_symmetric(measure)
    use_sym = sb is None and bool(symmetric)
    if streamed:
        values = _cka_matrix(sa, sb, batch_size, max_memory, products, order_b, dist)
        use_sym = sb is None
    elif builtin and name in _KNN:
        values = _knn_matrix(sa, sb, name, dict(opts), use_sym)
    else:
        sy = sa if sb is None else sb
        cache_a = {lay: sa.read(lay) for lay in sa.names}
        cache_b = cache_a if sb is None else {lay: sy.read(lay) for lay in sy.names}

        def pair(i: int, j: int) -> float:
            return float(fn(cache_a[sa.names[i]], cache_b[sy.names[j]], **opts))

        values = _fill(len(sa.names), len(sy.names), pair, use_sym)
    cols = tuple(sa.names if sb is None else sb.names)
    rows = tuple(sa.names)
    best = []
    for i, r in enumerate(rows):
        v = values[i].astype(np.float64).copy()
        if sb is None and len(cols) > 1:
            v[i] = -np.inf if hib else np.inf
        j = int(np.argmax(v) if hib else np.argmin(v))
        best.append((r, cols[j], float(values[i, j])))
    return LayerMatrixResult(
        values=values, rows=rows, cols=cols, measure=name, higher_is_better=hib,
        symmetric=use_sym, n_samples=sa.n, best_matches=tuple(best),
        details={"options": dict(opts), "pairing": pairing},
    )
