"""EfficientNet-Lite0 (torch, forward_fn=extract_features) on real MNIST digits."""

from __future__ import annotations

import numpy as np
import torch

from repscope.extract import extract


def test_pooled_head_features_equal_extract_features_mean(effnet, mnist) -> None:
    x = effnet.preprocess(mnist[0][:6])
    out = extract(effnet.model, x, ["output", "_blocks.3"], "avg", batch_size=4,
                  forward_fn=effnet.model.extract_features, progress=False)
    with torch.inference_mode():
        feats = effnet.model.extract_features(x)
    assert out["output"].shape == (6, 1280)
    np.testing.assert_allclose(out["output"], feats.mean((2, 3)).numpy(), rtol=1e-5, atol=1e-5)
    assert out["_blocks.3"].ndim == 2


def test_zoo_model_runs_raw_uint8_images_through_preprocess(effnet, mnist) -> None:
    digits = mnist[0][:4]
    via_zoo = extract(effnet, digits, ["_blocks.15"], "none", progress=False)
    direct = extract(effnet.model, effnet.preprocess(digits), ["_blocks.15"], "none",
                     forward_fn=effnet.model.extract_features, progress=False)
    assert via_zoo["_blocks.15"].ndim == 4  # spatial map kept
    np.testing.assert_array_equal(via_zoo["_blocks.15"], direct["_blocks.15"])
    assert list(extract(effnet, digits, None, progress=False)) == list(effnet.info.layers)
