"""Interpretability and control metrics: attribute F1, mean dictionary and edits, manifold
capture, atom groups, modality split, Gram vs co-occurrence."""

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
    atom_groups,
    attribute_f1,
    edit_success,
    gram_vs_cooccurrence,
    manifold_capture,
    modality_split,
    sae_edit,
    supervised_mean_dictionary,
)


class DenseReLU(SparseAutoencoder):
    """z = ReLU((xn - b_dec) W_enc + b_enc), x_hat = z W_dec + b_dec (dense codes)."""

    config_class = SAEConfig

    def encode_normalized(self, xn: Tensor) -> SAEOutput:
        pre = (xn - self.b_dec) @ self.W_enc + self.b_enc
        return SAEOutput(pre.relu(), None, pre, xn.new_empty(0))

    def decode_normalized(self, values: Tensor, indices: Tensor | None) -> Tensor:
        if indices is not None:
            dense = values.new_zeros((*values.shape[:-1], self.d_sae))
            values = dense.scatter_add(-1, indices, values)
        return values @ self.W_dec + self.b_dec


def set_weights(sae, W_enc, b_enc, W_dec):
    with torch.no_grad():
        sae.W_enc.copy_(torch.as_tensor(W_enc))
        sae.b_enc.copy_(torch.as_tensor(b_enc))
        sae.W_dec.copy_(torch.as_tensor(W_dec))
        sae.b_dec.zero_()
    return sae


