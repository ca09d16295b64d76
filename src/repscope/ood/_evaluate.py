"""Evaluate OOD detectors per layer: fit on ID, score held-out ID and OOD, record the metrics.

Protocol (one per layer):

1. The ID samples are split once, stratified by label when there are labels, into a *fit*
   part (``1 - id_test_fraction``) and a held-out *test* part. Every detector is fitted on the
   fit part only; the metrics compare the held-out ID scores with the OOD scores (scoring the
   fitting samples would favour every detector that memorises them, kNN most).
2. Detectors that need logits get them from one :class:`~repscope.probe.LinearProbe` fitted
   on the fit part's features and labels (its ``decision_function``; a binary probe's single
   column becomes ``[0, z]``). Detectors whose needs are not met (labels, logits, non-negative
   features) are kept in the result with the reason instead of metrics.
3. Per detector and layer: :func:`~repscope.ood.ood_metrics`, score histograms of ID and OOD
   on shared bin edges chosen now (from the 1st to the 99th percentile of both score sets;
   scores outside fall into the end bins), and ROC points (at most ``roc_points``).
4. Optionally the PT-OOD diagnostics per layer (:mod:`repscope.ood._diagnostics`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from repscope.exceptions import RepscopeError, RepscopeValueError
from repscope.ood._diagnostics import LEVELS, OODDiagnosticsResult, scoring_level
from repscope.ood._metrics import OODMetricsResult, ood_metrics
from repscope.results import RecordedResult, Result

if TYPE_CHECKING:
    from repscope._progress import ProgressLike
    from repscope.db import Record

__all__ = ["ALL_LAYERS", "OODDetectorScoresResult", "OODLayersResult", "evaluate_detectors", "probe_logits"]


def probe_logits(probe: Any, X: Any) -> np.ndarray:
    """Logits of a fitted probe: ``decision_function(X)`` as (n, n_classes) float64; a binary
    probe's single decision column ``z`` becomes ``[0, z]``."""
    z = np.asarray(probe.decision_function(X), dtype=np.float64)
    z = z.reshape(z.shape[0], -1)
    return np.column_stack([np.zeros_like(z), z]) if z.shape[1] == 1 else z


