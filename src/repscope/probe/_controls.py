"""Probe controls: control tasks and selectivity (Hewitt & Liang 2019), MDL probing (Voita &
Titov 2020, online code).

Both tell a probe's accuracy apart from the probe's own capacity to memorise: a selective
probe does well on the real task and badly on a control task with random labels that are
consistent per *type*; a representation that makes the task easy compresses the labels well
(short online codelength) even when a powerful probe would reach the same final accuracy.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from repscope._array import to_numpy
from repscope._validation import check_labels, check_positive_int, check_scalar
from repscope.exceptions import RepscopeValueError
from repscope.probe._protocols import (
    DEFAULT_PROTOCOL,
    EstimatorFactory,
    Protocol,
    _n_rows,
    _take,
    evaluate,
    make_estimator,
)
from repscope.results import Result

__all__ = [
    "MDLResult",
    "SelectivityResult",
    "control_task_labels",
    "kmeans_types",
    "mdl_online",
    "selectivity",
]

#: Voita & Titov's block boundaries (fractions of the data): 0.1%, 0.2%, 0.4%, ... 100%.
VOITA_FRACTIONS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)


def kmeans_types(X: Any, n_types: int, seed: int = 0) -> np.ndarray:
    """Type ids for control tasks when no natural type (word id, ...) is given: k-means
    cluster ids of the inputs (scikit-learn ``KMeans``, ``n_init=3``)."""
    from sklearn.cluster import KMeans

    Xn = to_numpy(X).reshape(_n_rows(X), -1).astype(np.float64, copy=False)
    n_types = check_positive_int(n_types, "n_types", caller="kmeans_types")
    if n_types > Xn.shape[0]:
        raise RepscopeValueError(
            f"The 'n_types' parameter of kmeans_types must be at most n_samples "
            f"({Xn.shape[0]}). Got {n_types} instead."
        )
    km = KMeans(n_clusters=n_types, n_init=3, random_state=seed)
    return np.asarray(km.fit_predict(Xn), dtype=np.int64)


def control_task_labels(y: Any, types: Any, seed: int = 0) -> np.ndarray:
    """Random labels that are consistent per type (a Hewitt & Liang control task).

    Every type gets one label drawn from the empirical distribution of ``y``; each sample
    takes its type's label. A probe can solve the control task only by memorising types.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Real labels (their marginal distribution is kept).
    types : array-like of shape (n_samples,)
        Type id of each sample (word id, cluster id, ...).
    seed : int, default=0

    Returns
    -------
    ndarray of shape (n_samples,)
        Control labels, same dtype as ``y``'s classes.
    """
    labels = check_labels(y, name="y")
    tp = check_labels(types, n_samples=labels.size, name="types")
    uniq, inv = np.unique(tp, return_inverse=True)
    rng = np.random.default_rng(seed)
    per_type = labels[rng.integers(0, labels.size, size=uniq.size)]
    return per_type[inv]


@dataclass(frozen=True)
class SelectivityResult(Result):
    """Real-task accuracy, control-task accuracy and their difference.

    Attributes
    ----------
    accuracy, control_accuracy, selectivity : float
        ``selectivity = accuracy - control_accuracy``.
    accuracy_ci, control_ci : tuple of float
        95% Wilson intervals.
    control_chance : float
        Majority-class accuracy of the control labels.
    n_types : int
    protocol : str
    """

    accuracy: float
    control_accuracy: float
    selectivity: float
    accuracy_ci: tuple[float, float]
    control_ci: tuple[float, float]
    control_chance: float
    n_types: int
    protocol: str


def selectivity(
    estimator: EstimatorFactory,
    X: Any,
    y: Any,
    *,
    types: Any = None,
    n_types: int | None = None,
    protocol: Protocol = DEFAULT_PROTOCOL,
    seed: int = 0,
) -> SelectivityResult:
    """Selectivity of a probe: accuracy on the task minus accuracy on a control task.

    Parameters
    ----------
    estimator : estimator or callable
        The probe (same one for both tasks).
    X : array-like or torch.Tensor of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    types : array-like of shape (n_samples,), optional
        Type of each sample. Default: k-means cluster ids of ``X`` (:func:`kmeans_types`).
    n_types : int, optional
        Clusters for the default types; default ``min(n_samples // 5, 10 * n_classes)``.
    protocol : Holdout, KFold or FixedValidation, default=KFold()
        Same splits for both tasks.
    seed : int, default=0

    Returns
    -------
    SelectivityResult

    References
    ----------
    .. [1] Hewitt & Liang, "Designing and Interpreting Probes with Control Tasks", EMNLP 2019.
    """
    labels = check_labels(y, n_samples=_n_rows(X), name="y", min_classes=2)
    if types is None:
        k = len(np.unique(labels))
        nt = n_types if n_types is not None else max(2, min(labels.size // 5, 10 * k))
        tp = kmeans_types(X, nt, seed=seed)
    else:
        tp = check_labels(types, n_samples=labels.size, name="types")
    ctrl = control_task_labels(labels, tp, seed=seed)
    if len(np.unique(ctrl)) < 2:
        ctrl = control_task_labels(labels, tp, seed=seed + 1)
    real, _ = evaluate(estimator, X, labels, protocol)
    # the control split is stratified on the control labels (same protocol object)
    control, _ = evaluate(estimator, X, ctrl, protocol)
    _, counts = np.unique(ctrl, return_counts=True)
    return SelectivityResult(
        accuracy=real.accuracy, control_accuracy=control.accuracy,
        selectivity=real.accuracy - control.accuracy,
        accuracy_ci=(real.ci_low, real.ci_high), control_ci=(control.ci_low, control.ci_high),
        control_chance=float(counts.max() / counts.sum()), n_types=len(np.unique(tp)),
        protocol=real.protocol,
    )


@dataclass(frozen=True)
class MDLResult(Result):
    """Online (prequential) codelength of the labels given the features.

    Attributes
    ----------
    online_codelength : float
        Bits to transmit all labels with the online code.
    uniform_codelength : float
        ``n log2 K`` bits.
    compression : float
        ``uniform_codelength / online_codelength`` (1 = no better than uniform).
    block_sizes : tuple of int
        Cumulative block boundaries ``t_1 < t_2 < ... < t_S = n``.
    block_codelengths : tuple of float
        Bits spent on each block (the first at the uniform code).
    n_classes : int
    """

    online_codelength: float
    uniform_codelength: float
    compression: float
    block_sizes: tuple[int, ...]
    block_codelengths: tuple[float, ...]
    n_classes: int


def _block_probs(est: Any, X: Any, classes: np.ndarray, eps: float) -> np.ndarray:
    """``predict_proba`` mapped onto all ``classes`` and mixed with ``eps`` of uniform."""
    p = np.asarray(to_numpy(est.predict_proba(X)), dtype=np.float64)
    full = np.zeros((p.shape[0], classes.size))
    pos = np.searchsorted(classes, np.asarray(est.classes_))
    full[:, pos] = p
    return (1.0 - eps) * full + eps / classes.size


def mdl_online(
    estimator: EstimatorFactory,
    X: Any,
    y: Any,
    *,
    fractions: Sequence[float] = VOITA_FRACTIONS,
    seed: int = 0,
    eps: float = 1e-6,
) -> MDLResult:
    r"""Minimum-description-length probing with the online code.

    The data are shuffled (``seed``) and cut at :math:`t_1 < \dots < t_S = n`
    (``fractions`` of ``n``). The first block is sent with the uniform code; block
    :math:`(t_i, t_{i+1}]` with a probe trained on the first :math:`t_i` samples:

    .. math:: L_{online} = t_1 \log_2 K
              - \sum_{i=1}^{S-1} \sum_{j=t_i+1}^{t_{i+1}} \log_2 p_{\theta_i}(y_j \mid x_j),

    and the compression is :math:`n \log_2 K / L_{online}`. Probabilities are mixed with
    ``eps`` of the uniform distribution so a class missing from a block costs a finite
    :math:`\log_2(K/\epsilon)` bits. A training block holding one class only is coded by its
    Laplace-smoothed class counts (no probe can be fitted to it).

    Parameters
    ----------
    estimator : estimator or callable
        Needs ``predict_proba`` and ``classes_``.
    X : array-like or torch.Tensor, first axis = samples
    y : array-like of shape (n_samples,)
    fractions : sequence of float, default=0.1%, 0.2%, 0.4%, ..., 50%, 100%
        Increasing block boundaries in (0, 1]; the last must be 1. Boundaries closer than
        one sample are merged.
    seed : int, default=0
    eps : float, default=1e-6

    Returns
    -------
    MDLResult

    References
    ----------
    .. [1] Voita & Titov, "Information-Theoretic Probing with Minimum Description Length",
       EMNLP 2020.
    """
    caller = "mdl_online"
    labels = check_labels(y, n_samples=_n_rows(X), name="y", min_classes=2)
    check_scalar(eps, "eps", caller=caller, kind=float, min_value=0, max_value=1,
                 include_min=False, include_max=False)
    fr = np.asarray(list(fractions), dtype=np.float64)
    if fr.size < 2 or np.any(np.diff(fr) <= 0) or fr[0] <= 0 or fr[-1] != 1.0:
        raise RepscopeValueError(
            f"The 'fractions' parameter of {caller} must be at least two increasing values in "
            f"(0, 1] ending at 1.0. Got {list(fractions)!r} instead."
        )
    n = labels.size
    bounds = sorted({max(1, round(f * n)) for f in fr})
    if len(bounds) < 2:
        raise RepscopeValueError(f"{n} samples are too few for an online code; need >= 2 blocks.")
    classes = np.unique(labels)
    K = classes.size
    order = np.random.default_rng(seed).permutation(n)
    blocks = [bounds[0] * math.log2(K)]
    for a, b in itertools.pairwise(bounds):
        tr, nxt = order[:a], order[a:b]
        y_tr = labels[tr]
        target = np.searchsorted(classes, labels[nxt])
        if np.unique(y_tr).size < 2:
            counts = np.array([(y_tr == c).sum() for c in classes], dtype=np.float64) + 1.0
            p = np.tile(counts / counts.sum(), (nxt.size, 1))
        else:
            est = make_estimator(estimator).fit(_take(X, tr), y_tr)
            p = _block_probs(est, _take(X, nxt), classes, eps)
        blocks.append(float(-np.log2(p[np.arange(nxt.size), target]).sum()))
    online = float(sum(blocks))
    uniform = n * math.log2(K)
    return MDLResult(online_codelength=online, uniform_codelength=uniform,
                     compression=uniform / online if online > 0 else math.inf,
                     block_sizes=tuple(int(b) for b in bounds),
                     block_codelengths=tuple(blocks), n_classes=int(K))
