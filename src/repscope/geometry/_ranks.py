"""The per-layer geometry driver under ``torchrun``: the measures that are exact functions of
sums over the rows, each rank reading only its share.

Every rank streams its contiguous block of rows (:meth:`~repscope.distributed.DistContext.share`)
once per layer into the accumulators the chosen measures need, adds them up over the ranks
(:meth:`~repscope.stats.Moments.all_reduce`, float64 :meth:`~repscope.distributed.DistContext.all_sum`)
and evaluates every measure on the global sums, so every rank returns the whole-store values:

- labelled :class:`~repscope.stats.Moments` (class counts and means, within/between scatter):
  ``fisher_ratio``, ``fisher_trace_ratio``, ``calinski_harabasz``, ``nc_variability``,
  ``nc_equinorm``, ``nc_equiangularity``, ``nc_max_angle``; the covariance spectrum:
  ``spectral_entropy``;
- Moments of the L2-normalised rows: ``coding_rate``, ``anisotropy``
  (:math:`\\|\\sum_i u_i\\|^2 - \\sum_i \\|u_i\\|^2` over :math:`n(n-1)`);
- per-class counts, sums and squared norms: ``alignment``, ``tolerance``;
- per-class ``d x d`` Grams of the normalised rows: ``rate_reduction`` and the coding-rate
  table (its shuffled-label baseline permutes the global labels with the same seed).

The measures that need every row at once (kNN, MST, silhouette, TwoNN, uniformity, ...)
and H0 persistence are not computed here: :func:`check_rank_measures` names them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from repscope._progress import ProgressLike, progress_for
from repscope.exceptions import RepscopeValueError
from repscope.geometry._inputs import BATCH, labels_for, normalize_rows
from repscope.geometry._registry import geometry_info, get_geometry_measure

if TYPE_CHECKING:
    from repscope.distributed import DistContext
    from repscope.geometry._layers import GeometryLayersResult

__all__ = ["RANK_MEASURES", "check_rank_measures", "geometry_layers_ranks"]

#: Measures computed from the (raw-row) labelled Moments by their registered function.
_FROM_MOMENTS = ("fisher_ratio", "fisher_trace_ratio", "calinski_harabasz", "nc_variability",
                 "nc_equinorm", "nc_equiangularity", "nc_max_angle")
#: Every measure that runs on several ranks (exact functions of sums over the rows).
RANK_MEASURES: tuple[str, ...] = (*_FROM_MOMENTS, "spectral_entropy", "coding_rate",
                                  "anisotropy", "alignment", "tolerance", "rate_reduction")


def check_rank_measures(measures: Sequence[str] | None, *, persistence: bool = False,
                        world_size: int = 2) -> None:
    """Refuse what needs every row at once on several ranks: the default measure set (it
    holds the kNN, MST and pairwise measures), any measure outside :data:`RANK_MEASURES`, and
    ``--persistence``. One line naming what does run."""
    if measures is None or not len(measures):
        bad = ["the default measure set (every measure, kNN and MST ones included)"]
    else:
        bad = [f"--measure {m}" for m in dict.fromkeys(measures) if m not in RANK_MEASURES]
    if persistence:
        bad.append("--persistence")
    if bad:
        raise RepscopeValueError(
            f"repscope geometry: {' and '.join(bad)} needs every row at once and runs on one "
            f"process; launch without torchrun, or on {world_size} ranks pass --measure with "
            f"the measures that are sums over the rows ({', '.join(RANK_MEASURES)}) and, if "
            "wanted, --coding-rate.")


def _opts(name: str, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**dict(geometry_info(name).get("defaults") or {}), **dict(extra or {})}


def _normalize_of(name: str, opts: Mapping[str, Any]) -> bool:
    return bool(opts.get("normalize", name in ("coding_rate", "rate_reduction", "anisotropy",
                                               "alignment", "tolerance")))


class _Sums:
    """The accumulators one layer needs, filled from this rank's rows, then all-reduced."""

    def __init__(self, codes: np.ndarray | None, n_classes: int, shuffled: np.ndarray | None,
                 *, raw: bool, unit: set[bool], class_sums: set[bool],
                 grams: set[bool]) -> None:
        from repscope.stats import Moments

        self.codes, self.K, self.shuffled = codes, n_classes, shuffled
        self.raw = Moments(class_cov="none") if raw else None
        self.unit = {f: Moments(class_cov="none") for f in unit}
        self.class_sums: dict[bool, list[Any]] = {
            f: [np.zeros(n_classes), None, np.zeros(n_classes)] for f in class_sums}
        self.grams: dict[tuple[bool, bool], np.ndarray | None] = {}
        for f in grams:
            self.grams[(f, False)] = None
            if shuffled is not None:
                self.grams[(f, True)] = None

    def update(self, b: np.ndarray, start: int, layer: str) -> None:
        if not np.all(np.isfinite(b)):
            raise RepscopeValueError(
                f"features of layer {layer!r} contain NaN or inf values; clean or drop those "
                "samples first.")
        stop = start + len(b)
        yb = None if self.codes is None else self.codes[start:stop]
        if self.raw is not None:
            self.raw.update(b, labels=yb)
        unit = normalize_rows(b) if (True in self.unit or True in self.class_sums
                                     or True in {f for f, _ in self.grams}) else None
        for f, m in self.unit.items():
            m.update(unit if f else b)
        for f, acc in self.class_sums.items():
            z = unit if f else b
            assert yb is not None and z is not None
            acc[0] += np.bincount(yb, minlength=self.K)
            s = np.zeros((self.K, z.shape[1]))
            np.add.at(s, yb, z)
            acc[1] = s if acc[1] is None else acc[1] + s
            acc[2] += np.bincount(yb, weights=np.einsum("ij,ij->i", z, z), minlength=self.K)
        for (f, shuf), G in self.grams.items():
            z = unit if f else b
            assert z is not None
            lab = (self.shuffled if shuf else self.codes)
            assert lab is not None
            lb = lab[start:stop]
            if G is None:
                G = np.zeros((self.K, z.shape[1], z.shape[1]))
                self.grams[(f, shuf)] = G
            for c in np.unique(lb):
                sel = z[lb == c]
                G[c] += sel.T @ sel

    def all_reduce(self, ctx: DistContext, width: int) -> None:
        if not ctx.is_distributed:
            for key, G in self.grams.items():
                if G is None:
                    self.grams[key] = np.zeros((self.K, width, width))
            for acc in self.class_sums.values():
                if acc[1] is None:
                    acc[1] = np.zeros((self.K, width))
            return
        with ctx.collective("adding up the geometry moments"):
            for m in [self.raw, *self.unit.values()]:
                if m is not None:
                    m.all_reduce(ctx.group)
        for acc in self.class_sums.values():
            if acc[1] is None:
                acc[1] = np.zeros((self.K, width))
            acc[0] = ctx.all_sum(acc[0], "adding up the class counts")
            acc[1] = ctx.all_sum(acc[1], "adding up the class sums")
            acc[2] = ctx.all_sum(acc[2], "adding up the class squared norms")
        for key, G in self.grams.items():
            self.grams[key] = ctx.all_sum(np.zeros((self.K, width, width)) if G is None else G,
                                          "adding up the class Grams")


