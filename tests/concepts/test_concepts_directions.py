"""Concept directions: difference of means, probe, CAV and its significance test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from repscope.concepts._directions import (
    DIRECTION_NAMES,
    DirectionsResult,
    concept_directions,
    projection_auc,
)
from repscope.exceptions import RepscopeValueError


def _planted(n: int = 1200, d: int = 20, shift: float = 1.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.standard_normal((n, d)) @ (np.eye(d) + 0.3 * rng.standard_normal((d, d)))
    v = rng.standard_normal(d)
    X += shift * y[:, None] * v / np.linalg.norm(v)
    return X, y


def test_projection_auc_matches_hand_count():
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.35])
    p = np.array([False, True, False, True, True])
    # positives 0.4, 0.8, 0.35 vs negatives 0.1, 0.35: wins 2 + 2 + (1 + tie 0.5) = 5.5 of 6
    assert projection_auc(s, p) == pytest.approx(5.5 / 6)


def test_planted_concept_is_significant_and_directions_agree():
    X, y = _planted()
    r = concept_directions(X, y, n_random=20, n_random_directions=500)
    assert isinstance(r, DirectionsResult) and r.positive == 1
    assert set(r.directions) == set(DIRECTION_NAMES)
    # the difference of means is the hand computation on the training rows
    from repscope.concepts._erasure import _split

    tr, _ = _split(y, 0.3, 0)
    md = X[tr][y[tr] == 1].mean(0) - X[tr][y[tr] == 0].mean(0)
    np.testing.assert_allclose(r.directions["mean_difference"], md / np.linalg.norm(md))
    np.testing.assert_allclose(np.diag(r.cosines), 1.0)
    assert r.cosines[1, 2] > 0.8  # probe and CAV find the same direction
    # under correlated noise the difference of means is not the discriminant direction
    assert r.auc["probe"] > 0.9 and r.auc["cav"] > 0.9 > r.auc["mean_difference"] > 0.6
    assert r.p_random_directions == pytest.approx(1 / 501)
    assert r.p_random_concepts == pytest.approx(1 / 21)
    assert np.quantile(r.null_random_concepts, 0.95) < 0.65
    row = r.record_rows()[0][1]
    json.dumps(row)
    assert row["auc_cav"] == r.auc["cav"] and row["n_random"] == 20


def test_no_concept_is_not_significant():
    X, _ = _planted()
    y = np.random.default_rng(7).integers(0, 2, X.shape[0])
    r = concept_directions(X, y, n_random=20, n_random_directions=500)
    assert abs(r.auc["cav"] - 0.5) < 0.1
    assert r.p_random_directions > 0.05 and r.p_random_concepts > 0.05


def test_bad_input_is_named():
    X, y = _planted(n=100)
    with pytest.raises(RepscopeValueError, match="exactly 2 values.*positive"):
        concept_directions(X, y + (np.arange(100) % 3 == 0) * 2)
    with pytest.raises(RepscopeValueError, match="'positive'.*got 5"):
        concept_directions(X, y, positive=5)
    with pytest.raises(RepscopeValueError, match="outside the concept"):
        concept_directions(X, np.ones(100, dtype=int), positive=1)


def test_minilm_austen_novel_direction_and_erasure(minilm_austen):
    """Real features: one novel as the concept (directions, CAV significance), then the novel
    and dialogue vs narration erased by LEACE and INLP."""
    from repscope.concepts._erasure import erasure

    X = minilm_austen.X[minilm_austen.layers[-1]]
    y = minilm_austen.y
    r = concept_directions(X, y, positive=0, n_random=20, n_random_directions=500)
    assert min(r.auc.values()) > 0.8
    assert r.cosines[1, 2] > 0.5
    assert r.p_random_directions == pytest.approx(1 / 501)
    assert r.p_random_concepts == pytest.approx(1 / 21)

    texts = minilm_austen.texts
    dialogue = np.array(['"' in t or "\u201c" in t for t in texts]).astype(np.int64)
    for labels in (y, dialogue):
        e = erasure(X, labels)
        assert e.accuracy_before > e.chance + 0.2
        assert abs(e.accuracy_after["leace"] - e.chance) <= 0.01
        # INLP reaches chance on its own validation rows, removing many more directions and
        # moving points further; a fresh probe on the test rows still reads part of the concept
        assert e.accuracy_curve["inlp"][-1] <= e.chance + 0.03
        assert e.rank_removed["inlp"] > e.rank_removed["leace"]
        assert e.mean_distance["inlp"] > e.mean_distance["leace"]
        assert e.accuracy_after["inlp"] > e.accuracy_after["leace"]
