"""The DPP sampler where the geometry issue says it is used: anchor pairs for `align` and
labelled shots for few-shot probing (library and CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from repscope.align import evaluate_alignment
from repscope.align._evaluate import anchor_split
from repscope.cli import cli
from repscope.geometry import dpp_subset
from repscope.probe import few_shot
from repscope.probe._kinds import make_probe


def _spread(F: np.ndarray) -> float:
    """Mean pairwise distance of a set of rows."""
    d = np.sqrt(((F[:, None, :] - F[None, :, :]) ** 2).sum(-1))
    return float(d[np.triu_indices(len(F), 1)].mean())


def test_dpp_anchors_are_the_dpp_choice_and_the_rest_is_held_out():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 6)) * np.geomspace(3, 0.3, 6)
    Y = X @ rng.standard_normal((6, 6))
    tr, te = anchor_split(X, 20, "dpp", seed=4)
    assert np.array_equal(tr, np.sort(dpp_subset(X, 20, seed=4, max_samples=None).indices))
    assert np.intersect1d(tr, te).size == 0 and tr.size + te.size == 120
    ev = evaluate_alignment(X, Y, map="linear", n_train=20, anchors="dpp", seed=4,
                            retrieval_ks=(1,))
    assert ev.params["anchors"] == "dpp" and ev.n_train == 20 and ev.n_test == 100
    assert ev.r2 > 0.99
    with pytest.raises(Exception, match="anchors"):
        evaluate_alignment(X, Y, anchors="kmeans")


def test_dpp_anchors_spread_more_than_random_ones():
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.standard_normal((300, 5)), 6 + rng.standard_normal((20, 5))])
    dpp = [_spread(X[anchor_split(X, 10, "dpp", s)[0]]) for s in range(10)]
    rnd = [_spread(X[anchor_split(X, 10, "random", s)[0]]) for s in range(10)]
    assert np.median(dpp) > 1.2 * np.median(rnd)


def test_few_shot_dpp_shots_are_distinct_in_class_and_diverse():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), 80)
    X = rng.standard_normal((240, 8)) * np.geomspace(4, 0.2, 8) + 3.0 * y[:, None]
    seen: list[np.ndarray] = []
    from repscope.probe import _protocols

    real = _protocols.make_estimator

    class Recorder:
        def __init__(self, est):
            self.est = est

        def fit(self, Xs, ys):
            seen.append(np.asarray(Xs))
            self.est.fit(Xs, ys)
            return self

        def predict(self, Xt):
            return self.est.predict(Xt)

    factory = make_probe("ridge", seed=0, small=True)
    res = few_shot(lambda: Recorder(real(factory)), X, y, shots=(4,), n_tries=6, seed=0,
                   sampler="dpp")
    assert len(res.mean) == 1 and 0.0 <= res.mean[0] <= 1.0
    assert len(seen) == 6
    assert len({tuple(map(tuple, s.round(6))) for s in seen}) > 1  # each try differs
    for s in seen:  # 4 distinct rows per class
        assert len(np.unique(s.round(9), axis=0)) == 12
    seen_dpp = list(seen)
    seen.clear()
    few_shot(lambda: Recorder(real(factory)), X, y, shots=(4,), n_tries=6, seed=0)
    # the shots of one class span more volume under the DPP than at random (what a
    # projection DPP favours: log det of the centred shots' Gram)
    centre = X[y == 0].mean(0)

    def volume(runs):
        return np.median([np.linalg.slogdet((r[:4] - centre) @ (r[:4] - centre).T)[1]
                          for r in runs])

    assert volume(seen_dpp) > volume(seen)


def test_cli_align_anchors_and_few_shot_sampler(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((80, 6))
    np.save(tmp_path / "a.npy", X)
    np.save(tmp_path / "b.npy", X @ rng.standard_normal((6, 6)))
    y = np.repeat(np.arange(2), 40)
    np.save(tmp_path / "y.npy", y)
    db = str(tmp_path / "r.db")
    out = CliRunner().invoke(cli, ["--db", db, "align", str(tmp_path / "a.npy"),
                                   str(tmp_path / "b.npy"), "--anchors", "dpp", "--n-train",
                                   "20", "--map", "linear", "--json"])
    assert out.exit_code == 0, out.output
    out = CliRunner().invoke(cli, ["--db", db, "probe", str(tmp_path / "a.npy"), "--labels",
                                   str(tmp_path / "y.npy"), "--few-shot", "2,4",
                                   "--few-shot-sampler", "dpp", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["few_shot"]["shots"] == [2, 4]
    from repscope.db import ResultsDB

    with ResultsDB(db) as rdb:
        rec = rdb.query(analysis="probe_few_shot")[0]
        assert rec.params["sampler"] == "dpp"
        assert rdb.query(analysis="alignment")[0].params["anchors"] == "dpp"
