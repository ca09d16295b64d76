"""Agreement with naive n x n references, scipy, scikit-learn, and the minibatch-CKA claim."""

from __future__ import annotations

import numpy as np
import pytest
from _strategies import one_blas_thread  # noqa: F401  (autouse fixture)
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.distance import pdist
from scipy.stats import pearsonr, spearmanr

from repscope._kernels.hsic import kjem as kjem_kernel
from repscope._kernels.hsic import median_sq_distance
from repscope.similarity import (
    canonical_correlations,
    cca_similarity,
    hsic,
    linear_cka,
    linear_cka_debiased,
    linear_r2,
    minibatch_cka,
    procrustes_distance,
    pwcca,
    rbf_cka,
    rdm,
    ridge_predictivity,
    rsa,
    rsa_euclidean,
    shape_distance,
    svcca,
)


def _pair(n: int, dx: int, dy: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dx)) * rng.uniform(0.5, 2, dx) + 3.0
    Y = X @ rng.standard_normal((dx, dy)) + rng.standard_normal((n, dy)) - 1.0
    return X, Y


def _centre_gram(K: np.ndarray) -> np.ndarray:
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n  # the naive reference may build H
    return H @ K @ H


def _naive_cka(K: np.ndarray, L: np.ndarray) -> float:
    Kc, Lc = _centre_gram(K), _centre_gram(L)
    return float(np.sum(Kc * Lc) / np.sqrt(np.sum(Kc * Kc) * np.sum(Lc * Lc)))


def _naive_hsic_u(K: np.ndarray, L: np.ndarray) -> float:
    n = K.shape[0]
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    return float((np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
                  - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3)))


def _naive_debiased(K: np.ndarray, L: np.ndarray) -> float:
    return _naive_hsic_u(K, L) / np.sqrt(_naive_hsic_u(K, K) * _naive_hsic_u(L, L))


@pytest.mark.parametrize(("n", "dx", "dy"), [(200, 6, 4), (25, 40, 30)])
def test_linear_cka_equals_kernel_form_on_both_paths(n, dx, dy):
    X, Y = _pair(n, dx, dy)
    assert linear_cka(X, Y) == pytest.approx(_naive_cka(X @ X.T, Y @ Y.T), rel=1e-10)


@pytest.mark.parametrize(("n", "dx", "dy"), [(200, 6, 4), (25, 40, 30), (60, 50, 5)])
def test_debiased_cka_equals_naive_unbiased_hsic_on_uncentred_kernels(n, dx, dy):
    X, Y = _pair(n, dx, dy, seed=1)
    ref = _naive_debiased(X @ X.T, Y @ Y.T)  # un-centred: HSIC_1 is translation invariant
    assert linear_cka_debiased(X, Y) == pytest.approx(ref, rel=1e-9)


def test_debiased_cka_is_not_the_mixed_repsim_estimator():
    # repsim divides an unbiased cross term by biased self terms; the values differ.
    X, Y = _pair(40, 30, 30, seed=2)
    K, L = X @ X.T, Y @ Y.T
    Kc, Lc = _centre_gram(K), _centre_gram(L)
    mixed = _naive_hsic_u(K, L) / np.sqrt(np.sum(Kc * Kc) * np.sum(Lc * Lc) / (40 - 1) ** 4)
    assert abs(linear_cka_debiased(X, Y) - mixed) > 1e-3


def test_rbf_cka_and_hsic_equal_naive_kernel_forms():
    X, Y = _pair(90, 5, 3, seed=3)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)

    def gauss(A: np.ndarray, s2: float) -> np.ndarray:
        D = np.sum((A[:, None] - A[None]) ** 2, axis=-1)
        return np.exp(-D / (2 * s2))

    sx = np.median(pdist(Xc, "sqeuclidean"))
    sy = np.median(pdist(Yc, "sqeuclidean"))
    assert median_sq_distance(X) == pytest.approx(sx, rel=1e-12)
    K, L = gauss(Xc, sx), gauss(Yc, sy)
    assert rbf_cka(X, Y, block=16) == pytest.approx(_naive_cka(K, L), rel=1e-10)
    assert rbf_cka(X, Y, debiased=True) == pytest.approx(_naive_debiased(K, L), rel=1e-9)
    H = np.eye(90) - 1 / 90
    assert hsic(X, Y, block=7) == pytest.approx(np.trace(K @ H @ L @ H) / 89**2, rel=1e-10)
    assert hsic(X, Y, unbiased=True) == pytest.approx(_naive_hsic_u(K, L), rel=1e-9)
    assert hsic(X, Y, kernel="linear") == pytest.approx(
        np.trace(X @ X.T @ H @ Y @ Y.T @ H) / 89**2, rel=1e-10)


