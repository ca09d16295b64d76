"""Classification metrics for probes as pure functions (numpy or torch in, Python float out).

Each matches the scikit-learn function named in its docstring (checked in the tests).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from repscope._array import is_torch, to_numpy
from repscope._validation import check_positive_int
from repscope.exceptions import RepscopeValueError

__all__ = [
    "accuracy",
    "average_precision",
    "balanced_accuracy",
    "macro_f1",
    "mean_average_precision",
    "top_k_accuracy",
]


def _np(x: Any, name: str) -> np.ndarray:
    arr = to_numpy(x) if is_torch(x) else np.asarray(x)
    if arr.dtype.kind == "O":
        arr = arr.astype(str)
    if arr.size == 0:
        raise RepscopeValueError(f"{name} must not be empty; got shape {arr.shape}.")
    return arr


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _np(y_true, "y_true"), _np(y_pred, "y_pred")
    if t.ndim != 1 or p.shape != t.shape:
        raise RepscopeValueError(
            f"y_true and y_pred must be 1-D with one label per sample; got shapes {t.shape} and "
            f"{p.shape}."
        )
    return t, p


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Share of correct predictions (``sklearn.metrics.accuracy_score``)."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def top_k_accuracy(y_true: Any, scores: Any, *, k: int = 1, labels: Any = None) -> float:
    """Share of samples whose true class is among the ``k`` highest scores.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    scores : array-like of shape (n_samples, n_classes), or (n_samples,) for two classes
        Column ``j`` scores class ``labels[j]`` (default: the sorted unique ``y_true``).
    k : int, default=1
    labels : array-like of shape (n_classes,), optional

    Notes
    -----
    Ties are broken as in ``sklearn.metrics.top_k_accuracy_score`` (stable sort, the later
    column wins a tie). For 1-D binary scores the threshold is 0.5 when all scores are in
    ``[0, 1]`` and 0 otherwise.
    """
    k = check_positive_int(k, "k", caller="top_k_accuracy")
    t = _np(y_true, "y_true")
    s = _np(scores, "scores").astype(np.float64, copy=False)
    classes = np.unique(t) if labels is None else _np(labels, "labels")
    if s.shape[0] != t.shape[0]:
        raise RepscopeValueError(
            f"scores must have one row per sample ({t.shape[0]}); got shape {s.shape}.")
    pos = np.searchsorted(classes, t) if labels is None else _index_of(classes, t)
    if s.ndim == 1:
        if classes.size > 2:
            raise RepscopeValueError(
                f"1-D scores are only for two classes; y_true has {classes.size}. Pass scores "
                "of shape (n_samples, n_classes).")
        if k >= 2:
            return 1.0
        thr = 0.5 if s.min() >= 0 and s.max() <= 1 else 0.0
        return float(np.mean((s > thr).astype(np.int64) == pos))
    if s.shape[1] != classes.size:
        raise RepscopeValueError(
            f"scores must have one column per class ({classes.size}); got shape {s.shape}.")
    if k >= s.shape[1]:
        return 1.0
    order = np.argsort(s, axis=1, kind="mergesort")[:, ::-1][:, :k]
    return float(np.mean((order == pos[:, None]).any(1)))


def _index_of(classes: np.ndarray, values: np.ndarray) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    missing = [v for v in np.unique(values).tolist() if v not in lookup]
    if missing:
        raise RepscopeValueError(f"y_true holds labels {missing[:5]} that are not in labels.")
    return np.array([lookup[v] for v in values.tolist()], dtype=np.int64)


def _confusion(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.union1d(t, p)
    ti, pi = np.searchsorted(labels, t), np.searchsorted(labels, p)
    cm = np.zeros((labels.size, labels.size), dtype=np.int64)
    np.add.at(cm, (ti, pi), 1)
    return labels, cm


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """Mean per-class recall over the classes present in ``y_true``
    (``sklearn.metrics.balanced_accuracy_score``)."""
    t, p = _pair(y_true, y_pred)
    _, cm = _confusion(t, p)
    support = cm.sum(1)
    ok = support > 0
    return float(np.mean(np.diag(cm)[ok] / support[ok]))


def macro_f1(y_true: Any, y_pred: Any) -> float:
    """Unweighted mean of per-class F1 over the union of true and predicted labels
    (``sklearn.metrics.f1_score(average="macro")``; an undefined F1 counts as 0)."""
    t, p = _pair(y_true, y_pred)
    _, cm = _confusion(t, p)
    tp = np.diag(cm).astype(np.float64)
    den = cm.sum(0) + cm.sum(1)
    f1 = np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0)
    return float(f1.mean())


def average_precision(y_true: Any, scores: Any) -> float:
    """Average precision of one binary label,
    :math:`\\mathrm{AP} = \\sum_n (R_n - R_{n-1}) P_n` over the distinct score thresholds
    (``sklearn.metrics.average_precision_score``, no interpolation). 0 without positives."""
    t = _np(y_true, "y_true").astype(np.float64).ravel()
    s = _np(scores, "scores").astype(np.float64).ravel()
    if t.shape != s.shape:
        raise RepscopeValueError(
            f"y_true and scores must have the same shape; got {t.shape} and {s.shape}.")
    return float(_ap_columns(t[:, None], s[:, None])[0])


def _ap_columns(T: np.ndarray, S: np.ndarray) -> np.ndarray:
    n, L = T.shape
    order = np.argsort(-S, axis=0, kind="mergesort")
    s_sorted = np.take_along_axis(S, order, 0)
    t_sorted = np.take_along_axis(T, order, 0)
    tps = np.cumsum(t_sorted, 0)
    P = tps[-1]
    out = np.zeros(L)
    for j in range(L):
        if P[j] <= 0:
            continue
        last = np.r_[np.nonzero(np.diff(s_sorted[:, j]))[0], n - 1]
        tp = tps[last, j]
        prec = tp / (last + 1)
        rec = tp / P[j]
        out[j] = float(np.sum(np.diff(np.r_[0.0, rec]) * prec))
    return out


def mean_average_precision(y_true: Any, scores: Any) -> float:
    """Macro mean of per-label average precision for multi-label data
    (``sklearn.metrics.average_precision_score(average="macro")``).

    Parameters
    ----------
    y_true : array-like of shape (n_samples, n_labels)
        0/1 indicator matrix.
    scores : array-like of shape (n_samples, n_labels)

    Notes
    -----
    A label without positive samples has AP 0 and still counts in the mean (what
    scikit-learn does, with a warning).
    """
    T = _np(y_true, "y_true").astype(np.float64)
    S = _np(scores, "scores").astype(np.float64)
    if T.ndim != 2 or T.shape != S.shape:
        raise RepscopeValueError(
            f"y_true and scores must both have shape (n_samples, n_labels); got {T.shape} and "
            f"{S.shape}.")
    if not np.isin(T, (0, 1)).all():
        raise RepscopeValueError("y_true must be a 0/1 indicator matrix.")
    return float(_ap_columns(T, S).mean())
