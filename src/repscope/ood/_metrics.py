"""OOD detection metrics with their conventions written down once.

**Scores.** Every detector's ``score_samples`` returns scores where *higher = more
in-distribution* (ID). The metrics take the ID samples' scores and the OOD samples' scores.

**Positive class.** ``positive="ood"`` (the default, as pytorch-ood) treats OOD as the
positive class: a sample is *flagged* when its score is at or below a threshold, the true
positive rate (TPR) is the share of OOD samples flagged and the false positive rate (FPR) the
share of ID samples flagged. ``positive="id"`` (the kNN-OOD / PT-OOD papers' "FPR of OOD at
95% ID TPR") treats ID as positive: a sample is *accepted* as ID when its score is at or above
the threshold, the TPR is the share of ID samples accepted and the FPR the share of OOD samples
accepted. Only ``fpr_at_tpr``, ``threshold`` and the ROC curve depend on the choice; AUROC,
AUPR-in, AUPR-out and the detection error do not.

**Operating point.** ``fpr_at_tpr`` is the lowest FPR over every threshold whose TPR is at
least ``tpr`` (a brute-force sweep over all distinct scores gives the same value). Ties are
treated as one threshold: tied samples are flagged (or accepted) together.

**AUROC** is the probability that an ID sample scores higher than an OOD sample, ties counting
one half (the Mann-Whitney statistic; equal to ``sklearn.metrics.roc_auc_score`` with ID as
label 1). When every score is identical it is 0.5.

**AUPR-in** is the average precision with ID as positive, ranked by the score; **AUPR-out**
with OOD as positive, ranked by the negated score (``sklearn.metrics.average_precision_score``,
no interpolation). With all scores identical each equals the share of its positive class.

**Detection error** is :math:`\\min_t \\tfrac12 (\\mathrm{FNR}(t) + \\mathrm{FPR}(t))`, the
smallest error of a threshold when ID and OOD are equally likely (0.5 for identical scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from repscope.exceptions import RepscopeValueError
from repscope.results import Result

__all__ = [
    "EmptyScoresError",
    "OODMetricsResult",
    "OODThreshold",
    "auroc",
    "fit_threshold",
    "fpr_at_tpr",
    "ood_metrics",
    "roc_curve",
]

Positive = Literal["ood", "id"]


class EmptyScoresError(RepscopeValueError):
    """The ID or the OOD score set is empty (no metric is defined)."""


def _scores(values: Any, name: str, *, allow_empty: bool = False) -> np.ndarray:
    from repscope._array import to_numpy

    s = np.asarray(to_numpy(values) if not isinstance(values, np.ndarray) else values,
                   dtype=np.float64).ravel()
    if s.size == 0 and not allow_empty:
        raise EmptyScoresError(
            f"{name} is empty; OOD metrics need at least one ID and one OOD score.")
    if not np.all(np.isfinite(s)):
        bad = int(np.sum(~np.isfinite(s)))
        raise RepscopeValueError(
            f"{name} holds {bad} NaN or infinite values of {s.size}; scores must be finite.")
    return s


def _positive(positive: str) -> str:
    if positive not in ("ood", "id"):
        raise RepscopeValueError(f"positive must be 'ood' or 'id'; got {positive!r}.")
    return positive


def _tpr(tpr: float) -> float:
    if not (isinstance(tpr, (int, float, np.floating)) and 0.0 < float(tpr) <= 1.0):
        raise RepscopeValueError(f"tpr must be a number in (0, 1]; got {tpr!r}.")
    return float(tpr)


def _needed(tpr: float, n: int) -> int:
    """The smallest count ``k`` with ``k / n >= tpr`` (exact in floating point)."""
    k = int(np.ceil(tpr * n))
    while k > 0 and (k - 1) / n >= tpr:
        k -= 1
    while k < n and k / n < tpr:
        k += 1
    return max(k, 1)


def auroc(scores_id: Any, scores_ood: Any) -> float:
    """Area under the ROC curve: P(ID score > OOD score) + 0.5 P(tie).

    Parameters
    ----------
    scores_id, scores_ood : array-like of shape (n_id,) / (n_ood,)
        Scores, higher = more in-distribution.

    Returns
    -------
    float
        In [0, 1]; 0.5 when every score is identical; independent of the positive class.

    Raises
    ------
    EmptyScoresError
        Either set is empty.

    Examples
    --------
    >>> auroc([3.0, 2.0], [1.0, 2.0])
    0.875
    """
    a = _scores(scores_id, "scores_id")
    b = _scores(scores_ood, "scores_ood")
    return _auroc(a, b)


def _average_ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="mergesort")
    sv = v[order]
    starts = np.r_[0, np.nonzero(np.diff(sv))[0] + 1]
    ends = np.r_[starts[1:], sv.size]
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks = np.empty(v.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _auroc(a: np.ndarray, b: np.ndarray) -> float:
    ranks = _average_ranks(np.concatenate([a, b]))
    u = ranks[: a.size].sum() - a.size * (a.size + 1) / 2.0
    return float(u / (a.size * b.size))


def _oriented(a: np.ndarray, b: np.ndarray, positive: str) -> tuple[np.ndarray, np.ndarray]:
    """(positive scores, negative scores), oriented so higher = more positive."""
    return (-b, -a) if positive == "ood" else (a, b)


def fpr_at_tpr(scores_id: Any, scores_ood: Any, *, tpr: float = 0.95,
               positive: Positive = "ood") -> float:
    """The lowest false positive rate of a threshold whose true positive rate is >= ``tpr``.

    See the module docstring for what TPR and FPR mean under ``positive``.

    Examples
    --------
    >>> fpr_at_tpr([4.0, 3.0, 2.0, 1.0], [2.5, 0.0], tpr=0.75, positive="id")
    0.5
    """
    a = _scores(scores_id, "scores_id")
    b = _scores(scores_ood, "scores_ood")
    return _fpr_at(a, b, _tpr(tpr), _positive(positive))[0]


def _fpr_at(a: np.ndarray, b: np.ndarray, tpr: float, positive: str) -> tuple[float, float]:
    """(FPR, threshold on the positive-oriented scale)."""
    pos, neg = _oriented(a, b, positive)
    k = _needed(tpr, pos.size)
    t = float(np.sort(pos)[::-1][k - 1])  # the largest threshold keeping >= k positives
    return float(np.mean(neg >= t)), t


def roc_curve(scores_id: Any, scores_ood: Any, *, positive: Positive = "ood",
              max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """FPR and TPR at every distinct threshold, from (0, 0) to (1, 1).

    Parameters
    ----------
    scores_id, scores_ood : array-like
        Scores, higher = more in-distribution.
    positive : {"ood", "id"}
        Which class is positive (module docstring).
    max_points : int, optional
        Keep at most this many points (evenly spaced along the curve's index, always keeping
        both ends); ``None`` keeps all.

    Returns
    -------
    fpr, tpr : ndarray of shape (n_points,)
    """
    a = _scores(scores_id, "scores_id")
    b = _scores(scores_ood, "scores_ood")
    return _roc(a, b, _positive(positive), max_points)


def _roc(a: np.ndarray, b: np.ndarray, positive: str,
         max_points: int | None) -> tuple[np.ndarray, np.ndarray]:
    pos, neg = _oriented(a, b, positive)
    s = np.concatenate([pos, neg])
    t = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tps = np.cumsum(t)[last]
    fps = (last + 1) - tps
    fpr = np.r_[0.0, fps / neg.size]
    tpr = np.r_[0.0, tps / pos.size]
    if max_points is not None and fpr.size > max_points:
        keep = np.unique(np.linspace(0, fpr.size - 1, max(2, max_points)).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


def _detection_error(a: np.ndarray, b: np.ndarray) -> float:
    fpr, tpr = _roc(a, b, "id", None)
    return float(np.min(0.5 * (1.0 - tpr) + 0.5 * fpr))


@dataclass(frozen=True)
class OODMetricsResult(Result):
    """Detection metrics of one score set (conventions: :mod:`repscope.ood._metrics`).

    Attributes
    ----------
    auroc : float
        P(ID score > OOD score) + 0.5 P(tie); 0.5 for identical scores.
    aupr_in : float
        Average precision with ID as positive (ranked by the score).
    aupr_out : float
        Average precision with OOD as positive (ranked by the negated score).
    fpr_at_tpr : float
        Lowest FPR of a threshold with TPR >= ``tpr``, under ``positive``.
    detection_error : float
        min over thresholds of 0.5 (FNR + FPR).
    tpr : float
        The target true positive rate of ``fpr_at_tpr``.
    positive : {"ood", "id"}
        The positive class of ``fpr_at_tpr`` and ``threshold``.
    threshold : float
        The score threshold at that operating point: with ``positive="ood"`` a sample is
        flagged OOD when its score is <= threshold; with ``"id"`` accepted as ID when >=.
    n_id, n_ood : int
    conventions : str
        The conventions above in one sentence (for tables and JSON readers).
    """

    auroc: float
    aupr_in: float
    aupr_out: float
    fpr_at_tpr: float
    detection_error: float
    tpr: float
    positive: str
    threshold: float
    n_id: int
    n_ood: int
    conventions: str = ""


def _conventions(positive: str, tpr: float) -> str:
    pct = f"{100 * tpr:g}%"
    if positive == "ood":
        what = (f"FPR = share of ID flagged as OOD when {pct} of OOD is flagged (OOD positive; "
                "flagged: score <= threshold)")
    else:
        what = (f"FPR = share of OOD accepted as ID when {pct} of ID is accepted (ID positive; "
                "accepted: score >= threshold)")
    return ("scores: higher = more in-distribution; AUROC = P(ID > OOD) + 0.5 P(tie); "
            f"AUPR-in: ID positive, AUPR-out: OOD positive; {what}; detection error = "
            "min over thresholds of (FNR + FPR) / 2")


def ood_metrics(scores_id: Any, scores_ood: Any, *, positive: Positive = "ood",
                tpr: float = 0.95) -> OODMetricsResult:
    """AUROC, AUPR-in, AUPR-out, FPR at ``tpr`` and detection error of one detector.

    Parameters
    ----------
    scores_id : array-like of shape (n_id,)
        Scores of in-distribution samples (higher = more ID).
    scores_ood : array-like of shape (n_ood,)
        Scores of OOD samples.
    positive : {"ood", "id"}, default="ood"
        The positive class of the FPR at ``tpr`` (module docstring).
    tpr : float, default=0.95
        Target true positive rate, in (0, 1].

    Returns
    -------
    OODMetricsResult

    Raises
    ------
    EmptyScoresError
        ``scores_id`` or ``scores_ood`` is empty.
    RepscopeValueError
        NaN or infinite scores, an unknown ``positive``, ``tpr`` outside (0, 1].

    Examples
    --------
    >>> m = ood_metrics([3.0, 2.0, 1.5], [1.0, 0.5])
    >>> m.auroc, m.fpr_at_tpr
    (1.0, 0.0)
    """
    from repscope.probe._metrics import average_precision

    a = _scores(scores_id, "scores_id")
    b = _scores(scores_ood, "scores_ood")
    pos = _positive(positive)
    tpr = _tpr(tpr)
    fpr, t = _fpr_at(a, b, tpr, pos)
    is_id = np.r_[np.ones(a.size), np.zeros(b.size)]
    s = np.r_[a, b]
    return OODMetricsResult(
        auroc=_auroc(a, b),
        aupr_in=average_precision(is_id, s),
        aupr_out=average_precision(1.0 - is_id, -s),
        fpr_at_tpr=fpr,
        detection_error=_detection_error(a, b),
        tpr=tpr,
        positive=pos,
        threshold=-t if pos == "ood" else t,
        n_id=int(a.size),
        n_ood=int(b.size),
        conventions=_conventions(pos, tpr),
    )


@dataclass(frozen=True)
class OODThreshold(Result):
    """A threshold fitted on ID scores that classifies single new samples.

    A sample is called OOD when its score is strictly below ``threshold``; on the ID scores it
    was fitted on, at least ``tpr`` of them are kept as ID (ties at the threshold are kept).

    Attributes
    ----------
    threshold : float
    tpr : float
        The target share of ID samples kept.
    tpr_fit : float
        The share actually kept on the fitting scores (>= ``tpr``; larger with ties).
    n_id : int
        Number of ID scores it was fitted on.
    """

    threshold: float
    tpr: float
    tpr_fit: float
    n_id: int

    def predict(self, scores: Any) -> np.ndarray:
        """``is_ood`` per sample: ``scores < threshold`` (bool array of the input's length).

        A single score gives an array of length 1.
        """
        s = _scores(scores, "scores", allow_empty=True)
        return s < self.threshold


def fit_threshold(scores_id: Any, tpr: float = 0.95) -> OODThreshold:
    """The largest threshold that keeps at least ``tpr`` of the ID scores as ID.

    Parameters
    ----------
    scores_id : array-like of shape (n_id,)
        Scores of held-out ID samples (higher = more ID). Fit on samples the detector was
        *not* fitted on: training samples score higher than new ID samples.
    tpr : float, default=0.95

    Returns
    -------
    OODThreshold

    Examples
    --------
    >>> th = fit_threshold([1.0, 2.0, 3.0, 4.0], tpr=0.75)
    >>> th.threshold, th.predict([1.5, 2.0]).tolist()
    (2.0, [True, False])
    """
    a = _scores(scores_id, "scores_id")
    tpr = _tpr(tpr)
    k = _needed(tpr, a.size)
    t = float(np.sort(a)[::-1][k - 1])
    return OODThreshold(threshold=t, tpr=tpr, tpr_fit=float(np.mean(a >= t)), n_id=int(a.size))
