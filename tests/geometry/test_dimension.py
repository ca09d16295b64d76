"""Intrinsic dimension, anisotropy, spectral entropy, and the feature-weighting curve by layer."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.exceptions import RepscopeValueError
from repscope.geometry._dimension import (
    anisotropy,
    feature_weighting,
    mle_id,
    spectral_entropy,
    twonn,
)
from repscope.geometry._registry import geometry_info, get_geometry_measure


def _subspace(rng, n, d, D=30):
    Q = np.linalg.qr(rng.standard_normal((D, d)))[0]
    return rng.standard_normal((n, d)) @ Q.T + 5.0


def _sphere(rng, n, d):
    """``n`` points uniform on the unit sphere S^d (intrinsic dimension d) in R^(d+1)."""
    S = rng.standard_normal((n, d + 1))
    return S / np.linalg.norm(S, axis=1, keepdims=True)


@pytest.mark.parametrize("d", [3, 6])
@pytest.mark.parametrize("estimator", [twonn, mle_id])
def test_intrinsic_dimension_recovered_on_linear_subspace_and_sphere(estimator, d):
    rng = np.random.default_rng(d)
    assert estimator(_subspace(rng, 2000, d)) == pytest.approx(d, rel=0.10)
    assert estimator(_sphere(rng, 2000, d)) == pytest.approx(d, rel=0.10)


def test_intrinsic_dimension_counts_duplicate_rows_once(rng):
    X = _subspace(rng, 800, 4)
    doubled = np.vstack([X, X[:300]])
    assert twonn(doubled) == pytest.approx(twonn(X), rel=1e-12)
    assert mle_id(doubled) == pytest.approx(mle_id(X), rel=1e-12)
    with pytest.raises(RepscopeValueError, match="at least 3 distinct samples"):
        twonn(np.ones((10, 3)))


def test_intrinsic_dimension_refuses_too_many_samples_and_nan(rng):
    X = rng.standard_normal((50, 3))
    with pytest.raises(RepscopeValueError, match="max_samples=40"):
        twonn(X, max_samples=40)
    X[3, 0] = np.nan
    with pytest.raises(RepscopeValueError, match="finite"):
        mle_id(X)


def test_anisotropy_is_mean_pairwise_cosine(rng):
    X = rng.standard_normal((30, 5)) + 2.0
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    C = U @ U.T
    assert anisotropy(X) == pytest.approx(C[~np.eye(30, dtype=bool)].mean(), rel=1e-12)
    assert anisotropy(np.tile([1.0, 2.0], (4, 1))) == pytest.approx(1.0)
    assert abs(anisotropy(rng.standard_normal((4000, 20)))) < 0.01


def test_spectral_entropy_is_log_effective_rank(rng):
    from repscope.stats import effective_rank, pca_spectrum

    X = rng.standard_normal((200, 8)) * np.arange(1, 9)
    assert spectral_entropy(X) == pytest.approx(
        np.log(effective_rank(pca_spectrum(X).explained_variance)), rel=1e-10)
    iso = rng.standard_normal((20000, 4))
    assert spectral_entropy(iso, normalized=True) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(RepscopeValueError, match="no variance"):
        spectral_entropy(np.ones((5, 3)))


def test_dimension_measures_are_registered_with_direction(rng):
    for name in ("twonn", "mle_id", "anisotropy", "spectral_entropy"):
        info = geometry_info(name)
        assert info["labels"] == "none" and info["higher_is_better"] is None
    assert geometry_info("twonn")["cost"] == "n^2"
    X = _subspace(rng, 500, 3)
    assert get_geometry_measure("twonn")(X) == pytest.approx(twonn(X))


def test_feature_weighting_curve_per_layer_on_lite0_mnist(lite0_mnist):
    """Per-attribute probe accuracy spread and spectral entropy at each layer of a store."""
    from repscope.probe import KFold
    from repscope.store import FeatureStore

    rf = lite0_mnist
    y = rf.y
    layers = ["_bn0", "_blocks.3", "_blocks.9", "_blocks.15"]
    attrs = {"digit": y, "parity": y % 2, "loop": np.isin(y, [0, 6, 8, 9]).astype(int)}
    res = feature_weighting(FeatureStore.open(rf.store, verify="none"), attrs, layers=layers,
                            protocol=KFold(3))
    assert res.layers == tuple(layers) and res.attributes == ("digit", "parity", "loop")
    acc = np.asarray(res.accuracy)
    assert acc.shape == (4, 3)
    # digit identity is near chance on the stem and well decoded deep in the network
    assert acc[0, 0] < 0.5 < 0.85 < acc[-1, 0]
    assert res.chance[0] < 0.2 and res.chance[1] > 0.45
    norm = np.asarray(res.normalized_accuracy)
    assert np.allclose(res.accuracy_spread, norm.max(axis=1) - norm.min(axis=1))
    # the stem's variance sits in about one direction, deeper blocks spread it out
    ent = np.asarray(res.normalized_spectral_entropy)
    assert np.all((ent > 0) & (ent <= 1)) and ent[0] < ent[2]
    assert res.n_features == (32, 40, 112, 320)
    recs = res.to_records(model=rf.model, dataset=rf.dataset)
    assert [r.layer for r in recs] == layers
    assert recs[2].values["accuracy_spread"] == pytest.approx(res.accuracy_spread[2])


def test_feature_weighting_needs_two_attributes(rng):
    with pytest.raises(RepscopeValueError, match="at least two attribute"):
        feature_weighting({"a": rng.standard_normal((20, 3))}, {"y": np.arange(20) % 2})
