"""Cross-attention readout: routing on planted data, the region mass against a naive count,
the ridge baselines, and the CLI + report round trip."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.exceptions import RepscopeValueError
from repscope.probe._readout import CrossAttentionReadout, readout_comparison, region_mass


def _routed(rng: np.random.Generator, n: int = 240) -> tuple[np.ndarray, np.ndarray]:
    """4x4 grid of tokens; target t (a 2x2 grid of targets) is channel 0 of the token at the
    centre-ish position of its quadrant, so mean pooling dilutes it 16-fold among noise."""
    X = rng.standard_normal((n, 16, 6)).astype(np.float32)
    Y = X[:, [0, 3, 12, 15], 0].astype(np.float64)
    return X, Y


def test_readout_beats_pooled_ridge_and_region_mass(rng) -> None:
    X, Y = _routed(rng, n=300)
    res = readout_comparison(X, Y, target_grid=(2, 2), max_iter=200, dim=8, n_components=6,
                             batch_size=300, learning_rate=0.05)
    assert res.r2_readout.mean() > 0.9
    assert res.r2_ridge_pooled.mean() < 0.2          # pooling mixes the read token with 15 others
    assert res.r2_readout.mean() > res.r2_ridge_pooled.mean() + 0.5
    assert res.token_grid == (4, 4) and res.target_grid == (2, 2)
    assert res.region_mass is not None and (res.region_mass > 0.9).all()
    rec = res.to_records(model="m", dataset="d", layer="L")[0]
    assert rec.analysis == "readout" and rec.values["n_test"] == 75
    assert len(rec.values["attention"]) == 4 and len(rec.values["attention"][0]) == 16


def test_region_mass_equals_naive_count(rng) -> None:
    att = rng.random((9, 7, 7))
    att /= att.sum((1, 2), keepdims=True)
    got = region_mass(att, (3, 3), (7, 7), margin=1)
    for t in range(9):
        r, c = divmod(t, 3)
        want = 0.0
        for i in range(7):
            for j in range(7):
                # cell (r, c) covers image fraction [r/3, (r+1)/3); token i covers [i/7, (i+1)/7)
                rows = range(int(np.floor(r * 7 / 3)), int(np.ceil((r + 1) * 7 / 3)))
                cols = range(int(np.floor(c * 7 / 3)), int(np.ceil((c + 1) * 7 / 3)))
                near_r = min(rows) - 1 <= i <= max(rows) + 1
                near_c = min(cols) - 1 <= j <= max(cols) + 1
                want += att[t, i, j] if near_r and near_c else 0.0
        assert got[t] == pytest.approx(want)


def test_flat_ridge_equals_sklearn_at_its_alpha(rng) -> None:
    from sklearn.linear_model import Ridge

    from repscope.probe._readout import _ridge_flat

    X = rng.standard_normal((40, 200)).astype(np.float32)
    Y = X[:, :2] @ np.array([[1.0, -1.0], [0.5, 2.0]]) + 0.1 * rng.standard_normal((40, 2))
    Xte = rng.standard_normal((10, 200)).astype(np.float32)
    pred = _ridge_flat(X, Y, Xte)
    # GCV picks one alpha per target from a grid; sklearn on the same alpha must agree
    A = X - X.mean(0)
    scale = float(np.trace(A @ A.T)) / 40
    preds = [Ridge(alpha=scale * a).fit(X, Y).predict(Xte) for a in np.logspace(-4, 3, 15)]
    assert any(np.allclose(pred[:, 0], p[:, 0], atol=1e-4) for p in preds)
    assert any(np.allclose(pred[:, 1], p[:, 1], atol=1e-4) for p in preds)


def test_bad_input(rng) -> None:
    X, Y = _routed(rng, n=40)
    with pytest.raises(RepscopeValueError, match="n_tokens"):
        CrossAttentionReadout().fit(X[:, 0], Y)
    with pytest.raises(RepscopeValueError, match="one row per sample"):
        CrossAttentionReadout().fit(X, Y[:10])
    with pytest.raises(RepscopeValueError, match="needs 9 targets"):
        readout_comparison(X, Y, target_grid=(3, 3))
    m = CrossAttentionReadout(max_iter=2).fit(X, Y)
    with pytest.raises(RepscopeValueError, match="16 tokens of 6 features"):
        m.predict(X[:, :9])


def test_cli_records_and_report(tmp_path, rng, monkeypatch) -> None:
    from click.testing import CliRunner

    from repscope.cli import cli
    from repscope.db import ResultsDB
    from repscope.probe._report_readout import render_readout
    from repscope.store import FeatureStore

    X, Y = _routed(rng, n=120)
    store = FeatureStore.create(tmp_path / "feats", model_id="toy")
    store.append({"tokens": X})
    np.save(tmp_path / "y.npy", Y)
    db = tmp_path / "r.db"
    monkeypatch.setenv("REPSCOPE_DB", str(db))
    runner = CliRunner()
    out = runner.invoke(cli, ["readout", str(tmp_path / "feats"), "--targets",
                              str(tmp_path / "y.npy"), "--target-grid", "2x2", "--max-iter",
                              "150", "--dim", "8", "--prefix-tokens", "0"])
    assert out.exit_code == 0, out.output
    assert "R2 readout" in out.output
    with ResultsDB(db) as d:
        recs = [r for r in d.query(analysis="readout")]
    v = recs[0].values
    assert len(recs) == 1 and v["r2_readout"] > v["r2_ridge_pooled"] + 0.3
    html = render_readout(recs)
    assert "data:image/png;base64," in html and "http" not in html.replace(
        "http://www.w3.org/2000/svg", "")
    assert html.count("<rect") == 4
    bad = runner.invoke(cli, ["readout", str(tmp_path / "feats"), "--targets",
                              str(tmp_path / "y.npy"), "--target-grid", "3x3"])
    assert bad.exit_code == 1 and "--target-grid 3x3 needs 9 targets" in bad.output
    assert "Traceback" not in bad.output
