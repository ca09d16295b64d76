"""PolySAE's interaction strength vs co-occurrence (Koromilas et al.), on planted interactions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.exceptions import RepscopeValueError
from repscope.sae import PolyConfig, PolySAE, TopKConfig, TopKSAE
from repscope.sae.evaluation import interaction_cooccurrence

PLANTED = [(0, 1), (2, 3), (4, 5), (6, 7)]


def _planted_sae() -> PolySAE:
    """Latent i reads input i; only the pairs in PLANTED share an order-2 slot of U."""
    sae = PolySAE(PolyConfig(d_in=16, d_sae=16, k=2, order=2, ranks=(16, 4, 4), shared_u=True,
                             normalize_activations="none", seed=0))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(16))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        U = torch.zeros(16, 16)
        for s, (i, j) in enumerate(PLANTED):
            U[i, s] = U[j, s] = 1.0
        sae.U.copy_(U)
        sae.C2.copy_(torch.randn(16, 4, generator=torch.Generator().manual_seed(1)))
        sae.lambda2.fill_(0.5)
    return sae


def _inputs(pairs, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    X = 0.01 * np.abs(rng.standard_normal((n, 16)))
    for r in range(n):
        if rng.random() < 0.8:
            i, j = pairs[rng.integers(len(pairs))]
        else:
            i, j = rng.choice(16, 2, replace=False)
        X[r, [i, j]] += 2.0 + rng.random(2)
    return X.astype(np.float32)


def test_strength_is_the_decoders_mixed_second_difference():
    for shared in (True, False):
        sae = PolySAE(PolyConfig(d_in=8, d_sae=12, k=3, order=2, ranks=(8, 5, 5), shared_u=shared,
                                 normalize_activations="none", seed=3))
        with torch.no_grad():
            sae.lambda2.fill_(-0.7)
        X = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
        res = interaction_cooccurrence(sae, X, latents=np.arange(12))

        def dec(*on, sae=sae):
            z = torch.zeros(1, 12)
            z[0, list(on)] = 1.0
            with torch.no_grad():
                return sae.decode_normalized(z, None)[0].double()

        for i, j in [(0, 1), (2, 9), (11, 4)]:
            mixed = dec(i, j) - dec(i) - dec(j) + dec()
            assert res.strength[i, j] == pytest.approx(float(mixed.norm()), rel=1e-5)
            assert res.strength[j, i] == res.strength[i, j]
        assert np.all(np.diag(res.strength) == 0)


def test_planted_interactions_that_co_occur_correlate_and_others_do_not():
    sae = _planted_sae()
    same = interaction_cooccurrence(sae, _inputs(PLANTED))
    assert same.n_samples == 3000 and same.latents.tolist() == list(range(16))
    iu = np.triu_indices(16, 1)
    strong = {(i, j) for i, j in zip(*iu) if same.strength[i, j] > 1e-6}
    assert strong == set(PLANTED)
    assert same.r_interaction > 0.9
    other = interaction_cooccurrence(sae, _inputs([(1, 2), (3, 4), (5, 6), (7, 8)]))
    assert other.r_interaction < 0.1
    # the baseline: latent covariance follows co-occurrence either way
    assert same.r_covariance > 0.8 and other.r_covariance > 0.8
    # co-occurrence is the fraction of inputs where both fire
    assert other.cooccurrence[1, 2] == pytest.approx(0.2, abs=0.03)


def test_default_latents_are_the_most_frequent_and_bad_input_is_named():
    sae = _planted_sae()
    X = _inputs(PLANTED[:2], n=500)
    res = interaction_cooccurrence(sae, X, max_latents=4)
    assert res.latents.tolist() == [0, 1, 2, 3]
    with pytest.raises(RepscopeValueError, match="needs a PolySAE with order >= 2"):
        interaction_cooccurrence(TopKSAE(TopKConfig(d_in=16, d_sae=16, k=2)), X)
    order1 = PolySAE(PolyConfig(d_in=16, d_sae=16, k=2, order=1))
    with pytest.raises(RepscopeValueError, match="with order 1"):
        interaction_cooccurrence(order1, X)
    with pytest.raises(RepscopeValueError, match="at least 3 distinct indices into the 16 latents"):
        interaction_cooccurrence(sae, X, latents=[0, 16, 2])


def test_sae_eval_cli_reports_the_interaction_correlations_of_a_poly_sae(tmp_path):
    import json

    from click.testing import CliRunner

    from repscope.cli import cli
    from repscope.sae.io import save_sae

    sae = _planted_sae()
    X = _inputs(PLANTED, n=800)
    np.save(tmp_path / "x.npy", X)
    save_sae(sae, tmp_path / "poly")
    res = CliRunner().invoke(cli, ["--db", str(tmp_path / "r.db"), "sae", "eval",
                                   str(tmp_path / "poly"), str(tmp_path / "x.npy"), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)["interactions"]
    ref = interaction_cooccurrence(sae, X)
    assert got["r_interaction"] == pytest.approx(ref.r_interaction, rel=1e-9)
    assert got["r_covariance"] == pytest.approx(ref.r_covariance, rel=1e-9)
    assert got["r_interaction"] > 0.9 and got["n_latents"] == 16
    table = CliRunner().invoke(cli, ["--db", str(tmp_path / "r.db"), "sae", "eval",
                                     str(tmp_path / "poly"), str(tmp_path / "x.npy")])
    assert table.exit_code == 0, table.output
    assert "interaction strength vs co-occurrence" in table.output
    from repscope.db import ResultsDB
    from repscope.report import render_report

    with ResultsDB(tmp_path / "r.db") as db:
        html = render_report(db, tmp_path / "r.html").read_text()
    assert "interaction strength vs co-occurrence (r)" in html
    assert f"{got['r_interaction']:.3g}" in html
