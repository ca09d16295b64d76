"""ReAct, ASH and SCALE equal their reference implementations (torch topk, as published),
compose with the logit detectors, and refuse signed features."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp

from repscope.ood import (
    ASH,
    SCALE,
    EnergyDetector,
    MSPDetector,
    ReAct,
    SignedFeaturesError,
    get_transform,
    list_transforms,
)


def _relu_features(rng, n=60, d=40):
    return np.maximum(rng.standard_normal((n, d)), 0.0)


def _ref_topk(x, percentile):
    # the published ASH / SCALE code: keep the k = n - round(n p / 100) largest (torch.topk)
    import torch

    t = torch.as_tensor(x.copy())
    n = t.shape[1]
    k = n - int(np.round(n * percentile / 100.0))
    v, i = torch.topk(t, k, dim=1)
    kept = torch.zeros_like(t).scatter_(1, i, v)
    return t, kept, k


def _ref_ash(x, percentile, variant):
    t, kept, k = _ref_topk(x, percentile)
    s1 = t.sum(1)
    if variant == "p":
        return kept.numpy()
    if variant == "b":
        _, i = (t.topk(k, dim=1))
        fill = (s1 / k)[:, None].expand(-1, k)
        return np.asarray(t.new_zeros(t.shape).scatter_(1, i, fill).numpy())
    s2 = kept.sum(1)
    return (kept * (s1 / s2).exp()[:, None]).numpy()


def _ref_scale(x, percentile):
    t, kept, _ = _ref_topk(x, percentile)
    return (t * (t.sum(1) / kept.sum(1)).exp()[:, None]).numpy()


@pytest.mark.parametrize("variant", ["s", "p", "b"])
@pytest.mark.parametrize("percentile", [65.0, 90.0])
def test_ash_equals_the_reference_topk_code(rng, variant, percentile):
    # strictly positive activations: which of several tied values the top-k keeps is
    # arbitrary in the reference (torch.topk), and matters for ASH-B
    X = rng.exponential(size=(60, 40))
    got = ASH(percentile=percentile, variant=variant).fit(X).transform(X)
    np.testing.assert_allclose(got, _ref_ash(X, percentile, variant), rtol=1e-12)


@pytest.mark.parametrize("percentile", [65.0, 85.0])
def test_scale_equals_the_reference_topk_code(rng, percentile):
    X = _relu_features(rng)
    got = SCALE(percentile=percentile).fit(X).transform(X)
    np.testing.assert_allclose(got, _ref_scale(X, percentile), rtol=1e-12)


def test_react_clips_at_the_percentile_of_the_training_activations(rng):
    X = _relu_features(rng)
    Q = 3 * _relu_features(rng, n=10)
    react = ReAct(percentile=90).fit(X)
    c = np.percentile(X.ravel(), 90)
    assert react.threshold_ == pytest.approx(c)
    np.testing.assert_array_equal(react.transform(Q), np.minimum(Q, c))


def test_transforms_compose_with_logit_detectors(rng):
    X = _relu_features(rng)
    W, b = rng.standard_normal((4, X.shape[1])), rng.standard_normal(4)
    Q = _relu_features(rng, n=12)
    det = EnergyDetector(head=(W, b), feature_transform="react").fit(X)
    clipped = np.minimum(Q, np.percentile(X, 90))
    np.testing.assert_allclose(det.score_samples(Q), logsumexp(clipped @ W.T + b, axis=1),
                               rtol=1e-12)
    det = MSPDetector(head=(W, b), feature_transform=SCALE(percentile=70)).fit(X)
    Z = _ref_scale(Q, 70) @ W.T + b
    P = np.exp(Z - logsumexp(Z, axis=1, keepdims=True))
    np.testing.assert_allclose(det.score_samples(Q), P.max(1), rtol=1e-10)
    # the transform changes the score (it is applied, not ignored)
    plain = MSPDetector(head=(W, b)).fit(X).score_samples(Q)
    assert not np.allclose(plain, det.score_samples(Q))


@pytest.mark.parametrize("name", ["react", "ash", "scale"])
def test_signed_features_are_refused_with_a_clear_error(rng, name):
    X = rng.standard_normal((30, 8))
    cls = type(get_transform(name)).__name__
    with pytest.raises(SignedFeaturesError, match=rf"{cls} assumes non-negative \(post-ReLU\) "
                                                  r"features; X has a minimum of -"):
        get_transform(name).fit(X)
    with pytest.raises(SignedFeaturesError, match="post-ReLU"):
        EnergyDetector(head=(np.ones((2, 8)), np.zeros(2)), feature_transform=name).fit(X)
    fitted = EnergyDetector(head=(np.ones((2, 8)), np.zeros(2)), feature_transform=name).fit(np.abs(X))
    with pytest.raises(SignedFeaturesError, match="post-ReLU"):
        fitted.score_samples(X)


def test_transform_registry_lists_the_three():
    assert list_transforms() == ["ash", "react", "scale"]
    assert isinstance(get_transform("ASH", variant="b"), ASH)
