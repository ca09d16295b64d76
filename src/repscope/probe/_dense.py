"""Per-point multi-level probing (the Masked Scene Modeling evaluation, in 2-D).

Every level's feature map is sampled bilinearly at each point's coordinates (one
interpolation per level, ``align_corners=True`` as in MSM's ``grid_sample`` and
:class:`~repscope.probe.MultiLevelProbe`), the per-level point features are concatenated and a
per-point probe (closed-form ridge, or kNN) predicts each point's label; the score is the mean
intersection over union (mIoU) of the point classes, layer by layer and multi-level.

A multi-level kNN probe does not see the concatenation of standardised levels: its
similarity is a weighted mean of per-level cosine similarities, with the weights chosen on
the training images alone (:class:`LevelWeightedKNN`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils._param_validation import HasMethods, Interval

from repscope._array import is_torch, to_numpy
from repscope._params import ValidatedEstimator
from repscope._progress import ProgressLike, progress_for
from repscope.exceptions import RepscopeTypeError, RepscopeValueError, UnknownNameError
from repscope.results import RecordedResult

__all__ = [
    "LevelWeightedKNN",
    "PointLabelShapeError",
    "PointOutOfRangeError",
    "PointProbeResult",
    "mean_iou",
    "pixel_point_labels",
    "point_features",
    "probe_points",
    "sample_levels",
    "sample_points",
]

#: The row name of the multi-level probe in a :class:`PointProbeResult`.
MULTI_LEVEL = "multi-level"


class PointOutOfRangeError(RepscopeValueError):
    """A point's coordinates fall outside the feature map (or image) they index."""


class PointLabelShapeError(RepscopeValueError):
    """Per-point labels do not match the points (one label per point of every image)."""


def _as_map(feature_map: Any, name: str) -> Any:
    import torch

    if is_torch(feature_map):
        t = feature_map.detach().cpu()
    else:
        t = torch.as_tensor(np.asarray(feature_map))
    if t.ndim != 4:
        raise RepscopeValueError(
            f"{name} must be a spatial map of shape (n_images, channels, height, width); got "
            f"shape {tuple(t.shape)}.")
    if not torch.is_floating_point(t):
        t = t.float()
    return t.to(torch.float64)


def _check_points(points: Any, n_images: int | None, image_size: tuple[int, int] | None,
                  name: str = "points") -> np.ndarray:
    """``points`` as float64 (n_images, n_points, 2) in normalised [0, 1] (row, col)."""
    p = np.asarray(to_numpy(points), dtype=np.float64)
    if p.ndim != 3 or p.shape[2] != 2:
        raise RepscopeValueError(
            f"{name} must have shape (n_images, n_points, 2) holding (row, col); got shape "
            f"{p.shape}.")
    if n_images is not None and p.shape[0] != n_images:
        raise RepscopeValueError(
            f"{name} covers {p.shape[0]} images but the feature maps hold {n_images}.")
    if not np.isfinite(p).all():
        raise PointOutOfRangeError(f"{name} holds NaN or infinite coordinates.")
    if image_size is None:
        extent = np.array([1.0, 1.0])
        unit = "normalised coordinates in [0, 1]"
    else:
        h, w = (int(s) for s in image_size)
        if h < 2 or w < 2:
            raise RepscopeValueError(
                f"image_size must be (height, width) with both at least 2; got {image_size}.")
        extent = np.array([h - 1.0, w - 1.0])
        unit = f"pixel coordinates of a {h}x{w} image, rows in [0, {h - 1}], cols in [0, {w - 1}]"
    bad = (p < 0) | (p > extent)
    if bad.any():
        i, j, _ = np.argwhere(bad)[0]
        raise PointOutOfRangeError(
            f"{name}[{i}, {j}] = ({p[i, j, 0]:g}, {p[i, j, 1]:g}) lies outside the map; "
            f"expected {unit} ({int(bad.any(axis=2).sum())} points outside).")
    return p / extent


