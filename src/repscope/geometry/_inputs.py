"""What a geometry measure accepts as ``X``: an array, a :class:`~repscope.stats.Moments`, a
store or :class:`~repscope.store.LayerSource` (with ``layer=``), or a :class:`LayerView` (the
per-layer driver's handle, which caches what several measures share).

Moments-based measures turn any of these into Moments (streamed from a store in batches; one
pass per distinct need, cached on a :class:`LayerView`); measures that need every point
(kNN, MST, silhouette) read the layer into memory once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from repscope._array import is_torch, to_numpy
from repscope._validation import check_features, check_labels
from repscope.exceptions import RepscopeValueError

__all__ = ["LayerView", "as_array", "as_moments", "class_grams", "labels_for", "normalize_rows"]

#: Rows per streamed batch.
BATCH = 4096


def normalize_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), float64."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


class LayerView:
    """One layer of a source, read lazily: batches for streaming, the full array on demand,
    and a cache of Moments so that several measures share one pass.

    Parameters
    ----------
    source : LayerSource
    layer : str
    """

    def __init__(self, source: Any, layer: str) -> None:
        self.source = source
        self.layer = layer
        self._X: np.ndarray | None = None
        self._moments: dict[tuple[Any, ...], Any] = {}
        #: Results that several measures share (e.g. the persistence of this layer).
        self.cache: dict[tuple[Any, ...], Any] = {}

    @property
    def n_samples(self) -> int:
        return int(self.source.n_samples)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The layer in memory, so measures that take arrays accept a view unchanged."""
        A = self.array()
        return A if dtype is None else A.astype(dtype, copy=False)

    def array(self) -> np.ndarray:
        """The whole layer in memory (float64, rows = samples), read once."""
        if self._X is None:
            X = self.source.read(self.layer)
            X = check_features(X, name=f"features of layer {self.layer!r}")
            self._X = np.asarray(to_numpy(X) if is_torch(X) else X, dtype=np.float64)
        return self._X

    def batches(self) -> Iterator[np.ndarray]:
        """Float64 batches of rows, in order (from memory when already read)."""
        if self._X is not None:
            for s in range(0, self._X.shape[0], BATCH):
                yield self._X[s:s + BATCH]
            return
        for b in self.source.iter_batches(self.layer, BATCH):
            b = to_numpy(b) if is_torch(b) else np.asarray(b)
            yield np.asarray(b.reshape(b.shape[0], -1), dtype=np.float64)

    def moments(self, labels: np.ndarray | None, *, normalize: bool,
                class_cov: str = "none") -> Any:
        """Moments of the (optionally L2-normalised) rows, streamed once and cached."""
        from repscope.stats import Moments

        key = (normalize, class_cov, None if labels is None else id(labels))
        if key not in self._moments:
            m = Moments(class_cov=class_cov)  # type: ignore[arg-type]
            start = 0
            for b in self.batches():
                if not np.all(np.isfinite(b)):
                    raise RepscopeValueError(
                        f"features of layer {self.layer!r} contain NaN or inf values; clean or "
                        "drop those samples first.")
                z = normalize_rows(b) if normalize else b
                m.update(z, labels=None if labels is None else labels[start:start + len(b)])
                start += len(b)
            self._moments[key] = m
        return self._moments[key]


def _view(X: Any, layer: str | None, caller: str) -> LayerView | None:
    """A LayerView for a store/LayerSource/path input (None for arrays and Moments)."""
    if isinstance(X, LayerView):
        return X
    from repscope.store import FeatureStore, LayerSource

    if isinstance(X, (FeatureStore, LayerSource)) or (
            isinstance(X, Mapping) and not isinstance(X, np.ndarray)):
        from repscope.store._layers import layer_source

        src = layer_source(X, None if layer is None else [layer], pooling="mean", name="X",
                           caller=caller)
        if len(src.layers) != 1:
            raise RepscopeValueError(
                f"{caller} needs one layer; the source has {len(src.layers)} "
                f"({', '.join(src.layers[:5])}{', ...' if len(src.layers) > 5 else ''}). Pass "
                "layer=NAME.")
        return LayerView(src, src.layers[0])
    return None