@dataclass(frozen=True)
class OODDetectorScoresResult(Result):
    """One detector on one layer.

    Attributes
    ----------
    detector, layer : str
    level : {"instance", "class"}
        The detector's scoring level (:func:`~repscope.ood._diagnostics.scoring_level`).
    metrics : OODMetricsResult or None
        None when the detector was not run (``reason`` says why).
    hist_edges : tuple of float
        Shared bin edges of both histograms (``n_bins + 1``).
    hist_id, hist_ood : tuple of int
        Counts of held-out ID / OOD scores per bin (scores outside the edges are counted in
        the end bins).
    roc_fpr, roc_tpr : tuple of float
        ROC points under the metrics' ``positive`` convention.
    seconds : float
        Fit plus scoring time.
    reason : str
        Why there are no metrics ("" when there are).
    """

    detector: str
    layer: str
    level: str
    metrics: OODMetricsResult | None
    hist_edges: tuple[float, ...] = ()
    hist_id: tuple[int, ...] = ()
    hist_ood: tuple[int, ...] = ()
    roc_fpr: tuple[float, ...] = ()
    roc_tpr: tuple[float, ...] = ()
    seconds: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class OODLayersResult(RecordedResult):
    """Every detector on every layer (analysis ``ood``; diagnostics as ``ood_diagnostics``).

    Attributes
    ----------
    layers, detectors : tuple of str
    entries : tuple of OODDetectorScoresResult
        Layer-major: every detector of the first layer, then the next layer; detectors that
        combine all layers (``multilayer_mahalanobis``) last, on layer :data:`ALL_LAYERS`.
    n_id_fit, n_id_test, n_ood : int
    positive : str
    tpr : float
    diagnostics : OODDiagnosticsResult or None
    """

    analysis = "ood"

    layers: tuple[str, ...]
    detectors: tuple[str, ...]
    entries: tuple[OODDetectorScoresResult, ...]
    n_id_fit: int
    n_id_test: int
    n_ood: int
    positive: str
    tpr: float
    diagnostics: OODDiagnosticsResult | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def get(self, detector: str, layer: str) -> OODDetectorScoresResult:
        """The entry of ``detector`` on ``layer``."""
        for e in self.entries:
            if e.detector == detector and e.layer == layer:
                return e
        raise RepscopeValueError(f"no entry for detector {detector!r} on layer {layer!r}; "
                                 f"detectors: {', '.join(self.detectors)}; layers: "
                                 f"{', '.join(self.layers)}.")

    def table(self, metric: str = "auroc") -> dict[str, dict[str, float]]:
        """``{detector: {layer: value}}`` of one metric field (NaN where not run)."""
        out: dict[str, dict[str, float]] = {d: {} for d in self.detectors}
        for e in self.entries:
            out[e.detector][e.layer] = (float(getattr(e.metrics, metric)) if e.metrics
                                        else float("nan"))
        return out

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        rows = []
        for e in self.entries:
            values: dict[str, Any] = {"detector": e.detector, "level": e.level,
                                      "n_id_fit": self.n_id_fit, "n_id": self.n_id_test,
                                      "n_ood": self.n_ood, "positive": self.positive,
                                      "tpr": self.tpr, "seconds": e.seconds}
            if e.metrics is None:
                values["reason"] = e.reason
                for k in ("auroc", "aupr_in", "aupr_out", "fpr_at_tpr", "detection_error"):
                    values[k] = float("nan")
            else:
                m = e.metrics
                values.update(auroc=m.auroc, aupr_in=m.aupr_in, aupr_out=m.aupr_out,
                              fpr_at_tpr=m.fpr_at_tpr, detection_error=m.detection_error,
                              threshold=m.threshold, conventions=m.conventions,
                              hist_edges=list(e.hist_edges), hist_id=list(e.hist_id),
                              hist_ood=list(e.hist_ood), roc_fpr=list(e.roc_fpr),
                              roc_tpr=list(e.roc_tpr))
            rows.append((e.layer, values))
        return rows

    def to_records(self, *, model: str = "", dataset: str = "", layer: str = "",
                   run_id: str | None = None,
                   params: Mapping[str, Any] | None = None) -> list[Record]:
        """The ``ood`` records: one per detector and layer, ``params["detector"]`` naming the
        detector too. The diagnostics have their own:
        ``result.diagnostics.to_records(...)`` (analysis ``ood_diagnostics``);
        :meth:`all_records` gives both."""
        from repscope.results import make_record

        base = dict(params or {})
        return [make_record(self.analysis, values, model=model, dataset=dataset,
                            layer=row_layer or layer, run_id=run_id,
                            params={**base, "detector": values["detector"]})
                for row_layer, values in self.record_rows()]

    def all_records(self, **context: Any) -> list[Record]:
        """:meth:`to_records` plus the diagnostics' records (when computed)."""
        out = self.to_records(**context)
        if self.diagnostics is not None:
            out += self.diagnostics.to_records(**context)
        return out


# ---------------------------------------------------------------------------- the driver
def _histograms(a: np.ndarray, b: np.ndarray,
                n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    both = np.r_[a, b]
    lo, hi = (float(v) for v in np.percentile(both, [1.0, 99.0]))
    if not hi > lo:
        lo, hi = float(both.min()), float(both.max())
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, n_bins + 1)
    ha = np.histogram(np.clip(a, lo, hi), edges)[0]
    hb = np.histogram(np.clip(b, lo, hi), edges)[0]
    return edges, ha, hb


def _resolve_detectors(detectors: Any) -> dict[str, Any]:
    """name -> unfitted detector (a template cloned per layer)."""
    from repscope.ood._registry import get_detector, list_detectors

    if detectors is None:
        names = [d if isinstance(d, str) else getattr(d, "name", str(d))
                 for d in list_detectors()]
        return {n: get_detector(n) for n in names}
    if isinstance(detectors, str):
        detectors = [detectors]
    if isinstance(detectors, Mapping):
        return {str(k): (get_detector(v) if isinstance(v, str) else v)
                for k, v in detectors.items()}
    out: dict[str, Any] = {}
    for d in detectors:
        if isinstance(d, str):
            out[d] = get_detector(d)
        else:
            out[type(d).__name__.lower()] = d
    if not out:
        raise RepscopeValueError("detectors must name at least one detector; got none.")
    return out


def _needs(det: Any) -> frozenset[str]:
    return frozenset(getattr(det, "needs", frozenset()) or ())


def _split(n: int, y: np.ndarray | None, fraction: float,
           seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if y is None:
        perm = rng.permutation(n)
        k = max(1, round(fraction * n))
        return np.sort(perm[k:]), np.sort(perm[:k])
    test = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[: max(1, round(fraction * idx.size))] if idx.size > 1 else idx[:0])
    t = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(n), t), t


def _layer_array(X: Any) -> np.ndarray:
    A = np.asarray(X, dtype=np.float32)
    return A.reshape(A.shape[0], int(np.prod(A.shape[1:], dtype=np.int64)))