def sample_points(feature_map: Any, points: Any, *,
                  image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Bilinear samples of a feature map at each point (``align_corners=True``).

    Coordinate 0 is the centre of the first row (column) of the map and 1 (or ``H - 1`` with
    ``image_size``) the centre of its last, so a point keeps its place on maps of any
    resolution: a level of size ``h x w`` is read at ``(row * (h - 1), col * (w - 1))``.

    Parameters
    ----------
    feature_map : array of shape (n_images, channels, height, width)
    points : array of shape (n_images, n_points, 2)
        ``(row, col)`` of each point, normalised to [0, 1], or in pixels of ``image_size``.
    image_size : (int, int), optional
        ``(height, width)`` of the image the points index; default: normalised coordinates.

    Returns
    -------
    ndarray of shape (n_images, n_points, channels), float64

    Raises
    ------
    PointOutOfRangeError
        A point lies outside the map (or image).
    """
    import torch

    fmap = _as_map(feature_map, "feature_map")
    u = _check_points(points, int(fmap.shape[0]), image_size)
    # grid_sample takes (x, y) = (col, row) in [-1, 1]
    grid = torch.as_tensor(2.0 * u[..., ::-1] - 1.0, dtype=torch.float64).unsqueeze(2)
    out = torch.nn.functional.grid_sample(fmap, grid, mode="bilinear", align_corners=True)
    return out.squeeze(3).permute(0, 2, 1).numpy()


def sample_levels(feature_maps: Mapping[str, Any], points: Any, *,
                  layers: Sequence[str] | None = None,
                  image_size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Every level sampled at the same points: ``{layer: (n_images * n_points, channels)}``.

    Each level is interpolated at the points on its own grid (not upsampled to a common size
    first), so a coarse level costs as little as a fine one.
    """
    if not isinstance(feature_maps, Mapping):
        raise RepscopeTypeError(
            f"feature_maps must be a mapping of layer name to spatial map; got "
            f"{type(feature_maps).__name__}.")
    names = list(layers) if layers is not None else list(feature_maps)
    if not names:
        raise RepscopeValueError("feature_maps has no layers to sample.")
    out = {}
    for name in names:
        if name not in feature_maps:
            raise UnknownNameError(
                f"feature_maps lack layer {name!r}; given: {', '.join(map(str, feature_maps))}.",
                name=name, known=tuple(map(str, feature_maps)))
        try:
            s = sample_points(feature_maps[name], points, image_size=image_size)
        except PointOutOfRangeError:
            raise
        except RepscopeValueError as err:
            raise type(err)(f"layer {name!r}: {err}") from None
        out[name] = s.reshape(-1, s.shape[2])
    return out


def pixel_point_labels(images: Any, classes: Any, *, n_points: int = 64,
                       threshold: float = 0.5, foreground: float | None = None,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random pixel points of each image and their labels: 0 for background, ``class + 1``
    where the pixel's intensity exceeds ``threshold`` of the image's maximum (a digit's
    stroke carries its digit's class).

    Parameters
    ----------
    images : array of shape (n_images, height, width)
    classes : array-like of shape (n_images,)
        Non-negative integer class of each image.
    n_points : int, default=64
        Distinct pixels per image.
    threshold : float, default=0.5
    foreground : float, optional
        Fraction of each image's points drawn on its foreground (the rest on its background;
        all of the foreground when it has fewer pixels); default: pixels drawn uniformly.
    seed : int, default=0

    Returns
    -------
    points : ndarray of shape (n_images, n_points, 2)
        ``(row, col)`` in pixels (pass ``image_size=(height, width)`` to the samplers).
    labels : ndarray of shape (n_images, n_points), int64
    """
    imgs = np.asarray(images, dtype=np.float64)
    if imgs.ndim != 3:
        raise RepscopeValueError(
            f"images must have shape (n_images, height, width); got shape {imgs.shape}.")
    cls = np.asarray(classes).astype(np.int64).ravel()
    if cls.size != imgs.shape[0] or (cls < 0).any():
        raise PointLabelShapeError(
            f"classes must hold one non-negative class per image ({imgs.shape[0]}); got "
            f"{cls.size} values.")
    n, h, w = imgs.shape
    if not 1 <= n_points <= h * w:
        raise RepscopeValueError(f"n_points must be in [1, {h * w}]; got {n_points}.")
    if foreground is not None and not 0.0 < foreground < 1.0:
        raise RepscopeValueError(f"foreground must be a fraction in (0, 1); got {foreground}.")
    rng = np.random.default_rng(seed)
    peak = np.maximum(imgs.reshape(n, -1).max(axis=1), 1e-12)
    is_fg = imgs.reshape(n, -1) > threshold * peak[:, None]
    picks = []
    for i in range(n):
        if foreground is None:
            picks.append(rng.choice(h * w, size=n_points, replace=False))
            continue
        fg_px, bg_px = np.flatnonzero(is_fg[i]), np.flatnonzero(~is_fg[i])
        n_fg = min(round(foreground * n_points), fg_px.size)
        n_bg = n_points - n_fg
        if n_bg > bg_px.size:
            raise RepscopeValueError(
                f"image {i} has {fg_px.size} foreground and {bg_px.size} background pixels; "
                f"too few for {n_points} points.")
        picks.append(np.concatenate([rng.choice(fg_px, size=n_fg, replace=False),
                                     rng.choice(bg_px, size=n_bg, replace=False)]))
    flat = np.stack(picks)
    rows, cols = flat // w, flat % w
    fg = np.take_along_axis(is_fg, flat, axis=1)
    labels = np.where(fg, cls[:, None] + 1, 0).astype(np.int64)
    return np.stack([rows, cols], axis=2).astype(np.float64), labels


def mean_iou(y_true: Any, y_pred: Any, *, classes: Sequence[Any] | None = None
             ) -> tuple[float, dict[Any, float]]:
    """Mean intersection over union over ``classes`` (default: every class in either array;
    a class absent from both is skipped).

    Returns
    -------
    miou : float
    iou : dict of class to float
    """
    t, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise PointLabelShapeError(
            f"y_true and y_pred must have the same number of points; got {t.size} and {p.size}.")
    names = list(classes) if classes is not None else sorted(set(t.tolist()) | set(p.tolist()))
    iou: dict[Any, float] = {}
    for c in names:
        inter = int(np.sum((t == c) & (p == c)))
        union = int(np.sum((t == c) | (p == c)))
        if union:
            iou[c] = inter / union
    return (float(np.mean(list(iou.values()))) if iou else float("nan")), iou


@dataclass(frozen=True)
class PointProbeResult(RecordedResult):
    """Per-point probe scores, one row per single layer and one multi-level row.

    Attributes
    ----------
    rows : tuple of str
        The layers probed alone, then :data:`MULTI_LEVEL` when probed.
    row_layers : tuple of tuple of str
        The layers behind each row.
    probes : tuple of str
        Probe names (columns).
    miou, accuracy : tuple of tuple of float
        ``[row][probe]``: test mIoU and point accuracy.
    n_features : tuple of int
        Width of each row's point features.
    n_train_points, n_test_points, n_classes : int
    class_iou : tuple of tuple of tuple of float
        ``[row][probe][class]``: IoU of each class of ``classes`` (NaN: absent).
    classes : tuple of int
    level_weights : dict of str to dict of str to float
        For each kNN probe of the multi-level row, the weight of every level in its
        similarity (:class:`LevelWeightedKNN`).
    """

    analysis: ClassVar[str] = "probe_points"

    rows: tuple[str, ...]
    row_layers: tuple[tuple[str, ...], ...]
    probes: tuple[str, ...]
    miou: tuple[tuple[float, ...], ...]
    accuracy: tuple[tuple[float, ...], ...]
    n_features: tuple[int, ...]
    n_train_points: int
    n_test_points: int
    n_classes: int
    classes: tuple[int, ...]
    class_iou: tuple[tuple[tuple[float, ...], ...], ...]
    level_weights: dict[str, dict[str, float]] = field(default_factory=dict)

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``probe_points`` record per row (layer or multi-level): mIoU and accuracy per
        probe, the layers used, widths and point counts."""
        return [(row, {
            "miou": dict(zip(self.probes, self.miou[i])),
            "accuracy": dict(zip(self.probes, self.accuracy[i])),
            "multi_level": row == MULTI_LEVEL, "order": i,
            "layers": list(self.row_layers[i]), "n_features": self.n_features[i],
            "n_train_points": self.n_train_points, "n_test_points": self.n_test_points,
            "n_classes": self.n_classes,
            **({"level_weights": self.level_weights}
               if row == MULTI_LEVEL and self.level_weights else {})})
                for i, row in enumerate(self.rows)]

    def score(self, row: str, probe: str) -> float:
        """The mIoU of ``probe`` on ``row`` (a layer or :data:`MULTI_LEVEL`)."""
        return self.miou[self.rows.index(row)][self.probes.index(probe)]


def _check_labels(labels: Any, shape: tuple[int, int]) -> np.ndarray:
    y = np.asarray(to_numpy(labels))
    if y.shape != shape:
        raise PointLabelShapeError(
            f"labels must hold one label per point, shape (n_images, n_points) = {shape}; got "
            f"shape {y.shape}.")
    return y


def _split(n_images: int, test: float | Sequence[int], seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(test, (float, int)) and not isinstance(test, bool):
        if not 0.0 < float(test) < 1.0:
            raise RepscopeValueError(f"test must be a fraction in (0, 1); got {test}.")
        n_test = round(float(test) * n_images)
        if not 1 <= n_test < n_images:
            raise RepscopeValueError(
                f"test = {test} of {n_images} images leaves an empty train or test split.")
        perm = np.random.default_rng(seed).permutation(n_images)
        return np.sort(perm[n_test:]), np.sort(perm[:n_test])
    idx = np.asarray(test, dtype=np.int64).ravel()
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n_images or np.unique(idx).size != idx.size:
        raise RepscopeValueError(
            f"test must be a fraction or distinct image indices in [0, {n_images}); got "
            f"{idx.size} indices.")
    mask = np.zeros(n_images, bool)
    mask[idx] = True
    if mask.all():
        raise RepscopeValueError("test holds every image; no image is left for training.")
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def point_features(feature_maps: Mapping[str, Any], points: Any, labels: Any, *,
                   layers: Sequence[str] | None = None,
                   image_size: tuple[int, int] | None = None, test: float | Sequence[int] = 0.33,
                   seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray,
                                           dict[str, np.ndarray], np.ndarray]:
    """The per-point features and labels :func:`probe_points` probes, split by image.

    Returns
    -------
    train : dict of str to ndarray of shape (n_train_images * n_points, channels)
    y_train : ndarray
    test : dict of str to ndarray
    y_test : ndarray
    """
    if not isinstance(feature_maps, Mapping):
        raise RepscopeTypeError(
            f"feature_maps must be a mapping of layer name to spatial map; got "
            f"{type(feature_maps).__name__}.")
    p = np.asarray(to_numpy(points), dtype=np.float64)
    if p.ndim != 3:
        _check_points(p, None, image_size)
    y = _check_labels(labels, (int(p.shape[0]), int(p.shape[1])))
    train_idx, test_idx = _split(int(p.shape[0]), test, seed)
    names = list(layers) if layers is not None else list(feature_maps)
    for name in names:
        if name not in feature_maps:
            raise UnknownNameError(
                f"feature_maps lack layer {name!r}; given: {', '.join(map(str, feature_maps))}.",
                name=name, known=tuple(map(str, feature_maps)))
    feats = sample_levels({n: feature_maps[n] for n in names}, p, image_size=image_size)
    n_pts = int(p.shape[1])

    def rows(idx: np.ndarray) -> np.ndarray:
        return (idx[:, None] * n_pts + np.arange(n_pts)[None, :]).ravel()

    tr, te = rows(train_idx), rows(test_idx)
    return ({k: v[tr] for k, v in feats.items()}, y[train_idx].ravel(),
            {k: v[te] for k, v in feats.items()}, y[test_idx].ravel())


def default_point_probes(k: int = 20) -> dict[str, Any]:
    """``linear``: the closed-form ridge probe (GCV over its alpha path); ``knn``: the
    DINO-weighted cosine kNN probe with ``k`` neighbours."""
    from repscope.probe._knn import KNNProbe
    from repscope.probe._ridge import RidgeProbe

    return {"linear": RidgeProbe(), "knn": KNNProbe(k=k)}


class LevelWeightedKNN(ClassifierMixin, ValidatedEstimator):
    r"""Multi-level kNN: similarity = weighted mean of per-level cosines, weights selected on
    held-out training images.

    For point features :math:`x^{(l)}` of levels :math:`l = 1..L` (each standardised with
    training statistics), the similarity of a query :math:`q` and a training point :math:`x`
    is

    .. math:: s(q, x) = \sum_l w_l \cos\bigl(q^{(l)}, x^{(l)}\bigr), \qquad
              w_l \ge 0,\ \sum_l w_l = 1,

    which is the cosine of the concatenation of the L2-normalised levels scaled by
    :math:`\sqrt{w_l}` (so ``probe``, a cosine :class:`~repscope.probe.KNNProbe`, runs on that
    concatenation and votes as usual).

    Why not the plain concatenation: a kNN cannot down-weight a level, so every weak level
    adds similarity noise. Measured on DINOv2-S patch tokens of 300 MNIST images (per-pixel
    labels, 64 points each, a third of the images held out, k = 20; test mIoU): single
    levels 0.17 (embeddings), 0.20, 0.32, 0.49 (block 8), 0.41 (block 11); the concatenation
    of standardised levels 0.37, equal weights per level (the mean of per-level cosines)
    0.39, per-level cosines of unstandardised or only centred levels 0.36 and 0.38 -- all far
    below the best level. So the weights are chosen by greedy forward selection with
    replacement (Caruana et al.'s ensemble selection): three units of weight on the level
    whose kNN scores best, then one more unit at a time to the level that most raises the
    score, stopping when none does (or after ``max_steps``). The score is the mIoU of
    ``probe``'s vote on a validation split of the *training images* (whole images, so a
    point's neighbours never come from its own image), never on the test data. On the task
    above this keeps block 8 alone (test 0.49, the best level); on EfficientNet-Lite0 maps of
    the same images it mixes four levels (weights 0.29, 0.14, 0.43, 0.14 on blocks 2, 4, 10,
    15) for 0.53 against 0.28 for its best level and 0.08 for its last.

    Parameters
    ----------
    layers : sequence of str
        Level names, the keys of the feature mappings ``fit`` and ``predict`` take.
    probe : KNNProbe, optional
        Default ``KNNProbe(k=20)`` (cosine, DINO weighting).
    validation : float, default=0.25
        Share of the training images held out to choose the weights.
    max_validation_points : int, default=2048
        Validation points used (the first ones of the held-out images), to bound the
        per-level similarity matrices (``max_validation_points x n_train`` each).
    max_steps : int, default=12
        Greedy steps (units of weight added) at most.
    random_state : int, default=0
        Seeds the choice of validation images.
    standardize : bool, default=True
        Standardise each level with training statistics before its cosine.

    Attributes
    ----------
    weights_ : dict of str to float
        The chosen weight of every level (summing to 1).
    validation_miou_ : float
        The validation mIoU of the chosen weights.
    probe_ : KNNProbe
        Fitted on all training points (the weighted concatenation).
    classes_ : ndarray
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "layers": ["array-like"],
        "probe": [None, HasMethods(["fit", "predict"])],
        "validation": [Interval(Real, 0, 1, closed="neither")],
        "max_validation_points": [Interval(Integral, 1, None, closed="left")],
        "max_steps": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "standardize": ["boolean"],
    }

    def __init__(self, layers: Sequence[str] = (), *, probe: Any = None,
                 validation: float = 0.25, max_validation_points: int = 2048,
                 max_steps: int = 12, random_state: int = 0, standardize: bool = True) -> None:
        self.layers = layers
        self.probe = probe
        self.validation = validation
        self.max_validation_points = max_validation_points
        self.max_steps = max_steps
        self.random_state = random_state
        self.standardize = standardize

    def _blocks(self, features: Mapping[str, Any], fitting: bool) -> list[np.ndarray]:
        missing = [n for n in self.layers if n not in features]
        if missing:
            raise UnknownNameError(
                f"features lack layer {missing[0]!r}; given: {', '.join(map(str, features))}.",
                name=missing[0], known=tuple(map(str, features)))
        raw = [np.asarray(to_numpy(features[n]), dtype=np.float64) for n in self.layers]
        if fitting:
            self._mu = [b.mean(axis=0) if self.standardize else 0.0 for b in raw]
            self._sd = [np.maximum(b.std(axis=0), 1e-12) if self.standardize else 1.0
                        for b in raw]
        out = []
        for b, m, sd in zip(raw, self._mu, self._sd):
            z = (b - m) / sd
            out.append(z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12))
        return out

    def _knn(self) -> Any:
        from sklearn.base import clone

        from repscope.probe._knn import KNNProbe

        return clone(self.probe) if self.probe is not None else KNNProbe(k=20)

    def _concat(self, blocks: list[np.ndarray], w: np.ndarray) -> np.ndarray:
        return np.concatenate([b * np.sqrt(wl) for b, wl in zip(blocks, w) if wl > 0], axis=1)

    def _select(self, blocks: list[np.ndarray], y: np.ndarray, groups: np.ndarray
                ) -> tuple[np.ndarray, float]:
        """Greedy forward selection with replacement of level weights on held-out images."""
        import torch

        knn = self._knn()
        ids = np.unique(groups)
        n_val = max(1, round(self.validation * ids.size))
        if ids.size < 2 or n_val >= ids.size:
            return np.full(len(blocks), 1.0 / len(blocks)), float("nan")
        rng = np.random.default_rng(self.random_state)
        val_ids = rng.choice(ids, size=n_val, replace=False)
        is_val = np.isin(groups, val_ids)
        va = np.flatnonzero(is_val)[: self.max_validation_points]
        tr = np.flatnonzero(~is_val)
        classes, enc = np.unique(y[tr], return_inverse=True)
        k = min(int(np.atleast_1d(knn.k)[0]), tr.size)
        tau = float(knn.temperature)
        sims = [torch.from_numpy(b[va].astype(np.float32)) @ torch.from_numpy(
            b[tr].astype(np.float32)).T for b in blocks]
        labels = torch.from_numpy(enc)

        def score(counts: np.ndarray) -> float:
            w = counts / counts.sum()
            s = torch.zeros_like(sims[0])
            for wl, sl in zip(w, sims):
                if wl > 0:
                    s += float(wl) * sl
            vals, idx = torch.topk(s, k, dim=1)
            wt = torch.exp((vals - vals[:, :1]) / tau).double()
            votes = torch.zeros(len(va), classes.size, dtype=torch.float64)
            votes.scatter_add_(1, labels[idx], wt)
            pred = classes[votes.argmax(1).numpy()]
            return mean_iou(y[va], pred, classes=np.unique(y[va]).tolist())[0]

        L = len(blocks)
        singles = [score(np.eye(L)[i]) for i in range(L)]
        counts = 3.0 * np.eye(L)[int(np.argmax(singles))]
        best = max(singles)
        for _ in range(self.max_steps - 1):
            trials = [score(counts + np.eye(L)[i]) for i in range(L)]
            i = int(np.argmax(trials))
            if trials[i] <= best:
                break
            counts, best = counts + np.eye(L)[i], trials[i]
        return counts / counts.sum(), float(best)

    def fit(self, features: Mapping[str, Any], y: Any, groups: Any = None) -> LevelWeightedKNN:
        """Choose the level weights on held-out training images, then fit the kNN on all.

        Parameters
        ----------
        features : mapping of str to array of shape (n_points, d_l)
        y : array-like of shape (n_points,)
        groups : array-like of shape (n_points,), optional
            The image of each point; validation holds out whole images. Default: each point
            its own group.
        """
        self._validate_params()
        if len(self.layers) == 0:
            raise RepscopeValueError("LevelWeightedKNN needs at least one layer.")
        blocks = self._blocks(features, fitting=True)
        labels = np.asarray(y).ravel()
        n = blocks[0].shape[0]
        if labels.size != n or any(b.shape[0] != n for b in blocks):
            raise PointLabelShapeError(
                f"LevelWeightedKNN.fit needs one label per point of every level; got {labels.size} "
                f"labels and {[b.shape[0] for b in blocks]} points.")
        g = np.arange(n) if groups is None else np.asarray(groups).ravel()
        if g.size != n:
            raise PointLabelShapeError(
                f"groups must name the image of each of the {n} points; got {g.size} values.")
        w, self.validation_miou_ = self._select(blocks, labels, g)
        self._w = w
        self.weights_ = {str(name): float(v) for name, v in zip(self.layers, w)}
        self.probe_ = self._knn().fit(self._concat(blocks, w), labels)
        self.classes_ = np.asarray(self.probe_.classes_)
        return self

    def predict(self, features: Mapping[str, Any]) -> np.ndarray:
        """Predicted label of every point."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "probe_")
        return np.asarray(self.probe_.predict(self._concat(self._blocks(features, False),
                                                           self._w)))


def _is_cosine_knn(est: Any) -> bool:
    from repscope.probe._knn import KNNProbe

    return isinstance(est, KNNProbe) and est.metric == "cosine"


def probe_points(feature_maps: Mapping[str, Any], points: Any, labels: Any, *,
                 layers: Sequence[str] | None = None, probes: Mapping[str, Any] | None = None,
                 image_size: tuple[int, int] | None = None, test: float | Sequence[int] = 0.33,
                 single: bool = True, multi_level: bool = True, standardize: bool = True,
                 seed: int = 0, progress: ProgressLike = False) -> PointProbeResult:
    """Per-point probes on every level alone and on all levels concatenated (MSM protocol).

    Each level's map is sampled bilinearly at each point (:func:`sample_levels`), images are
    split into train and test (``test``: a fraction, or test image indices), and each probe
    is fitted on the training points through :class:`~repscope.probe.MultiLevelProbe` (each
    level's block standardised with training statistics, then concatenated) and scored by
    mIoU on the test points. A cosine kNN probe on several levels is instead a
    :class:`LevelWeightedKNN` (a weighted mean of per-level cosines, the weights chosen on
    held-out training images); on one level the two are the same probe.

    Parameters
    ----------
    feature_maps : mapping of str to array of shape (n_images, c_l, h_l, w_l)
    points : array of shape (n_images, n_points, 2)
        ``(row, col)``, normalised to [0, 1] or in pixels of ``image_size``.
    labels : array of shape (n_images, n_points)
    layers : sequence of str, optional
        Levels in order (default: every map).
    probes : mapping of str to estimator, optional
        Default :func:`default_point_probes` (``linear``: closed-form ridge, ``knn``).
    image_size : (int, int), optional
    test : float or sequence of int, default=0.33
    single, multi_level : bool, default=True
        Score each level alone; score the concatenation of all levels.
    standardize : bool, default=True
    seed : int, default=0
        Seed of the image split.
    progress : bool or callable, default=False
        True shows a bar over the probe fits (levels x probes) on stderr; a callable
        ``advance(k)`` is called once per fit.

    Returns
    -------
    PointProbeResult

    Raises
    ------
    PointOutOfRangeError
        A point lies outside the maps.
    PointLabelShapeError
        ``labels`` is not one label per point.
    """
    from sklearn.base import clone

    from repscope.probe._layerwise import MultiLevelProbe

    if not (single or multi_level):
        raise RepscopeValueError("probe_points needs single or multi_level (or both) to be true.")
    chosen = dict(probes) if probes is not None else default_point_probes()
    if not chosen or not all(isinstance(k, str) for k in chosen):
        raise RepscopeValueError("probes must be a non-empty mapping of name to estimator.")
    names = list(layers) if layers is not None else list(feature_maps)
    Xtr, ytr, Xte, yte = point_features(feature_maps, points, labels, layers=names,
                                        image_size=image_size, test=test, seed=seed)
    n_images, n_pts = np.shape(points)[:2]
    groups = np.repeat(_split(int(n_images), test, seed)[0], int(n_pts))
    if np.unique(ytr).size < 2:
        raise RepscopeValueError("the training points hold a single label; nothing to probe.")
    classes = tuple(int(c) for c in np.union1d(ytr, yte))
    row_sets = ([(n, (n,)) for n in names] if single else []) + (
        [(MULTI_LEVEL, tuple(names))] if multi_level else [])
    miou, acc, widths, class_iou = [], [], [], []
    weights: dict[str, dict[str, float]] = {}
    n_fits = len(row_sets) * len(chosen)
    with progress_for(progress, "point-probe fits", n_fits, prefix="probe-points") as advance:
        for _, used in row_sets:
            m_row, a_row, c_row = [], [], []
            for pname, est in chosen.items():
                if len(used) > 1 and _is_cosine_knn(est):
                    probe = LevelWeightedKNN(list(used), probe=clone(est), random_state=seed,
                                             standardize=standardize)
                    probe.fit(Xtr, ytr, groups=groups)
                    weights[pname] = probe.weights_
                else:
                    probe = MultiLevelProbe(list(used), probe=clone(est),
                                            standardize=standardize)
                    probe.fit(Xtr, ytr)
                pred = probe.predict(Xte)
                m, per = mean_iou(yte, pred, classes=classes)
                m_row.append(m)
                a_row.append(float(np.mean(pred == yte)))
                c_row.append(tuple(per.get(c, float("nan")) for c in classes))
                advance(1)
            widths.append(int(sum(Xtr[n].shape[1] for n in used)))
            miou.append(tuple(m_row))
            acc.append(tuple(a_row))
            class_iou.append(tuple(c_row))
    return PointProbeResult(
        rows=tuple(r for r, _ in row_sets), row_layers=tuple(u for _, u in row_sets),
        probes=tuple(chosen), miou=tuple(miou), accuracy=tuple(acc), n_features=tuple(widths),
        n_train_points=int(ytr.size), n_test_points=int(yte.size), n_classes=len(classes),
        classes=classes, class_iou=tuple(class_iou), level_weights=weights)
