"""Margin heads (ArcFace, CosFace, ElasticFace): logits equal the hand-computed formulas, bad
margins are named errors, and on real EfficientNet-Lite0 / MNIST features a margin probe widens
the angular margin between classes over a softmax probe at the same test accuracy (within 1
point)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from repscope.exceptions import RepscopeValueError
from repscope.nn._margin import MarginHead, margin_logits
from repscope.probe._margin import MarginProbe, angular_margins, compare_margins


def _cos_and_target() -> tuple[torch.Tensor, torch.Tensor]:
    cos = torch.tensor([[0.9, 0.1, -0.2], [0.3, 0.6, 0.0], [-0.5, 0.2, 0.4]], dtype=torch.float64)
    return cos, torch.tensor([0, 1, 2])


@pytest.mark.parametrize(("kind", "m", "formula"), [
    ("arcface", 0.5, lambda c, m: math.cos(math.acos(c) + m)),
    ("cosface", 0.35, lambda c, m: c - m),
])
def test_fixed_margin_logits_equal_the_formulas(kind, m, formula) -> None:
    cos, t = _cos_and_target()
    out = margin_logits(cos, t, kind, scale=64.0)
    want = 64.0 * cos.clone()
    for i in range(3):
        want[i, t[i]] = 64.0 * formula(float(cos[i, t[i]]), m)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-9)


def test_elastic_margins_are_drawn_per_sample_with_their_seed() -> None:
    cos, t = _cos_and_target()
    draws = 0.5 + 0.05 * torch.randn(3, generator=torch.Generator().manual_seed(7),
                                     dtype=torch.float64)
    out = margin_logits(cos, t, "elasticarc", scale=10.0,
                        generator=torch.Generator().manual_seed(7))
    for i in range(3):
        c = float(cos[i, t[i]])
        assert float(out[i, t[i]]) == pytest.approx(10 * math.cos(math.acos(c) + float(draws[i])),
                                                    abs=1e-9)
    again = margin_logits(cos, t, "elasticarc", scale=10.0,
                          generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    elastic_cos = margin_logits(cos, t, "elasticcos", scale=10.0,
                                generator=torch.Generator().manual_seed(7))
    cos_draw = float(draws[1]) - 0.5 + 0.35  # ElasticCos centres its draws on m = 0.35
    assert float(elastic_cos[1, 1]) == pytest.approx(10 * (0.6 - cos_draw), abs=1e-9)
    # non-target logits carry no margin
    assert float(out[0, 1]) == pytest.approx(10 * 0.1)


def test_head_forward_without_target_is_the_scaled_cosine() -> None:
    head = MarginHead(5, 3, "cosface", scale=8.0)
    x = torch.randn(4, 5)
    w = torch.nn.functional.normalize(head.weight, dim=1)
    want = 8.0 * torch.nn.functional.normalize(x, dim=1) @ w.T
    torch.testing.assert_close(head(x), want)
    assert head(x, torch.tensor([0, 1, 2, 0])).shape == (4, 3)


@pytest.mark.parametrize("bad", [0.0, -0.1, math.pi / 2, 2.0])
def test_margins_outside_zero_half_pi_are_named_errors(bad) -> None:
    with pytest.raises(RepscopeValueError, match=r"margin must be in \(0, pi/2\)"):
        MarginHead(4, 3, "arcface", margin=bad)
    with pytest.raises(RepscopeValueError, match=r"The 'margin' parameter of MarginProbe must be"):
        MarginProbe(margin=bad).fit(np.random.default_rng(0).normal(size=(20, 3)),
                                    np.arange(20) % 2)
    with pytest.raises(RepscopeValueError, match="margin_std is the spread"):
        MarginHead(4, 3, "arcface", margin_std=0.1)
    with pytest.raises(RepscopeValueError, match="kind must be one of"):
        MarginHead(4, 3, "sphereface")  # type: ignore[arg-type]


def test_angular_margins_against_a_hand_computation() -> None:
    Z = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    D = np.array([[1.0, 0.0], [0.0, 1.0]])
    out = angular_margins(Z, np.array([0, 1, 0]), D)
    # angles: row 0 -> (0, 90), row 1 -> (90, 0), row 2 -> (45, 45)
    assert out["margin_mean"] == pytest.approx((90 + 90 + 0) / 3)
    assert out["frac_negative"] == 0.0
    assert out["inter_angle_min"] == pytest.approx(90.0)
    # class 0 = rows 0 and 2 (0 and 45 degrees): centre at 22.5 degrees
    assert out["intra_angle"] == pytest.approx((22.5 + 22.5 + 0) / 3)


def test_margin_probe_widens_the_angular_margin_on_lite0_mnist(lite0_mnist) -> None:
    from repscope._threads import single_thread

    X, y = lite0_mnist.X["_bn1"], lite0_mnist.y
    with single_thread():
        out = compare_margins(X, y, "arcface", test_size=0.3, seed=0)
    arc, soft = out.heads["arcface"], out.heads["softmax"]
    assert arc["accuracy"] >= soft["accuracy"] - 0.01, (arc["accuracy"], soft["accuracy"])
    assert arc["margin_mean"] > soft["margin_mean"] + 5.0, (arc, soft)
    assert arc["intra_angle"] < soft["intra_angle"] or arc["frac_negative"] <= soft[
        "frac_negative"]
    assert sum(arc["hist"]) == sum(soft["hist"]) == out.n_test
    # the probe is a scikit-learn classifier the layer-wise protocol accepts
    from sklearn.base import clone

    est = clone(MarginProbe(loss="cosface", max_iter=50))
    assert est.fit(X[:200], y[:200]).predict(X[:5]).shape == (5,)