def evaluate_detectors(
    id_source: Any,
    ood_source: Any,
    *,
    labels: Any = None,
    detectors: Any = None,
    layers: str | Sequence[str] | None = None,
    level: Literal["all", "instance", "class"] = "all",
    id_test_fraction: float = 0.3,
    probe: Any = None,
    diagnostics: bool = True,
    positive: Literal["ood", "id"] = "ood",
    tpr: float = 0.95,
    n_bins: int = 40,
    roc_points: int = 200,
    confidence: float = 0.9,
    folds: int = 5,
    seed: int = 0,
    progress: ProgressLike = False,
) -> OODLayersResult:
    """Fit each detector on ID features and compare held-out ID scores with OOD scores.

    Parameters
    ----------
    id_source, ood_source : FeatureStore, path, mapping of str to array, array or LayerSource
        ID and OOD features with the same layers (anything :func:`repscope.store.open_layers`
        opens; a single array is one layer named ``""``).
    labels : array-like of shape (n_id,), optional
        ID class labels (detectors that need labels or logits are skipped without them).
    detectors : None, str, sequence of str or detectors, or mapping of str to detector
        Registered names (:func:`repscope.ood.list_detectors`), unfitted
        :class:`~repscope.ood.OODDetector` instances, or a mapping name -> either. Default:
        every registered detector.
    layers : str or sequence of str, optional
        Layers to evaluate (default: all of ``id_source``).
    level : {"all", "instance", "class"}, default="all"
        Instance-level detectors compare a sample with individual ID training samples (kNN);
        class-level ones use class statistics or the ID decision boundary. ``"instance"`` or
        ``"class"`` keeps only that family.
    id_test_fraction : float, default=0.3
        Share of the ID samples held out for scoring (stratified by label).
    probe : estimator, optional
        An unfitted classifier with ``decision_function`` for the logits (default:
        ``LinearProbe()``, its regularisation chosen on a holdout split).
    diagnostics : bool, default=True
        Also compute the PT-OOD diagnostics per layer.
    positive : {"ood", "id"}, default="ood"
        The positive class of FPR at ``tpr`` (:mod:`repscope.ood._metrics`).
    tpr : float, default=0.95
    n_bins : int, default=40
        Histogram bins per detector and layer.
    roc_points : int, default=200
        Most ROC points kept per detector and layer.
    confidence : float, default=0.9
        Max-softmax threshold of the "assigned with high confidence" diagnostic.
    folds : int, default=5
        Folds of the ID-vs-OOD separability probe.
    seed : int, default=0
    progress : bool or callable, default=False
        A progress bar over layers on stderr.

    Returns
    -------
    OODLayersResult

    Raises
    ------
    EmptyScoresError
        The OOD (or held-out ID) set is empty.
    RepscopeValueError
        Layers of different widths on the two sides, labels of the wrong length, bad options.
    """
    from sklearn.base import clone

    from repscope._progress import progress_for
    from repscope.ood._diagnostics import confident_ood_share, ood_linear_separability
    from repscope.ood._metrics import EmptyScoresError, roc_curve
    from repscope.store import open_layers

    if level not in ("all", *LEVELS):
        raise RepscopeValueError(f"level must be 'all', 'instance' or 'class'; got {level!r}.")
    if not 0.0 < id_test_fraction < 1.0:
        raise RepscopeValueError(
            f"id_test_fraction must be in (0, 1); got {id_test_fraction!r}.")
    src_id = open_layers(_as_source(id_source), layers, name="ID features")
    src_ood = open_layers(_as_source(ood_source), list(src_id.layers), name="OOD features")
    names = list(src_id.layers)
    templates = _resolve_detectors(detectors)
    if level != "all":
        templates = {k: v for k, v in templates.items() if scoring_level(k, v) == level}
        if not templates:
            raise RepscopeValueError(f"no selected detector scores at the {level!r} level.")
    y = None
    if labels is not None:
        from repscope._array import to_numpy

        y = np.asarray(to_numpy(labels) if not isinstance(labels, np.ndarray) else labels)
        y = y.ravel()
    multi = {k: v for k, v in templates.items() if _is_multilayer(k, v)}
    kept: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    entries: list[OODDetectorScoresResult] = []
    diag: dict[str, list[float]] = {k: [] for k in ("acc", "auc", "cood", "cid")}
    n_fit = n_test = n_ood = 0
    shared_by_layer: dict[str, Any] = {}
    with progress_for(progress, "layers", len(names), prefix="ood") as advance:
        for layer in names:
            A = _layer_array(src_id.read(layer))
            B = _layer_array(src_ood.read(layer))
            if B.shape[0] == 0:
                raise EmptyScoresError("the OOD features have no samples; give at least one "
                                       "OOD sample.")
            if A.shape[1] != B.shape[1]:
                raise RepscopeValueError(
                    f"layer {layer!r} has {A.shape[1]} features on the ID side and "
                    f"{B.shape[1]} on the OOD side; give features of the same layers.")
            if y is not None and y.size != A.shape[0]:
                raise RepscopeValueError(
                    f"labels must have one value per ID sample; got {y.size} labels for "
                    f"{A.shape[0]} ID samples.")
            fit_idx, test_idx = _split(A.shape[0], y, id_test_fraction, seed)
            n_fit, n_test, n_ood = fit_idx.size, test_idx.size, B.shape[0]
            if n_test == 0 or n_fit == 0:
                raise EmptyScoresError(
                    f"the held-out ID part is empty ({A.shape[0]} ID samples, "
                    f"id_test_fraction={id_test_fraction}); give more ID samples.")
            Xf, Xt = A[fit_idx], A[test_idx]
            yf = y[fit_idx] if y is not None else None
            logits: tuple[np.ndarray, np.ndarray, np.ndarray, Any] | None = None
            if yf is not None and np.unique(yf).size >= 2:
                from repscope.probe._logistic import LinearProbe

                est = clone(probe) if probe is not None else LinearProbe(random_state=seed)
                est.fit(Xf, yf)
                logits = (probe_logits(est, Xf), probe_logits(est, Xt), probe_logits(est, B),
                          est)
            nonneg = bool(A.min() >= 0 and B.min() >= 0)
            # one labelled Moments of the fit split per layer, shared by every detector that
            # reads class statistics (Mahalanobis family, whitened kNN, tied GMM)
            shared = _shared_moments(Xf, yf)
            if multi:
                kept[layer] = (Xf, Xt, B)
                if shared is not None:
                    shared_by_layer[layer] = shared
            for name, template in templates.items():
                if name in multi:
                    continue
                entries.append(_run_one(name, template, layer, Xf, yf, Xt, B, logits, nonneg,
                                        positive=positive, tpr=tpr, n_bins=n_bins,
                                        roc_points=roc_points, roc=roc_curve, clone=clone,
                                        moments=shared))
            if diagnostics:
                sep = ood_linear_separability(Xt if Xt.shape[0] >= folds else Xf, B,
                                              folds=folds, seed=seed)
                diag["acc"].append(sep.balanced_accuracy)
                diag["auc"].append(sep.auroc)
                if logits is not None:
                    co, ci = confident_ood_share(logits[2], confidence=confidence,
                                                 logits_id=logits[1])
                else:
                    co = ci = float("nan")
                diag["cood"].append(co)
                diag["cid"].append(ci)
            advance(1)
    if multi and kept:
        parts = [{k: v[i] for k, v in kept.items()} for i in range(3)]
        nonneg_all = all(bool(f.min() >= 0 and o.min() >= 0) for f, _, o in kept.values())
        for name, template in multi.items():
            entries.append(_run_one(name, template, ALL_LAYERS, parts[0], yf, parts[1],
                                    parts[2], logits if len(kept) == 1 else None,
                                    nonneg_all, positive=positive, tpr=tpr, n_bins=n_bins,
                                    roc_points=roc_points, roc=roc_curve, clone=clone,
                                    moments=shared_by_layer if len(shared_by_layer) == len(kept)
                                    else None))
    diag_res = None
    if diagnostics:
        diag_res = OODDiagnosticsResult(
            layers=tuple(names), separability_accuracy=tuple(diag["acc"]),
            separability_auroc=tuple(diag["auc"]), confident_ood=tuple(diag["cood"]),
            confident_id=tuple(diag["cid"]), confidence=confidence, folds=folds,
            n_id=n_test, n_ood=n_ood)
    return OODLayersResult(
        layers=tuple(names), detectors=tuple(templates), entries=tuple(entries),
        n_id_fit=n_fit, n_id_test=n_test, n_ood=n_ood, positive=positive, tpr=tpr,
        diagnostics=diag_res,
        meta={"id_test_fraction": id_test_fraction, "seed": seed, "level": level})


