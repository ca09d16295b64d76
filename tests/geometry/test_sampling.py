"""Projection DPP, volume sampling, leverage scores and weighted least squares."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from repscope._kernels.dpp import (
    leverage_scores,
    orthonormal_basis,
    projection_dpp,
    volume_sampling,
    weighted_lstsq,
)
from repscope.exceptions import RepscopeValueError
from repscope.geometry._sampling import dpp_subset, leverage_weighted_lstsq


def test_projection_dpp_beats_iid_uniform_on_the_runge_case():
    """The recipe's check: Runge function on a 4000-point grid, 12 orthonormal Legendre
    features, n = m = 12 points, 200 draws: median error ratio about 2 (DPP, weighted) vs
    about 550 (i.i.d. uniform, unweighted)."""
    from numpy.polynomial import legendre

    N, m = 4000, 12
    x = np.linspace(-1, 1, N)
    f = 1.0 / (1.0 + 25.0 * x**2)
    Q = orthonormal_basis(legendre.legvander(x, m - 1))
    lev = leverage_scores(Q)
    best = np.linalg.norm(f - Q @ (Q.T @ f))
    rng = np.random.default_rng(0)
    dpp, iid = [], []
    for _ in range(200):
        S = projection_dpp(Q, rng)
        dpp.append(np.linalg.norm(f - Q @ weighted_lstsq(Q[S], f[S], m / (N * lev[S]))) / best)
        S = rng.choice(N, m)
        iid.append(np.linalg.norm(f - Q @ weighted_lstsq(Q[S], f[S])) / best)
    assert 1.0 <= np.median(dpp) < 3.0
    assert np.median(iid) > 100.0
    assert np.max(dpp) < 50.0 < np.percentile(iid, 90)


def test_projection_dpp_marginals_are_the_leverage_scores(rng):
    Q = orthonormal_basis(rng.standard_normal((8, 3)))
    counts = np.zeros(8)
    draws = 6000
    for _ in range(draws):
        S = projection_dpp(Q, rng)
        assert len(set(S.tolist())) == 3
        counts[S] += 1
    assert np.allclose(counts / draws, leverage_scores(Q), atol=0.025)


def test_volume_sampling_set_probabilities_are_proportional_to_det(rng):
    Q = orthonormal_basis(rng.standard_normal((5, 2)))
    sets = list(itertools.combinations(range(5), 3))
    vol = np.array([np.linalg.det(Q[list(s)].T @ Q[list(s)]) for s in sets])
    freq = dict.fromkeys(sets, 0)
    draws = 8000
    for _ in range(draws):
        freq[tuple(sorted(volume_sampling(Q, 3, rng).tolist()))] += 1
    got = np.array([freq[s] for s in sets]) / draws
    assert np.allclose(got, vol / vol.sum(), atol=0.02)


def test_dpp_subset_is_more_diverse_than_uniform(rng):
    # three tight clusters of very unequal size: a uniform draw of 3 mostly misses the small ones
    X = np.vstack([rng.normal(0, 0.05, (300, 2)), rng.normal((5, 0), 0.05, (10, 2)),
                   rng.normal((0, 5), 0.05, (10, 2))])
    cluster = np.repeat([0, 1, 2], [300, 10, 10])
    hits_dpp = hits_uni = 0
    for seed in range(30):
        d = dpp_subset(X, 3, method="volume", seed=seed)
        u = dpp_subset(X, 3, method="uniform", seed=seed)
        hits_dpp += len(set(cluster[d.indices]))
        hits_uni += len(set(cluster[u.indices]))
    assert hits_dpp / 30 > 2.5 > 1.5 > hits_uni / 30


def test_dpp_subset_result_and_records(rng):
    X = rng.standard_normal((60, 5))
    ids = [f"s{i}" for i in range(60)]
    res = dpp_subset(X, 4, ids=ids, seed=3)
    assert res.indices.size == 4 == len(set(res.indices.tolist()))
    assert res.ids == tuple(ids[i] for i in res.indices)
    assert res.rank == 4 and np.isfinite(res.log_volume)
    again = dpp_subset(X, 4, ids=ids, seed=3)
    assert np.array_equal(res.indices, again.indices)
    big = dpp_subset(X, 20, seed=0)                       # above the rank: volume sampling
    assert big.indices.size == 20 and big.rank == 5
    (rec,) = res.to_records(model="m", dataset="d", layer="L")
    assert rec.analysis == "geometry_subset" and rec.values["ids"] == list(res.ids)
    assert rec.values["k"] == 4


def test_leverage_weighted_lstsq_recovers_a_linear_target(rng):
    X = rng.standard_normal((500, 6))
    w = rng.standard_normal(6)
    sub = dpp_subset(X, 30, method="volume", center=False, seed=1)
    assert np.allclose(leverage_weighted_lstsq(X, X @ w, sub), w)
    assert np.allclose(leverage_weighted_lstsq(X, X @ w, sub.indices), w)


def test_dpp_subset_bad_input(rng):
    X = rng.standard_normal((10, 3))
    with pytest.raises(RepscopeValueError, match="cannot choose k=11"):
        dpp_subset(X, 11)
    with pytest.raises(RepscopeValueError, match="'method' parameter"):
        dpp_subset(X, 2, method="kmeans")
    with pytest.raises(RepscopeValueError, match="at least the rank"):
        dpp_subset(X, 2, method="volume")
    with pytest.raises(RepscopeValueError, match="max_samples=5"):
        dpp_subset(X, 2, max_samples=5)
    with pytest.raises(RepscopeValueError, match="one entry per sample"):
        dpp_subset(X, 2, ids=["a"])
    # duplicate rows are never both drawn by the DPP (their joint volume is 0)
    D = np.vstack([X[:3], X[:3]])
    for seed in range(10):
        got = dpp_subset(D, 3, center=False, seed=seed).indices % 3
        assert sorted(got.tolist()) == [0, 1, 2]


def test_subset_cli_writes_the_chosen_ids(rng, tmp_path):
    from click.testing import CliRunner

    from repscope.cli._common import Settings
    from repscope.cli.subset import subset
    from repscope.store import FeatureStore

    X = rng.standard_normal((40, 6)).astype(np.float32)
    store = FeatureStore.create(tmp_path / "s", model_id="toy")
    store.append({"layer": X}, {"id": [f"doc{i}" for i in range(40)]})
    out = tmp_path / "ids.txt"
    res = CliRunner().invoke(subset, [str(tmp_path / "s"), "--layer", "layer", "-k", "5",
                                      "--out", str(out)],
                             obj=Settings(db_path=str(tmp_path / "r.db")))
    assert res.exit_code == 0, res.output
    ids = out.read_text().split()
    assert len(ids) == 5 == len(set(ids)) and all(i.startswith("doc") for i in ids)
    expected = dpp_subset(X, 5, ids=[f"doc{i}" for i in range(40)], seed=0)
    assert ids == list(expected.ids)
