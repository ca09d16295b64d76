"""SAETransformer: a scikit-learn estimator over any architecture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from repscope.sae import SAETransformer
from repscope.sae.metrics import evaluate


def _data(n: int = 2048, seed: int = 0):
    g = np.random.default_rng(seed)
    D = g.standard_normal((24, 12))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    labels = g.integers(0, 24, n)
    S = np.zeros((n, 24), np.float32)
    S[np.arange(n), labels] = g.uniform(1.0, 2.0, n)
    return (S @ D + 0.02 * g.standard_normal((n, 12))).astype(np.float32), labels


@pytest.mark.parametrize("arch", ["topk", "relu", "batchtopk"])
def test_transform_score_and_inverse_agree_with_the_sae(arch: str) -> None:
    X, _ = _data()
    params = {"l1_coefficient": 0.5} if arch == "relu" else None
    est = SAETransformer(
        arch, d_sae=48, k=2, sae_params=params, n_epochs=3, batch_size=128, lr=5e-3,
        train_params={"optimizer": "adam"},
    )
    est.fit(X)
    codes = est.transform(X)
    assert codes.shape == (2048, 48)
    with torch.inference_mode():
        out = est.sae_(torch.from_numpy(X))
    np.testing.assert_allclose(codes, out.dense().numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        est.inverse_transform(codes), out.reconstruction.numpy(), rtol=1e-4, atol=1e-4
    )
    assert est.score(X) == pytest.approx(1 - evaluate(est.sae_, X).fvu, abs=1e-5)
    assert est.score(X) > 0.5


def test_clone_and_pipeline() -> None:
    X, y = _data()
    est = SAETransformer("topk", d_sae=48, k=2, n_epochs=3, batch_size=128, lr=5e-3, seed=3,
                         train_params={"optimizer": "adam"})
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    pipe = make_pipeline(est, LogisticRegression(max_iter=500)).fit(X[:1500], y[:1500])
    assert pipe.score(X[1500:], y[1500:]) > 0.8
    with pytest.raises(ValueError, match="12"):
        pipe[0].transform(X[:, :5])
