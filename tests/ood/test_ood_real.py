"""OOD detection on real frozen features: near (MNIST 0-4 vs 5-9 on Lite0), far (MNIST vs
Fashion-MNIST on Lite0) and text (Austen novels 1-3 vs 4-6 on MiniLM-L6).

Every registered detector runs on two layers of each model (a middle block and the last; the
whole stack of layers is the CLI's and the demo's job, too slow for a test) and its AUROC and
FPR at 95% TPR land in the ``ood`` records.
"""

from __future__ import annotations

import numpy as np
import pytest

from repscope.ood._evaluate import evaluate_detectors
from repscope.ood._registry import list_detectors

#: Detectors that score the features themselves (not the ID probe's decision boundary).
FEATURE_BASED = ("knn", "mahalanobis", "relative_mahalanobis", "gmm", "vim")
IMAGE_LAYERS = ("_blocks.8", "_blocks.15")  # 80 and 320 features (the 1,280 head is slow)
N_OOD = 300  # OOD samples per test set (held-out ID: 30% of the ID samples)



@pytest.fixture(scope="module")
def near(lite0_mnist):
    y = lite0_mnist.y
    is_id = y < 5
    return evaluate_detectors({k: lite0_mnist.X[k][is_id] for k in IMAGE_LAYERS},
                              {k: lite0_mnist.X[k][~is_id][:N_OOD] for k in IMAGE_LAYERS},
                              labels=y[is_id], seed=0, folds=3)


@pytest.fixture(scope="module")
def far(lite0_mnist, lite0_fashion):
    y = lite0_mnist.y
    is_id = y < 5  # the same ID samples as the near set
    return evaluate_detectors({k: lite0_mnist.X[k][is_id] for k in IMAGE_LAYERS},
                              {k: lite0_fashion.X[k][:N_OOD] for k in IMAGE_LAYERS},
                              labels=y[is_id], seed=0, folds=3)


def _records_cover_every_detector_and_layer(res, layers):
    recs = res.all_records(model="m", dataset="d", params={"seed": 0})
    ood = [r for r in recs if r.analysis == "ood"]
    got = {(r.params["detector"], r.layer) for r in ood}
    per_layer = {(d, layer) for d in list_detectors() if d != "multilayer_mahalanobis"
                 for layer in layers}
    assert per_layer | {("multilayer_mahalanobis", "(all layers)")} == got
    for r in ood:
        assert "reason" not in r.values, (r.params["detector"], r.layer, r.values["reason"])
        assert 0.0 <= r.values["auroc"] <= 1.0 and 0.0 <= r.values["fpr_at_tpr"] <= 1.0
        assert sum(r.values["hist_id"]) == r.values["n_id"]
    diag = [r for r in recs if r.analysis == "ood_diagnostics"]
    assert [r.layer for r in diag] == list(layers)
    return ood


def test_near_ood_every_detector_and_layer_recorded(near):
    _records_cover_every_detector_and_layer(near, IMAGE_LAYERS)
    # digits 5-9 are not random: the best detector is well above chance
    assert max(near.table()[d]["_blocks.15"] for d in near.detectors if d != "multilayer_mahalanobis"
               ) > 0.8


def test_far_ood_every_detector_and_layer_recorded(far):
    _records_cover_every_detector_and_layer(far, IMAGE_LAYERS)


def test_far_ood_is_easier_than_near_for_feature_based_detectors(near, far):
    a_near, a_far = near.table(), far.table()
    for d in FEATURE_BASED:
        for layer in IMAGE_LAYERS:
            assert a_far[d][layer] > a_near[d][layer] + 0.05, (d, layer)
        assert np.mean([far.get(d, x).metrics.fpr_at_tpr for x in IMAGE_LAYERS]) < np.mean(
            [near.get(d, x).metrics.fpr_at_tpr for x in IMAGE_LAYERS])
    # Fashion-MNIST is linearly separable from MNIST; digits 5-9 less so from 0-4
    assert min(far.diagnostics.separability_accuracy) > max(
        near.diagnostics.separability_accuracy) - 0.02
    assert min(far.diagnostics.separability_accuracy) > 0.95


def test_text_ood_austen_novels_every_detector_and_layer_recorded(minilm_austen):
    y = minilm_austen.y
    layers = ("encoder.layer.2", "encoder.layer.5")
    is_id = y < 3  # Sense & Sensibility, Pride & Prejudice, Mansfield Park
    res = evaluate_detectors({k: minilm_austen.X[k][is_id] for k in layers},
                             {k: minilm_austen.X[k][~is_id] for k in layers},
                             labels=y[is_id], seed=0, folds=3)
    _records_cover_every_detector_and_layer(res, layers)
    assert res.n_ood == int((~is_id).sum())