#: The layer name of detectors that combine every evaluated layer into one score.
ALL_LAYERS = "(all layers)"


def _is_multilayer(name: str, template: Any) -> bool:
    """Whether a detector takes a mapping ``{layer: features}`` (one score from all layers)."""
    return bool(getattr(type(template), "multilayer", False)) or name == "multilayer_mahalanobis"


def _shared_moments(Xf: np.ndarray, yf: np.ndarray | None) -> Any:
    """The labelled Moments (no per-class matrices) of a layer's fit split, or None without
    labels."""
    if yf is None or np.unique(yf).size < 2:
        return None
    from repscope.stats import Moments

    return Moments(class_cov="none").update(Xf, labels=yf)


def _reads_shared_moments(det: Any) -> bool:
    """Whether a detector takes its class statistics from a shared tied ``Moments``: it has a
    ``moments`` parameter left unset, no feature transform in front, and (GMM) a tied
    covariance, which needs no per-class matrices."""
    params = det.get_params()
    if "moments" not in params or params["moments"] is not None:
        return False
    if params.get("feature_transform") is not None:
        return False
    return params.get("covariance_type", "tied") == "tied"


def _as_source(src: Any) -> Any:
    """A single array becomes one layer named ``""``."""
    if hasattr(src, "shape") and hasattr(src, "ndim"):
        return {"": src}
    return src