def test_kjem_equals_naive_formula_and_rises_with_dependence():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((120, 4))
    Y = X @ rng.standard_normal((4, 3))
    Dx = np.sum((X[:, None] - X[None]) ** 2, -1)
    Dy = np.sum((Y[:, None] - Y[None]) ** 2, -1)
    ref = np.mean(np.log(np.mean(np.exp(-Dx / 1.0) * np.exp(-Dy / 1.0), axis=1)))
    assert kjem_kernel(X, Y, tau=0.5, block=50) == pytest.approx(ref, rel=1e-10)
    Ys = (Y - Y.mean(0)) / Y.std(0)
    E = rng.standard_normal(Y.shape)
    # k-JEM is a joint entropy: compare each Y with its own row-permuted (independent) copy,
    # which keeps the marginals; the gain shrinks as the dependence weakens.
    gains = []
    for r in (1.0, 0.8, 0.4):
        Yr = r * Ys + np.sqrt(1 - r**2) * E
        gains.append(kjem_kernel(X, Yr) - kjem_kernel(X, Yr[rng.permutation(120)]))
    assert gains == sorted(gains, reverse=True)
    assert gains[-1] > 0


def test_procrustes_equals_scipy_orthogonal_procrustes():
    X, Y = _pair(150, 5, 5, seed=5)
    A, B = X - X.mean(0), Y - Y.mean(0)
    A, B = A / np.linalg.norm(A), B / np.linalg.norm(B)
    R, scale = orthogonal_procrustes(A, B)
    assert procrustes_distance(X, Y) == pytest.approx(np.linalg.norm(A @ R - B), rel=1e-10)
    assert procrustes_distance(X, Y, squared=True) == pytest.approx(2 - 2 * scale, rel=1e-10)
    # d > n: the row-space reduction gives the same value
    X2, Y2 = _pair(20, 60, 60, seed=6)
    A2, B2 = X2 - X2.mean(0), Y2 - Y2.mean(0)
    A2, B2 = A2 / np.linalg.norm(A2), B2 / np.linalg.norm(B2)
    R2, _ = orthogonal_procrustes(A2, B2)
    assert procrustes_distance(X2, Y2) == pytest.approx(np.linalg.norm(A2 @ R2 - B2), rel=1e-9)


def test_canonical_correlations_equal_scikit_learn_cca():
    from sklearn.cross_decomposition import CCA

    X, Y = _pair(300, 3, 3, seed=7)
    ours = canonical_correlations(X, Y)
    cca = CCA(n_components=3, max_iter=5000, tol=1e-12, scale=False).fit(X, Y)
    xs, ys = cca.transform(X, Y)
    ref = np.array([np.corrcoef(xs[:, k], ys[:, k])[0, 1] for k in range(3)])
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    assert cca_similarity(X, Y) == pytest.approx(ref.mean(), rel=1e-6)
    assert cca_similarity(X, Y, squared=True) == pytest.approx(np.mean(ref**2), rel=1e-6)


def _naive_cca(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    qa, _ = np.linalg.qr(A - A.mean(0))
    qb, _ = np.linalg.qr(B - B.mean(0))
    return np.linalg.svd(qa.T @ qb, compute_uv=False)[: min(A.shape[1], B.shape[1])]


def test_svcca_equals_naive_svd_then_cca():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((200, 10)) * np.geomspace(10, 0.01, 10)
    Y = X @ rng.standard_normal((10, 8)) + 0.1 * rng.standard_normal((200, 8))

    def reduce(A: np.ndarray, var: float) -> np.ndarray:
        U, s, _ = np.linalg.svd(A - A.mean(0), full_matrices=False)
        k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), var) + 1)
        return U[:, :k] * s[:k]

    ref = np.mean(_naive_cca(reduce(X, 0.99), reduce(Y, 0.99)))
    assert svcca(X, Y) == pytest.approx(ref, rel=1e-9)
    ref3 = np.mean(_naive_cca((X - X.mean(0)) @ np.linalg.svd(X - X.mean(0))[2][:3].T,
                              (Y - Y.mean(0)) @ np.linalg.svd(Y - Y.mean(0))[2][:3].T))
    assert svcca(X, Y, n_components=3) == pytest.approx(ref3, rel=1e-9)


def test_pwcca_equals_the_projection_weighting_recipe():
    X, Y = _pair(250, 4, 6, seed=9)
    A, B = X - X.mean(0), Y - Y.mean(0)
    qa, _ = np.linalg.qr(A)
    qb, _ = np.linalg.qr(B)
    U, rho, _ = np.linalg.svd(qa.T @ qb)
    H = qa @ U  # canonical variates of X (orthonormal columns)
    P, _ = np.linalg.qr(H)
    w = np.abs(P.T @ A).sum(axis=1)
    ref = float(np.sum(w / w.sum() * rho[:4]))
    assert pwcca(X, Y) == pytest.approx(ref, rel=1e-9)
    assert pwcca(Y, X) == pytest.approx(ref, rel=1e-9)  # weights come from the narrower side
    Xw, Yw = _pair(20, 50, 45, seed=10)  # d > n path (row-space reduction + basis)
    assert 0.0 <= pwcca(Xw, Yw) <= 1.0 + 1e-12


