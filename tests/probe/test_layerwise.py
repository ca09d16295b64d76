"""Layer-wise probing (every layer, one call) and the multi-level probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from repscope.probe._layerwise import MultiLevelProbe, default_probe, probe_layers
from repscope.probe._protocols import Holdout, KFold, evaluate


def _layers(n=300, seed=0):
    """Three layers: noise, a weak and a strong class signal."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    onehot = np.eye(3)[y]
    noise = lambda d: rng.standard_normal((n, d))  # noqa: E731
    return {"l0": noise(8), "l1": noise(8) + 0.5 * onehot @ rng.standard_normal((3, 8)),
            "l2": noise(8) + 3.0 * onehot @ rng.standard_normal((3, 8))}, y


def test_probe_layers_equals_per_layer_evaluate_and_orders_layers():
    feats, y = _layers()
    probe = LogisticRegression(max_iter=300)
    res = probe_layers(feats, y, probe=probe, protocol=KFold(3))
    assert res.layers == ("l0", "l1", "l2")
    for name, acc, lo, hi in zip(res.layers, res.accuracy, res.ci_low, res.ci_high):
        single, _ = evaluate(probe, feats[name], y, KFold(3))
        assert acc == single.accuracy
        assert (lo, hi) == (single.ci_low, single.ci_high)
    assert res.accuracy[2] > res.accuracy[1] > res.accuracy[0]
    assert res.best_layer == "l2"
    sub = probe_layers(feats, y, probe=probe, protocol=KFold(3), layers=["l2", "l0"])
    assert sub.layers == ("l2", "l0")
    assert sub.accuracy == (res.accuracy[2], res.accuracy[0])


def test_probe_layers_reads_a_feature_store(tmp_path):
    from repscope.store import FeatureStore

    feats, y = _layers()
    store = FeatureStore.create(tmp_path / "s", model_id="toy")
    store.append({k: v.astype(np.float32) for k, v in feats.items()}, {"label": y.tolist()})
    res = probe_layers(FeatureStore.open(tmp_path / "s"), y, protocol=Holdout(0.3))
    ref = probe_layers({k: v.astype(np.float32) for k, v in feats.items()}, y,
                       protocol=Holdout(0.3))
    assert res.layers == ref.layers
    np.testing.assert_allclose(res.accuracy, ref.accuracy)


def test_probe_layers_errors():
    feats, y = _layers()
    with pytest.raises(KeyError, match="unknown layer 'l9'"):
        probe_layers(feats, y, layers=["l9"])
    with pytest.raises(ValueError, match="labels must have one entry per sample"):
        probe_layers(feats, y[:10])
    with pytest.raises(TypeError, match="FeatureStore or a mapping"):
        probe_layers([1, 2], y)


def test_multilevel_concatenation_beats_each_partial_layer():
    rng = np.random.default_rng(1)
    n = 400
    y = rng.integers(0, 2, n)
    # the class is the sign of a + b, where a lives in layer A and b in layer B
    a, b = rng.standard_normal(n), rng.standard_normal(n)
    y = (a + b > 0).astype(int)
    feats = {"A": np.column_stack([a, rng.standard_normal((n, 3))]),
             "B": np.column_stack([b, rng.standard_normal((n, 3))])}
    tr, te = np.arange(300), np.arange(300, n)
    sub = lambda idx: {k: v[idx] for k, v in feats.items()}  # noqa: E731
    both = MultiLevelProbe(["A", "B"], probe=LogisticRegression()).fit(sub(tr), y[tr])
    only_a = MultiLevelProbe(["A"], probe=LogisticRegression()).fit(sub(tr), y[tr])
    assert both.score(sub(te), y[te]) > only_a.score(sub(te), y[te]) + 0.1
    assert both.n_features_in_ == 8


