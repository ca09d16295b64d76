"""Control tasks / selectivity and MDL (online code) probing."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from repscope.probe._controls import (
    control_task_labels,
    kmeans_types,
    mdl_online,
    selectivity,
)
from repscope.probe._protocols import KFold


def _linear_task(n=600, d=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (X @ rng.standard_normal(d) > 0).astype(int)
    return X, y


def test_control_labels_are_consistent_per_type_and_follow_the_label_marginal():
    rng = np.random.default_rng(0)
    y = rng.choice([0, 1, 2], size=5000, p=[0.6, 0.3, 0.1])
    types = rng.integers(0, 2000, 5000)
    c = control_task_labels(y, types, seed=1)
    for t in np.unique(types)[:200]:
        assert len(np.unique(c[types == t])) == 1
    per_type = np.array([c[types == t][0] for t in np.unique(types)])
    freq = np.bincount(per_type, minlength=3) / per_type.size
    np.testing.assert_allclose(freq, [0.6, 0.3, 0.1], atol=0.04)
    assert not np.array_equal(c, control_task_labels(y, types, seed=2))
    names = np.array(["a", "b", "c"])[y]
    assert set(control_task_labels(names, types)) <= {"a", "b", "c"}


def test_selective_linear_probe_on_separable_data():
    X, y = _linear_task()
    r = selectivity(LogisticRegression(max_iter=500), X, y, n_types=60, protocol=KFold(4))
    assert r.accuracy > 0.95
    assert r.control_accuracy < 0.75
    assert r.selectivity == pytest.approx(r.accuracy - r.control_accuracy)
    assert r.selectivity > 0.25
    assert r.n_types == 60


def test_memorising_probe_is_less_selective_than_linear_probe():
    """A 1-NN probe memorises types (high control accuracy); a linear probe cannot."""
    from sklearn.neighbors import KNeighborsClassifier

    X, y = _linear_task(seed=1)
    types = kmeans_types(X, 60, seed=0)
    lin = selectivity(LogisticRegression(max_iter=500), X, y, types=types, protocol=KFold(4))
    nn = selectivity(KNeighborsClassifier(1), X, y, types=types, protocol=KFold(4))
    assert nn.control_accuracy > lin.control_accuracy + 0.1
    assert lin.selectivity > nn.selectivity


def test_mdl_compression_separable_vs_shuffled():
    X, y = _linear_task(n=1000, seed=2)
    est = LogisticRegression(max_iter=500)
    real = mdl_online(est, X, y, seed=0)
    shuffled = mdl_online(est, X, np.random.default_rng(0).permutation(y), seed=0)
    assert real.compression > 3.0
    assert shuffled.compression < 1.1
    assert real.compression > 3 * shuffled.compression
    assert real.uniform_codelength == pytest.approx(1000 * math.log2(2))
    assert real.online_codelength == pytest.approx(sum(real.block_codelengths))
    assert real.block_sizes[-1] == 1000
    assert real.block_sizes[0] == 1
    assert real.block_codelengths[0] == pytest.approx(1 * math.log2(2))


def test_mdl_matches_a_direct_online_code():
    X, y = _linear_task(n=300, seed=3)
    fr = (0.1, 0.3, 0.6, 1.0)
    r = mdl_online(LogisticRegression(max_iter=500), X, y, fractions=fr, seed=5, eps=1e-9)
    order = np.random.default_rng(5).permutation(300)
    bounds = [30, 90, 180, 300]
    total = 30 * 1.0
    for a, b in itertools.pairwise(bounds):
        m = LogisticRegression(max_iter=500).fit(X[order[:a]], y[order[:a]])
        p = m.predict_proba(X[order[a:b]])[np.arange(b - a), y[order[a:b]]]
        total += -np.log2((1 - 1e-9) * p + 1e-9 / 2).sum()
    assert r.online_codelength == pytest.approx(total, rel=1e-9)


def test_control_and_mdl_errors():
    X, y = _linear_task(n=50)
    with pytest.raises(ValueError, match="'fractions' parameter of mdl_online"):
        mdl_online(LogisticRegression(), X, y, fractions=(0.5, 0.2, 1.0))
    with pytest.raises(ValueError, match="at least 2 distinct classes"):
        mdl_online(LogisticRegression(), X, np.zeros(50))
    with pytest.raises(ValueError, match="'n_types' parameter of kmeans_types"):
        kmeans_types(X, 100)
    with pytest.raises(ValueError, match="types must have one entry per sample"):
        control_task_labels(y, np.zeros(10))


def test_selectivity_on_real_minilm_features(minilm_austen):
    X = minilm_austen.X[minilm_austen.layers[-1]]
    y = minilm_austen.y
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.05))
    r = selectivity(probe, X, y, n_types=100, protocol=KFold(3))
    assert r.accuracy > 0.4
    assert r.selectivity > 0.05
    mdl = mdl_online(probe, X, y)
    assert mdl.compression > 1.0
