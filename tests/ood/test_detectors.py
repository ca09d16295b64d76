"""OOD detectors against naive numpy formulas, the paper's ViM by hand, bad input, the registry
and the recipe's digits claim (kNN beats the MSP of a logistic probe on near OOD)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from repscope.exceptions import RepscopeValueError, UnknownNameError
from repscope.ood import (
    EnergyDetector,
    GMMDetector,
    KNNDetector,
    MahalanobisDetector,
    MissingLogitsError,
    MSPDetector,
    MultiLayerMahalanobisDetector,
    RelativeMahalanobisDetector,
    ViMDetector,
    detector_info,
    get_detector,
    list_detectors,
)
from repscope.stats import Moments

EPS = np.finfo(np.float64).eps


def _blobs(rng, n=240, d=6, k=3, constant=True):
    y = rng.integers(0, k, n)
    X = rng.standard_normal((n, d)) + 2.0 * np.eye(k, d)[y]
    if constant:
        X[:, -1] = 0.5  # a constant pixel: the covariance is singular
    return X, y


def _naive_pinv(S):
    return np.linalg.pinv(S, rcond=S.shape[0] * EPS, hermitian=True)


def _naive_md(Q, mean, P):
    D = Q - mean
    return np.einsum("ij,jk,ik->i", D, P, D)


def _shrunk(S, s):
    return (1 - s) * S + s * np.trace(S) / S.shape[0] * np.eye(S.shape[0])


# ----------------------------------------------------------------------- logit scores
@pytest.mark.parametrize("T", [1.0, 2.5])
def test_logit_scores_equal_naive_formulas(rng, T):
    Z = 3 * rng.standard_normal((50, 7))
    P = softmax(Z / T, axis=1)
    top = -np.sort(-P, axis=1)[:, :5]
    expected = {
        "msp": P.max(1),
        "maxlogit": Z.max(1) / T,
        "energy": T * logsumexp(Z / T, axis=1),
        "entropy": (P * np.log(P)).sum(1),
        "gen": -(top**0.1 * (1 - top) ** 0.1).sum(1),
    }
    for name, ref in expected.items():
        params = {"temperature": T, **({"top_m": 5} if name == "gen" else {})}
        det = get_detector(name, **params).fit(logits=Z)
        np.testing.assert_allclose(det.score_samples(logits=Z), ref, rtol=1e-12, atol=1e-12)


def test_logit_detector_from_a_head_expands_a_binary_probe_to_zero_and_z(rng):
    from repscope.probe import LinearProbe

    X, y = _blobs(rng, k=2, constant=False)
    probe = LinearProbe(C=1.0).fit(X, y)
    z = probe.decision_function(X)[:, 0]
    det = EnergyDetector(head=probe).fit(X)
    np.testing.assert_allclose(det.score_samples(X), np.logaddexp(0.0, z), rtol=1e-12)
    # the same head given as weights, and 'probe' fitting LinearProbe(C=1) itself
    same = EnergyDetector(head=(probe.coef_, probe.intercept_)).fit(X)
    np.testing.assert_allclose(same.score_samples(X), det.score_samples(X), rtol=1e-12)
    own = EnergyDetector(head="probe").fit(X, y)
    np.testing.assert_allclose(own.score_samples(X), det.score_samples(X), rtol=1e-6)


def test_a_logit_detector_without_logits_or_head_is_a_named_error(rng):
    X, _ = _blobs(rng)
    det = MSPDetector().fit(X)
    with pytest.raises(MissingLogitsError, match=r"MSPDetector scores logits: pass "
                                                 r"score_samples\(X, logits=\.\.\.\) or fit it "
                                                 r"with head="):
        det.score_samples(X)
    with pytest.raises(MissingLogitsError, match="needs head="):
        ViMDetector().fit(X)
    with pytest.raises(MissingLogitsError, match=r"feature_transform=.*needs head="):
        EnergyDetector(feature_transform="react").fit(np.abs(X))


def test_logits_of_the_wrong_width_are_refused(rng):
    det = MSPDetector().fit(logits=rng.standard_normal((5, 3)))
    with pytest.raises(RepscopeValueError, match="logits must have 3 columns, as at fit"):
        det.score_samples(logits=rng.standard_normal((5, 4)))


# ----------------------------------------------------------------------- Mahalanobis
@pytest.mark.parametrize("shrinkage", [0.0, 0.3, "oas"])
def test_mahalanobis_equals_naive_numpy_on_a_singular_covariance(rng, shrinkage):
    from repscope.probe import oas_shrinkage

    X, y = _blobs(rng)
    Q = rng.standard_normal((40, X.shape[1]))
    Q[:, -1] = 3.0  # OOD along the constant pixel: ignored by the pseudo-inverse
    means = np.stack([X[y == k].mean(0) for k in range(3)])
    R = X - means[y]
    S = R.T @ R / len(X)  # divisor n
    s = oas_shrinkage(S, len(X)) if shrinkage == "oas" else shrinkage
    P = _naive_pinv(_shrunk(S, s))
    ref = -np.min([_naive_md(Q, m, P) for m in means], axis=0)
    det = MahalanobisDetector(shrinkage=shrinkage).fit(X, y)
    np.testing.assert_allclose(det.score_samples(Q), ref, rtol=1e-9, atol=1e-9)
    assert det.shrinkage_ == pytest.approx(s)
    assert np.all(np.isfinite(det.score_samples(Q)))


def test_relative_mahalanobis_equals_naive_numpy(rng):
    X, y = _blobs(rng)
    Q = rng.standard_normal((40, X.shape[1]))
    means = np.stack([X[y == k].mean(0) for k in range(3)])
    R = X - means[y]
    P = _naive_pinv(R.T @ R / len(X))
    mu = X.mean(0)
    P0 = _naive_pinv((X - mu).T @ (X - mu) / len(X))
    ref = -np.min([_naive_md(Q, m, P) - _naive_md(Q, mu, P0) for m in means], axis=0)
    det = RelativeMahalanobisDetector().fit(X, y)
    np.testing.assert_allclose(det.score_samples(Q), ref, rtol=1e-9, atol=1e-9)


def test_multilayer_mahalanobis_is_the_mean_of_standardised_layer_scores(rng):
    X, y = _blobs(rng)
    layers = {"a": X, "b": X[:, :3] ** 2}
    Q = {"a": rng.standard_normal((10, 6)), "b": rng.standard_normal((10, 3))}
    parts = []
    for name in ("a", "b"):
        det = MahalanobisDetector().fit(layers[name], y)
        tr = det.score_samples(layers[name])
        parts.append((det.score_samples(Q[name]) - tr.mean()) / tr.std())
    multi = MultiLayerMahalanobisDetector().fit(layers, y)
    np.testing.assert_allclose(multi.score_samples(Q), np.mean(parts, axis=0), rtol=1e-9)
    with pytest.raises(RepscopeValueError, match="X has no features for layer 'b'"):
        multi.score_samples({"a": Q["a"]})


def test_one_moments_is_shared_between_detectors(rng):
    X, y = _blobs(rng)
    m = Moments().update(X, labels=y)
    Q = rng.standard_normal((20, 6))
    for cls, kw in [(MahalanobisDetector, {}), (RelativeMahalanobisDetector, {}),
                    (GMMDetector, {"covariance_type": "diag"})]:
        own = cls(**kw).fit(X, y).score_samples(Q)
        shared = cls(moments=m, **kw).fit(None).score_samples(Q)
        np.testing.assert_allclose(shared, own, rtol=1e-9, atol=1e-9)
    own = KNNDetector(k=3, metric="whitened").fit(X, y).score_samples(Q)
    shared = KNNDetector(k=3, metric="whitened", moments=m).fit(X).score_samples(Q)
    np.testing.assert_allclose(shared, own, rtol=1e-9)
    with pytest.raises(RepscopeValueError, match="needs Moments"):
        GMMDetector(covariance_type="full", moments=m).fit(None)


# ----------------------------------------------------------------------- kNN
def test_knn_cosine_equals_the_naive_kth_distance(rng):
    X = rng.standard_normal((300, 8))
    Q = rng.standard_normal((25, 8))
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    D = np.linalg.norm(Qn[:, None] - Xn[None], axis=2)
    for k in (1, 5, 50):
        ref = -np.sort(D, axis=1)[:, k - 1]
        got = KNNDetector(k=k, block_size=64).fit(X).score_samples(Q)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_knn_whitened_is_the_kth_mahalanobis_distance_to_a_training_sample(rng):
    X, y = _blobs(rng)
    Q = rng.standard_normal((20, 6))
    means = np.stack([X[y == k].mean(0) for k in range(3)])
    R = X - means[y]
    P = _naive_pinv(R.T @ R / len(X))
    D = np.sqrt(np.maximum(np.stack([_naive_md(X, q, P) for q in Q]), 0))
    ref = -np.sort(D, axis=1)[:, 4]
    got = KNNDetector(k=5, metric="whitened").fit(X, y).score_samples(Q)
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-8)


def test_knn_scores_do_not_depend_on_the_candidate_search(rng, monkeypatch):
    # any backend that returns the true nearest among its candidates, in any order and with
    # its own rounding, gives identical scores: distances are recomputed in float64
    import repscope._kernels.knn as kernel

    X = rng.standard_normal((500, 16)).astype(np.float32)
    Q = rng.standard_normal((30, 16)).astype(np.float32)
    det = KNNDetector(k=10).fit(X)
    reference = det.score_samples(Q)
    real = kernel.knn_search

    def shuffled(*args, **kw):
        res = real(*args, **kw)
        perm = np.random.default_rng(0).permutation(res.indices.shape[1])
        return kernel.KNNResult(res.values[:, perm] + 1e-4, res.indices[:, perm], res.metric)

    monkeypatch.setattr(kernel, "knn_search", shuffled)
    assert np.array_equal(det.score_samples(Q), reference)


def test_knn_auto_backend_is_torch_and_faiss_is_identical(rng):
    X = rng.standard_normal((400, 12)).astype(np.float32)
    Q = rng.standard_normal((40, 12)).astype(np.float32)
    assert KNNDetector(k=7).fit(X)._backend() == "torch"
    pytest.importorskip("faiss", reason="faiss-cpu (the 'knn' extra) is not installed")
    torch_scores = KNNDetector(k=7, backend="torch").fit(X).score_samples(Q)
    faiss_scores = KNNDetector(k=7, backend="faiss").fit(X).score_samples(Q)
    assert np.array_equal(torch_scores, faiss_scores)


def test_knn_k_larger_than_the_training_set_is_refused(rng):
    with pytest.raises(RepscopeValueError, match=r"The 'k' parameter of KNNDetector must be at "
                                                 r"most the number of training samples \(4\)"):
        KNNDetector(k=5).fit(rng.standard_normal((4, 3)))


# ----------------------------------------------------------------------- ViM
def test_vim_equals_the_papers_formula_by_hand(rng):
    from sklearn.covariance import EmpiricalCovariance

    d, D = 5, 2
    X = rng.standard_normal((80, d)) @ rng.standard_normal((d, d)) + 1.0
    W = rng.standard_normal((3, d))
    b = rng.standard_normal(3)
    Q = rng.standard_normal((10, d))
    # the reference code of Wang et al. (ViM), step by step
    u = -np.matmul(np.linalg.pinv(W), b)
    ec = EmpiricalCovariance(assume_centered=True).fit(X - u)
    vals, vecs = np.linalg.eig(ec.covariance_)
    NS = np.ascontiguousarray(vecs[:, np.argsort(vals * -1)[D:]].real)
    logit_train = X @ W.T + b
    vlogit_train = np.linalg.norm((X - u) @ NS, axis=-1)
    alpha = logit_train.max(axis=-1).mean() / vlogit_train.mean()
    vlogit = np.linalg.norm((Q - u) @ NS, axis=-1) * alpha
    energy = logsumexp(Q @ W.T + b, axis=-1)
    det = ViMDetector(head=(W, b), n_components=D).fit(X)
    assert det.alpha_ == pytest.approx(alpha, rel=1e-10)
    np.testing.assert_allclose(det.score_samples(Q), energy - vlogit, rtol=1e-10)


def test_vim_principal_dimension_must_be_below_the_width(rng):
    X = rng.standard_normal((30, 4))
    with pytest.raises(RepscopeValueError, match=r"'n_components' parameter of ViMDetector must "
                                                 r"be less than n_features \(4\)"):
        ViMDetector(head=(np.ones((2, 4)), np.zeros(2)), n_components=4).fit(X)


# ----------------------------------------------------------------------- GMM
@pytest.mark.parametrize("kind", ["full", "diag", "tied"])
def test_gmm_is_the_log_density_of_the_class_gaussians(rng, kind):
    from scipy.stats import multivariate_normal

    X, y = _blobs(rng)  # constant pixel: reg_covar makes it a density
    Q = rng.standard_normal((15, 6))
    reg = 1e-3
    means = np.stack([X[y == k].mean(0) for k in range(3)])
    R = X - means[y]
    tied = R.T @ R / len(X)
    dens = []
    for k in range(3):
        Rk = R[y == k]
        full = Rk.T @ Rk / len(Rk)  # divisor n_k
        cov = {"full": full, "diag": np.diag(np.diag(full)), "tied": tied}[kind]
        prior = np.mean(y == k)
        dens.append(np.log(prior) + multivariate_normal(means[k], cov + reg * np.eye(6)).logpdf(Q))
    ref = logsumexp(np.stack(dens), axis=0)
    got = GMMDetector(kind, reg_covar=reg).fit(X, y).score_samples(Q)
    np.testing.assert_allclose(got, ref, rtol=1e-9)


# ----------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", ["mahalanobis", "relative_mahalanobis", "knn", "gmm", "vim",
                                  "energy"])
def test_bad_features_are_named_errors(rng, name):
    X, y = _blobs(rng)
    params = {"head": "probe"} if name in ("vim", "energy") else {}
    if name == "knn":
        params = {"k": 3}
    det = get_detector(name, **params).fit(X, y)
    cls = type(det).__name__
    with pytest.raises(RepscopeValueError, match=rf"X must have 6 features \(columns\), as at "
                                                 rf"fit; got shape \(4, 5\)\. .*{cls}"):
        det.score_samples(np.zeros((4, 5)))
    bad = np.zeros((4, 6))
    bad[2, 1] = np.nan
    with pytest.raises(RepscopeValueError, match=r"X must be finite; got 1 NaN value\(s\), the "
                                                 r"first at index \(2, 1\)"):
        det.score_samples(bad)
    with pytest.raises(RepscopeValueError, match="X must be finite"):
        get_detector(name, **params).fit(np.where(np.isnan(bad), np.nan, 1.0), y[:4])


def test_class_detectors_without_labels_say_so(rng):
    X, _ = _blobs(rng)
    for name in ("mahalanobis", "gmm", "relative_mahalanobis"):
        with pytest.raises(RepscopeValueError, match=r"needs class labels: pass fit\(X, y\)"):
            get_detector(name).fit(X)
    with pytest.raises(RepscopeValueError, match="needs class labels"):
        KNNDetector(k=3, metric="whitened").fit(X)


def test_unfitted_detector_raises_not_fitted(rng):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="MahalanobisDetector is not fitted yet"):
        MahalanobisDetector().score_samples(rng.standard_normal((2, 3)))


# ----------------------------------------------------------------------- registry
def test_registry_holds_the_contract_names_with_papers_and_needs():
    assert set(list_detectors()) == {
        "msp", "maxlogit", "energy", "entropy", "gen", "mahalanobis", "relative_mahalanobis",
        "multilayer_mahalanobis", "vim", "knn", "gmm"}
    for name in list_detectors():
        info = detector_info(name)
        assert info.paper and info.summary
        assert info.cls.needs == info.needs and info.cls.detector_name == name
        assert info.needs <= {"labels", "logits", "head", "nonnegative"}
    assert list_detectors(level="instance") == ["knn"]
    assert set(list_detectors(transforms=True)) == {"msp", "maxlogit", "energy", "entropy", "gen"}
    assert detector_info("Relative-Mahalanobis").name == "relative_mahalanobis"
    with pytest.raises(UnknownNameError, match="unknown OOD detector 'mahalanobs'. Did you mean "
                                               "'mahalanobis'"):
        get_detector("mahalanobs")


# ----------------------------------------------------------------------- the recipe's claim
def test_knn_beats_the_msp_of_a_logistic_probe_on_digits_near_ood():
    # cluster-a.md section 1: scikit-learn digits, pixels in [0, 1], ID 0-4, OOD 5-9;
    # kNN (k=5, cosine) AUROC about 0.98 beats MSP of an L2 logistic probe (C=1), about 0.95
    from sklearn.datasets import load_digits
    from sklearn.metrics import roc_auc_score

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    ident = y < 5
    rng = np.random.default_rng(0)
    order = rng.permutation(int(ident.sum()))
    Xid, yid = X[ident][order], y[ident][order]
    half = len(Xid) // 2
    train, test = Xid[:half], Xid[half:]
    ood = X[~ident]
    truth = np.r_[np.ones(len(test)), np.zeros(len(ood))]  # ID positive: higher = more ID

    def auroc(det):
        return roc_auc_score(truth, np.r_[det.score_samples(test), det.score_samples(ood)])

    knn = auroc(KNNDetector(k=5).fit(train))
    msp = auroc(MSPDetector(head="probe").fit(train, yid[:half]))
    maha = auroc(MahalanobisDetector().fit(train, yid[:half]))  # constant pixels: singular
    assert knn > 0.96
    assert knn > msp + 0.01
    assert 0.5 < maha < knn


def test_knn_auto_k_scales_with_the_training_set(rng):
    """kNN-OOD's k = 50 belongs to 50,000 training images; on a few hundred it reaches into
    other classes. 'auto' keeps the paper's ratio (k = n / 1000, at least 1)."""
    det = KNNDetector()
    assert det.k == "auto"
    assert [det.k_for(n) for n in (1, 350, 1499, 1500, 50_000, 1_281_167)] == [
        1, 1, 1, 2, 50, 1281]
    assert KNNDetector(k=7).k_for(50_000) == 7
    X = rng.standard_normal((300, 6))
    Q = rng.standard_normal((20, 6))
    np.testing.assert_array_equal(KNNDetector().fit(X).score_samples(Q),
                                  KNNDetector(k=1).fit(X).score_samples(Q))
