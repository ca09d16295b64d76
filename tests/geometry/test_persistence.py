"""MST kernel and H0 persistence: brute-force agreement, the recipe's class-shift claim,
tracking, bad input, the O(n) memory path and the refusal above max n."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from repscope._kernels.mst import euclidean_mst
from repscope.exceptions import RepscopeValueError
from repscope.geometry import (
    geometry_info,
    h0_persistence,
    persistence_entropy,
    persistence_max_ratio,
    persistence_top_ratio,
    plateau_index,
    track,
)


def _union_find_deaths(X: np.ndarray) -> np.ndarray:
    """Kruskal on the full distance matrix with a plain union-find (the reference)."""
    n = X.shape[0]
    D = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    iu, ju = np.triu_indices(n, 1)
    order = np.argsort(D[iu, ju], kind="stable")
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    deaths = []
    for e in order:
        a, b = find(int(iu[e])), find(int(ju[e]))
        if a != b:
            parent[a] = b
            deaths.append(D[iu[e], ju[e]])
    return np.sort(np.asarray(deaths))


@pytest.mark.parametrize(("n", "d", "k", "block"), [(60, 3, 2, 500), (300, 10, 4, 3000),
                                                    (400, 2, 16, 1 << 22)])
def test_mst_equals_brute_force_union_find(n, d, k, block):
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, d))
    X[:20] += 6.0  # a separate cluster: long bar + many rescans
    tree = euclidean_mst(X, k=k, block_elements=block)
    assert tree.length.shape == (n - 1,)
    np.testing.assert_allclose(tree.length, _union_find_deaths(X), rtol=0, atol=1e-10)
    # the edges form a spanning tree
    parent = list(range(n))
    for a, b in zip(tree.u, tree.v):
        while parent[a] != a:
            a = parent[a]
        while parent[b] != b:
            b = parent[b]
        assert a != b
        parent[a] = b


def test_mst_duplicates_give_zero_length_bars():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 4))
    X[10] = X[20]
    X[30] = X[20]
    tree = euclidean_mst(X, k=3)
    assert int((tree.length == 0).sum()) == 2
    np.testing.assert_allclose(tree.length, _union_find_deaths(X), atol=1e-10)
    # all points identical: every bar has length 0; the ratio is then undefined (NaN)
    r = h0_persistence(np.ones((8, 3)), normalize=False)
    assert r.deaths == (0.0,) * 7 and r.entropy == 0.0 and np.isnan(r.max_ratio)
    # more than half duplicated: median bar 0, ratio infinite
    Y = np.vstack([np.zeros((10, 2)), [[1.0, 0.0]]])
    assert h0_persistence(Y, normalize=False).max_ratio == np.inf


def test_mst_memory_is_linear_and_large_n_is_refused():
    rng = np.random.default_rng(0)
    n = 3000
    X = rng.standard_normal((n, 8))
    tracemalloc.start()
    euclidean_mst(X, block_elements=n * 16)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < n * n * 8 / 8  # an n x n float64 matrix would be 72 MB; we stay far below
    with pytest.raises(RepscopeValueError, match="limited to 100 samples; got 101.*subsample"):
        euclidean_mst(X[:101], max_samples=100)
    with pytest.raises(RepscopeValueError, match="subsample"):
        h0_persistence(X[:101], max_samples=100)


def test_persistence_tracks_class_shift():
    """Recipe (§3): two Gaussians, d=10, 200 per class, unit-normalised, shift 0..8 -- the
    max/median bar ratio rises and the entropy falls (flat at small shifts)."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((400, 10))
    y = np.repeat([0, 1], 200)
    direction = np.zeros(10)
    direction[0] = 1.0
    ratios, entropies, tops = [], [], []
    for delta in range(9):
        X = base + np.outer(y * delta, direction)
        r = h0_persistence(X, n_classes=2)
        ratios.append(r.max_ratio)
        entropies.append(r.entropy)
        tops.append(r.top_ratio)
    assert ratios[-1] > 1.5 * ratios[0]
    assert entropies[-1] < entropies[0] - 0.05
    # monotone once the classes separate (the recipe: flat up to Fisher ratio ~ 0.5)
    assert all(np.diff(ratios[2:]) > -0.05)
    assert all(np.diff(entropies[2:]) < 0.01)
    assert tops == ratios  # K - 1 = 1: the top bar is the max bar


def test_registered_persistence_measures_share_one_definition():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 5))
    y = np.repeat([0, 1, 2], 40)
    r = h0_persistence(X, n_classes=3)
    assert persistence_entropy(X) == r.entropy
    assert persistence_max_ratio(X) == r.max_ratio
    assert persistence_top_ratio(X, y) == r.top_ratio
    assert geometry_info("persistence_entropy")["labels"] == "none"
    assert geometry_info("persistence_top_ratio")["labels"] == "required"
    with pytest.raises(RepscopeValueError, match="NaN"):
        h0_persistence(np.full((5, 2), np.nan))
    with pytest.raises(RepscopeValueError, match="n_classes"):
        h0_persistence(X, n_classes=500)
    recs = r.to_records(model="m", layer="l")
    assert recs[0].analysis == "geometry_persistence"
    assert len(recs[0].values["bars"]) == min(200, 119) and recs[0].values["bars"][0] == r.deaths[0]


def test_plateau_rule_and_track():
    assert plateau_index([1.0, 2.0, 2.5, 2.51, 2.512], tol=0.01) == 3
    assert plateau_index([1.0, 2.0, 3.0], tol=0.01) is None
    assert plateau_index([1.0, 1.001, 1.5, 1.501, 1.5015], tol=0.01, patience=2) == 4
    rng = np.random.default_rng(0)
    base = rng.standard_normal((160, 6))
    y = np.repeat([0, 1], 80)
    shift = np.zeros(6)
    shift[0] = 1.0
    ckpts = {f"step{i}": base + np.outer(y * s, shift) for i, s in enumerate((0, 2, 4, 8, 8))}
    res = track(ckpts, tol=1e-3)
    assert res.checkpoints == tuple(ckpts)
    assert res.plateau == 4  # the last two checkpoints are the same embedding
    assert res.values[3] > res.values[0]
    assert [r.values["plateau"] for r in res.to_records()] == [False] * 4 + [True]
    with pytest.raises(RepscopeValueError, match="at least 2 checkpoints"):
        track({"a": base})
