"""CAM / Grad-CAM against hand computations; masking the critical region of MNIST digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from repscope.concepts._cam import CAMResult, cam_masking, class_activation_maps, grad_cam
from repscope.exceptions import RepscopeValueError, UnknownNameError

torch.set_num_threads(1)


class _Net(nn.Module):
    def __init__(self, relu_after: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU())
        self.feat = nn.Conv2d(3, 4, 3, padding=1)
        self.post = nn.ReLU() if relu_after else nn.Identity()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.post(self.feat(self.stem(x))).mean(dim=(2, 3)))


def _x() -> torch.Tensor:
    return torch.randn(5, 1, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def test_cam_and_gradcam_equal_hand_computation():
    net = _Net().double().eval()
    x, cls = _x(), np.array([0, 1, 2, 1, 0])
    with torch.no_grad():
        F = net.feat(net.stem(x)).numpy()
    W, b = net.fc.weight.detach().numpy(), net.fc.bias.detach().numpy()
    hand = np.zeros((5, 6, 5))
    for n in range(5):
        for k in range(4):
            for i in range(6):
                for j in range(5):
                    hand[n, i, j] += W[cls[n], k] * F[n, k, i, j]
    cam = class_activation_maps(F, W, cls)
    np.testing.assert_allclose(cam, hand, atol=1e-12)
    # the map's spatial mean plus the intercept is the class score
    with torch.no_grad():
        logits = net(x).numpy()
    np.testing.assert_allclose(cam.mean(axis=(1, 2)) + b[cls], logits[np.arange(5), cls],
                               atol=1e-12)
    # Grad-CAM through the model: alpha_k = W_ck / (h w), map = ReLU(CAM) / (h w)
    gc = grad_cam(net, x, "feat", cls)
    np.testing.assert_allclose(gc, np.maximum(hand, 0) / 30, atol=1e-12)


def test_gradcam_through_a_nonlinearity():
    net = _Net(relu_after=True).double().eval()
    x, cls = _x(), np.array([2, 2, 0, 1, 1])
    with torch.no_grad():
        F = net.feat(net.stem(x)).numpy()
    W = net.fc.weight.detach().numpy()
    # d s_c / d F_k(i,j) = W_ck / (h w) where F_k(i,j) > 0, else 0
    alpha = W[cls] * (F > 0).sum(axis=(2, 3)) / 30 / 30  # mean over (i, j) of W_ck/(hw) * gate
    hand = np.maximum(np.einsum("nk,nkij->nij", alpha, F), 0)
    np.testing.assert_allclose(grad_cam(net, x, "feat", cls), hand, atol=1e-12)


def test_critical_region_masking_on_a_toy_detector():
    # a CNN whose class-1 evidence is a bright patch: masking the patch flips its answer,
    # masking the same area elsewhere does not
    net = nn.Sequential(nn.Identity())
    net.add_module("feat", nn.Conv2d(1, 1, 1, bias=False).double())
    with torch.no_grad():
        net.feat.weight.fill_(1.0)
    x = torch.zeros(40, 1, 8, 8, dtype=torch.float64)
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    for n in range(20, 40):
        i, j = rng.integers(0, 6, 2)
        x[n, 0, i:i + 2, j:j + 2] = 1.0

    class _Probe:
        classes_ = np.array([0, 1])
        coef_ = np.array([[1.0]])
        intercept_ = np.array([-0.03])

    res = cam_masking(net, x, y, "feat", _Probe(), area=4 / 64, fill=0.0)
    assert res.accuracy == 1.0 and res.accuracy_critical_masked == 0.5
    assert res.accuracy_shifted_masked == 1.0 and res.accuracy_noncritical_masked == 1.0
    (layer, rec), = res.record_rows()
    assert layer == "feat" and rec["drop_critical"] == 0.5 and rec["map_size"] == [8, 8]
    assert CAMResult.analysis == "concepts_cam"


def test_bad_input():
    net = _Net().double().eval()
    x = _x()
    with pytest.raises(UnknownNameError, match="feat"):
        grad_cam(net, x, "feet", np.zeros(5, int))
    with pytest.raises(RepscopeValueError, match="weight"):
        class_activation_maps(np.zeros((2, 4, 3, 3)), np.zeros((3, 5)), np.zeros(2, int))
    with pytest.raises(RepscopeValueError, match="classes"):
        class_activation_maps(np.zeros((2, 4, 3, 3)), np.zeros((3, 4)), np.array([0, 3]))

    class _P:
        classes_ = np.arange(3)
        coef_ = np.zeros((3, 4))
        intercept_ = np.zeros(3)

    with pytest.raises(UnknownNameError, match="feat"):
        cam_masking(net, x, np.zeros(5, int), "feet", _P())
    with pytest.raises(RepscopeValueError, match="area"):
        cam_masking(net, x, np.zeros(5, int), "feat", _P(), area=1.5)
    with pytest.raises(RepscopeValueError, match="not among"):
        cam_masking(net, x, np.full(5, 7), "feat", _P())


@pytest.mark.real
def test_masking_critical_region_of_mnist_drops_lite0_probe(lite0_mnist):
    from repscope.probe import LinearProbe
    from repscope.zoo import load_dataset, load_model
    from repscope.zoo._vision import preprocess_efficientnet

    layer = "_blocks.10"  # stride 16: a 4 x 4 map at 64 px, probe accuracy about 0.95
    data = load_dataset("mnist", n=1000, seed=0)  # the images of the cached features
    y = lite0_mnist.y
    perm = np.random.default_rng(0).permutation(len(y))
    tr, te = perm[:700], perm[700:900]
    probe = LinearProbe().fit(lite0_mnist.X[layer][tr], y[tr])
    lm = load_model("efficientnet-lite0", resolution=64)
    x = preprocess_efficientnet(np.asarray(data.inputs)[te], resolution=64)
    res = {m: cam_masking(lm.model, x, y[te], layer, probe, method=m, area=0.2)
           for m in ("cam", "gradcam")}
    print("\nLite0 _blocks.10 probe on 200 held-out MNIST digits, 20 % of pixels filled black:")
    for m, r in res.items():
        print(f"  {m:8s} clean={r.accuracy:.3f} critical={r.accuracy_critical_masked:.3f} "
              f"shifted={r.accuracy_shifted_masked:.3f} "
              f"non-critical={r.accuracy_noncritical_masked:.3f}")
    r = res["cam"]
    # the recomputed clean features are the cached ones
    assert r.accuracy == pytest.approx(float(np.mean(probe.predict(lite0_mnist.X[layer][te])
                                                     == y[te])), abs=0.01)
    assert r.accuracy > 0.85
    for r in res.values():
        assert r.accuracy_critical_masked < r.accuracy_shifted_masked - 0.1
        assert r.accuracy_critical_masked < r.accuracy_noncritical_masked - 0.1
        assert r.accuracy_critical_masked < r.accuracy - 0.1