def _class_pairs(acc: list[Any], caller: str) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                        float]:
    counts, sums, sq = acc
    pairs = float((counts * (counts - 1)).sum())
    if pairs == 0:
        raise RepscopeValueError(
            f"{caller} needs at least one class with two or more samples; every class has one "
            "sample.")
    return counts, sums, sq, pairs


def _spectral_entropy(m: Any, normalized: bool = False) -> float:
    from repscope.stats import pca_spectrum

    p = np.asarray(pca_spectrum(m).explained_variance_ratio)
    p = p[p > 0]
    if p.size == 0:
        raise RepscopeValueError(
            "spectral_entropy is undefined for features with no variance (every sample equal).")
    h = float(-(p * np.log(p)).sum())
    d = int(m.n_features)
    if normalized:
        return h / np.log(d) if d > 1 else 0.0
    return h


def _rates(sums: _Sums, unit: Any, normalize: bool, eps2: float,
           shuffled: bool = False) -> tuple[float, float, list[float]]:
    """``(R, R_c, per-class rates)`` from the global normalised Moments and class Grams."""
    from repscope.geometry._coding_rate import _rate_of

    n, d = unit.n, int(unit.n_features)
    R = _rate_of(n, d, unit.scatter() + n * np.outer(unit.mean, unit.mean), eps2)
    G = sums.grams[(normalize, shuffled)]
    lab = sums.shuffled if shuffled else sums.codes
    assert G is not None and lab is not None
    counts = np.bincount(lab, minlength=sums.K)
    per = [_rate_of(int(counts[c]), d, G[c].copy(), eps2) for c in range(sums.K)]
    Rc = float(sum(counts[c] / n * per[c] for c in range(sums.K)))
    return R, Rc, per


