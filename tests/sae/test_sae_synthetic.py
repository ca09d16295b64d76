"""Synthetic ground-truth generators: shapes, seeding, and the structure each one promises."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.synthetic import (
    bows,
    circle_manifold,
    compound_pairs,
    hierarchy,
    paired_modalities,
    sparse_features,
)

GENERATORS = {
    "sparse_features": lambda seed: sparse_features(500, 16, 40, k=3, noise=0.01, seed=seed),
    "hierarchy": lambda seed: hierarchy(500, 16, 4, 3, seed=seed),
    "circle_manifold": lambda seed: circle_manifold(500, 16, 30, seed=seed),
    "compound_pairs": lambda seed: compound_pairs(500, 16, 40, n_pairs=5, seed=seed),
    "paired_modalities": lambda seed: paired_modalities(500, 16, 40, 3, noise=0.01, seed=seed),
    "bows": lambda seed: bows(500, "circular", seed=seed),
}


def _unit(a: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(a, axis=-1), 1.0, atol=1e-5))


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generators_are_deterministic_by_seed(name):
    make = GENERATORS[name]
    a, b, c = make(3), make(3), make(4)
    assert a.X.dtype == np.float32
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)
    gen = make(np.random.default_rng(3))
    assert gen.X.shape == a.X.shape


@pytest.mark.parametrize("name", sorted(set(GENERATORS) - {"bows"}))
def test_ground_truth_dictionaries_are_unit_norm_and_codes_sparse_float32(name):
    data = GENERATORS[name](0)
    assert data.dictionary.dtype == np.float32
    assert _unit(data.dictionary)
    assert sp.issparse(data.codes) and data.codes.format == "csr"
    assert data.codes.dtype == np.float32
    assert data.codes.shape == (data.X.shape[0], data.dictionary.shape[0])


def test_sparse_features_reconstructs_from_codes_and_has_exactly_k_active():
    data = sparse_features(300, 8, 20, k=4, magnitude=(0.5, 1.5), seed=1)
    assert data.X.shape == (300, 8)
    assert (data.codes.count_nonzero(axis=1) == 4).all()
    vals = data.codes.data
    assert vals.min() >= 0.5 and vals.max() <= 1.5
    np.testing.assert_allclose(data.X, data.codes.toarray() @ data.dictionary, atol=1e-5)
    assert data.firing_prob.sum() == pytest.approx(4.0)


def test_sparse_features_zipf_firing_follows_the_exponent():
    data = sparse_features(60_000, 8, 64, p_fire=0.02, zipf_exponent=1.3, seed=0)
    freq = (data.codes.toarray() > 0).mean(0)
    np.testing.assert_allclose(freq, data.firing_prob, rtol=0.1, atol=2e-3)
    ranks = np.arange(1, 65)
    slope = np.polyfit(np.log(ranks[:20]), np.log(freq[:20]), 1)[0]
    assert slope == pytest.approx(-1.3, abs=0.1)
    # with exactly k per sample the frequencies still decrease like a power law
    topk = sparse_features(20_000, 8, 64, k=2, zipf_exponent=1.0, seed=0)
    f2 = (topk.codes.toarray() > 0).mean(0)
    assert np.polyfit(np.log(ranks[:20]), np.log(f2[:20]), 1)[0] == pytest.approx(-1.0, abs=0.2)
    uniform = sparse_features(20_000, 8, 16, p_fire=0.1, firing="uniform", seed=0)
    np.testing.assert_allclose((uniform.codes.toarray() > 0).mean(0), 0.1, atol=0.01)


def test_sparse_features_rejects_bad_sparsity_arguments():
    with pytest.raises(RepscopeValueError, match="either 'k' or 'p_fire'"):
        sparse_features(10, 4, 8, k=2, p_fire=0.1)
    with pytest.raises(RepscopeValueError, match="p_fire.*firing probability"):
        sparse_features(10, 4, 8, p_fire=0.9, zipf_exponent=2.0)
    with pytest.raises(RepscopeValueError, match="'k' parameter of sparse_features"):
        sparse_features(10, 4, 8, k=9)
    with pytest.raises(RepscopeValueError, match="'firing' parameter"):
        sparse_features(10, 4, 8, firing="zipfian")
    with pytest.raises(RepscopeTypeError, match="'seed' parameter"):
        sparse_features(10, 4, 8, seed=1.5)
    with pytest.raises(RepscopeValueError, match="'magnitude' parameter"):
        sparse_features(10, 4, 8, magnitude=(2.0, 1.0))


def test_hierarchy_children_are_orthogonal_to_their_parent_and_x_is_parent_plus_child():
    data = hierarchy(400, 12, 5, 3, alpha=(1.0, 2.0), beta=0.5, noise=0.0, seed=2)
    assert data.parents.shape == (5, 12) and data.children.shape == (5, 3, 12)
    assert _unit(data.parents) and _unit(data.children)
    dots = np.einsum("abd,ad->ab", data.children, data.parents)
    np.testing.assert_allclose(dots, 0.0, atol=1e-6)
    # but not orthogonal to the other parents
    other = np.einsum("abd,cd->abc", data.children, data.parents)
    assert np.abs(other).max() > 0.1
    a, c = data.parent_labels, data.child_labels
    assert ((c // 3) == a).all()
    codes = data.codes.toarray()
    alpha = codes[np.arange(400), a]
    beta = codes[np.arange(400), 5 + c]
    assert alpha.min() >= 1.0 and alpha.max() <= 2.0
    np.testing.assert_allclose(beta, 0.5)
    expected = alpha[:, None] * data.parents[a] + beta[:, None] * data.children.reshape(15, 12)[c]
    np.testing.assert_allclose(data.X, expected, atol=1e-5)
    np.testing.assert_allclose(data.X, codes @ data.dictionary, atol=1e-5)


def test_circle_manifold_circle_lies_in_its_plane():
    data = circle_manifold(300, 10, 25, k_discrete=2, radius=1.5, noise=0.0, seed=1)
    plane = data.plane.astype(np.float64)
    np.testing.assert_allclose(plane @ plane.T, np.eye(2), atol=1e-6)
    circle = data.X - data.codes.toarray() @ data.dictionary
    coords = circle @ plane.T
    np.testing.assert_allclose(circle, coords @ plane, atol=1e-5)  # nothing outside the plane
    np.testing.assert_allclose(np.linalg.norm(coords, axis=1), 1.5, atol=1e-5)
    np.testing.assert_allclose(
        np.arctan2(coords[:, 1], coords[:, 0]) % (2 * np.pi), data.theta, atol=1e-4
    )
    np.testing.assert_allclose(data.circle, circle, atol=1e-5)
    assert (data.codes.count_nonzero(axis=1) == 2).all()


def test_compound_pairs_interaction_terms_are_products_of_pair_codes():
    data = compound_pairs(800, 12, 30, n_pairs=4, k=3, pair_prob=1.0, compound_scale=0.7, seed=3)
    pairs = data.pairs
    assert len(np.unique(pairs)) == 8  # disjoint pairs
    codes = data.codes.toarray()
    both = (codes[:, pairs[:, 0]] > 0) & (codes[:, pairs[:, 1]] > 0)
    assert both.any(1).all()  # pair_prob=1: every sample holds a pair
    expected = 0.7 * codes[:, pairs[:, 0]] * codes[:, pairs[:, 1]]
    np.testing.assert_allclose(data.compound_codes.toarray(), expected, rtol=1e-6)
    recon = codes @ data.dictionary + data.compound_codes.toarray() @ data.compound_directions
    np.testing.assert_allclose(data.X, recon, atol=1e-5)
    assert _unit(data.compound_directions)
    none = compound_pairs(500, 12, 30, n_pairs=4, k=1, pair_prob=0.0, seed=3)
    assert none.compound_codes.nnz == 0
    with pytest.raises(RepscopeValueError, match="n_pairs"):
        compound_pairs(10, 4, 6, n_pairs=4)


def test_paired_modalities_share_codes_across_a_constant_gap():
    data = paired_modalities(200, 10, 20, 3, gap=3.0, noise=0.0, seed=0)
    assert data.X.shape == (200, 2, 10)
    diff = data.X[:, 0] - data.X[:, 1]
    np.testing.assert_allclose(
        diff, np.broadcast_to(3.0 * data.gap_direction, diff.shape), atol=1e-5
    )
    np.testing.assert_allclose(
        data.offsets[0] - data.offsets[1], 3.0 * data.gap_direction, atol=1e-6
    )
    shared = data.codes.toarray() @ data.dictionary
    np.testing.assert_allclose(data.X[:, 0], shared + data.offsets[0], atol=1e-5)


def test_bows_marginals_match_between_circular_and_iid_but_correlations_do_not():
    circ = bows(20_000, "circular", sharpness=6.0, base=-1.0, seed=0)
    iid = bows(20_000, "iid", sharpness=6.0, base=-1.0, seed=1)
    assert set(np.unique(circ.X)) == {0.0, 1.0}
    np.testing.assert_allclose(circ.marginals, iid.marginals)
    np.testing.assert_allclose(circ.X.mean(0), iid.X.mean(0), atol=0.02)
    np.testing.assert_allclose(circ.X.mean(0), circ.marginals, atol=0.02)
    cc = np.corrcoef(circ.X.T)
    ci = np.corrcoef(iid.X.T)
    assert cc[0, 1] > 0.3 and cc[0, 6] < -0.3  # neighbours co-occur, opposites exclude
    assert np.abs(ci[np.triu_indices(12, 1)]).max() < 0.05
    assert circ.theta.shape == (20_000,) and circ.latent.shape == (20_000, 2)
    assert iid.theta is None and iid.latent is None
    np.testing.assert_allclose(circ.feature_positions[3], [0.0, 1.0], atol=1e-12)


def test_bows_figure8_and_sphere_latents():
    f8 = bows(2000, "figure8", seed=0)
    np.testing.assert_allclose(f8.latent, np.stack([np.sin(f8.theta), np.sin(2 * f8.theta)], 1))
    sph = bows(2000, "sphere", n_features=20, seed=0)
    assert sph.theta.shape == (2000, 2)
    assert _unit(sph.latent) and _unit(sph.feature_positions)
    iid = bows(5000, "iid", n_features=20, matched_to="sphere", seed=0)
    np.testing.assert_allclose(iid.marginals, sph.marginals)
    with pytest.raises(RepscopeValueError, match="'structure' parameter of bows"):
        bows(10, "torus")
