"""OOD metrics: reference agreement (scikit-learn, brute-force sweeps) and their conventions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from repscope.exceptions import RepscopeValueError
from repscope.ood._metrics import (
    EmptyScoresError,
    auroc,
    fit_threshold,
    fpr_at_tpr,
    ood_metrics,
    roc_curve,
)


def _brute_fpr(a: np.ndarray, b: np.ndarray, tpr: float, positive: str) -> float:
    """Every distinct score (and +inf) as a threshold; keep those with TPR >= tpr."""
    best = 1.0
    for t in np.r_[np.unique(np.r_[a, b]), np.inf]:
        if positive == "ood":  # flagged: score <= t
            tp, fp = np.mean(b <= t), np.mean(a <= t)
        else:  # accepted: score >= t
            tp, fp = np.mean(a >= t), np.mean(b >= t)
        if tp >= tpr:
            best = min(best, fp)
    return float(best)


def _cases(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (rng.normal(1, 1, 200), rng.normal(0, 1, 150)),
        (rng.integers(0, 5, 100).astype(float), rng.integers(0, 4, 80).astype(float)),  # ties
        (rng.normal(0, 1, 20), rng.normal(3, 1, 37)),  # worse than chance
        (np.array([1.0]), np.array([0.0, 2.0])),
    ]


def test_auroc_equals_sklearn_with_and_without_ties(rng):
    for a, b in _cases(rng):
        y = np.r_[np.ones(a.size), np.zeros(b.size)]
        ref = roc_auc_score(y, np.r_[a, b])
        assert auroc(a, b) == pytest.approx(ref, abs=1e-12)
        assert ood_metrics(a, b).auroc == pytest.approx(ref, abs=1e-12)
        assert ood_metrics(a, b, positive="id").auroc == pytest.approx(ref, abs=1e-12)


def test_aupr_in_and_out_equal_sklearn(rng):
    for a, b in _cases(rng):
        y = np.r_[np.ones(a.size), np.zeros(b.size)]
        s = np.r_[a, b]
        m = ood_metrics(a, b)
        assert m.aupr_in == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert m.aupr_out == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)


@pytest.mark.parametrize("positive", ["ood", "id"])
@pytest.mark.parametrize("tpr", [0.95, 0.9, 0.5, 1.0, 0.8])
def test_fpr_at_tpr_equals_brute_force_sweep(rng, positive, tpr):
    for a, b in _cases(rng):
        ref = _brute_fpr(a, b, tpr, positive)
        assert fpr_at_tpr(a, b, tpr=tpr, positive=positive) == pytest.approx(ref, abs=1e-12)
        assert ood_metrics(a, b, tpr=tpr, positive=positive).fpr_at_tpr == pytest.approx(ref)


def test_fpr_conventions_differ_and_threshold_reproduces_them():
    a = np.array([5.0, 4.0, 3.0, 2.0, 1.0])  # ID
    b = np.array([3.5, 0.0, -1.0, -2.0])  # OOD
    m_ood = ood_metrics(a, b, tpr=0.75, positive="ood")
    m_id = ood_metrics(a, b, tpr=0.75, positive="id")
    # OOD positive: flag 3 of 4 OOD -> threshold 0.0 -> no ID flagged
    assert m_ood.threshold == 0.0 and m_ood.fpr_at_tpr == 0.0
    assert np.mean(b <= m_ood.threshold) >= 0.75
    # ID positive: accept 4 of 5 ID -> threshold 2.0 -> 1 of 4 OOD accepted
    assert m_id.threshold == 2.0 and m_id.fpr_at_tpr == 0.25
    assert "OOD positive" in m_ood.conventions and "ID positive" in m_id.conventions


def test_detection_error_is_min_half_error_over_thresholds(rng):
    for a, b in _cases(rng):
        errs = [0.5 * np.mean(a < t) + 0.5 * np.mean(b >= t)
                for t in np.r_[np.unique(np.r_[a, b]), np.inf]]
        assert ood_metrics(a, b).detection_error == pytest.approx(min(errs), abs=1e-12)


def test_all_identical_scores_give_documented_values():
    a, b = np.full(30, 2.0), np.full(10, 2.0)
    m = ood_metrics(a, b)
    assert m.auroc == 0.5
    assert m.detection_error == 0.5
    assert m.fpr_at_tpr == 1.0
    assert m.aupr_in == pytest.approx(0.75) and m.aupr_out == pytest.approx(0.25)


def test_perfect_separation():
    m = ood_metrics([3.0, 4.0], [1.0, 2.0])
    assert (m.auroc, m.fpr_at_tpr, m.detection_error, m.aupr_in, m.aupr_out) == (1, 0, 0, 1, 1)


def test_empty_or_nonfinite_scores_are_named_errors():
    with pytest.raises(EmptyScoresError, match="scores_ood is empty"):
        ood_metrics([1.0, 2.0], [])
    with pytest.raises(EmptyScoresError, match="scores_id is empty"):
        fit_threshold([])
    with pytest.raises(RepscopeValueError, match="scores_id holds 1 NaN"):
        auroc([1.0, np.nan], [0.0])
    with pytest.raises(RepscopeValueError, match="positive must be 'ood' or 'id'"):
        ood_metrics([1.0], [0.0], positive="in")
    with pytest.raises(RepscopeValueError, match=r"tpr must be a number in \(0, 1\]"):
        ood_metrics([1.0], [0.0], tpr=95)


def test_threshold_keeps_at_least_tpr_of_id_and_matches_id_positive_fpr(rng):
    a, b = rng.normal(1, 1, 401), rng.normal(0, 1, 300)
    for tpr in (0.95, 0.9, 0.5):
        th = fit_threshold(a, tpr=tpr)
        kept = np.mean(~th.predict(a))
        assert kept >= tpr and kept == th.tpr_fit
        assert np.mean(a > th.threshold) < tpr  # the largest such threshold
        assert np.mean(~th.predict(b)) == pytest.approx(
            fpr_at_tpr(a, b, tpr=tpr, positive="id"))
    single = fit_threshold(a).predict(np.float64(-10.0))
    assert single.tolist() == [True]


def test_roc_curve_runs_from_origin_to_one_and_integrates_to_auroc(rng):
    a, b = rng.normal(1, 1, 300), rng.normal(0, 1, 200)
    fpr, tpr = roc_curve(a, b, positive="id")
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(a, b), abs=1e-12)
    f2, t2 = roc_curve(a, b, max_points=50)
    assert f2.size <= 50 and (f2[0], t2[-1]) == (0, 1)
