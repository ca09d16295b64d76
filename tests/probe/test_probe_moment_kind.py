"""``repscope probe --probe moment``: Moment Probing reached from the CLI on token stores
(dense ``--pooling none`` layers and ragged ``--pooling tokens`` layers), and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from repscope.cli import cli


def _token_sets(rng: np.random.Generator, n: int = 240, t: int = 12, d: int = 8
                ) -> tuple[np.ndarray, np.ndarray]:
    """The class sets the sign of corr(channel 0, channel 1) over the tokens: every token mean
    is identical across classes, so mean pooling sees nothing and the second order all."""
    y = np.arange(n) % 2
    X = rng.standard_normal((n, t, d))
    sign = np.where(y == 1, 1.0, -1.0)[:, None]
    X[:, :, 1] = 0.8 * sign * X[:, :, 0] + 0.6 * X[:, :, 1]
    return X.astype(np.float32), y


def _probe(args: list[str], db) -> object:
    return CliRunner().invoke(cli, ["--db", str(db), "probe", *args])


def test_moment_kind_on_a_dense_token_store_beats_pooled_ridge(tmp_path, rng) -> None:
    from repscope.db import ResultsDB
    from repscope.store import FeatureStore

    X, y = _token_sets(rng, n=160)
    store = FeatureStore.create(tmp_path / "feats", model_id="toy")
    store.append({"tokens": X, "pooled": X.mean(1)})
    np.save(tmp_path / "y.npy", y)
    db = tmp_path / "r.db"
    # without --layer, layers that hold no tokens ("pooled") are skipped, not pooled
    res = _probe([str(tmp_path / "feats"), "--labels", str(tmp_path / "y.npy"), "--probe",
                  "moment", "--folds", "2", "--few-shot", "20", "--tries", "1", "--json"], db)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["probe"] == "moment" and out["layers"]["layers"] == ["tokens"]
    assert out["layers"]["accuracy"][0] > 0.9
    assert out["few_shot"]["layer"] == "tokens" and out["few_shot"]["mean"][0] > 0.75
    # the same token sets, mean-pooled, are at chance for the default ridge probe
    base = _probe([str(tmp_path / "feats"), "--labels", str(tmp_path / "y.npy"), "--folds",
                   "2", "--layer", "pooled", "--json"], tmp_path / "b.db")
    assert base.exit_code == 0, base.output
    assert json.loads(base.output)["layers"]["accuracy"][0] < 0.65
    with ResultsDB(db) as d:
        recs = d.query(analysis="probe")
    assert len(recs) == 1 and recs[0].params["probe"] == "moment"


def test_moment_kind_on_ragged_tokens_masks_the_padding(tmp_path, rng) -> None:
    from repscope.probe._kinds import TokenSetProbe, token_features
    from repscope.probe._moment import MomentProbe
    from repscope.store import FeatureStore

    X, y = _token_sets(rng, n=150)
    lengths = rng.integers(6, 13, size=len(y))
    store = FeatureStore.create(tmp_path / "feats", model_id="toy")
    store.append({"tok": [X[i, :lengths[i]] for i in range(len(y))]})
    np.save(tmp_path / "y.npy", y)
    feats, shape = token_features(tmp_path / "feats")
    assert shape == (12, 8) and feats["tok"].shape == (150, 96)
    # padding (zero vectors) is masked: the wrapper equals MomentProbe with the true mask
    wrapped = TokenSetProbe(MomentProbe(n_heads=2, head_dim=4, max_iter=20),
                            token_shape=shape).fit(feats["tok"][:100], y[:100])
    tok = feats["tok"].reshape(150, 12, 8)
    mask = np.arange(12)[None, :] < lengths[:, None]
    direct = MomentProbe(n_heads=2, head_dim=4, max_iter=20).fit(tok[:100], y[:100],
                                                                  mask=mask[:100])
    np.testing.assert_array_equal(wrapped.predict(feats["tok"][100:]),
                                  direct.predict(tok[100:], mask=mask[100:]))
    assert not np.allclose(wrapped.predict_proba(feats["tok"][100:]),
                           direct.predict_proba(tok[100:]))  # unmasked differs
    res = _probe([str(tmp_path / "feats"), "--labels", str(tmp_path / "y.npy"), "--probe",
                  "moment", "--folds", "2", "--json"], tmp_path / "r.db")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["layers"]["accuracy"][0] > 0.85


def test_moment_kind_errors_are_one_line(tmp_path, rng) -> None:
    from repscope.exceptions import RepscopeValueError
    from repscope.probe._kinds import TokenSetProbe
    from repscope.probe._moment import MomentProbe

    np.save(tmp_path / "flat.npy", rng.standard_normal((40, 6)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(40) % 2)
    res = _probe([str(tmp_path / "flat.npy"), "--labels", str(tmp_path / "y.npy"), "--probe",
                  "moment"], tmp_path / "r.db")
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "has no token layer" in res.output and "--pooling tokens" in res.output
    res = _probe([str(tmp_path / "flat.npy"), "--labels", str(tmp_path / "y.npy"), "--probe",
                  "moment", "--layer", "flat"], tmp_path / "r.db")
    assert res.exit_code != 0 and "--layer 'flat' holds (6,) per sample" in res.output
    with pytest.raises(RepscopeValueError, match="token_shape"):
        TokenSetProbe(MomentProbe()).fit(np.ones((4, 6)), [0, 1, 0, 1])
    with pytest.raises(RepscopeValueError, match="rows of 2 tokens x 4 features = 8 values"):
        TokenSetProbe(MomentProbe(), token_shape=(2, 4)).fit(np.ones((4, 6)), [0, 1, 0, 1])