def _run_one(name: str, template: Any, layer: str, Xf: Any, yf: np.ndarray | None,
             Xt: Any, B: Any,
             logits: tuple[np.ndarray, np.ndarray, np.ndarray, Any] | None, nonneg: bool, *,
             positive: str, tpr: float, n_bins: int, roc_points: int, roc: Any,
             clone: Any, moments: Any = None) -> OODDetectorScoresResult:
    needs = _needs(template)
    lvl = scoring_level(name, template)

    def skipped(reason: str) -> OODDetectorScoresResult:
        return OODDetectorScoresResult(detector=name, layer=layer, level=lvl, metrics=None,
                                       reason=reason)

    if "labels" in needs and yf is None:
        return skipped("needs class labels (none given)")
    if ("logits" in needs or "head" in needs) and logits is None:
        return skipped(f"needs {'a linear head' if 'head' in needs else 'logits'}: give "
                       "class labels so an ID probe can be fitted")
    if "nonnegative" in needs and not nonneg:
        return skipped("needs non-negative (post-ReLU) features; this layer has negative "
                       "values")
    t0 = time.perf_counter()
    det = clone(template)
    if "head" in needs and logits is not None and "head" in det.get_params():
        det.set_params(head=logits[3])
    if moments is not None and _reads_shared_moments(det):
        det.set_params(moments=moments)
    kw_fit: dict[str, Any] = {}
    kw = [{}, {}]  # type: list[dict[str, Any]]
    if "logits" in needs and "head" not in needs and logits is not None:
        kw_fit["logits"] = logits[0]
        kw = [{"logits": logits[1]}, {"logits": logits[2]}]
    try:
        det.fit(Xf, yf, **kw_fit)
        s_id = np.asarray(det.score_samples(Xt, **kw[0]), dtype=np.float64)
        s_ood = np.asarray(det.score_samples(B, **kw[1]), dtype=np.float64)
    except RepscopeError as err:
        return skipped(f"failed: {' '.join(str(err).split())}")
    seconds = time.perf_counter() - t0
    return scores_entry(name, layer, lvl, s_id, s_ood, seconds, positive=positive, tpr=tpr,
                        n_bins=n_bins, roc_points=roc_points, roc=roc)


def scores_entry(name: str, layer: str, lvl: str, s_id: np.ndarray, s_ood: np.ndarray,
                 seconds: float, *, positive: str, tpr: float, n_bins: int, roc_points: int,
                 roc: Any) -> OODDetectorScoresResult:
    """One detector's entry from its held-out ID and OOD scores: the metrics, the
    histograms on shared edges and the ROC points (skipped when a score is not finite)."""
    if not (np.isfinite(s_id).all() and np.isfinite(s_ood).all()):
        return OODDetectorScoresResult(detector=name, layer=layer, level=lvl, metrics=None,
                                       reason="gave non-finite scores")
    m = ood_metrics(s_id, s_ood, positive=positive, tpr=tpr)  # type: ignore[arg-type]
    edges, h_id, h_ood = _histograms(s_id, s_ood, n_bins)
    fpr, tpr_pts = roc(s_id, s_ood, positive=positive, max_points=roc_points)
    return OODDetectorScoresResult(
        detector=name, layer=layer, level=lvl, metrics=m,
        hist_edges=tuple(float(v) for v in edges), hist_id=tuple(int(v) for v in h_id),
        hist_ood=tuple(int(v) for v in h_ood), roc_fpr=tuple(float(v) for v in fpr),
        roc_tpr=tuple(float(v) for v in tpr_pts), seconds=seconds)
