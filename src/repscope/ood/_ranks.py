"""OOD detectors under ``torchrun``: the detectors fitted from class moments, each rank
reading only its share of the rows.

The protocol is :func:`~repscope.ood.evaluate_detectors`'s: the ID samples are split into a
fit and a held-out part by the same seeded, stratified rule (every rank draws the same split
from the global labels, which are small). Each rank reads its contiguous block of every layer
(:meth:`~repscope.distributed.DistContext.share`), accumulates the labelled
:class:`~repscope.stats.Moments` of its fit rows and all-reduces them, so every rank fits the
same detector (class means, tied or per-class covariances); each rank then scores its own
held-out ID and OOD rows, and the scores (``n`` floats) are gathered in rank order, which is
the input order, so AUROC, FPR at a TPR, histograms and ROC points are those of one process.

Detectors that need every training row (kNN), a fitted probe (logit-based, ViM) or every
layer at once (``multilayer_mahalanobis``), and the PT-OOD diagnostics (a cross-validated
probe) run on one process: :func:`check_rank_detectors` names them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from repscope.exceptions import RepscopeError, RepscopeValueError

if TYPE_CHECKING:
    from repscope.distributed import DistContext
    from repscope.ood._evaluate import OODLayersResult

__all__ = ["RANK_DETECTORS", "check_rank_detectors", "evaluate_detectors_ranks"]

#: Detectors fitted exactly from all-reduced class moments.
RANK_DETECTORS: tuple[str, ...] = ("mahalanobis", "relative_mahalanobis", "gmm")


def check_rank_detectors(detectors: Sequence[str] | None, *, diagnostics: bool,
                         world_size: int = 2) -> None:
    """Refuse on several ranks what needs every row at once: the default detector set, any
    detector outside :data:`RANK_DETECTORS`, and the PT-OOD diagnostics. One line naming
    what does run."""
    from repscope.ood._registry import detector_info

    if detectors is None or not len(detectors):
        bad = ["the default detector set (kNN and probe-based detectors included)"]
    else:
        bad = [f"--detector {d}" for d in dict.fromkeys(detectors)
               if detector_info(d).name not in RANK_DETECTORS]
    if diagnostics:
        bad.append("the PT-OOD diagnostics (pass --no-diagnostics)")
    if bad:
        raise RepscopeValueError(
            f"repscope ood: {' and '.join(bad)} needs every row at once and runs on one "
            f"process; launch without torchrun, or on {world_size} ranks pass --no-diagnostics "
            f"and --detector with the detectors fitted from class moments "
            f"({', '.join(RANK_DETECTORS)}).")


def _block(src: Any, layer: str, a: int, b: int) -> np.ndarray:
    """Rows ``a:b`` of a layer as float32 (n, width), as the one-process driver holds them."""
    parts = []
    for batch in src.iter_batches(layer, 4096, start=a, stop=b):
        arr = np.asarray(batch, dtype=np.float32)
        parts.append(arr.reshape(arr.shape[0], -1))
    if not parts:
        return np.zeros((0, int(src.width(layer))), dtype=np.float32)
    return np.concatenate(parts)


def _class_cov(template: Any) -> str:
    """The Moments a detector reads: pooled class statistics, or per-class covariances."""
    params = template.get_params()
    if params.get("feature_transform") is not None:
        raise RepscopeValueError(
            f"{type(template).__name__} with a feature transform does not fit from class "
            "moments; it runs on one process.")
    kind = params.get("covariance_type", "tied")
    return {"full": "full", "diag": "diag"}.get(kind, "none")


def evaluate_detectors_ranks(
    id_source: Any,
    ood_source: Any,
    *,
    id_rows: Any = None,
    ood_rows: Any = None,
    labels: Any = None,
    detectors: Sequence[str],
    level: Literal["all", "instance", "class"] = "all",
    id_test_fraction: float = 0.3,
    positive: Literal["ood", "id"] = "ood",
    tpr: float = 0.95,
    n_bins: int = 40,
    roc_points: int = 200,
    seed: int = 0,
    dist: DistContext | None = None,
) -> OODLayersResult:
    """:func:`~repscope.ood.evaluate_detectors` (without diagnostics) for the detectors in
    :data:`RANK_DETECTORS`, each rank reading only its share of the rows.

    Parameters
    ----------
    id_source, ood_source : LayerSource (:func:`repscope.store.open_layers`)
        May be the same source (one store split into ID and OOD rows).
    id_rows, ood_rows : array of int, optional
        Increasing row indices of the ID samples in ``id_source`` and of the OOD samples in
        ``ood_source`` (default: every row).
    labels : array-like of shape (n_id,), optional
        Class labels of the ID samples, in the order of ``id_rows``.
    detectors : sequence of str
        Names from :data:`RANK_DETECTORS`.
    level, id_test_fraction, positive, tpr, n_bins, roc_points, seed
        As in :func:`~repscope.ood.evaluate_detectors`.
    dist : DistContext, optional
        Default: :func:`repscope.distributed.context`.

    Returns
    -------
    OODLayersResult
        The same on every rank.
    """
    from sklearn.base import clone

    from repscope.distributed import context
    from repscope.ood._diagnostics import LEVELS, scoring_level
    from repscope.ood._evaluate import (
        OODDetectorScoresResult,
        OODLayersResult,
        _resolve_detectors,
        _split,
        scores_entry,
    )
    from repscope.ood._metrics import EmptyScoresError, roc_curve
    from repscope.stats import Moments

    ctx = dist if dist is not None else context()
    check_rank_detectors(detectors, diagnostics=False, world_size=ctx.world_size)
    if level not in ("all", *LEVELS):
        raise RepscopeValueError(f"level must be 'all', 'instance' or 'class'; got {level!r}.")
    if not 0.0 < id_test_fraction < 1.0:
        raise RepscopeValueError(
            f"id_test_fraction must be in (0, 1); got {id_test_fraction!r}.")
    templates = _resolve_detectors(list(detectors))
    if level != "all":
        templates = {k: v for k, v in templates.items() if scoring_level(k, v) == level}
        if not templates:
            raise RepscopeValueError(f"no selected detector scores at the {level!r} level.")
    n_src, n_osrc = int(id_source.n_samples), int(ood_source.n_samples)
    rows_id = np.arange(n_src) if id_rows is None else np.asarray(id_rows, dtype=np.int64)
    rows_ood = np.arange(n_osrc) if ood_rows is None else np.asarray(ood_rows, dtype=np.int64)
    n_id, n_ood = int(rows_id.size), int(rows_ood.size)
    if n_ood == 0:
        raise EmptyScoresError("the OOD features have no samples; give at least one OOD "
                               "sample.")
    y = None if labels is None else np.asarray(labels).ravel()
    if y is not None and y.size != n_id:
        raise RepscopeValueError(
            f"labels must have one value per ID sample; got {y.size} labels for {n_id} ID "
            "samples.")
    fit_idx, test_idx = _split(n_id, y, id_test_fraction, seed)
    if test_idx.size == 0 or fit_idx.size == 0:
        raise EmptyScoresError(
            f"the held-out ID part is empty ({n_id} ID samples, id_test_fraction="
            f"{id_test_fraction}); give more ID samples.")
    labelled = y is not None
    covs = {name: _class_cov(t) for name, t in templates.items()}
    # this rank's ID positions (into rows_id) and OOD positions, from its block of each source
    a, b = ctx.share(n_src)
    p0, p1 = np.searchsorted(rows_id, [a, b])
    c, d = ctx.share(n_osrc)
    q0, q1 = np.searchsorted(rows_ood, [c, d])
    is_fit = np.zeros(n_id, dtype=bool)
    is_fit[fit_idx] = True
    local = np.arange(p0, p1)
    fit_local, test_local = local[is_fit[local]], local[~is_fit[local]]
    names = list(id_source.layers)
    entries: list[OODDetectorScoresResult] = []
    for layer in names:
        if int(id_source.width(layer)) != int(ood_source.width(layer)):
            raise RepscopeValueError(
                f"layer {layer!r} has {id_source.width(layer)} features on the ID side and "
                f"{ood_source.width(layer)} on the OOD side; give features of the same layers.")
        block = _block(id_source, layer, a, b)
        A = block[rows_id[p0:p1] - a]
        oblock = block if ood_source is id_source else _block(ood_source, layer, c, d)
        B = oblock[rows_ood[q0:q1] - c]
        Xf, Xt = A[fit_local - p0], A[test_local - p0]
        moments: dict[str, Any] = {}
        if labelled:
            assert y is not None
            for kind in sorted(set(covs.values())):
                m = Moments(class_cov=kind)  # type: ignore[arg-type]
                if Xf.shape[0]:
                    m.update(Xf, labels=y[fit_local])
                if ctx.is_distributed:
                    with ctx.collective(f"adding up the class moments of layer {layer!r}"):
                        m.all_reduce(ctx.group)
                moments[kind] = m
        local_scores: dict[str, Any] = {}
        seconds: dict[str, float] = {}
        for name, template in templates.items():
            if not labelled:
                continue
            t0 = time.perf_counter()
            det = clone(template)
            det.set_params(moments=moments[covs[name]])
            try:
                det.fit(None, None)
                local_scores[name] = tuple(
                    det.score_samples(X) if X.shape[0] else np.zeros(0) for X in (Xt, B))
            except RepscopeError as err:
                local_scores[name] = f"failed: {' '.join(str(err).split())}"
            seconds[name] = time.perf_counter() - t0
        gathered = ctx.all_gather((local_scores, seconds),
                                  what=f"gathering the OOD scores of layer {layer!r}")
        for name, template in templates.items():
            lvl = scoring_level(name, template)
            if not labelled:
                entries.append(OODDetectorScoresResult(
                    detector=name, layer=layer, level=lvl, metrics=None,
                    reason="needs class labels (none given)"))
                continue
            parts = [g[0][name] for g in gathered]
            failed = [p for p in parts if isinstance(p, str)]
            if failed:
                entries.append(OODDetectorScoresResult(detector=name, layer=layer, level=lvl,
                                                       metrics=None, reason=failed[0]))
                continue
            s_id = np.concatenate([np.asarray(p[0], dtype=np.float64) for p in parts])
            s_ood = np.concatenate([np.asarray(p[1], dtype=np.float64) for p in parts])
            entries.append(scores_entry(
                name, layer, lvl, s_id, s_ood, max(g[1][name] for g in gathered),
                positive=positive, tpr=tpr, n_bins=n_bins, roc_points=roc_points,
                roc=roc_curve))
    return OODLayersResult(
        layers=tuple(names), detectors=tuple(templates), entries=tuple(entries),
        n_id_fit=int(fit_idx.size), n_id_test=int(test_idx.size), n_ood=n_ood,
        positive=positive, tpr=tpr, diagnostics=None,
        meta={"id_test_fraction": id_test_fraction, "seed": seed, "level": level})
