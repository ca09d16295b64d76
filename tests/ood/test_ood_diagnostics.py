"""PT-OOD diagnostics and the evaluation driver (stand-in detectors; real ones: test_ood_real)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone

from repscope.exceptions import RepscopeValueError
from repscope.ood._diagnostics import (
    confident_ood_share,
    ood_linear_separability,
    scoring_level,
)
from repscope.ood._evaluate import _split, evaluate_detectors
from repscope.ood._metrics import EmptyScoresError, ood_metrics


class KthNeighbour(BaseEstimator):
    """Stand-in instance-level detector: minus the cosine distance to the k-th neighbour."""

    needs = frozenset()
    level = "instance"

    def __init__(self, k: int = 3) -> None:
        self.k = k

    def fit(self, X, y=None, *, logits=None):
        self.Z_ = X / np.linalg.norm(X, axis=1, keepdims=True)
        return self

    def score_samples(self, X, *, logits=None):
        Z = X / np.linalg.norm(X, axis=1, keepdims=True)
        d = 1.0 - Z @ self.Z_.T
        return -np.sort(d, axis=1)[:, self.k - 1]


class MaxSoftmax(BaseEstimator):
    """Stand-in class-level detector on given logits."""

    needs = frozenset({"logits"})

    def fit(self, X, y=None, *, logits=None):
        if logits is None:
            raise ValueError("logits missing")
        return self

    def score_samples(self, X, *, logits=None):
        z = logits - logits.max(1, keepdims=True)
        p = np.exp(z)
        return (p / p.sum(1, keepdims=True)).max(1)


def _blobs(rng, n=300, d=12, shift=3.0, k=3):
    centres = rng.normal(0, shift, (k, d))
    y = rng.integers(0, k, n)
    X = centres[y] + rng.normal(0, 1, (n, d))
    return X + 10.0, y  # positive mean so cosine is informative


def test_separability_is_chance_for_one_distribution_and_high_for_shifted(rng):
    A = rng.normal(0, 1, (200, 8))
    B = rng.normal(0, 1, (200, 8))
    same = ood_linear_separability(A, B, folds=4, seed=0)
    assert abs(same.balanced_accuracy - 0.5) < 0.1
    far = ood_linear_separability(A, B + 2.0, folds=4, seed=0)
    assert far.balanced_accuracy > 0.95 and far.auroc > 0.99
    with pytest.raises(RepscopeValueError, match="same number of features"):
        ood_linear_separability(A, B[:, :3])
    with pytest.raises(EmptyScoresError, match="X_ood has no samples"):
        ood_linear_separability(A, B[:0])


def test_confident_share_counts_max_softmax_at_or_above_confidence():
    z_ood = np.array([[4.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 9.0], [1.0, 0.0, 0.0]])
    p = np.exp(z_ood) / np.exp(z_ood).sum(1, keepdims=True)
    expected = float(np.mean(p.max(1) >= 0.9))
    ood, idv = confident_ood_share(z_ood, confidence=0.9, logits_id=z_ood[:2])
    assert ood == expected == 0.5 and idv == 0.5
    # a binary probe's single column z is the pair [0, z]
    assert confident_ood_share(np.array([[5.0], [0.0]]), confidence=0.9)[0] == 0.5
    with pytest.raises(RepscopeValueError, match=r"confidence must be in \(0, 1\)"):
        confident_ood_share(z_ood, confidence=1.0)


def test_scoring_level_reads_the_detector_then_the_name():
    assert scoring_level("knn") == "instance"
    assert scoring_level("mahalanobis") == "class"
    assert scoring_level("mine", KthNeighbour()) == "instance"
    assert scoring_level("mine", MaxSoftmax()) == "class"


def test_driver_metrics_equal_scoring_the_held_out_split_by_hand(rng):
    X, y = _blobs(rng)
    ood = rng.normal(0, 1, (120, 12)) + 10.0
    res = evaluate_detectors({"a": X, "b": 2 * X}, {"a": ood, "b": 2 * ood}, labels=y,
                             detectors={"knn3": KthNeighbour(3), "msp": MaxSoftmax()},
                             id_test_fraction=0.25, seed=7, diagnostics=False)
    assert res.layers == ("a", "b") and res.detectors == ("knn3", "msp")
    fit, test = _split(len(y), y, 0.25, 7)
    assert np.intersect1d(fit, test).size == 0 and fit.size + test.size == len(y)
    det = KthNeighbour(3).fit(X[fit])
    ref = ood_metrics(det.score_samples(X[test]), det.score_samples(ood))
    got = res.get("knn3", "a")
    assert got.metrics.auroc == pytest.approx(ref.auroc)
    assert got.metrics.fpr_at_tpr == pytest.approx(ref.fpr_at_tpr)
    assert got.level == "instance" and res.get("msp", "a").level == "class"
    assert sum(got.hist_id) == test.size and sum(got.hist_ood) == ood.shape[0]
    assert len(got.hist_edges) == len(got.hist_id) + 1
    assert got.roc_fpr[0] == 0.0 and got.roc_tpr[-1] == 1.0
    assert res.n_id_test == test.size and res.n_ood == 120
    table = res.table("auroc")
    assert set(table) == {"knn3", "msp"} and table["knn3"]["a"] == got.metrics.auroc


def test_driver_without_labels_keeps_logit_detectors_with_a_reason(rng):
    X, _ = _blobs(rng)
    ood = rng.normal(0, 1, (50, 12)) + 10.0
    res = evaluate_detectors(X, ood, detectors={"knn3": KthNeighbour(), "msp": MaxSoftmax()},
                             diagnostics=True, folds=3)
    skipped = res.get("msp", "")
    assert skipped.metrics is None and "give class labels" in skipped.reason
    assert res.get("knn3", "").metrics is not None
    assert np.isnan(res.diagnostics.confident_ood[0])  # no labels: no ID probe
    recs = res.all_records(model="m", dataset="d", params={"seed": 0})
    ood_recs = [r for r in recs if r.analysis == "ood"]
    assert {r.params["detector"] for r in ood_recs} == {"knn3", "msp"}
    assert [r.analysis for r in recs].count("ood_diagnostics") == 1
    msp_rec = next(r for r in ood_recs if r.params["detector"] == "msp")
    assert "reason" in msp_rec.values and np.isnan(msp_rec.values["auroc"])


def test_driver_level_option_selects_instance_or_class_detectors(rng):
    X, y = _blobs(rng, n=120)
    ood = rng.normal(0, 1, (40, 12)) + 10.0
    dets = {"knn3": KthNeighbour(), "msp": MaxSoftmax()}
    inst = evaluate_detectors(X, ood, labels=y, detectors=dets, level="instance",
                              diagnostics=False)
    cls = evaluate_detectors(X, ood, labels=y, detectors=dets, level="class",
                             diagnostics=False)
    assert inst.detectors == ("knn3",) and cls.detectors == ("msp",)
    with pytest.raises(RepscopeValueError, match="level must be 'all', 'instance' or 'class'"):
        evaluate_detectors(X, ood, detectors=dets, level="sample")


def test_driver_bad_inputs_are_named_errors(rng):
    X, y = _blobs(rng, n=60)
    dets = {"knn3": KthNeighbour()}
    with pytest.raises(EmptyScoresError, match="OOD features have no samples"):
        evaluate_detectors(X, X[:0], detectors=dets, diagnostics=False)
    with pytest.raises(RepscopeValueError, match="12 features on the ID side and 5"):
        evaluate_detectors(X, X[:, :5], detectors=dets, diagnostics=False)
    with pytest.raises(RepscopeValueError, match="one value per ID sample"):
        evaluate_detectors(X, X, labels=y[:10], detectors=dets, diagnostics=False)


def test_driver_shares_one_moments_per_layer_between_class_detectors(rng, monkeypatch):
    """Class statistics come from one Moments per layer, shared by the Mahalanobis family,
    whitened kNN and the tied GMM (not one accumulation per detector), and the scores equal
    each detector fitted on its own."""
    from repscope.ood import get_detector
    from repscope.stats import Moments

    X, y = _blobs(rng)
    ood = rng.normal(0, 1, (60, 12)) + 3.0
    names = {"mahalanobis": get_detector("mahalanobis"),
             "relative_mahalanobis": get_detector("relative_mahalanobis"),
             "knn_whitened": get_detector("knn", k=3, metric="whitened"),
             "gmm_tied": get_detector("gmm", covariance_type="tied")}
    calls = []
    original = Moments.update

    def counting(self, X, Y=None, labels=None):
        if labels is not None:  # class statistics (the ID probe's own scaling Moments has none)
            calls.append(self)
        return original(self, X, Y, labels)

    monkeypatch.setattr(Moments, "update", counting)
    res = evaluate_detectors({"a": X}, {"a": ood}, labels=y, detectors=names,
                             id_test_fraction=0.25, seed=3, diagnostics=False)
    assert len({id(m) for m in calls}) == 1  # one accumulator for the layer, shared by all four
    monkeypatch.setattr(Moments, "update", original)
    fit, test = _split(len(y), y, 0.25, 3)
    for name, template in names.items():
        det = clone(template).fit(X[fit], y[fit])
        ref = ood_metrics(det.score_samples(X[test]), det.score_samples(ood))
        assert res.get(name, "a").metrics.auroc == pytest.approx(ref.auroc, abs=1e-12), name
