"""OrthogonalMap, LinearMap, SubspaceMap: references, streaming, round trips, bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.linear_model import Ridge

from repscope._testing import random_orthogonal
from repscope.align import (
    LinearMap,
    OrthogonalMap,
    SubspaceMap,
    orthogonality_gap,
    paired_moments,
    sweep_k,
    transfer,
)
from repscope.exceptions import NotFittedError
from repscope.stats import Moments


def _pair(rng: np.random.Generator, n: int = 400, d: int = 12, noise: float = 0.05):
    X = rng.standard_normal((n, d)) @ np.diag(np.linspace(0.5, 3.0, d)) + 5.0
    Q = random_orthogonal(d, rng)
    Y = 2.0 * (X - X.mean(0)) @ Q - 1.0 + noise * rng.standard_normal((n, d))
    return X, Y, Q


@settings(max_examples=15, deadline=None)
@given(n=st.integers(10, 80), d=st.integers(2, 9), seed=st.integers(0, 2**31 - 1))
def test_orthogonal_map_equals_scipy_orthogonal_procrustes(n: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    R, s = scipy.linalg.orthogonal_procrustes(X, Y)
    m = OrthogonalMap(center=False).fit(X, Y)
    np.testing.assert_allclose(m.rotation_, R, atol=1e-8)
    np.testing.assert_allclose(m.singular_values_.sum(), s, rtol=1e-10)
    mc = OrthogonalMap(center=True, scale=True).fit(X, Y)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Rc, sc = scipy.linalg.orthogonal_procrustes(Xc, Yc)
    np.testing.assert_allclose(mc.rotation_, Rc, atol=1e-8)
    np.testing.assert_allclose(mc.scale_, sc / (Xc**2).sum(), rtol=1e-10)


def test_orthogonal_map_recovers_rotation_shift_and_scale(rng) -> None:
    X, Y, Q = _pair(rng, noise=0.0)
    m = OrthogonalMap(scale=True).fit(X, Y)
    np.testing.assert_allclose(m.rotation_, Q, atol=1e-10)
    assert m.scale_ == pytest.approx(2.0, rel=1e-12)
    np.testing.assert_allclose(m.transform(X), Y, atol=1e-9)
    assert m.score(X, Y) == pytest.approx(1.0, abs=1e-12)
    # without the scale the fit is a pure rotation: worse, but still the same Q
    m1 = OrthogonalMap(scale=False).fit(X, Y)
    np.testing.assert_allclose(m1.rotation_, Q, atol=1e-10)
    assert m1.score(X, Y) < 0.99


@pytest.mark.parametrize("est", [OrthogonalMap(scale=True), LinearMap(), SubspaceMap(n_components=5)])
def test_streaming_fit_equals_in_memory_fit(est, rng) -> None:
    X, Y, _ = _pair(rng, noise=0.3)
    full = clone(est).fit(X, Y)
    batches = [(X[i:i + 37], Y[i:i + 37]) for i in range(0, len(X), 37)]
    streamed = clone(est).fit_moments(paired_moments(batches))
    # shards merged in another order give the same moments
    a = paired_moments(batches[5:]).merge(paired_moments(batches[:5]))
    merged = clone(est).fit_moments(a)
    for other in (streamed, merged):
        np.testing.assert_allclose(other.weight_, full.weight_, atol=1e-9)
        np.testing.assert_allclose(other.mean_x_, full.mean_x_, atol=1e-12)
        np.testing.assert_allclose(other.transform(X), full.transform(X), atol=1e-8)


def test_streaming_fit_from_feature_stores(tmp_path, rng) -> None:
    from repscope.store import FeatureStore

    X, Y, _ = _pair(rng, n=300, noise=0.2)
    sa = FeatureStore.create(tmp_path / "a", model_id="a")
    sb = FeatureStore.create(tmp_path / "b", model_id="b")
    for s in range(0, 300, 100):
        sa.append({"h": X[s:s + 100].astype(np.float32)})
        sb.append({"h": Y[s:s + 100].astype(np.float32)})
    m = paired_moments(zip(sa.iter_batches("h", 64), sb.iter_batches("h", 64)))
    streamed = OrthogonalMap().fit_moments(m)
    full = OrthogonalMap().fit(X.astype(np.float32), Y.astype(np.float32))
    np.testing.assert_allclose(streamed.rotation_, full.rotation_, atol=1e-6)


def test_transform_keeps_backend_and_dtype(rng) -> None:
    import torch

    X, Y, _ = _pair(rng)
    m = OrthogonalMap(scale=True).fit(X, Y)
    out32 = m.transform(X.astype(np.float32))
    assert out32.dtype == np.float32
    t = torch.from_numpy(X.astype(np.float32))
    mt = OrthogonalMap(scale=True).fit(t, torch.from_numpy(Y.astype(np.float32)))
    ot = mt.transform(t)
    assert isinstance(ot, torch.Tensor)
    assert ot.dtype == torch.float32
    np.testing.assert_allclose(ot.numpy(), out32, atol=1e-3)


def test_estimators_clone_and_pickle_round_trip(rng) -> None:
    X, Y, _ = _pair(rng, noise=0.2)
    for est in (OrthogonalMap(center=False), LinearMap(alphas=[0.1, 1.0]),
                SubspaceMap(n_components=4, method="pca", mapper="affine")):
        fitted = clone(est).fit(X, Y)
        assert clone(est).get_params() == est.get_params()
        again = pickle.loads(pickle.dumps(fitted))
        np.testing.assert_array_equal(again.transform(X), fitted.transform(X))
        assert again.score(X, Y) == fitted.score(X, Y)


def test_linear_map_equals_sklearn_ridge_and_picks_alpha_by_gcv(rng) -> None:
    n, d, e = 300, 10, 4
    X = rng.standard_normal((n, d)) + 3
    A = rng.standard_normal((d, e))
    Y = X @ A + 0.5 * rng.standard_normal((n, e)) - 2
    for alpha in (0.0, 0.7, 50.0):
        m = LinearMap(alphas=alpha).fit(X, Y)
        ref = Ridge(alpha=alpha).fit(X, Y) if alpha > 0 else None
        if ref is not None:
            np.testing.assert_allclose(m.coef_, ref.coef_.T, atol=1e-8)
            np.testing.assert_allclose(m.intercept_, ref.intercept_, atol=1e-8)
        else:
            coef = np.linalg.lstsq(np.c_[X, np.ones(n)], Y, rcond=None)[0]
            np.testing.assert_allclose(m.coef_, coef[:-1], atol=1e-8)
    # GCV equals the brute-force formula on the hat matrix
    grid = [1e-2, 1.0, 1e2, 1e4]
    m = LinearMap(alphas=grid).fit(X, Y)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    for a, g in zip(grid, m.gcv_):
        H = Xc @ np.linalg.solve(Xc.T @ Xc + a * np.eye(d), Xc.T)
        rss = ((Yc - H @ Yc) ** 2).sum()
        df = np.trace(H) + 1
        assert g == pytest.approx(rss / (n - df) ** 2, rel=1e-8)
    assert m.alpha_ == grid[int(np.argmin(m.gcv_))]
    assert m.alpha_ < 1e4  # a strong ridge is not what noisy but well-posed data wants


def test_subspace_full_pca_equals_orthogonal_map(rng) -> None:
    X, Y, _ = _pair(rng, noise=0.5)
    Y = Y @ np.diag(np.linspace(1, 2, Y.shape[1]))  # not exactly a rotation
    full = SubspaceMap(n_components=X.shape[1], method="pca").fit(X, Y)
    orth = OrthogonalMap().fit(X, Y)
    np.testing.assert_allclose(full.weight_, orth.weight_, atol=1e-9)
    np.testing.assert_allclose(full.transform(X), orth.transform(X), atol=1e-8)
    assert full.score(X, Y) == pytest.approx(orth.score(X, Y), abs=1e-9)


def test_subspace_cca_finds_the_shared_signal(rng) -> None:
    # 3 shared latent dimensions, each space adds 9 private noise dimensions of larger variance
    n, k = 1500, 3
    Z = rng.standard_normal((n, k))
    X = np.c_[Z, 3 * rng.standard_normal((n, 9))] @ random_orthogonal(12, rng)
    Y = np.c_[Z @ random_orthogonal(k, rng), 3 * rng.standard_normal((n, 9))] @ random_orthogonal(12, rng)
    tr, te = slice(0, 1000), slice(1000, None)
    s = sweep_k(X[tr], Y[tr], X[te], Y[te], ks=[1, 2, 3, 6, 12], method="cca", reg=1e-3)
    top1 = dict(zip(s.ks, s.retrieval[1]))
    assert top1[3] > top1[1]  # more shared directions help ...
    assert top1[3] > top1[12] + 0.1  # ... until the private noise comes in: a peak at k=3
    assert s.best_k() in (3, 6)
    # the canonical correlations of the shared directions are ~1, of the rest ~0
    m = SubspaceMap(n_components=3, reg=1e-3).fit(X[tr], Y[tr])
    assert m.score(X[te], Y[te]) > 0.95
    pca = SubspaceMap(n_components=3, method="pca").fit(X[tr], Y[tr])
    assert pca.score(X[te], Y[te]) < m.score(X[te], Y[te])


def test_sweep_k_full_pca_matches_orthogonal_retrieval(rng) -> None:
    from repscope.align import retrieval_topk

    X, Y, _ = _pair(rng, n=500, noise=1.0)
    s = sweep_k(X[:300], Y[:300], X[300:], Y[300:], method="pca")
    assert s.ks[-1] == X.shape[1]
    assert s.ks[0] == 1
    orth = OrthogonalMap().fit(X[:300], Y[:300])
    ref = retrieval_topk(orth.transform(X[300:]) - orth.mean_y_, Y[300:] - orth.mean_y_, ks=(1,))
    assert s.retrieval[1][-1] == pytest.approx(ref.topk[1])
    assert s.to_dict()["type"] == "SubspaceSweepResult"


def test_orthogonality_gap_zero_for_rotation_positive_otherwise(rng) -> None:
    X, Y, _ = _pair(rng, n=1200, noise=0.1)
    g = orthogonality_gap(X[:800], Y[:800], X[800:], Y[800:])
    assert abs(g.gap) < 2e-3
    assert g.orthogonal_residual < 0.01
    S = np.diag(np.linspace(0.3, 3.0, X.shape[1]))  # anisotropic: not a rotation
    g2 = orthogonality_gap(X[:800], Y[:800] @ S, X[800:], Y[800:] @ S)
    assert g2.gap > 0.1
    assert g2.linear_residual < 0.01


def test_transfer_carries_a_map_to_the_other_modality_to_the_noise_level(rng) -> None:
    # Canonicalizing (Gupta et al.): (f~, g~) = (f Q + c, g Q + c) + noise. Fit on images only.
    n, d, noise = 600, 16, 0.05
    Q = random_orthogonal(d, rng)
    c = rng.standard_normal(d) * 3
    f = rng.standard_normal((n, d)) + 1.0   # image embeddings, old model
    g = rng.standard_normal((n, d)) * 0.8 - 2.0   # text embeddings: another mean and spread
    f_new = f @ Q + c + noise * rng.standard_normal((n, d))
    g_new = g @ Q + c + noise * rng.standard_normal((n, d))
    m = OrthogonalMap().fit(f, f_new)
    g_hat = transfer(m, g)
    rmse = np.sqrt(((g_hat - g_new) ** 2).mean())
    assert rmse < 1.2 * noise  # text error at the noise level
    unmapped = np.sqrt(((g - g_new) ** 2).mean())
    assert unmapped > 20 * noise
    # "own" centring is the other reading of the paper: it also works when the text mean shift
    # is the image one (c), given the target mean of the new text embeddings
    g_own = transfer(m, g, source_mean="own", target_mean=g_new.mean(0))
    assert np.sqrt(((g_own - g_new) ** 2).mean()) < 1.2 * noise


def test_bad_input_gives_clear_errors(rng) -> None:
    X = rng.standard_normal((20, 4))
    with pytest.raises(ValueError, match="same number of samples"):
        OrthogonalMap().fit(X, X[:10])
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="X must be finite; got 1 NaN"):
        LinearMap().fit(Xn, X)
    with pytest.raises(ValueError, match="at least 3 sample"):
        SubspaceMap(n_components=1).fit(X[:2], X[:2])
    with pytest.raises(ValueError, match="X is constant"):
        OrthogonalMap().fit(np.ones((20, 4)), X)
    with pytest.raises(ValueError, match="'n_components' parameter of SubspaceMap must be at most 4"):
        SubspaceMap(n_components=5).fit(X, X)
    with pytest.raises(ValueError, match="'method' parameter of SubspaceMap must be a str among"):
        SubspaceMap(method="ica").fit(X, X)
    with pytest.raises(ValueError, match="'alphas' parameter of LinearMap"):
        LinearMap(alphas=-1.0).fit(X, X)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        OrthogonalMap().transform(X)
    m = OrthogonalMap().fit(X, X)
    with pytest.raises(ValueError, match="expected X with 4 columns"):
        m.transform(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="needs paired moments"):
        OrthogonalMap().fit_moments(Moments().update(X))
    with pytest.raises(ValueError, match="'source_mean' parameter of transfer must be"):
        transfer(m, X, source_mean="mine")
    with pytest.raises(TypeError, match="transfer expects a fitted"):
        transfer(object(), X)