class NearestMean:
    """Nearest-class-mean classifier (the probe of the edit tests)."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.means_ = np.stack([X[y == c].mean(0) for c in self.classes_])
        return self

    def predict(self, X):
        X = np.asarray(X)
        d = ((X[:, None, :] - self.means_[None]) ** 2).sum(-1)
        return self.classes_[d.argmin(1)]


# ---------------------------------------------------------------------------- attribute F1


def test_attribute_f1_matches_sklearn_and_brute_force_best_latent():
    from sklearn.metrics import f1_score, precision_score, recall_score

    rng = np.random.default_rng(0)
    n, m = 300, 10
    attrs = {"color": rng.integers(0, 3, n), "shape": np.array(["ab", "cd"])[rng.integers(0, 2, n)]}
    codes = rng.exponential(size=(n, m)) * (rng.random((n, m)) < 0.3)
    codes[:, 4] = (attrs["color"] == 1) * 2.0 * (rng.random(n) < 0.8)  # a good detector
    codes[:, 7] = -1.0  # negative codes never "fire"
    res = attribute_f1(torch.from_numpy(codes), attrs)
    for name, labels in attrs.items():
        s = res[name]
        np.testing.assert_array_equal(s.values, np.unique(labels))
        for i, v in enumerate(s.values):
            y = labels == v
            f1s = [f1_score(y, codes[:, j] > 0, zero_division=0) for j in range(m)]
            assert s.f1[i] == pytest.approx(max(f1s))
            assert s.latent[i] == int(np.argmax(f1s))
            p = codes[:, s.latent[i]] > 0
            assert s.precision[i] == pytest.approx(precision_score(y, p, zero_division=0))
            assert s.recall[i] == pytest.approx(recall_score(y, p, zero_division=0))
            assert s.support[i] == y.sum()
    assert res["color"].latent[1] == 4
    assert res.mean_f1 == pytest.approx(np.concatenate([res["color"].f1, res["shape"].f1]).mean())
    assert json.loads(json.dumps(res.to_dict()))["attributes"]["shape"]["values"] == ["ab", "cd"]


def test_attribute_f1_accepts_sparse_sae_output():
    rng = np.random.default_rng(1)
    n, m, k = 120, 12, 3
    idx = torch.from_numpy(np.stack([rng.choice(m, k, replace=False) for _ in range(n)]))
    vals = torch.from_numpy(rng.random((n, k))).float()
    out = SAEOutput(vals, idx, torch.zeros(n, m), torch.zeros(0))
    labels = {"a": rng.integers(0, 4, n)}
    a = attribute_f1(out, labels)
    b = attribute_f1(out.dense().numpy(), labels)
    np.testing.assert_array_equal(a["a"].latent, b["a"].latent)
    np.testing.assert_allclose(a["a"].f1, b["a"].f1)


def test_attribute_f1_rejects_bad_labels():
    with pytest.raises(
        RepscopeValueError, match=r"attributes\['a'\] must have one entry per sample \(4\); got 3"
    ):
        attribute_f1(np.ones((4, 2)), {"a": [0, 1, 0]})
    with pytest.raises(
        RepscopeTypeError,
        match="'attributes' parameter of attribute_f1 must be a non-empty mapping",
    ):
        attribute_f1(np.ones((4, 2)), [0, 1, 0, 1])  # type: ignore[arg-type]
    with pytest.raises(RepscopeValueError, match="codes must be finite"):
        attribute_f1(np.full((2, 2), np.nan), {"a": [0, 1]})


# ---------------------------------------------------------------------------- mean dictionary


def factorial_data(rng, reps=20, d=12, noise=0.0):
    """a = m + u1[v1] + u2[v2] over a balanced 4 x 3 design (each cell ``reps`` times)."""
    m = rng.normal(size=d)
    u1, u2 = rng.normal(size=(4, d)) * 2, rng.normal(size=(3, d)) * 2
    v1, v2 = (np.array(c).repeat(reps) for c in zip(*itertools.product(range(4), range(3))))
    a = m + u1[v1] + u2[v2] + noise * rng.normal(size=(v1.size, d))
    return a, {"io": v1, "pos": v2}


def test_mean_dictionary_is_exact_on_additive_balanced_data():
    rng = np.random.default_rng(2)
    a, attrs = factorial_data(rng)
    md = supervised_mean_dictionary(a, attrs)
    np.testing.assert_allclose(md.reconstruct(attrs), a, atol=1e-10)
    assert md.r2(a, attrs) == pytest.approx(1.0, abs=1e-12)
    # u_{i,v} is the conditional mean minus the grand mean (the recipe, computed naively)
    for v in range(4):
        np.testing.assert_allclose(md.direction("io", v), a[attrs["io"] == v].mean(0) - a.mean(0))
    noisy, _ = factorial_data(np.random.default_rng(2), noise=1.0)
    md_noisy = supervised_mean_dictionary(noisy, attrs)
    r2 = md_noisy.r2(noisy, attrs)
    rec = md_noisy.reconstruct(attrs)
    ref = 1 - ((noisy - rec) ** 2).sum() / ((noisy - noisy.mean(0)) ** 2).sum()
    assert r2 == pytest.approx(ref)
    assert 0.5 < r2 < 0.99


def test_mean_dictionary_edit_moves_a_probe_to_the_target():
    rng = np.random.default_rng(3)
    a, attrs = factorial_data(rng, reps=30, noise=0.7)
    probe = NearestMean().fit(a, attrs["io"])
    md = supervised_mean_dictionary(a, attrs)
    src = a[attrs["io"] == 0]
    assert edit_success(src, 2, probe) < 0.05
    edited = md.edit(src, "io", 0, 2)
    shift = md.direction("io", 2) - md.direction("io", 0)
    np.testing.assert_allclose(edited - src, np.broadcast_to(shift, src.shape))
    assert edit_success(edited, 2, probe) > 0.95
    assert edit_success(edited, np.full(len(src), 2), probe) > 0.95
    # edits keep the backend
    t = md.edit(torch.from_numpy(src).float(), "io", 0, 2)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    # the other attribute is untouched
    pos_probe = NearestMean().fit(a, attrs["pos"])
    keep = attrs["pos"][attrs["io"] == 0]
    assert edit_success(edited, keep, pos_probe) > 0.95


def test_mean_dictionary_rejects_bad_input():
    a, attrs = factorial_data(np.random.default_rng(4), reps=2)
    md = supervised_mean_dictionary(a, attrs)
    with pytest.raises(RepscopeValueError, match="no direction for value 9"):
        md.edit(a, "io", 0, 9)
    with pytest.raises(RepscopeValueError, match="must be one of \\['io', 'pos'\\]. Got 'size'"):
        md.edit(a, "size", 0, 1)
    with pytest.raises(RepscopeValueError, match="exactly the attributes"):
        md.reconstruct({"io": attrs["io"]})
    with pytest.raises(RepscopeValueError, match="acts must have 12 columns"):
        md.r2(a[:, :3], attrs)
    with pytest.raises(RepscopeTypeError, match="must have a predict"):
        edit_success(a, 0, object())
    with pytest.raises(RepscopeValueError, match="acts must be finite"):
        supervised_mean_dictionary(np.full((2, 2), np.nan), {"a": [0, 1]})


# ---------------------------------------------------------------------------- SAE edit


def one_hot_attribute_data(rng, n_per=60, d=6, noise=0.15):
    labels = np.repeat(np.arange(3), n_per)
    a = 3.0 * np.eye(d)[labels] + noise * rng.normal(size=(labels.size, d))
    return a.astype(np.float32), labels


def test_sae_edit_swaps_the_attribute_latents_and_keeps_the_rest():
    rng = np.random.default_rng(5)
    a, labels = one_hot_attribute_data(rng)
    d = a.shape[1]
    sae = set_weights(
        DenseReLU(SAEConfig(d_in=d, d_sae=d, normalize_activations="none")),
        torch.eye(d),
        torch.full((d,), -0.5),
        torch.eye(d),
    )
    probe = NearestMean().fit(a, labels)
    edited = sae_edit(sae, a, {"io": labels}, "io", 0, 1, n_latents=1)
    assert isinstance(edited, np.ndarray) and edited.shape == a.shape
    src = labels == 0
    assert edit_success(edited[src], 1, probe) > 0.95
    # only latents 0 (removed) and 1 (added) changed: other coordinates keep their values
    np.testing.assert_allclose(edited[:, 2:], a[:, 2:], atol=1e-6)
    with torch.no_grad():
        z = sae.encode(torch.from_numpy(a)).values.numpy()
    np.testing.assert_allclose(edited[:, 0], a[:, 0] - z[:, 0], atol=1e-5)
    np.testing.assert_allclose(
        edited[:, 1], a[:, 1] - z[:, 1] + z[labels == 1, 1].mean(), atol=1e-5
    )
    # the supervised yardstick does as well on this data
    md = supervised_mean_dictionary(a, {"io": labels})
    assert edit_success(md.edit(a[src], "io", 0, 1), 1, probe) > 0.95
    # torch in, torch out
    t = sae_edit(sae, torch.from_numpy(a), {"io": labels}, "io", 0, 1, n_latents=1)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), edited, atol=1e-6)


def test_sae_edit_same_for_sparse_topk_codes():
    from repscope.sae.archs.topk import TopKConfig, TopKSAE

    rng = np.random.default_rng(6)
    a, labels = one_hot_attribute_data(rng)
    d = a.shape[1]
    dense = set_weights(
        DenseReLU(SAEConfig(d_in=d, d_sae=d, normalize_activations="none")),
        torch.eye(d),
        torch.full((d,), -0.5),
        torch.eye(d),
    )
    topk = set_weights(
        TopKSAE(TopKConfig(d_in=d, d_sae=d, k=d, normalize_activations="none")),
        torch.eye(d),
        torch.full((d,), -0.5),
        torch.eye(d),
    )
    e1 = sae_edit(dense, a, {"io": labels}, "io", 2, 0, n_latents=2)
    e2 = sae_edit(topk, a, {"io": labels}, "io", 2, 0, n_latents=2)
    np.testing.assert_allclose(e1, e2, atol=1e-5)


def test_sae_edit_rejects_bad_input():
    rng = np.random.default_rng(7)
    a, labels = one_hot_attribute_data(rng, n_per=4)
    sae = DenseReLU(SAEConfig(d_in=6, d_sae=6, normalize_activations="none"))
    with pytest.raises(
        RepscopeValueError, match="'to_value' parameter of sae_edit must be a value present"
    ):
        sae_edit(sae, a, {"io": labels}, "io", 0, 7)
    with pytest.raises(RepscopeValueError, match="'attribute' parameter of sae_edit must be a key"):
        sae_edit(sae, a, {"io": labels}, "pos", 0, 1)
    with pytest.raises(RepscopeValueError, match="acts must have d_in=6 columns"):
        sae_edit(sae, a[:, :4], {"io": labels}, "io", 0, 1)
    with pytest.raises(RepscopeValueError, match="'n_latents' parameter of sae_edit"):
        sae_edit(sae, a, {"io": labels}, "io", 0, 1, n_latents=0)


# ---------------------------------------------------------------------------- manifold capture


def circle(rng, n=720, d=16, noise=0.0):
    P, _ = np.linalg.qr(rng.normal(size=(d, 2)))
    p1, p2 = P.T
    theta = rng.uniform(0, 2 * np.pi, n)
    centre = rng.normal(size=d)
    X = centre + np.cos(theta)[:, None] * p1 + np.sin(theta)[:, None] * p2
    return X + noise * rng.normal(size=X.shape), theta, p1, p2, centre


def naive_span_r2(X, atoms):
    A = X - X.mean(0)
    B = np.asarray(atoms).T
    coef, *_ = np.linalg.lstsq(B, A.T, rcond=None)
    return 1 - ((A.T - B @ coef) ** 2).sum() / (A**2).sum()


def test_manifold_capture_plane_basis_spans_circle_with_two_atoms():
    rng = np.random.default_rng(8)
    X, theta, p1, p2, _ = circle(rng, noise=0.01)
    D = np.vstack([rng.normal(size=(6, 16)), p1, p2, rng.normal(size=(4, 16))])
    res = manifold_capture(X, theta, D, max_atoms=5)
    assert set(res.selected[:2].tolist()) == {6, 7}
    assert res.r2_curve[1] > 0.995
    assert res.n_atoms_to_target == 2
    # the curve is the naive least-squares span R² of each greedy prefix
    for s in range(1, 6):
        assert res.r2_curve[s - 1] == pytest.approx(naive_span_r2(X, D[res.selected[:s]]), abs=1e-9)
    # greedy: each step is the best single addition (naive search)
    for s in range(3):
        prefix = list(res.selected[:s])
        best = max(
            (naive_span_r2(X, D[[*prefix, j]]), j) for j in range(D.shape[0]) if j not in prefix
        )
        assert res.selected[s] == best[1]
    assert np.all(np.diff(res.r2_curve) >= -1e-12)
    assert res.atoms.size == 0 and math.isnan(res.dilution_index)  # no codes: span part only


def test_manifold_capture_tiling_atoms_are_selective_and_dilute():
    rng = np.random.default_rng(9)
    X, theta, p1, p2, centre = circle(rng)
    phi = 2 * np.pi * np.arange(12) / 12
    D = np.cos(phi)[:, None] * p1 + np.sin(phi)[:, None] * p2
    codes = np.maximum((X - centre) @ D.T, 0.0)  # ReLU tiling codes
    res = manifold_capture(X, theta, D, codes=codes, n_bins=36)
    assert res.atoms.tolist() == list(range(12))
    assert np.all(res.widths < 180)
    assert np.all(np.abs(res.widths - 120) <= 20)  # cos > 1/2 on a 120 degree arc
    assert res.n_selective == 12
    assert res.n_atoms_to_target == 2
    assert res.dilution_index == pytest.approx(6.0)
    assert res.dilution_index > 1
    # tuning curves are per-bin means of the codes (naive)
    b = np.minimum((theta / (2 * np.pi) * 36).astype(int), 35)
    for j in (0, 5):
        ref = np.array([codes[b == k, j].mean() for k in range(36)])
        np.testing.assert_allclose(res.tuning[j], ref)
    # global capture: two wide (always-on) atoms give no selective atoms, no dilution
    glob = manifold_capture(
        X, theta, np.vstack([p1, p2]), codes=(X - centre) @ np.vstack([p1, p2]).T + 2
    )
    assert glob.n_selective == 0
    assert np.all(glob.widths > 180)
    assert glob.dilution_index == 0.0


def test_manifold_capture_non_periodic_and_from_sae():
    rng = np.random.default_rng(10)
    t = np.sort(rng.uniform(0, 10, 400))
    bumps = np.arange(1, 10)
    codes = np.maximum(1 - np.abs(t[:, None] - bumps) / 1.0, 0)  # width 1 bumps on a range of 10
    X = codes @ rng.normal(size=(9, 8))
    res = manifold_capture(X, t, rng.normal(size=(9, 8)), codes=codes, periodic=False, n_bins=40)
    assert res.n_selective == 9
    assert np.all(res.widths < 2.0)
    # an SAE: its raw-space decoder rows and codes are used
    X32 = torch.from_numpy(X).float()
    sae = DenseReLU(SAEConfig(d_in=8, d_sae=20, normalize_activations="scale"))
    sae.fit_normalizer(X32)
    via_sae = manifold_capture(X32, t, sae, periodic=False, max_atoms=4)
    with torch.no_grad():
        z = sae.encode(X32).dense()
    manual = manifold_capture(
        X32, t, sae.folded_state_dict()["W_dec"], codes=z, periodic=False, max_atoms=4
    )
    np.testing.assert_array_equal(via_sae.selected, manual.selected)
    np.testing.assert_allclose(via_sae.r2_curve, manual.r2_curve)
    np.testing.assert_allclose(via_sae.width_fraction, manual.width_fraction)


def test_manifold_capture_rejects_bad_input():
    X = np.random.default_rng(0).normal(size=(20, 4))
    th = np.linspace(0, 6, 20)
    with pytest.raises(
        RepscopeValueError,
        match=r"theta must be a finite 1-D array with one value per row of X_c \(20\)",
    ):
        manifold_capture(X, th[:5], np.eye(4))
    with pytest.raises(
        RepscopeValueError, match="sae_or_dictionary must have atoms of dimension 4"
    ):
        manifold_capture(X, th, np.eye(3))
    with pytest.raises(RepscopeValueError, match=r"codes must have shape \(n, m\) = \(20, 4\)"):
        manifold_capture(X, th, np.eye(4), codes=np.ones((20, 3)))
    with pytest.raises(RepscopeValueError, match="'var_target' parameter of manifold_capture"):
        manifold_capture(X, th, np.eye(4), var_target=0.0)


# ---------------------------------------------------------------------------- atom groups


def test_atom_groups_recovers_coactive_blocks_and_skips_dead_latents():
    rng = np.random.default_rng(11)
    n = 200
    kind = rng.integers(0, 2, n)
    codes = np.zeros((n, 9))
    codes[:, 0:4] = (kind == 0)[:, None] * rng.random((n, 4))
    codes[:, 4:8] = (kind == 1)[:, None] * rng.random((n, 4))
    e = np.eye(6)
    W = np.vstack(
        [e[0] + 0.1 * rng.normal(size=(4, 6)), e[1] + 0.1 * rng.normal(size=(4, 6)), e[2]]
    )
    for kw in ({}, {"n_groups": 2}, {"coactivation_weight": 1.0}, {"coactivation_weight": 0.0}):
        groups = atom_groups(codes, W, **kw)
        assert sorted(g.tolist() for g in groups) == [[0, 1, 2, 3], [4, 5, 6, 7]], kw
    # permuting the latents permutes the groups
    perm = rng.permutation(9)
    moved = atom_groups(codes[:, perm], W[perm])
    assert sorted(sorted(perm[g].tolist()) for g in moved) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert atom_groups(np.zeros((5, 9)), W) == []
    with pytest.raises(RepscopeValueError, match="W_dec must have one row per latent of codes"):
        atom_groups(codes, W[:5])
    with pytest.raises(
        RepscopeValueError, match=r"'n_groups' parameter of atom_groups must be in \[2, 8\]"
    ):
        atom_groups(codes, W, n_groups=9)


# ---------------------------------------------------------------------------- modality split


def test_modality_split_separates_dedicated_and_shared_latents():
    rng = np.random.default_rng(12)
    n = 100
    a, b = np.zeros((n, 11)), np.zeros((n, 11))
    a[:, 0:3] = rng.random((n, 3))  # image-only
    b[:, 3:6] = rng.random((n, 3))  # text-only
    a[:, 6:10] = rng.random((n, 4))  # shared
    b[:, 6:10] = rng.random((n, 4))
    b[:, 9] *= 0.06  # latent 9 is mostly image
    res = modality_split(torch.from_numpy(a), b, threshold=0.1)
    assert np.flatnonzero(res.multimodal).tolist() == [6, 7, 8]
    assert res.multimodal_fraction == pytest.approx(3 / 10)
    assert res.dead_fraction == pytest.approx(1 / 11)
    assert math.isnan(res.balance[10])
    ref = np.abs(a).mean(0)[:10] / (np.abs(a).mean(0)[:10] + np.abs(b).mean(0)[:10])
    np.testing.assert_allclose(res.balance[:10], ref)
    assert res.hist_counts.sum() == res.n_alive == 10
    assert res.hist_counts[0] == 3 and res.hist_counts[-1] >= 3
    loose = modality_split(a, b, threshold=0.01)
    assert np.flatnonzero(loose.multimodal).tolist() == [6, 7, 8, 9]
    # per-sample means: duplicating one modality's samples changes nothing
    again = modality_split(np.vstack([a, a]), b)
    np.testing.assert_allclose(again.balance, res.balance)
    with pytest.raises(
        RepscopeValueError, match="codes_a and codes_b must have the same number of latents"
    ):
        modality_split(a, b[:, :5])
    with pytest.raises(RepscopeValueError, match="'threshold' parameter of modality_split"):
        modality_split(a, b, threshold=0.5)


# ---------------------------------------------------------------------------- Gram vs data


def bows_circular(rng, n=4000, n_features=12, sharpness=10.0):
    phi = 2 * np.pi * np.arange(n_features) / n_features
    theta = rng.uniform(0, 2 * np.pi, n)
    p = 1 / (1 + np.exp(-sharpness * np.cos(theta[:, None] - phi)))
    return (rng.random((n, n_features)) < p).astype(float), phi


def test_gram_vs_cooccurrence_ring_matches_circular_data_random_does_not():
    rng = np.random.default_rng(13)
    X, phi = bows_circular(rng)
    ring = np.stack([np.cos(phi), np.sin(phi)])  # (d_latent=2, n_features=12)
    r = gram_vs_cooccurrence(ring, X)
    assert r > 0.95
    assert gram_vs_cooccurrence(ring.T, X) == pytest.approx(r)  # decoder layout
    assert gram_vs_cooccurrence(
        torch.from_numpy(3 * ring), torch.from_numpy(X), normalize=True
    ) == pytest.approx(r)
    # naive reference
    G, C = ring.T @ ring, np.corrcoef(X, rowvar=False)
    iu = np.triu_indices(12, 1)
    assert r == pytest.approx(np.corrcoef(G[iu], C[iu])[0, 1], rel=1e-10)
    rs = [gram_vs_cooccurrence(rng.normal(size=(2, 12)), X) for _ in range(50)]
    assert abs(np.mean(rs)) < 0.1


def test_gram_vs_cooccurrence_skips_constant_features_and_validates():
    rng = np.random.default_rng(14)
    X, phi = bows_circular(rng, n=2000)
    ring = np.stack([np.cos(phi), np.sin(phi)])
    Xc = X.copy()
    Xc[:, 0] = 1.0  # constant: its pairs have no correlation
    keep = np.arange(1, 12)
    assert gram_vs_cooccurrence(ring, Xc) == pytest.approx(
        gram_vs_cooccurrence(ring[:, keep], X[:, keep])
    )
    with pytest.raises(
        RepscopeValueError, match=r"W must have one direction per feature of X \(12\)"
    ):
        gram_vs_cooccurrence(np.ones((2, 5)), X)
    with pytest.raises(RepscopeValueError, match="at least 3 features"):
        gram_vs_cooccurrence(np.ones((2, 2)), X[:, :2])
    with pytest.raises(RepscopeValueError, match="X must be finite"):
        gram_vs_cooccurrence(ring, np.full((5, 12), np.nan))
