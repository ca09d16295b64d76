"""Protocols as data, few-shot curves without leakage, learning curves."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

from repscope.probe._protocols import (
    FixedValidation,
    Holdout,
    KFold,
    evaluate,
    few_shot,
    learning_curve,
    make_estimator,
    mean_interval,
    wilson_interval,
)


def _blobs(n=400, d=10, k=4, sep=2.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = rng.standard_normal((k, d)) * sep
    return centres[y] + rng.standard_normal((n, d)), y


class SpyProbe(ClassifierMixin, BaseEstimator):
    """Records the row ids (column 0) it was trained on; selects C by CV within them."""

    seen: ClassVar[list[np.ndarray]] = []

    def fit(self, X, y):
        SpyProbe.seen.append(X[:, 0].astype(int).copy())
        from sklearn.linear_model import LogisticRegressionCV

        cv = min(3, int(np.bincount(np.unique(y, return_inverse=True)[1]).min()))
        self.inner_ = (LogisticRegressionCV(Cs=3, cv=cv, max_iter=200, scoring="accuracy", use_legacy_attributes=False) if cv >= 2
                       else LogisticRegression(max_iter=200)).fit(X[:, 1:], y)
        self.classes_ = self.inner_.classes_
        return self

    def predict(self, X):
        return self.inner_.predict(X[:, 1:])


def test_protocol_splits_partition_and_stratify():
    _, y = _blobs()
    folds = KFold(5, seed=1).splits(y)
    tests = np.concatenate([te for _, te in folds])
    assert np.array_equal(np.sort(tests), np.arange(len(y)))
    for tr, te in folds:
        assert not set(tr) & set(te)
        assert np.bincount(y[te]).min() == np.bincount(y[te]).max()
    (tr, te), = Holdout(0.25, seed=3).splits(y)
    assert len(te) == 100
    assert not set(tr) & set(te)
    assert Holdout(0.25, seed=3).splits(y)[0][1].tolist() == te.tolist()  # seeded
    (tr, te), = FixedValidation((1, 5, 7)).splits(y)
    assert te.tolist() == [1, 5, 7]
    assert len(tr) == len(y) - 3


def test_protocols_are_frozen_data():
    import dataclasses

    p = KFold(3, seed=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.k = 4  # type: ignore[misc]
    assert p == KFold(3, seed=2)
    assert hash(p) == hash(KFold(3, seed=2))


def test_evaluate_matches_sklearn_cross_val_predict_and_refits():
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    X, y = _blobs(sep=0.6)
    est = LogisticRegression(max_iter=500)
    res, final = evaluate(est, X, y, KFold(5, seed=0), refit=True)
    pred = cross_val_predict(est, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    assert res.accuracy == pytest.approx(np.mean(pred == y))
    assert res.ci_low < res.accuracy < res.ci_high
    assert len(res.split_scores) == 5
    assert res.n_test == len(y)
    np.testing.assert_allclose(final.coef_, LogisticRegression(max_iter=500).fit(X, y).coef_)


def test_estimator_factory_callable_and_bad_factory():
    X, y = _blobs()
    a, _ = evaluate(lambda: GaussianNB(), X, y, Holdout(0.3))
    b, _ = evaluate(GaussianNB(), X, y, Holdout(0.3))
    assert a.accuracy == b.accuracy
    with pytest.raises(TypeError, match="zero-argument callable"):
        make_estimator(3)


def test_few_shot_has_no_leakage_and_selection_stays_within_shots():
    X, y = _blobs(n=240, k=3)
    Xid = np.column_stack([np.arange(len(y)), X])
    SpyProbe.seen = []
    res = few_shot(SpyProbe(), Xid, y, shots=(2, 5), n_tries=3, seed=4)
    test = set(res.test_indices)
    assert len(SpyProbe.seen) == 6
    for rows, s in zip(SpyProbe.seen, [2, 2, 2, 5, 5, 5]):
        assert not set(rows.tolist()) & test            # shots never come from the test split
        assert np.bincount(y[rows], minlength=3).tolist() == [s, s, s]
    # different tries draw different shots
    assert len({tuple(sorted(r)) for r in SpyProbe.seen[:3]}) == 3


def test_few_shot_intervals_and_monotone_trend():
    X, y = _blobs(n=400, sep=1.0)
    res = few_shot(LogisticRegression(max_iter=300), X, y, shots=(1, 5, 20), n_tries=5, seed=0)
    assert len(res.accuracies) == 3
    assert all(len(a) == 5 for a in res.accuracies)
    for m, lo, hi, accs in zip(res.mean, res.ci_low, res.ci_high, res.accuracies):
        assert m == pytest.approx(np.mean(accs))
        assert lo <= m <= hi
    assert res.mean[2] > res.mean[0]
    lo, hi = mean_interval([0.5, 0.6, 0.7])
    from scipy import stats

    half = stats.t.ppf(0.975, 2) * np.std([0.5, 0.6, 0.7], ddof=1) / np.sqrt(3)
    assert (lo, hi) == pytest.approx((0.6 - half, 0.6 + half))
    b = few_shot(GaussianNB(), X, y, shots=(3,), n_tries=4, ci="bootstrap")
    assert b.ci_low[0] <= b.mean[0] <= b.ci_high[0]


def test_few_shot_errors():
    X, y = _blobs(n=40, k=4)
    with pytest.raises(ValueError, match="exceeds the smallest class"):
        few_shot(GaussianNB(), X, y, shots=(20,))
    with pytest.raises(ValueError, match="at least 2 distinct classes"):
        few_shot(GaussianNB(), X, np.zeros(40), shots=(1,))
    with pytest.raises(ValueError, match="'ci' parameter of few_shot"):
        few_shot(GaussianNB(), X, y, ci="normal")


def test_wilson_interval_reference():
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)


def test_naive_bayes_reaches_its_asymptote_before_logistic_regression():
    """Ng & Jordan's two regimes: generative NB flattens early (at a higher error),
    discriminative LR keeps improving and ends lower. Features: 150 weak independent ones,
    plus 20 noisy copies of one strong feature (NB counts it 20 times; LR does not)."""
    rng = np.random.default_rng(0)
    n, d = 5000, 150
    y = rng.integers(0, 2, n)
    s = 2 * y[:, None] - 1
    base = rng.standard_normal((n, d)) + 0.12 * s
    strong = rng.standard_normal((n, 1)) + 0.5 * s
    X = np.column_stack([base, strong + 0.3 * rng.standard_normal((n, 20))])
    sizes = (10, 20, 40, 80, 160, 320, 640, 1280, 3700)
    nb = learning_curve(GaussianNB(), X, y, sizes, n_repeats=3, tol=0.02)
    lr = learning_curve(LogisticRegression(max_iter=1000, C=0.05), X, y, sizes, n_repeats=3,
                        tol=0.02)
    assert nb.reached_at * 4 <= lr.reached_at
    assert lr.asymptote_error < nb.asymptote_error - 0.1
    for r in (nb, lr):
        assert r.sizes == sizes
        assert len(r.mean) == len(sizes)
        assert all(lo <= m <= hi for m, lo, hi in zip(r.mean[:-1], r.ci_low, r.ci_high))


def test_learning_curve_reached_at_definition():
    X, y = _blobs(n=300, sep=0.8)
    r = learning_curve(GaussianNB(), X, y, (8, 16, 32, 64, 128, 224), n_repeats=3, tol=0.03)
    err = 1 - np.asarray(r.mean)
    i = r.sizes.index(r.reached_at)
    assert (err[i:] <= r.asymptote_error + 0.03).all()
    assert i == 0 or err[i - 1] > r.asymptote_error + 0.03  # the smallest such size
    with pytest.raises(ValueError, match="sizes must lie in"):
        learning_curve(GaussianNB(), X, y, (2, 10))


def test_naive_bayes_flattens_first_on_real_mnist_features(lite0_mnist):
    X = lite0_mnist.X["_blocks.15"]
    y = lite0_mnist.y
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    sizes = (20, 40, 80, 160, 320, 750)
    nb = learning_curve(GaussianNB(), X, y, sizes, n_repeats=2, tol=0.02)
    lr = learning_curve(make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.1)),
                        X, y, sizes, n_repeats=2, tol=0.02)
    assert nb.reached_at <= lr.reached_at
    assert lr.mean[-1] >= nb.mean[-1] - 0.02