def test_multilevel_upsamples_feature_maps_to_the_largest_size():
    rng = np.random.default_rng(2)
    maps = {"fine": rng.standard_normal((20, 2, 8, 8)).astype(np.float32),
            "coarse": rng.standard_normal((20, 3, 4, 4)).astype(np.float32)}
    y = np.arange(20) % 2
    keep = MultiLevelProbe(["fine", "coarse"], spatial="keep", standardize=False,
                           probe=LogisticRegression()).fit(maps, y)
    assert keep.spatial_size_ == (8, 8)
    assert keep.n_features_in_ == (2 + 3) * 64
    Z = keep.transform(maps)
    up = torch.nn.functional.interpolate(torch.as_tensor(maps["coarse"]), size=(8, 8),
                                         mode="bilinear", align_corners=True)
    np.testing.assert_allclose(Z[:, 2 * 64:], up.reshape(20, -1).numpy(), atol=1e-6)
    pool = MultiLevelProbe(["fine", "coarse"], standardize=False,
                           probe=LogisticRegression()).fit(maps, y)
    Zp = pool.transform(maps)
    np.testing.assert_allclose(Zp[:, :2], maps["fine"].mean(axis=(2, 3)), atol=1e-6)
    np.testing.assert_allclose(Zp[:, 2:], up.mean(dim=(2, 3)).numpy(), atol=1e-6)
    with pytest.raises(KeyError, match="features lack layer 'mid'"):
        MultiLevelProbe(["mid"]).fit(maps, y)
    with pytest.raises(ValueError, match="The 'layers' parameter of MultiLevelProbe must be a non-empty sequence"):
        MultiLevelProbe([]).fit(maps, y)


def _cheap_probe():
    """Standardised ridge classifier (dual solve when d > n): ~10 ms per fit here."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeClassifier(alpha=100.0))


def test_default_probe_is_the_closed_form_ridge_probe():
    from repscope.probe._ridge import RidgeProbe

    feats, y = _layers()
    assert isinstance(default_probe(), RidgeProbe)
    res = probe_layers(feats, y, protocol=Holdout(0.3), layers=["l2"])
    assert res.probe == "RidgeProbe"
    assert res.accuracy[0] > 0.9


def test_layerwise_curve_over_all_30_smollm2_layers(smollm2_austen):
    layers = [f"model.layers.{i}" for i in range(30)]
    feats = {name: smollm2_austen.X[name] for name in layers}
    y = smollm2_austen.y
    res = probe_layers(feats, y, protocol=KFold(3), probe=_cheap_probe())
    assert len(res.accuracy) == 30
    assert res.layers == tuple(layers)
    middle = np.asarray(res.accuracy[8:22])
    assert middle.min() > 1 / 6 + 0.15, res.accuracy
    assert all(lo <= a <= hi for a, lo, hi in zip(res.accuracy, res.ci_low, res.ci_high))
    for i in (0, 15, 29):
        single, _ = evaluate(_cheap_probe(), feats[layers[i]], y, KFold(3))
        assert res.accuracy[i] == single.accuracy


def test_layerwise_on_minilm_and_mnist(minilm_austen, lite0_mnist):
    m = probe_layers(minilm_austen.X, minilm_austen.y, protocol=KFold(3), probe=_cheap_probe())
    assert len(m.layers) == len(minilm_austen.layers)
    assert max(m.accuracy) > 0.5
    assert max(m.accuracy) > m.chance + 0.3
    e = probe_layers(lite0_mnist.X, lite0_mnist.y, protocol=Holdout(0.3), probe=_cheap_probe())
    assert len(e.layers) == 18
    assert e.accuracy[-1] > 0.85
    assert max(e.accuracy[-4:]) > e.accuracy[0]
    perm = np.random.default_rng(0).permutation(len(lite0_mnist.y))
    tr, te = perm[:700], perm[700:]
    multi = MultiLevelProbe(["_blocks.12", "_bn1"], probe=_cheap_probe()).fit(
        {k: v[tr] for k, v in lite0_mnist.X.items()}, lite0_mnist.y[tr])
    assert multi.score({k: v[te] for k, v in lite0_mnist.X.items()}, lite0_mnist.y[te]) > 0.8
