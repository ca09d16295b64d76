"""SAE evaluation metrics: reconstruction/sparsity (evaluate) and ground-truth comparisons."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import Tensor

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.sae.archs._base import SAEConfig, SAEOutput, SparseAutoencoder
from repscope.sae.metrics import (
    dead_fraction,
    evaluate,
    feature_precision_recall,
    fvu,
    l0,
    matched_cosines,
    mse,
    recovery,
    seed_stability,
)


class DenseReLU(SparseAutoencoder):
    """A minimal dense-code SAE: z = ReLU((xn - b_dec) W_enc + b_enc), x_hat = z W_dec + b_dec."""

    config_class = SAEConfig

    def encode_normalized(self, xn: Tensor) -> SAEOutput:
        pre = (xn - self.b_dec) @ self.W_enc + self.b_enc
        return SAEOutput(pre.relu(), None, pre, xn.new_empty(0))

    def decode_normalized(self, values: Tensor, indices: Tensor | None) -> Tensor:
        if indices is not None:
            dense = values.new_zeros((*values.shape[:-1], self.d_sae))
            values = dense.scatter_add(-1, indices, values)
        return values @ self.W_dec + self.b_dec


def make_sae(d_in=8, d_sae=24, *, normalize="scale", X=None, seed=0, dead=()):
    sae = DenseReLU(SAEConfig(d_in=d_in, d_sae=d_sae, normalize_activations=normalize, seed=seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.b_enc.copy_(-0.3 * torch.rand(d_sae, generator=g))
        sae.W_enc.add_(0.2 * torch.randn(d_in, d_sae, generator=g))
        for j in dead:
            sae.b_enc[j] = -1e6
        if X is not None:
            sae.fit_normalizer(X)
            sae.init_from_data(sae.normalize(X))
    return sae


def data(n=600, d=8, seed=0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64).float() * 2.0 + offset


def naive(sae, X):
    """The metrics from one forward pass and the textbook formulas (numpy float64)."""
    with torch.no_grad():
        out = sae(X)
    x = X.double().numpy()
    xh = out.reconstruction.double().numpy()
    z = out.dense().numpy()
    c = sae.denormalize(sae.b_dec.detach()[None]).double().numpy()[0]
    cos = (x * xh).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(xh, axis=1))
    return {
        "mse": ((x - xh) ** 2).sum(1).mean(),
        "fvu": ((x - xh) ** 2).sum() / ((x - x.mean(0)) ** 2).sum(),
        "l0": (z != 0).sum(1).mean(),
        "density": (z != 0).mean(0),
        "cosine": cos.mean(),
        "shrinkage": (np.linalg.norm(xh - c, axis=1) / np.linalg.norm(x - c, axis=1)).mean(),
        "reconstruction_bias": ((xh - c) ** 2).sum() / ((xh - c) * (x - c)).sum(),
    }


# ---------------------------------------------------------------------------- pure functions


def test_fvu_and_mse_match_numpy_formulas():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6))
    xh = x + 0.3 * rng.normal(size=x.shape)
    ref = ((x - xh) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert fvu(x, xh) == pytest.approx(ref, rel=1e-12)
    assert fvu(torch.from_numpy(x), torch.from_numpy(xh)) == pytest.approx(ref, rel=1e-12)
    assert mse(x, xh) == pytest.approx(((x - xh) ** 2).sum(1).mean(), rel=1e-12)
    assert fvu(x, x) == 0.0
    assert fvu(x, np.broadcast_to(x.mean(0), x.shape)) == pytest.approx(1.0)
    assert math.isnan(fvu(x[:1], xh[:1]))


def test_fvu_invariant_to_common_orthogonal_transform_not_to_one_sided():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5))
    xh = x + 0.5 * rng.normal(size=x.shape)
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    t = rng.normal(size=5) * 10
    base = fvu(x, xh)
    assert fvu(x @ Q + t, xh @ Q + t) == pytest.approx(base, rel=1e-10)
    assert fvu(3.0 * x, 3.0 * xh) == pytest.approx(base, rel=1e-10)
    assert abs(fvu(x, xh @ Q) - base) > 0.1


def test_l0_and_dead_fraction_match_counts():
    values = torch.tensor([[0.5, 0.0, 1.0], [0.0, 0.0, 2.0]])
    dense = SAEOutput(values, None, values, values.new_empty(0))
    sparse = SAEOutput(
        torch.tensor([[0.5, 1.0], [2.0, 0.0]]),
        torch.tensor([[0, 2], [2, 1]]),
        values,
        values.new_empty(0),
    )
    assert l0(dense) == 1.5
    assert l0(sparse) == 1.5
    assert l0(values.numpy()) == 1.5
    assert dead_fraction(torch.tensor([0, 3, 0, 1])) == 0.5
    assert dead_fraction(np.array([1, 1])) == 0.0
    with pytest.raises(RepscopeValueError, match="fire_counts must be finite and non-negative"):
        dead_fraction(np.array([-1, 2]))
    with pytest.raises(RepscopeValueError, match=r"fire_counts must be a non-empty 1-D"):
        dead_fraction(np.zeros((2, 2)))
    with pytest.raises(RepscopeValueError, match="x and x_hat must have the same shape"):
        fvu(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(RepscopeValueError, match="x_hat must be finite"):
        mse(np.zeros((3, 2)), np.full((3, 2), np.nan))


# ---------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("normalize", ["none", "scale", "whiten"])
def test_evaluate_matches_direct_computation_in_raw_space(normalize):
    X = data(offset=1.5)
    sae = make_sae(X=X, normalize=normalize, dead=(3, 7))
    res = evaluate(sae, X, batch_size=128)
    ref = naive(sae, X)
    for key in ("mse", "fvu", "l0", "cosine", "shrinkage", "reconstruction_bias"):
        assert getattr(res, key) == pytest.approx(ref[key], rel=1e-5), key
    np.testing.assert_allclose(res.density, ref["density"], atol=1e-12)
    assert res.explained_variance == pytest.approx(1 - ref["fvu"], rel=1e-5)
    assert res.dead_fraction == pytest.approx(2 / 24)
    assert res.n == 600
    # the summed firing density is the mean L0
    assert res.density.sum() == pytest.approx(res.l0, rel=1e-12)
    h = res.density_histogram
    assert h.n_dead == 2
    assert h.counts.sum() == 22
    assert h.edges[0] == pytest.approx(math.log10(1 / 600))
    assert h.edges[-1] == 0.0


def test_evaluate_streamed_equals_one_batch_for_every_input_kind(tmp_path):
    X = data(n=500, offset=3.0)
    sae = make_sae(X=X)
    whole = evaluate(sae, X, batch_size=100_000)
    arr = X.numpy()
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=arr.shape)
    mm[:] = arr
    mm.flush()
    chunks = [arr[:7], arr[7:200], arr[200:201], torch.from_numpy(arr[201:])]
    variants = [
        evaluate(sae, X, batch_size=33),
        evaluate(sae, arr, batch_size=64),
        evaluate(sae, np.load(tmp_path / "x.npy", mmap_mode="r"), batch_size=99),
        evaluate(sae, iter(chunks), batch_size=50),
        evaluate(sae, X.reshape(5, 100, 8), batch_size=70),
    ]
    for res in variants:
        assert res.n == 500
        for key in ("mse", "fvu", "l0", "cosine", "shrinkage", "reconstruction_bias"):
            # float64 sums of float32 forwards: batch sizes change only the float32 rounding
            assert getattr(res, key) == pytest.approx(getattr(whole, key), rel=1e-6), key
        np.testing.assert_array_equal(res.density, whole.density)
        np.testing.assert_array_equal(res.density_histogram.counts, whole.density_histogram.counts)


def test_evaluate_fvu_accurate_for_data_far_from_origin():
    # variance 1e-2 around 1e4: a naive sum(x^2) - n mean^2 in float64 would lose it
    g = torch.Generator().manual_seed(3)
    X = (1e4 + 0.1 * torch.randn(400, 4, generator=g, dtype=torch.float64)).to(torch.float64)
    sae = make_sae(d_in=4, d_sae=8, normalize="none")
    sae = sae.double()
    sae.cfg.dtype = "float64"
    res = evaluate(sae, X, batch_size=37)
    with torch.no_grad():
        xh = sae(X).reconstruction.numpy()
    x = X.numpy()
    ref = ((x - xh) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert res.fvu == pytest.approx(ref, rel=1e-8)


def test_evaluate_topk_density_sums_to_l0_of_k():
    from repscope.sae.archs.topk import TopKConfig, TopKSAE

    X = data(n=300)
    sae = TopKSAE(TopKConfig(d_in=8, d_sae=32, k=4, normalize_activations="none"))
    res = evaluate(sae, X, batch_size=64)
    ref = naive(sae, X)
    assert res.l0 == pytest.approx(ref["l0"])
    assert res.l0 <= 4
    assert res.density.sum() == pytest.approx(res.l0)
    assert res.fvu == pytest.approx(ref["fvu"], rel=1e-5)
    assert res.architecture == "topk"


class TrainModeSilent(DenseReLU):
    """Codes are all zero in training mode (like a batch rule that differs from inference)."""

    def encode_normalized(self, xn: Tensor) -> SAEOutput:
        out = super().encode_normalized(xn)
        return out._replace(values=out.values * 0) if self.training else out


def test_evaluate_uses_eval_mode_and_restores_the_mode():
    X = data(n=100)
    sae = TrainModeSilent(SAEConfig(d_in=8, d_sae=24, normalize_activations="none"))
    assert sae.training
    res = evaluate(sae, X)
    assert sae.training  # restored
    sae.eval()
    assert res.l0 == pytest.approx(naive(sae, X)["l0"])
    assert res.l0 > 0
    assert not sae.training
    evaluate(sae, X)
    assert not sae.training


def test_evaluate_result_serialises():
    X = data(n=64)
    res = evaluate(make_sae(X=X), X)
    d = res.to_dict()
    assert json.loads(json.dumps(d))["type"] == "SAEEvaluationResult"
    assert len(d["density"]) == 24
    assert len(d["density_histogram"]["counts"]) == 50


def test_evaluate_rejects_bad_input():
    sae = make_sae()
    with pytest.raises(RepscopeTypeError, match="'sae' parameter of evaluate must be a Sparse"):
        evaluate(torch.nn.Linear(2, 2), torch.zeros(3, 8))  # type: ignore[arg-type]
    with pytest.raises(
        RepscopeValueError, match=r"X must have shape \(n, d_in=8\); got shape \(4, 5\)"
    ):
        evaluate(sae, torch.zeros(4, 5))
    bad = torch.zeros(10, 8)
    bad[6, 2] = float("nan")
    with pytest.raises(RepscopeValueError, match=r"X must be finite; batch 1 \(rows 4..8\)"):
        evaluate(sae, bad, batch_size=4)
    with pytest.raises(RepscopeValueError, match="at least one sample"):
        evaluate(sae, torch.zeros(0, 8))
    with pytest.raises(RepscopeValueError, match="'batch_size' parameter of evaluate"):
        evaluate(sae, torch.zeros(3, 8), batch_size=0)
    with pytest.raises(RepscopeTypeError, match="X must be a torch.Tensor"):
        evaluate(sae, "data")
    with pytest.raises(RepscopeTypeError, match="got list in batch 0"):
        evaluate(sae, [[0.0] * 8])


# ---------------------------------------------------------------------------- recovery


def brute_force_mcc(L, T):
    Ln = L / np.linalg.norm(L, axis=1, keepdims=True)
    Tn = T / np.linalg.norm(T, axis=1, keepdims=True)
    C = np.abs(Tn @ Ln.T)
    m_true, m_learned = C.shape
    best = max(
        sum(C[j, p[j]] for j in range(m_true))
        for p in itertools.permutations(range(m_learned), m_true)
    )
    return best / m_true


@pytest.mark.parametrize(("m_learned", "m_true"), [(5, 5), (6, 4)])
def test_recovery_equals_brute_force_over_assignments(m_learned, m_true):
    rng = np.random.default_rng(m_learned)
    for _ in range(5):
        L = rng.normal(size=(m_learned, 3))
        T = rng.normal(size=(m_true, 3))
        res = recovery(L, T, threshold=0.5)
        assert res.mcc == pytest.approx(brute_force_mcc(L, T), rel=1e-12)
        C = np.abs(
            (T / np.linalg.norm(T, axis=1)[:, None]) @ (L / np.linalg.norm(L, axis=1)[:, None]).T
        )
        np.testing.assert_allclose(res.max_cos, C.max(1))
        np.testing.assert_allclose(res.matched_cos, C[np.arange(m_true), res.matched_index])
        assert res.recovered_fraction == pytest.approx((res.matched_cos > 0.5).mean())
        assert np.all(res.max_cos >= res.matched_cos - 1e-12)


def test_recovery_with_fewer_learned_atoms_scores_unmatched_as_zero():
    rng = np.random.default_rng(2)
    T = rng.normal(size=(5, 6))
    res = recovery(T[:3], T)
    assert res.mcc == pytest.approx(3 / 5)
    assert (res.matched_index == -1).sum() == 2
    assert res.recovered_fraction == pytest.approx(3 / 5)


def test_recovery_invariant_to_permuting_sign_flipping_and_scaling_learned_rows():
    rng = np.random.default_rng(3)
    T = rng.normal(size=(20, 10))
    L = np.vstack([T + 0.2 * rng.normal(size=T.shape), rng.normal(size=(10, 10))])
    base = recovery(L, T)
    perm = rng.permutation(L.shape[0])
    flip = rng.choice([-1.0, 1.0], size=(L.shape[0], 1)) * rng.uniform(0.1, 5, size=(L.shape[0], 1))
    moved = recovery(torch.from_numpy((L * flip)[perm]), torch.from_numpy(T))
    assert moved.mcc == pytest.approx(base.mcc, rel=1e-12)
    np.testing.assert_allclose(moved.matched_cos, base.matched_cos, rtol=1e-12)
    np.testing.assert_array_equal(perm[moved.matched_index], base.matched_index)
    assert base.recovered_fraction == 1.0
    assert base.mcc > 0.95
    # a random dictionary recovers nothing at 0.9
    assert recovery(rng.normal(size=(30, 10)), T).recovered_fraction == 0.0


def test_recovery_rejects_bad_input():
    with pytest.raises(
        RepscopeValueError, match="learned and true must have the same number of columns"
    ):
        recovery(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(RepscopeValueError, match="true must have non-zero rows.*index 1"):
        recovery(np.ones((3, 2)), np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(RepscopeValueError, match="learned must be finite"):
        recovery(np.array([[np.nan, 1.0]]), np.ones((1, 2)))
    with pytest.raises(RepscopeValueError, match="'threshold' parameter of recovery"):
        recovery(np.ones((1, 2)), np.ones((1, 2)), threshold=1.5)
    with pytest.raises(RepscopeTypeError, match="got an SAEOutput"):
        recovery(
            SAEOutput(torch.ones(1, 2), None, torch.ones(1, 2), torch.ones(0)), np.ones((1, 2))
        )


# ---------------------------------------------------------------------------- precision/recall


def test_feature_precision_recall_matches_sklearn():
    from sklearn.metrics import f1_score, precision_score, recall_score

    rng = np.random.default_rng(4)
    n, m = 400, 6
    s = rng.exponential(size=(n, m)) * (rng.random((n, m)) < 0.2)
    perm = rng.permutation(m + 2)  # two extra learned latents
    codes = np.zeros((n, m + 2))
    noisy = s * (rng.random((n, m)) < 0.9) + 0.5 * (rng.random((n, m)) < 0.05)
    codes[:, perm[:m]] = noisy
    codes[:, perm[m:]] = rng.random((n, 2))
    D = rng.normal(size=(m, 12))
    W = np.zeros((m + 2, 12))
    W[perm[:m]] = D + 0.05 * rng.normal(size=D.shape)
    W[perm[m:]] = rng.normal(size=(2, 12))
    rec = recovery(W, D)
    np.testing.assert_array_equal(rec.matched_index, perm[:m])
    pr = feature_precision_recall(torch.from_numpy(codes), s, assignment=rec)
    for j in range(m):
        y, p = s[:, j] != 0, codes[:, perm[j]] > 0
        assert pr.precision[j] == pytest.approx(precision_score(y, p))
        assert pr.recall[j] == pytest.approx(recall_score(y, p))
        assert pr.f1[j] == pytest.approx(f1_score(y, p))
    same = feature_precision_recall(codes, s, assignment=(rec.rows, rec.cols))
    np.testing.assert_array_equal(same.f1, pr.f1)
    assert pr.mean_f1 == pytest.approx(pr.f1.mean())
    # an unmatched feature scores 0
    idx = perm[:m].copy()
    idx[0] = -1
    part = feature_precision_recall(codes, s, assignment=idx)
    assert part.f1[0] == 0.0
    np.testing.assert_array_equal(part.f1[1:], pr.f1[1:])


def test_feature_precision_recall_rejects_bad_assignment():
    codes, s = np.ones((4, 3)), np.ones((4, 2))
    with pytest.raises(RepscopeValueError, match=r"must match 2 true features; got 3"):
        feature_precision_recall(codes, s, assignment=np.array([0, 1, 2]))
    with pytest.raises(RepscopeValueError, match=r"must index latents in \[0, 3\)"):
        feature_precision_recall(codes, s, assignment=np.array([0, 5]))
    with pytest.raises(RepscopeTypeError, match="RecoveryResult, a \\(rows, cols\\) tuple"):
        feature_precision_recall(codes, s, assignment=np.array([0.5, 1.0]))
    with pytest.raises(RepscopeValueError, match="same number of samples"):
        feature_precision_recall(codes, np.ones((5, 2)), assignment=np.array([0, 1]))


# ---------------------------------------------------------------------------- stability


def test_seed_stability_equals_brute_force_signed_matching():
    rng = np.random.default_rng(5)
    A, B = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    An = A / np.linalg.norm(A, axis=1, keepdims=True)
    Bn = B / np.linalg.norm(B, axis=1, keepdims=True)
    C = An @ Bn.T
    best = max(sum(C[i, p[i]] for i in range(5)) for p in itertools.permutations(range(5)))
    assert seed_stability(A, B) == pytest.approx(best / 5, rel=1e-12)
    assert seed_stability(B, A) == pytest.approx(best / 5, rel=1e-12)
    assert matched_cosines(A, B).sum() == pytest.approx(best, rel=1e-12)


def test_seed_stability_is_one_for_a_permuted_copy_and_sign_sensitive():
    rng = np.random.default_rng(6)
    W = rng.normal(size=(16, 8))
    assert seed_stability(W, 3.0 * W[rng.permutation(16)]) == pytest.approx(1.0)
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert seed_stability(Q, -Q) == pytest.approx(0.0, abs=1e-12)  # a sign flip is another feature
    wide = np.vstack([W, rng.normal(size=(4, 8))])
    per = matched_cosines(wide, W)
    assert np.isnan(per).sum() == 4
    assert seed_stability(wide, W) == pytest.approx(1.0)
    with pytest.raises(
        RepscopeValueError, match="W_dec_a and W_dec_b must have the same number of columns"
    ):
        seed_stability(W, W[:, :3])
