"""Layer-wise probing (one call, every layer) and multi-level probes (several layers at once)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils._param_validation import HasMethods, StrOptions

from repscope._array import is_torch, to_numpy
from repscope._params import ValidatedEstimator, parameter_error
from repscope._progress import ProgressLike, progress_for
from repscope._validation import check_features, check_labels
from repscope.exceptions import RepscopeTypeError, RepscopeValueError, UnknownNameError
from repscope.probe._protocols import (
    DEFAULT_PROTOCOL,
    EstimatorFactory,
    FixedValidation,
    Protocol,
    evaluate,
    make_estimator,
    wilson_interval,
)
from repscope.results import RecordedResult

if TYPE_CHECKING:
    pass

__all__ = ["LayerwiseResult", "MultiLevelProbe", "default_probe", "probe_layers",
           "probe_layers_ranks"]


def default_probe() -> Any:
    """The cheap default probe: repscope's closed-form ``RidgeProbe`` (one eigendecomposition),
    or scikit-learn's ``RidgeClassifier`` on standardised features when it is unavailable."""
    try:
        from repscope.probe._ridge import RidgeProbe
    except ImportError:
        from sklearn.linear_model import RidgeClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), RidgeClassifier(alpha=1.0))
    return RidgeProbe()


@dataclass(frozen=True)
class LayerwiseResult(RecordedResult):
    """Probe accuracy at every layer.

    Attributes
    ----------
    layers : tuple of str
        In the order probed (the store's depth order by default).
    accuracy, ci_low, ci_high, std : tuple of float
        Pooled held-out accuracy, its 95% Wilson interval and the spread over splits.
    split_scores : tuple of tuple of float
    n_features : tuple of int
    chance : float
    protocol : str
    probe : str
    """

    analysis: ClassVar[str] = "probe"

    layers: tuple[str, ...]
    accuracy: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]
    std: tuple[float, ...]
    split_scores: tuple[tuple[float, ...], ...]
    n_features: tuple[int, ...]
    chance: float
    protocol: str
    probe: str

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``probe`` record per layer: accuracy, its 95% interval, spread, chance, width."""
        return [(name, {
            "accuracy": self.accuracy[i], "ci_low": self.ci_low[i], "ci_high": self.ci_high[i],
            "accuracy_std": self.std[i], "chance": self.chance,
            "n_features": self.n_features[i]})
                for i, name in enumerate(self.layers)]

    @property
    def best_layer(self) -> str:
        """The layer with the highest accuracy (the first on ties)."""
        return self.layers[int(np.nanargmax(np.asarray(self.accuracy)))]


def _layer_source(source: Any, layers: Sequence[str] | None) -> Any:
    """``source`` as a :class:`~repscope.store.LayerSource` (token layers mean-pooled unless
    the caller opened it with another pooling)."""
    from repscope.store import FeatureStore, LayerSource
    from repscope.store._layers import layer_source

    if not isinstance(source, (FeatureStore, LayerSource, Mapping)):
        raise RepscopeTypeError(
            f"source must be a FeatureStore or a mapping of layer name to array (or a "
            f"LayerSource from repscope.store.open_layers); got {type(source).__name__}."
        )
    return layer_source(source, layers, pooling="mean", name="source", caller="probe_layers")


def _probe_name(probe: Any) -> str:
    if hasattr(probe, "get_params"):
        return type(probe).__name__ if not hasattr(probe, "steps") else " > ".join(
            type(s).__name__ for _, s in probe.steps)
    return getattr(probe, "__name__", type(probe).__name__)


def probe_layers(
    source: Any,
    labels: Any,
    *,
    probe: EstimatorFactory | None = None,
    protocol: Protocol = DEFAULT_PROTOCOL,
    layers: Sequence[str] | None = None,
    progress: ProgressLike = False,
) -> LayerwiseResult:
    """Probe every layer of a FeatureStore (or a ``{layer: array}`` mapping) in one call.

    Layers are read one at a time, so only one layer's features are in memory. Token (ragged)
    layers are mean-pooled (pass ``open_layers(store, pooling="first")`` for another
    pooling); arrays with more than two dimensions are flattened.
    Each layer gets the same splits (``protocol``), so the per-layer numbers are comparable
    and equal to calling :func:`~repscope.probe._protocols.evaluate` on each layer alone.

    Parameters
    ----------
    source : FeatureStore, LayerSource or mapping of str to array of shape (n_samples, ...)
        A :class:`~repscope.store.LayerSource` (:func:`~repscope.store.open_layers`) also
        opens ``.npy``/``.safetensors`` files and sets the token pooling.
    labels : array-like of shape (n_samples,)
    probe : estimator or callable, optional
        Default :func:`default_probe` (closed-form ridge).
    protocol : Holdout, KFold or FixedValidation, default=KFold()
    layers : sequence of str, optional
        Subset and order (default: all layers, in the source's order).
    progress : bool or callable, default=False
        True shows a progress bar (layers done, with an ETA) on stderr; a callable
        ``advance(k)`` is called once per layer.

    Returns
    -------
    LayerwiseResult
    """
    src = _layer_source(source, layers)
    names, read = list(src.layers), src.read
    if not names:
        raise RepscopeValueError("source has no layers to probe.")
    factory = probe if probe is not None else default_probe()
    y = None
    acc, lo, hi, std, splits, widths = [], [], [], [], [], []
    chance = float("nan")
    with progress_for(progress, "layers", len(names), prefix="probe") as advance:
        for name in names:
            r, width, y = _probe_one(read, name, labels, y, factory, protocol)
            acc.append(r.accuracy)
            lo.append(r.ci_low)
            hi.append(r.ci_high)
            std.append(r.std)
            splits.append(r.split_scores)
            widths.append(width)
            chance = r.chance
            advance(1)
    return LayerwiseResult(
        layers=tuple(names), accuracy=tuple(acc), ci_low=tuple(lo), ci_high=tuple(hi),
        std=tuple(std), split_scores=tuple(splits), n_features=tuple(widths), chance=chance,
        protocol=repr(protocol), probe=_probe_name(factory))


def _probe_one(
    read: Any, name: str, labels: Any, y: np.ndarray | None, factory: EstimatorFactory,
    protocol: Protocol,
) -> tuple[Any, int, np.ndarray]:
    """One layer's evaluation, the labels checked against its first layer."""
    X = check_features(read(name), name=f"features of layer {name!r}")
    if y is None:
        y = check_labels(labels, n_samples=int(X.shape[0]), name="labels", min_classes=2)
    elif int(X.shape[0]) != y.size:
        raise RepscopeValueError(
            f"layer {name!r} has {X.shape[0]} samples but labels have {y.size}; every "
            "layer must hold the same inputs."
        )
    r, _ = evaluate(factory, X, y, protocol)
    return r, int(X.shape[1]), y


def rank_kind(probe: Any) -> Literal["moments", "group"] | None:
    """How ``probe`` fits across ranks: ``"moments"`` (closed form from all-reduced
    :class:`~repscope.stats.Moments`: ``fit_moments``), ``"group"`` (the all-reduced L-BFGS of
    :class:`~repscope.probe.LinearProbe`), or None (it needs all rows on one process)."""
    est = make_estimator(probe)
    if hasattr(est, "fit_moments"):
        return "moments"
    from repscope.probe._logistic import LinearProbe

    return "group" if isinstance(est, LinearProbe) else None


def probe_layers_ranks(
    source: Any,
    labels: Any,
    *,
    probe: EstimatorFactory | None = None,
    protocol: Protocol = DEFAULT_PROTOCOL,
    layers: Sequence[str] | None = None,
    progress: ProgressLike = False,
) -> LayerwiseResult:
    """:func:`probe_layers` across the ranks of ``torch.distributed`` (or in one process).

    Each rank reads only its contiguous share of every layer's rows
    (:meth:`repscope.distributed.DistContext.share`); the labels (small) are read whole. The
    splits are drawn on all the labels, as in one process, so a row's fold does not depend on
    the number of ranks. A closed-form probe (one with ``fit_moments``: ridge with GCV, LDA
    with a fixed or OAS shrinkage, naive Bayes) fits each split from the all-reduced
    :class:`~repscope.stats.Moments` of its training rows, streamed batch by batch; a
    :class:`~repscope.probe.LinearProbe` fits on the rank's rows in memory with its
    all-reduced L-BFGS (``fit(..., group=...)``). Each rank scores its test rows and the
    correct counts are all-summed: the result equals :func:`probe_layers` up to float
    rounding in the fits. (Ridge solves the primal form here; one process solves the dual
    when a split has fewer training rows than features: the same model up to rounding.)

    Raises
    ------
    RepscopeValueError
        ``probe`` needs every row on one process (kNN, token-set probes, others without
        ``fit_moments``), or bad labels, folds or features (on every rank alike).
    """
    from repscope.distributed import context

    ctx = context()
    src = _layer_source(source, layers)
    names = list(src.layers)
    if not names:
        raise RepscopeValueError("source has no layers to probe.")
    factory = probe if probe is not None else default_probe()
    how = rank_kind(factory)
    if how is None:
        raise RepscopeValueError(
            f"the probe {_probe_name(factory)} needs every row on one process; across ranks "
            "use a closed-form probe (ridge, LDA, naive Bayes) or LinearProbe, or run on one "
            "process.")
    n = int(src.n_samples)
    y = check_labels(labels, n_samples=n, name="labels", min_classes=2)
    if y.dtype.kind == "O":
        y = y.astype(str)
    _, yi = np.unique(y, return_inverse=True)
    splits = protocol.splits(y)
    fold = np.full(n, -1, dtype=np.int64)  # the split that tests each row (-1: none)
    for f, (_, te) in enumerate(splits):
        fold[te] = f
    a, b = ctx.share(n)
    acc, lo, hi, std, scores_all, widths = [], [], [], [], [], []
    with progress_for(progress if ctx.is_writer else False, "layers", len(names),
                      prefix="probe") as advance:
        for name in names:
            if how == "moments":
                hits = _moments_layer(ctx, src, name, factory, fold, yi, len(splits), a, b)
            else:
                hits = _group_layer(ctx, src, name, factory, fold, yi, len(splits), a, b)
            correct = [round(float(h)) for h in ctx.all_sum(hits, "summing the correct counts")]
            totals = [int(te.size) for _, te in splits]
            scores = [c / t for c, t in zip(correct, totals)]
            ci = wilson_interval(sum(correct), sum(totals))
            acc.append(sum(correct) / sum(totals))
            lo.append(ci[0])
            hi.append(ci[1])
            std.append(float(np.std(scores)))
            scores_all.append(tuple(scores))
            widths.append(src.width(name))
            advance(1)
    counts = np.bincount(yi)
    return LayerwiseResult(
        layers=tuple(names), accuracy=tuple(acc), ci_low=tuple(lo), ci_high=tuple(hi),
        std=tuple(std), split_scores=tuple(scores_all), n_features=tuple(widths),
        chance=float(counts.max() / counts.sum()),
        protocol=repr(protocol) if not isinstance(protocol, FixedValidation)
        else f"FixedValidation(n_val={len(protocol.val_indices)})",
        probe=_probe_name(factory))


def _agree(ctx: Any, error: Exception | None) -> None:
    """Raise on every rank the first error any rank met (so no rank waits for a dead one)."""
    errors = ctx.all_gather(None if error is None else str(error),
                            "comparing the ranks' checks of the features")
    for message in errors:
        if message is not None:
            raise RepscopeValueError(message)


def _batches(ctx: Any, src: Any, name: str, a: int, b: int) -> Any:
    """This rank's rows ``a:b`` of layer ``name``, checked, in batches ``(X, first_row)``."""
    pos = a
    for Xb in src.iter_batches(name, 4096, start=a, stop=b):
        Xb = check_features(Xb, name=f"features of layer {name!r}")
        yield Xb, pos
        pos += int(Xb.shape[0])


def _moments_layer(ctx: Any, src: Any, name: str, factory: Any, fold: np.ndarray,
                   yi: np.ndarray, k: int, a: int, b: int) -> np.ndarray:
    """Correct counts of this rank's test rows of every split (closed-form probes)."""
    from repscope.stats import Moments

    parts = [Moments() for _ in range(k + 1)]  # the rows each split tests; last: untested
    error: Exception | None = None
    try:
        for Xb, first in _batches(ctx, src, name, a, b):
            fb = fold[first:first + int(Xb.shape[0])]
            yb = yi[first:first + int(Xb.shape[0])]
            for f in range(-1, k):
                mask = fb == f
                if mask.any():
                    parts[f].update(Xb[mask], labels=yb[mask])
    except RepscopeValueError as err:
        error = err
    _agree(ctx, error)
    if ctx.is_distributed:
        for m in parts:
            with ctx.collective(f"summing the moments of layer {name!r}"):
                m.all_reduce(ctx.group)
    models = []
    for f in range(k):
        train = Moments()
        for g, m in enumerate(parts):
            if g != f:
                train.merge(m)
        models.append(make_estimator(factory).fit_moments(train))
    hits = np.zeros(k)
    for Xb, first in _batches(ctx, src, name, a, b):
        fb = fold[first:first + int(Xb.shape[0])]
        yb = yi[first:first + int(Xb.shape[0])]
        for f, est in enumerate(models):
            mask = fb == f
            if mask.any():
                hits[f] += int((to_numpy(est.predict(Xb[mask])) == yb[mask]).sum())
    return hits


def _group_layer(ctx: Any, src: Any, name: str, factory: Any, fold: np.ndarray,
                 yi: np.ndarray, k: int, a: int, b: int) -> np.ndarray:
    """Correct counts of this rank's test rows of every split (LinearProbe, all-reduced)."""
    error: Exception | None = None
    X = None
    try:
        blocks = [Xb for Xb, _ in _batches(ctx, src, name, a, b)]
        X = np.concatenate(blocks) if blocks else None
    except RepscopeValueError as err:
        error = err
    _agree(ctx, error)
    group = None
    if ctx.is_distributed:
        import torch.distributed as dist

        group = dist.group.WORLD
    if X is None:
        raise RepscopeValueError(
            f"rank {ctx.rank} of {ctx.world_size} holds no rows of the {fold.size} samples; "
            "launch fewer processes than samples.")
    fb, yb = fold[a:b], yi[a:b]
    hits = np.zeros(k)
    for f in range(k):
        train = fb != f
        with ctx.collective(f"fitting the probe on layer {name!r}"):
            est = make_estimator(factory).fit(X[train], yb[train], group=group)
        test = fb == f
        if test.any():
            hits[f] = int((np.asarray(est.predict(X[test])) == yb[test]).sum())
    return hits


class MultiLevelProbe(ClassifierMixin, ValidatedEstimator):
    """One probe on several layers' features concatenated (the multi-level protocol).

    ``fit``/``predict`` take a mapping ``{layer: array}``. Flat features ``(n, d_l)`` are
    concatenated. Spatial feature maps ``(n, c_l, h_l, w_l)`` are first upsampled bilinearly
    (``align_corners=True``, as in Masked Scene Modeling's grid sampling) to the largest
    spatial size among the layers, concatenated along channels, and then

    * ``spatial="pool"``: averaged over positions -> ``(n, sum c_l)`` (a sample-level probe);
    * ``spatial="keep"``: flattened -> ``(n, sum c_l * H * W)`` (position-aware).

    Each layer's block is standardised with training statistics (``standardize=True``) so
    wide or large-valued layers do not dominate the concatenation.

    Parameters
    ----------
    layers : sequence of str
        Which layers to use, in order.
    probe : estimator or callable, optional
        Default :func:`default_probe`.
    spatial : {"pool", "keep"}, default="pool"
    standardize : bool, default=True

    Attributes
    ----------
    probe_ : estimator
        The fitted probe on the concatenated features.
    classes_ : ndarray
    spatial_size_ : tuple of int or None
        The common (H, W) of spatial layers.
    n_features_in_ : int
        Width of the concatenated features.

    References
    ----------
    .. [1] Hermosilla, Stippel & Sick, "Masked Scene Modeling", CVPR 2025 (multi-level
       feature concatenation for linear and kNN probes).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "layers": ["array-like"],
        "probe": [None, HasMethods(["fit", "get_params"]), callable],
        "spatial": [StrOptions({"pool", "keep"})],
        "standardize": ["boolean"],
    }

    def __init__(self, layers: Sequence[str] = (), *, probe: EstimatorFactory | None = None,
                 spatial: Literal["pool", "keep"] = "pool", standardize: bool = True) -> None:
        self.layers = layers
        self.probe = probe
        self.spatial = spatial
        self.standardize = standardize

    def _concat(self, features: Mapping[str, Any], fitting: bool) -> np.ndarray:
        import torch

        if not isinstance(features, Mapping):
            raise RepscopeTypeError(
                f"MultiLevelProbe takes a mapping of layer name to features; got "
                f"{type(features).__name__}."
            )
        missing = [name for name in self.layers if name not in features]
        if missing:
            raise UnknownNameError(
                f"features lack layer {missing[0]!r}; given: {', '.join(map(str, features))}.",
                name=missing[0], known=tuple(map(str, features)))
        arrays: list[Any] = []
        for name in self.layers:
            a = features[name]
            a = check_features(a, name=f"features[{name!r}]", ndim=(2, 4))
            arrays.append(a if is_torch(a) else np.asarray(a))
        n = {int(a.shape[0]) for a in arrays}
        if len(n) != 1:
            raise RepscopeValueError(
                f"every layer must have the same number of samples; got "
                f"{dict(zip(self.layers, (int(a.shape[0]) for a in arrays)))}."
            )
        if fitting:
            sizes = [tuple(int(s) for s in a.shape[2:]) for a in arrays if a.ndim == 4]
            self.spatial_size_ = max(sizes, key=lambda s: s[0] * s[1]) if sizes else None
        blocks = []
        for a in arrays:
            if a.ndim == 4:
                t = a.detach().float().cpu() if is_torch(a) else torch.as_tensor(
                    np.asarray(a, dtype=np.float32))
                if tuple(t.shape[2:]) != self.spatial_size_:
                    t = torch.nn.functional.interpolate(t, size=self.spatial_size_,
                                                        mode="bilinear", align_corners=True)
                b = t.mean(dim=(2, 3)) if self.spatial == "pool" else t.reshape(t.shape[0], -1)
                blocks.append(b.numpy().astype(np.float64))
            else:
                blocks.append(to_numpy(a).astype(np.float64))
        if self.standardize:
            if fitting:
                self._mu = [b.mean(axis=0) for b in blocks]
                self._sd = [np.maximum(b.std(axis=0), 1e-12) for b in blocks]
            blocks = [(b - m) / s for b, m, s in zip(blocks, self._mu, self._sd)]
        return np.concatenate(blocks, axis=1)

    def fit(self, features: Mapping[str, Any], y: Any) -> MultiLevelProbe:
        """Fit the probe on the concatenated layers.

        Parameters
        ----------
        features : mapping of str to array of shape (n_samples, d) or (n_samples, c, h, w)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        self._validate_params()
        if len(self.layers) == 0:
            raise parameter_error(self, "layers", "a non-empty sequence of layer names",
                                  self.layers)
        Z = self._concat(features, fitting=True)
        labels = check_labels(y, n_samples=Z.shape[0], name="y", min_classes=2)
        self.probe_ = make_estimator(self.probe if self.probe is not None else default_probe())
        self.probe_.fit(Z, labels)
        self.classes_ = np.asarray(self.probe_.classes_)
        self.n_features_in_ = int(Z.shape[1])
        return self

    def transform(self, features: Mapping[str, Any]) -> np.ndarray:
        """The concatenated (upsampled, standardised) features the probe sees."""
        self._check()
        return self._concat(features, fitting=False)

    def _check(self) -> None:
        from sklearn.exceptions import NotFittedError

        if not hasattr(self, "probe_"):
            raise NotFittedError("This MultiLevelProbe instance is not fitted yet; call fit.")

    def predict(self, features: Mapping[str, Any]) -> np.ndarray:
        """Predicted classes."""
        Z = self.transform(features)  # raises NotFittedError before probe_ is touched
        return np.asarray(self.probe_.predict(Z))

    def predict_proba(self, features: Mapping[str, Any]) -> np.ndarray:
        """Class probabilities (when the probe has ``predict_proba``)."""
        Z = self.transform(features)
        return np.asarray(to_numpy(self.probe_.predict_proba(Z)))

    def score(self, features: Mapping[str, Any], y: Any, sample_weight: Any = None) -> float:
        """Accuracy."""
        labels = check_labels(y, name="y")
        hit = (self.predict(features) == labels).astype(np.float64)
        return float(np.average(hit, weights=sample_weight))

    def __sklearn_tags__(self) -> Any:
        # a classifier that also exposes the features it sees through transform(): declare
        # both, as scikit-learn's checks expect of any estimator with a transform method
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags(preserves_dtype=["float64"])
        tags.input_tags.allow_nan = False
        return tags
