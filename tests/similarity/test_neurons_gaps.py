"""Unit co-clustering on the joint (within + between) matrix, and the mutual-information option
(Li et al. 2016, Convergent Learning: many-to-many)."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.exceptions import RepscopeValueError
from repscope.similarity import unit_coclusters, unit_correlation, unit_mutual_information
from repscope.stats import Moments


def _groups(fa, fb, n_per=5, n=600, seed=0, link=lambda f: f, noise=0.3):
    """A's units: noisy mixes of factors ``fa``; B's: of ``link(factor)`` for ``fb``."""
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((n, max(fa + fb) + 1))
    def block(f, g):
        return np.stack([g(F[:, f]) * rng.uniform(0.7, 1.3) + noise * rng.standard_normal(n)
                         for _ in range(n_per)], 1)
    A = np.concatenate([block(f, lambda x: x) for f in fa], 1)
    B = np.concatenate([block(f, link) for f in fb], 1)
    return A, B, np.repeat(fa, n_per), np.repeat(fb, n_per)


def _same_partition(labels, truth):
    from sklearn.metrics import adjusted_rand_score

    return adjusted_rand_score(truth, labels) == pytest.approx(1.0)


def test_mutual_information_equals_scikit_learn_on_the_same_bins():
    from sklearn.metrics import mutual_info_score

    rng = np.random.default_rng(1)
    A = rng.standard_normal((400, 3))
    B = np.column_stack([A[:, 0] ** 2, np.maximum(A[:, 1], 0.0), rng.standard_normal(400),
                         np.zeros(400)])
    I12, I11, I22 = unit_mutual_information(A, B, n_bins=6, within=True)
    q = np.linspace(0, 1, 7)[1:-1]
    def bins(x):
        return np.searchsorted(np.unique(np.quantile(x, q)), x, side="right")
    for i in range(3):
        for j in range(4):
            assert I12[i, j] == pytest.approx(mutual_info_score(bins(A[:, i]), bins(B[:, j])), abs=1e-12)
    assert I11[0, 0] == pytest.approx(mutual_info_score(bins(A[:, 0]), bins(A[:, 0])))
    assert I22[3].max() == 0.0  # a constant unit shares nothing
    # the ReLU unit keeps a single bin for its zeros (half the samples)
    assert I12[1, 1] > I12[0, 1] and I12[0, 0] > 0.3 > I12[0, 2]


def test_joint_matrix_gives_a_net_specific_group_its_own_cluster():
    # factors 0, 1, 2 are in both networks; factor 3 only in A
    A, B, ta, tb = _groups([0, 1, 2, 3], [0, 1, 2])
    res = unit_coclusters(A, B, n_clusters=4, matrix="joint")
    assert res.matrix == "joint" and res.stat == "corr"
    assert _same_partition(np.concatenate([res.labels_a, res.labels_b]), np.concatenate([ta, tb]))
    assert sorted(map(tuple, res.sizes.tolist())) == [(5, 0), (5, 5), (5, 5), (5, 5)]
    assert res.n_shared == 3
    own = res.labels_a[ta == 3][0]
    assert np.isnan(res.mean_abs_corr[own])
    shared = res.mean_abs_corr[~np.isnan(res.mean_abs_corr)]
    c12 = np.abs(unit_correlation(A, B))
    assert shared.min() > 3 * c12[np.not_equal.outer(ta, tb)].mean()


def test_joint_mutual_information_links_units_related_non_linearly():
    # B's units are squares of A's factors: Pearson correlation with A is ~0, MI is not
    A, B, ta, tb = _groups([0, 1, 2], [0, 1, 2], link=lambda f: f**2, noise=0.2, n=800)
    mi = unit_coclusters(A, B, n_clusters=3, matrix="joint", stat="mi", n_bins=8)
    assert _same_partition(np.concatenate([mi.labels_a, mi.labels_b]), np.concatenate([ta, tb]))
    assert mi.n_shared == 3
    corr = unit_coclusters(A, B, n_clusters=3, matrix="joint")
    # correlation sees no A-B link at all: its clusters pair A- and B-groups blindly
    assert np.nanmax(corr.mean_abs_corr) < 0.1
    assert np.nanmin(mi.mean_abs_corr) > 0.2


def test_bipartite_default_is_unchanged_and_takes_mutual_information():
    A, B, ta, tb = _groups([0, 1, 2], [0, 1, 2], seed=2)
    default = unit_coclusters(A, B, n_clusters=3)
    assert default.matrix == "bipartite"
    assert _same_partition(np.concatenate([default.labels_a, default.labels_b]), np.concatenate([ta, tb]))
    mi = unit_coclusters(A, B, n_clusters=3, stat="mi")
    assert _same_partition(np.concatenate([mi.labels_a, mi.labels_b]), np.concatenate([ta, tb]))
    m = Moments().update(A, B)
    joint_m = unit_coclusters(m, n_clusters=3, matrix="joint")
    joint = unit_coclusters(A, B, n_clusters=3, matrix="joint")
    np.testing.assert_array_equal(joint_m.labels_a, joint.labels_a)


def test_bad_options_are_named():
    A, B, _, _ = _groups([0, 1], [0, 1], n=100)
    with pytest.raises(RepscopeValueError, match="'matrix' parameter of unit_coclusters"):
        unit_coclusters(A, B, n_clusters=2, matrix="full")
    with pytest.raises(RepscopeValueError, match="'stat' parameter of unit_coclusters"):
        unit_coclusters(A, B, n_clusters=2, stat="spearman")
    with pytest.raises(RepscopeValueError, match=r"'n_clusters' parameter of unit_coclusters must be in \[2, 20\]"):
        unit_coclusters(A, B, n_clusters=21, matrix="joint")
    with pytest.raises(RepscopeValueError, match="'n_bins' parameter of unit_mutual_information must be >= 2"):
        unit_coclusters(A, B, n_clusters=2, stat="mi", n_bins=1)
    with pytest.raises(RepscopeValueError, match="not a Moments"):
        unit_coclusters(Moments().update(A, B), n_clusters=2, stat="mi")