def labels_for(y: Any, n: int, *, caller: str, min_classes: int = 2) -> np.ndarray:
    """Validated labels with one entry per sample."""
    return check_labels(y, n_samples=n, name=f"labels of {caller}", min_classes=min_classes)


def as_moments(X: Any, y: Any = None, *, layer: str | None = None, normalize: bool = False,
               class_cov: str = "none", caller: str, min_classes: int = 2) -> Any:
    """``X`` as :class:`~repscope.stats.Moments` (with ``y`` as labels when given).

    A Moments is used as it is (it must hold the rows as the measure wants them: normalised
    when ``normalize`` is set, and labelled when ``y`` is needed).
    """
    from repscope.stats import Moments

    if isinstance(X, Moments):
        if y is not None and not X.classes.size:
            raise RepscopeValueError(
                f"{caller} needs labelled Moments (Moments.update(X, labels=y)); these have no "
                "labels.")
        return X
    view = _view(X, layer, caller)
    if view is not None:
        lab = None if y is None else labels_for(y, view.n_samples, caller=caller,
                                                min_classes=min_classes)
        return view.moments(lab, normalize=normalize, class_cov=class_cov)
    A = as_array(X, caller=caller)
    lab = None if y is None else labels_for(y, A.shape[0], caller=caller,
                                            min_classes=min_classes)
    m = Moments(class_cov=class_cov)  # type: ignore[arg-type]
    return m.update(normalize_rows(A) if normalize else A, labels=lab)


def as_array(X: Any, *, layer: str | None = None, caller: str, min_samples: int = 1) -> np.ndarray:
    """``X`` as a float64 numpy array in memory (a store layer is read once)."""
    view = _view(X, layer, caller)
    if view is not None:
        A = view.array()
    else:
        from repscope.stats import Moments

        if isinstance(X, Moments):
            raise RepscopeValueError(
                f"{caller} needs the samples themselves (it is not computed from moments); got "
                "a Moments. Pass the features array or a store.")
        A = check_features(X, name="X")
        A = np.asarray(to_numpy(A) if is_torch(A) else A, dtype=np.float64)
    if A.shape[0] < min_samples:
        raise RepscopeValueError(
            f"{caller} needs at least {min_samples} samples; got {A.shape[0]}.")
    return A


def class_grams(Z: Any, y: np.ndarray, *, normalize: bool, caller: str,
                memory_budget: int | None = None) -> Iterator[tuple[Any, int, np.ndarray]]:
    """``(class, n_k, G_k)`` for each class, ``G_k`` the smaller of ``Z_k^T Z_k`` and
    ``Z_k Z_k^T`` (same non-zero spectrum), never all ``K`` d x d matrices at once
    unless they fit: an array in memory is sliced one class at a time; a store is read in one
    pass with ``K`` accumulators when ``K d^2`` float64 fit ``memory_budget`` (default: a
    quarter of the available memory), else in ``K`` passes (one class each)."""
    classes = np.unique(y)
    view = Z if isinstance(Z, LayerView) else None
    if view is None or view._X is not None:
        A = view.array() if view is not None else Z
        for c in classes:
            Zk = A[y == c]
            Zk = normalize_rows(Zk) if normalize else Zk
            # the smaller Gram: log det(I + a Z^T Z) = log det(I + a Z Z^T)
            yield c, int(Zk.shape[0]), Zk @ Zk.T if Zk.shape[0] < Zk.shape[1] else Zk.T @ Zk
        return
    from repscope._memory import available_memory

    d = int(view.source.width(view.layer))
    budget = memory_budget if memory_budget is not None else (available_memory() or 0) // 4
    groups = [classes] if classes.size * d * d * 8 <= budget else [[c] for c in classes]
    for group in groups:
        acc = {c: np.zeros((d, d)) for c in group}
        counts = dict.fromkeys(group, 0)
        start = 0
        for b in view.batches():
            z = normalize_rows(b) if normalize else b
            yb = y[start:start + len(b)]
            start += len(b)
            for c in group:
                sel = z[yb == c]
                if len(sel):
                    acc[c] += sel.T @ sel
                    counts[c] += len(sel)
        for c in group:
            yield c, counts[c], acc.pop(c)
