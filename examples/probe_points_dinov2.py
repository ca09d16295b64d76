"""Per-point multi-level probing on a real dense task: DINOv2-S patch tokens and
EfficientNet-Lite0 maps on MNIST with per-pixel labels (issue 18, item 2).

300 MNIST images, 64 random pixels each, labelled 0 (background) or 1 + the digit's class
(strokes above half the image's peak intensity); a third of the images are held out. Every
level is sampled bilinearly at the points; a ridge ("linear") and a cosine kNN probe
(k = 20) per point, each level alone and multi-level; test mIoU. The multi-level kNN weights
its levels' cosines by greedy selection on held-out *training* images (LevelWeightedKNN).

DINOv2-S extraction takes about a minute on two cores (too slow for the test suite, which
checks the same protocol on Lite0 maps); run ``python examples/probe_points_dinov2.py``.
"""

from __future__ import annotations

import time

import numpy as np

from repscope.extract import extract
from repscope.probe._dense import MULTI_LEVEL, pixel_point_labels, probe_points
from repscope.similarity._dense import patch_grid
from repscope.zoo import load_dataset, load_model

MODELS = {
    "dinov2-s-onnx": ({}, ["embeddings", "encoder.layer.2", "encoder.layer.5",
                           "encoder.layer.8", "encoder.layer.11"]),
    "efficientnet-lite0": ({"resolution": 64},
                           ["_blocks.0", "_blocks.2", "_blocks.4", "_blocks.10", "_blocks.15"]),
}


def main() -> None:
    data = load_dataset("mnist", n=300, seed=0)
    points, labels = pixel_point_labels(np.stack(data.inputs), data.labels, n_points=64)
    for name, (kwargs, layers) in MODELS.items():
        t0 = time.perf_counter()
        feats = extract(load_model(name, **kwargs), data.inputs, layers=layers, pooling="none",
                        batch_size=50, progress=False)
        # token layers (CLS + a 16x16 patch grid) become (n, c, h, w) maps
        maps = {k: (patch_grid(v).transpose(0, 3, 1, 2) if np.ndim(v) == 3 else v)
                for k, v in feats.items()}
        t1 = time.perf_counter()
        res = probe_points(maps, points, labels, image_size=(28, 28), test=1 / 3)
        t2 = time.perf_counter()
        print(f"\n{name}: extraction {t1 - t0:.0f} s, probes {t2 - t1:.0f} s; test mIoU "
              f"({res.n_test_points} points, {res.n_classes} classes)")
        print(f"  {'level':18s} " + " ".join(f"{p:>7s}" for p in res.probes))
        for row, m in zip(res.rows, res.miou):
            print(f"  {row:18s} " + " ".join(f"{v:7.3f}" for v in m))
        for probe in res.probes:
            single = [res.score(layer, probe) for layer in layers]
            multi = res.score(MULTI_LEVEL, probe)
            print(f"  {probe}: multi-level {multi:.3f}, best single {max(single):.3f}, last "
                  f"{single[-1]:.3f} -> multi >= best - 0.01: {multi >= max(single) - 0.01}, "
                  f"multi > last: {multi > single[-1]}")
        for probe, w in res.level_weights.items():
            print(f"  {probe} level weights: " + ", ".join(f"{k} {v:.2f}" for k, v in w.items()
                                                           if v > 0))


if __name__ == "__main__":
    main()