def test_shape_metric_endpoints():
    X, Y = _pair(300, 5, 5, seed=11)
    assert shape_distance(X, Y, alpha=0.0) == pytest.approx(
        np.arccos(cca_similarity(X, Y)), rel=1e-9)
    d = procrustes_distance(X, Y)
    assert shape_distance(X, Y, alpha=1.0) == pytest.approx(np.arccos(1 - d**2 / 2), rel=1e-9)
    mid = shape_distance(X, Y, alpha=0.5)
    assert np.isfinite(mid)
    assert 0 <= mid <= np.pi / 2


@pytest.mark.parametrize(("metric", "pd"), [("correlation", "correlation"), ("euclidean", "euclidean"),
                                            ("sqeuclidean", "sqeuclidean")])
def test_rdm_and_rsa_equal_naive_pdist(metric, pd):
    X, Y = _pair(70, 6, 5, seed=12)
    np.testing.assert_allclose(rdm(X, metric=metric), pdist(X, pd), rtol=1e-9, atol=1e-12)
    a, b = pdist(X, pd), pdist(Y, pd)
    assert rsa(X, Y, metric=metric) == pytest.approx(spearmanr(a, b)[0], rel=1e-9)
    assert rsa(X, Y, metric=metric, method="pearson") == pytest.approx(pearsonr(a, b)[0], rel=1e-9)
    if metric == "euclidean":
        assert rsa_euclidean(X, Y) == pytest.approx(spearmanr(a, b)[0], rel=1e-9)


def test_linear_r2_and_ridge_predictivity_equal_scikit_learn():
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.metrics import r2_score

    X, Y = _pair(103, 6, 4, seed=13)
    pred = LinearRegression().fit(X, Y).predict(X)
    assert linear_r2(X, Y) == pytest.approx(
        r2_score(Y, pred, multioutput="variance_weighted"), rel=1e-9)
    alpha, k = 0.05, 4
    folds = np.arange(103) % k
    sse = sst = 0.0
    for f in range(k):
        tr, te = folds != f, folds == f
        Xt = X[tr] - X[tr].mean(0)
        lam = alpha * np.trace(Xt.T @ Xt) / 6
        p = Ridge(alpha=lam).fit(X[tr], Y[tr]).predict(X[te])
        sse += np.sum((Y[te] - p) ** 2)
        sst += np.sum((Y[te] - Y[te].mean(0)) ** 2)
    assert ridge_predictivity(X, Y, alpha=alpha, folds=k) == pytest.approx(1 - sse / sst, rel=1e-9)
    both = ridge_predictivity(X, Y, alpha=alpha, folds=k, direction="mean")
    back = ridge_predictivity(X, Y, alpha=alpha, folds=k, direction="backward")
    assert both == pytest.approx(0.5 * (1 - sse / sst + back), rel=1e-12)


def test_minibatch_cka_converges_to_debiased_not_biased_cka():
    # d comparable to the batch size: per-batch biased HSIC is inflated, the unbiased one not.
    rng = np.random.default_rng(14)
    d, bs = 40, 80
    W = rng.standard_normal((d, d)) / np.sqrt(d)
    gaps = []
    for n in (800, 6400):
        X = rng.standard_normal((n, d))
        Y = 0.3 * X @ W + rng.standard_normal((n, d))
        mb = minibatch_cka(X, Y, batch_size=bs)
        gaps.append(abs(mb - linear_cka_debiased(X, Y)))
    # the same batches with the biased HSIC (what "minibatch CKA" is often mistaken for)
    h = np.zeros(3)
    for s in range(0, 6400, bs):
        A, B = X[s:s + bs] - X[s:s + bs].mean(0), Y[s:s + bs] - Y[s:s + bs].mean(0)
        h += [np.sum((A.T @ B) ** 2), np.sum((A.T @ A) ** 2), np.sum((B.T @ B) ** 2)]
    biased_mb = h[0] / np.sqrt(h[1] * h[2])
    assert max(gaps) < 0.01
    assert abs(biased_mb - linear_cka_debiased(X, Y)) > 0.1


def test_real_embeddings_cka_kernel_form_and_depth_order(minilm_austen):
    f = minilm_austen
    layers = f.layers
    X = f.X[layers[-2]][:400].astype(np.float64)
    Y = f.X[layers[-1]][:400].astype(np.float64)
    assert linear_cka(X, Y) == pytest.approx(_naive_cka(X @ X.T, Y @ Y.T), rel=1e-9)
    assert linear_cka_debiased(X, Y) == pytest.approx(_naive_debiased(X @ X.T, Y @ Y.T), rel=1e-8)
    first = f.X[layers[0]][:400]
    assert linear_cka(X, Y) > linear_cka(first, Y)
    # float32 input gives the float64 answer (accumulation in float64)
    assert linear_cka(f.X[layers[-2]][:400], f.X[layers[-1]][:400]) == pytest.approx(
        linear_cka(X, Y), rel=1e-6)
