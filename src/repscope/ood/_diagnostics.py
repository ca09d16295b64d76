"""PT-OOD diagnostics: why boundary-based OOD scores fail on "familiar" OOD data.

Miyai et al. (PT-OOD, arXiv 2310.00847) find that OOD samples resembling the pre-training data
fall into the same *linear regions* as the ID classes, so scores that read the ID decision
boundary (MSP, MaxLogit, energy, ...) cannot flag them, while an *instance-level* score (the
distance to the k-th nearest ID training feature) still can. This module measures both sides:

* :func:`ood_linear_separability`: how well a linear probe trained to tell ID from OOD features
  does on held-out folds (cross-validated). Low separability means the OOD data sits inside
  the ID feature region: every linear detector will struggle.
* :func:`confident_ood_share`: the share of OOD samples that the ID classifier assigns to an
  ID class with high confidence (max softmax probability >= ``confidence``), beside the same
  share of held-out ID samples.
* :func:`scoring_level`: whether a detector scores at the *instance* level (distances to
  individual training samples: ``knn``) or at the *class* level (class statistics or the
  ID decision boundary: everything else); the evaluation driver takes ``level=`` to run
  either family (:func:`repscope.ood.evaluate_detectors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from repscope.exceptions import RepscopeValueError
from repscope.results import RecordedResult, Result

__all__ = [
    "LEVELS",
    "OODDiagnosticsResult",
    "OODSeparabilityResult",
    "confident_ood_share",
    "ood_linear_separability",
    "scoring_level",
]

Level = Literal["instance", "class"]

#: The scoring levels :func:`scoring_level` returns; ``"all"`` selects both in the driver.
LEVELS = ("instance", "class")

#: Detectors that score against individual training samples (all others use class statistics
#: or the ID decision boundary). A registered detector may declare ``level`` itself.
_INSTANCE_LEVEL = frozenset({"knn"})


def scoring_level(name: str, detector: Any = None) -> Level:
    """``"instance"`` for detectors that compare a sample with individual training samples
    (kNN), ``"class"`` for those that use class statistics or the ID decision boundary.

    Parameters
    ----------
    name : str
        The detector's registered name.
    detector : OODDetector, optional
        A detector instance; its class attribute ``level`` wins when it has one, then the
        registry's ``level`` metadata (:func:`repscope.ood.detector_info`).

    Returns
    -------
    {"instance", "class"}
    """
    declared = getattr(type(detector), "level", None) if detector is not None else None
    if declared in LEVELS:
        return declared
    try:
        from repscope.ood._registry import detector_info

        registered = detector_info(name).level
    except Exception:  # not registered (a user's own detector): the name decides
        registered = None
    if registered in LEVELS:
        return registered  # type: ignore[return-value]
    return "instance" if name in _INSTANCE_LEVEL else "class"


@dataclass(frozen=True)
class OODSeparabilityResult(Result):
    """Cross-validated linear separability of ID from OOD features.

    Attributes
    ----------
    balanced_accuracy : float
        Mean of the ID and OOD recall of the held-out predictions, pooled over folds
        (0.5 = inseparable, 1 = separable).
    auroc : float
        AUROC of the pooled held-out decision values (ID vs OOD).
    n_id, n_ood, folds : int
    """

    balanced_accuracy: float
    auroc: float
    n_id: int
    n_ood: int
    folds: int


def _matrix(X: Any, name: str) -> np.ndarray:
    from repscope._array import to_numpy

    A = np.asarray(to_numpy(X) if not isinstance(X, np.ndarray) else X, dtype=np.float64)
    A = (A.reshape(A.shape[0], int(np.prod(A.shape[1:], dtype=np.int64))) if A.ndim > 1
         else A.reshape(-1, 1))
    if A.shape[0] == 0:
        from repscope.ood._metrics import EmptyScoresError

        raise EmptyScoresError(f"{name} has no samples; the diagnostics need ID and OOD samples.")
    if not np.all(np.isfinite(A)):
        raise RepscopeValueError(f"{name} holds NaN or infinite values; features must be finite.")
    return A


def ood_linear_separability(X_id: Any, X_ood: Any, *, folds: int = 5, C: float = 1.0,
                            max_per_side: int | None = 2000,
                            seed: int = 0) -> OODSeparabilityResult:
    """How linearly separable ID and OOD features are: a cross-validated ID-vs-OOD probe.

    An L2 logistic probe (:class:`~repscope.probe.LinearProbe`, ``C``, balanced class weights)
    on features standardised with each training fold's mean and standard deviation;
    stratified ``folds``-fold cross-validation; the held-out predictions and decision values
    of all folds are pooled.

    Parameters
    ----------
    X_id : array-like of shape (n_id, n_features)
    X_ood : array-like of shape (n_ood, n_features)
    folds : int, default=5
    C : float, default=1.0
        Inverse L2 strength (scikit-learn's convention).
    max_per_side : int or None, default=2000
        Subsample each side to at most this many samples (seeded) to bound the cost.
    seed : int, default=0

    Returns
    -------
    OODSeparabilityResult

    Raises
    ------
    EmptyScoresError
        Either side has no samples.
    RepscopeValueError
        Different widths, too few samples for ``folds``, or non-finite features.
    """
    from repscope.ood._metrics import _auroc
    from repscope.probe._logistic import LinearProbe
    from repscope.probe._protocols import KFold

    A, B = _matrix(X_id, "X_id"), _matrix(X_ood, "X_ood")
    if A.shape[1] != B.shape[1]:
        raise RepscopeValueError(
            f"X_id and X_ood must have the same number of features; got {A.shape[1]} and "
            f"{B.shape[1]}.")
    if folds < 2 or min(A.shape[0], B.shape[0]) < folds:
        raise RepscopeValueError(
            f"folds must be >= 2 and at most the smaller side's size; got folds={folds} with "
            f"{A.shape[0]} ID and {B.shape[0]} OOD samples.")
    rng = np.random.default_rng(seed)
    if max_per_side is not None:
        A = A[np.sort(rng.permutation(A.shape[0])[:max_per_side])]
        B = B[np.sort(rng.permutation(B.shape[0])[:max_per_side])]
    X = np.vstack([A, B])
    y = np.r_[np.ones(A.shape[0], dtype=np.int64), np.zeros(B.shape[0], dtype=np.int64)]
    decision = np.zeros(y.size)
    for train, test in KFold(folds, seed).splits(y):
        mu = X[train].mean(0)
        sd = X[train].std(0)
        sd[sd == 0] = 1.0
        probe = LinearProbe(C=C, class_weight="balanced", random_state=seed)
        probe.fit((X[train] - mu) / sd, y[train])
        z = np.asarray(probe.decision_function((X[test] - mu) / sd), dtype=np.float64)
        z = z.reshape(z.shape[0], -1)  # decision of class 1 (ID): one column, or two
        decision[test] = z[:, 0] if z.shape[1] == 1 else z[:, 1] - z[:, 0]
    pred = decision > 0
    bal = 0.5 * (np.mean(pred[y == 1]) + np.mean(~pred[y == 0]))
    return OODSeparabilityResult(
        balanced_accuracy=float(bal), auroc=_auroc(decision[y == 1], decision[y == 0]),
        n_id=int(A.shape[0]), n_ood=int(B.shape[0]), folds=int(folds))


def _max_softmax(logits: Any, name: str) -> np.ndarray:
    Z = _matrix(logits, name)
    if Z.shape[1] == 1:  # a binary probe's single decision column
        Z = np.column_stack([np.zeros(Z.shape[0]), Z[:, 0]])
    Z = Z - Z.max(1, keepdims=True)
    P = np.exp(Z)
    return np.asarray(P.max(1) / P.sum(1))


def confident_ood_share(logits_ood: Any, *, confidence: float = 0.9,
                        logits_id: Any = None) -> tuple[float, float]:
    """The share of OOD samples assigned to an ID class with max softmax >= ``confidence``.

    Parameters
    ----------
    logits_ood : array-like of shape (n_ood, n_classes)
        The ID classifier's logits on OOD samples (one column: a binary probe's decision,
        expanded to ``[0, z]``).
    confidence : float, default=0.9
        In (0, 1).
    logits_id : array-like of shape (n_id, n_classes), optional
        The same classifier's logits on held-out ID samples, for comparison.

    Returns
    -------
    ood_share, id_share : float
        ``id_share`` is NaN without ``logits_id``.

    Examples
    --------
    >>> confident_ood_share([[5.0, 0.0], [0.1, 0.0]], confidence=0.9)
    (0.5, nan)
    """
    if not 0.0 < confidence < 1.0:
        raise RepscopeValueError(f"confidence must be in (0, 1); got {confidence!r}.")
    ood = float(np.mean(_max_softmax(logits_ood, "logits_ood") >= confidence))
    idv = (float(np.mean(_max_softmax(logits_id, "logits_id") >= confidence))
           if logits_id is not None else float("nan"))
    return ood, idv


@dataclass(frozen=True)
class OODDiagnosticsResult(RecordedResult):
    """PT-OOD diagnostics per layer (analysis ``ood_diagnostics``).

    Attributes
    ----------
    layers : tuple of str
    separability_accuracy, separability_auroc : tuple of float
        Cross-validated ID-vs-OOD linear probe (:func:`ood_linear_separability`) per layer.
    confident_ood, confident_id : tuple of float
        Share of OOD / held-out ID samples the ID probe assigns to a class with max softmax
        >= ``confidence`` (NaN without labels: no ID probe).
    confidence : float
    folds : int
    n_id, n_ood : int
    """

    analysis = "ood_diagnostics"

    layers: tuple[str, ...]
    separability_accuracy: tuple[float, ...]
    separability_auroc: tuple[float, ...]
    confident_ood: tuple[float, ...]
    confident_id: tuple[float, ...]
    confidence: float
    folds: int
    n_id: int
    n_ood: int

    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        return [(layer, {
            "separability_accuracy": self.separability_accuracy[i],
            "separability_auroc": self.separability_auroc[i],
            "confident_ood": self.confident_ood[i],
            "confident_id": self.confident_id[i],
            "confidence": self.confidence, "folds": self.folds,
            "n_id": self.n_id, "n_ood": self.n_ood,
        }) for i, layer in enumerate(self.layers)]
