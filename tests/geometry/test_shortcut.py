"""Shortcut generator (predictivity, amplification, nesting) and the availability probe."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.exceptions import RepscopeValueError
from repscope.geometry._shortcut import ShortcutTask, availability_probe


def _attrs(z):
    return (z[:, 1] > 0).astype(int), (z[:, 0] > 0).astype(int)


def test_predictivity_is_the_single_feature_bayes_accuracy():
    task = ShortcutTask(predictivity=(0.7, 0.9))
    X, y, z = task.sample(40000, seed=3)
    assert np.mean((z[:, 0] > 0) == y) == pytest.approx(0.7, abs=0.01)
    assert np.mean((z[:, 1] > 0) == y) == pytest.approx(0.9, abs=0.01)
    assert np.mean(task.bayes_predict(z) == y) > 0.9
    assert X.shape == (40000, 50)


def test_amplification_sets_each_feature_scale_and_nesting_bends_it():
    task = ShortcutTask(amplification=(5.0, 0.5), n_features=20)
    _, _, z = task.sample(20000, seed=0)
    zs, zc = z.copy(), z.copy()
    zs[:, 1] = 0.0
    zc[:, 0] = 0.0
    rms = [np.sqrt(np.mean(np.sum(task.embed(v) ** 2, axis=1))) for v in (zs, zc)]
    # each embedded feature has root-mean-square norm alpha_i over the task's own latents
    assert rms == pytest.approx([5.0, 0.5], rel=0.05)
    # nesting 0 is linear in z; nesting 2 is not
    lin = ShortcutTask(nesting=(0, 0))
    nested = ShortcutTask(nesting=(2, 0))
    a, b = np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]])
    assert np.allclose(lin.embed(b), 2 * lin.embed(a))
    assert not np.allclose(nested.embed(b), 2 * nested.embed(a))
    # the embedding is fixed by the seed, the samples by sample's seed
    assert np.array_equal(ShortcutTask(seed=4).sample(5, seed=1)[0],
                          ShortcutTask(seed=4).sample(5, seed=1)[0])


def test_availability_probe_follows_the_amplified_attribute_under_regularisation():
    """A strongly regularised linear probe prefers whichever attribute is amplified; the
    unregularised (GCV-ridge) probe is scale-invariant and follows neither."""
    from sklearn.linear_model import RidgeClassifier

    shares, plain = [], []
    for amp in [(10.0, 1.0), (1.0, 10.0)]:
        X, _, z = ShortcutTask(predictivity=(0.8, 0.8), amplification=amp).sample(1000, seed=1)
        core, short = _attrs(z)
        r = availability_probe(X, core, short, probe=RidgeClassifier(alpha=3000.0))
        shares.append(r.shortcut_share)
        plain.append(availability_probe(X, core, short).shortcut_share)
        assert r.shortcut_share + r.core_share == pytest.approx(1.0)
        assert r.n_agree + r.n_conflict == 1000
    assert shares[0] > 0.8 and shares[1] < 0.2
    assert all(abs(s - 0.5) < 0.1 for s in plain)


def test_availability_result_records():
    X, _, z = ShortcutTask().sample(300, seed=2)
    core, short = _attrs(z)
    r = availability_probe(X, core, short, names=("shape", "background"))
    (rec,) = r.to_records(model="m", dataset="synthetic", layer="L")
    assert rec.analysis == "geometry_availability"
    assert rec.values["core"] == "shape" and rec.values["shortcut"] == "background"
    assert 0.0 <= rec.values["shortcut_share"] <= 1.0
    assert rec.values["core_accuracy"] == pytest.approx(r.decodability[0])


def test_shortcut_bad_input():
    with pytest.raises(RepscopeValueError, match="'predictivity' parameter"):
        ShortcutTask(predictivity=(0.4, 0.9))
    with pytest.raises(RepscopeValueError, match="'amplification' parameter"):
        ShortcutTask(amplification=(0.0, 1.0))
    with pytest.raises(RepscopeValueError, match="'nesting' parameter"):
        ShortcutTask(nesting=(1.5, 0))
    X = np.random.default_rng(0).standard_normal((20, 3))
    same = np.arange(20) % 2
    with pytest.raises(RepscopeValueError, match="needs conflict rows"):
        availability_probe(X, same, same)
    with pytest.raises(RepscopeValueError, match="one label per sample"):
        availability_probe(X, same[:5], same)