def geometry_layers_ranks(
    source: Any,
    labels: Any = None,
    measures: Sequence[str] | None = None,
    *,
    layers: Sequence[str] | None = None,
    coding_rate: bool = False,
    eps2: float = 0.5,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    dist: DistContext | None = None,
    progress: ProgressLike = False,
) -> GeometryLayersResult:
    """:func:`~repscope.geometry.geometry_layers` for the measures that are sums over the rows
    (:data:`RANK_MEASURES`), each rank reading only its share of every layer.

    Parameters
    ----------
    source : FeatureStore, LayerSource or mapping of str to array
    labels : array-like of shape (n_samples,), optional
        The labels of every sample (every rank holds all of them; they are small).
    measures : sequence of str
        Names from :data:`RANK_MEASURES` (the default set holds measures that need every row).
    layers : sequence of str, optional
    coding_rate : bool, default=False
        Also the coding-rate table of each layer (needs labels).
    eps2 : float, default=0.5
    options : mapping of str to mapping, optional
        Extra keyword options per measure.
    seed : int, default=0
        Seed of the coding-rate table's shuffled-label baseline.
    dist : DistContext, optional
        Default: :func:`repscope.distributed.context`.
    progress : bool or callable, default=False

    Returns
    -------
    GeometryLayersResult
        The same on every rank; ``n_pairwise`` is ``n_samples`` (no subsample).

    Raises
    ------
    RepscopeValueError
        A measure outside :data:`RANK_MEASURES` (:func:`check_rank_measures`), a measure that
        needs labels without them, no layers.
    """
    from repscope.distributed import context
    from repscope.geometry._coding_rate import CodingRateResult, _check_eps2
    from repscope.geometry._layers import (
        GeometryLayersResult,
        _check_measures,
        _source,
        measure_family,
    )

    ctx = dist if dist is not None else context()
    src = _source(source, layers)
    names = list(src.layers)
    if not names:
        raise RepscopeValueError("source has no layers to measure.")
    n = int(src.n_samples)
    y = None if labels is None else labels_for(labels, n, caller="geometry_layers",
                                              min_classes=2)
    check_rank_measures(measures, world_size=ctx.world_size)
    chosen = _check_measures(measures, y is not None)
    if coding_rate and y is None:
        raise RepscopeValueError("coding-rate tables need labels (--labels); none were given.")
    eps2 = _check_eps2(eps2, "coding_rate_table")
    opts = {m: _opts(m, (options or {}).get(m)) for m in chosen}
    classes, codes = (None, None) if y is None else np.unique(y, return_inverse=True)
    K = 0 if classes is None else int(classes.size)
    shuffled = None
    if coding_rate and codes is not None:
        shuffled = np.random.default_rng(seed).permutation(codes)
    raw = any(m in _FROM_MOMENTS or m == "spectral_entropy" for m in chosen)
    unit = {_normalize_of(m, opts[m]) for m in chosen
            if m in ("coding_rate", "anisotropy", "rate_reduction")}
    class_sums = {_normalize_of(m, opts[m]) for m in chosen if m in ("alignment", "tolerance")}
    grams = {_normalize_of(m, opts[m]) for m in chosen if m == "rate_reduction"}
    if coding_rate:
        unit.add(True)
        grams.add(True)
    a, b = ctx.share(n)
    values: list[tuple[float, ...]] = []
    widths: list[int] = []
    rates: list[Any] = []
    with progress_for(progress, "layers", len(names), prefix="geometry") as advance:
        for name in names:
            width = int(src.width(name))
            sums = _Sums(None if codes is None else codes.astype(np.int64), K, shuffled,
                         raw=raw, unit=unit, class_sums=class_sums, grams=grams)
            start = a
            for batch in src.iter_batches(name, BATCH, start=a, stop=b):
                arr = np.asarray(batch)
                arr = np.asarray(arr.reshape(arr.shape[0], -1), dtype=np.float64)
                sums.update(arr, start, name)
                start += len(arr)
            sums.all_reduce(ctx, width)
            row = []
            for m in chosen:
                o = dict(opts[m])
                f = _normalize_of(m, o)
                if m in _FROM_MOMENTS:
                    row.append(float(get_geometry_measure(m)(sums.raw, None, **o)))
                elif m == "spectral_entropy":
                    row.append(_spectral_entropy(sums.raw, bool(o.get("normalized", False))))
                elif m == "coding_rate":
                    o.pop("normalize", None)
                    row.append(float(get_geometry_measure(m)(sums.unit[f], None, normalize=f,
                                                             **o)))
                elif m == "anisotropy":
                    u = sums.unit[f]
                    s = u.n * u.mean
                    sq = float(np.trace(u.scatter())) + u.n * float(u.mean @ u.mean)
                    row.append(float((s @ s - sq) / (u.n * (u.n - 1.0))))
                elif m in ("alignment", "tolerance"):
                    counts, csum, csq, pairs = _class_pairs(sums.class_sums[f], m)
                    norms = np.einsum("kj,kj->k", csum, csum)
                    if m == "tolerance":
                        row.append(float((norms - csq).sum()) / pairs)
                    else:
                        total = float((2.0 * counts * csq - 2.0 * norms).sum())
                        row.append(max(total, 0.0) / pairs)
                else:  # rate_reduction
                    e = _check_eps2(o.get("eps2", 0.5), "rate_reduction")
                    R, Rc, _ = _rates(sums, sums.unit[f], f, e)
                    row.append(R - Rc)
            values.append(tuple(row))
            widths.append(width)
            if coding_rate:
                assert classes is not None and codes is not None
                R, Rc, per = _rates(sums, sums.unit[True], True, eps2)
                _, Rc_s, _ = _rates(sums, sums.unit[True], True, eps2, shuffled=True)
                counts = np.bincount(codes, minlength=K)
                rates.append(CodingRateResult(
                    rate=R, compressed_rate=Rc, rate_reduction=R - Rc,
                    rate_reduction_shuffled=R - Rc_s, class_rates=tuple(float(r) for r in per),
                    classes=tuple(str(c) for c in classes),
                    class_counts=tuple(int(c) for c in counts), eps2=eps2, n_samples=n,
                    n_features=width))
            advance(1)
    return GeometryLayersResult(
        layers=tuple(names), measures=tuple(chosen), values=tuple(values),
        families=tuple(measure_family(m) for m in chosen),
        higher_is_better=tuple(geometry_info(m)["higher_is_better"] for m in chosen),
        n_samples=n, n_pairwise=n, n_features=tuple(widths),
        coding_rates=tuple(rates) if coding_rate else None)
