"""``repscope nn lowrank|tucker`` and the margin probe kinds end to end on real models and
features (CliRunner -> records -> report), their numbers checked against direct computations,
and the demo step."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from repscope.cli import cli
from repscope.db import ResultsDB
from repscope.report import render_report

pytestmark = pytest.mark.filterwarnings("error::repscope.report.ReportWarning")


def _run(db, *args):
    return CliRunner().invoke(cli, ["--db", str(db), "--no-progress", *args])


def test_lowrank_spectra_of_lite0_weights_equal_numpy_svd(tmp_path) -> None:
    res = _run(tmp_path / "r.db", "nn", "lowrank", "efficientnet-lite0", "--layer",
               "_blocks.15.*", "--json")
    assert res.exit_code == 0, res.output
    out = {r["layer"]: r for r in json.loads(res.output)}
    assert set(out) == {"_blocks.15._expand_conv", "_blocks.15._project_conv"}
    from repscope.zoo import load_model

    module = load_model("efficientnet-lite0").model
    w = dict(module.named_modules())["_blocks.15._project_conv"].weight.detach().double()
    s = np.linalg.svd(w.reshape(w.shape[0], -1).numpy(), compute_uv=False)
    with ResultsDB(tmp_path / "r.db") as db:
        rec = {r.layer: r for r in db.query(analysis="low_rank_spectrum")}
        np.testing.assert_allclose(rec["_blocks.15._project_conv"].values["singular_values"], s,
                                   rtol=1e-6)
        energy = np.cumsum(s**2) / np.sum(s**2)
        assert out["_blocks.15._project_conv"]["n_components_90"] == int(
            np.searchsorted(energy, 0.9 - 1e-12) + 1)
        html = render_report(db, tmp_path / "r.html").read_text()
    assert 'id="sec-low-rank-spectrum"' in html and "_blocks.15._project_conv" in html
    bad = _run(tmp_path / "r.db", "nn", "lowrank", "efficientnet-lite0", "--layer", "nothing*")
    assert bad.exit_code == 1 and "no linear or convolution weight" in bad.output


def test_tucker_of_minilm_tokens_equals_the_library(minilm_austen_tokens, tmp_path) -> None:
    from repscope.nn._tucker import tucker_of_tokens
    from repscope.store import FeatureStore

    store_path = minilm_austen_tokens.store
    store = FeatureStore.open(store_path)
    layer = next(name for name in store.layers if store.layer_info(name).ragged)
    res = _run(tmp_path / "r.db", "nn", "tucker", str(store_path), "--layer", layer,
               "--ranks", "4,4,8", "--max-samples", "80", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    from repscope._threads import single_thread

    with single_thread():
        direct = tucker_of_tokens(store.read_ragged(layer, np.arange(80)), (4, 4, 8), n_iter=20)
    assert out["fit"] == pytest.approx(direct.fit, rel=1e-9)
    np.testing.assert_allclose(out["mode_energy"], direct.mode_energy, rtol=1e-9)
    assert 0 < out["fit"] < 1
    with ResultsDB(tmp_path / "r.db") as db:
        html = render_report(db, tmp_path / "r.html").read_text()
    assert 'id="sec-tucker"' in html and "channels" in html
    pooled = FeatureStore.create(tmp_path / "pooled", model_id="toy")
    pooled.append({"h": np.ones((4, 3), np.float32)})
    pooled.close()
    bad = _run(tmp_path / "r.db", "nn", "tucker", str(tmp_path / "pooled"), "--layer", "h")
    assert bad.exit_code == 1 and "Tucker needs a token layer" in bad.output


def test_arcface_probe_kind_records_angular_margins(lite0_mnist, tmp_path) -> None:
    from repscope._threads import single_thread

    with single_thread():
        res = _run(tmp_path / "r.db", "probe", str(lite0_mnist.store), "--labels", "label",
                   "--probe", "arcface", "--layer", "_bn1", "--folds", "2", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    heads = out["margins"]["heads"]
    assert set(heads) == {"arcface", "softmax"}
    assert heads["arcface"]["margin_mean"] > heads["softmax"]["margin_mean"]
    with ResultsDB(tmp_path / "r.db") as db:
        [rec] = db.query(analysis="probe_margins")
        assert rec.layer == "_bn1" and rec.params["probe"] == "arcface"
        html = render_report(db, tmp_path / "r.html").read_text()
    assert 'id="sec-probe-margins"' in html and "Angular margins" in html


def test_margin_demo_step_records_both_heads(lite0_mnist, tmp_path) -> None:
    from repscope.capability import DemoContext
    from repscope.nn._demo import demo_margins_step
    from repscope.store import FeatureStore

    with ResultsDB(tmp_path / "r.db") as db:
        ctx = DemoContext(stores={"efficientnet-lite0": FeatureStore.open(lite0_mnist.store)},
                          layers={"efficientnet-lite0": ["_blocks.15", "_bn1"]},
                          labels=lite0_mnist.y, label_names=[str(i) for i in range(10)],
                          inputs=None, ids=[], dataset="mnist", db=db, run_id="r", seed=0,
                          log=lambda m: None, out=tmp_path)
        records = demo_margins_step(ctx)
    rec = records[0]
    assert rec.analysis == "probe_margins" and rec.layer == "_bn1"
    assert set(rec.values["heads"]) == {"arcface", "softmax"}
    spectra = {r.layer for r in records if r.analysis == "low_rank_spectrum"}
    assert {"_conv_head", "_blocks.15._project_conv"} <= spectra
    assert all(r.model == "efficientnet-lite0" for r in records)


def test_tucker_demo_step_on_austen_tokens(tmp_path) -> None:
    from repscope.capability import DemoContext
    from repscope.exceptions import DataNotFoundError
    from repscope.nn._demo import TUCKER_RANKS, demo_tucker_step

    ctx = DemoContext(stores={}, layers={}, labels=np.zeros(1), label_names=[], inputs=None,
                      ids=[], dataset="mnist", db=None, run_id="r", seed=0, log=lambda m: None,
                      out=tmp_path)
    try:
        [rec] = demo_tucker_step(ctx)
    except DataNotFoundError as err:
        from repscope._testing import skip_or_fail

        skip_or_fail(f"the Austen novels are missing: {err}")
    assert rec.analysis == "tucker" and rec.dataset == "austen"
    assert rec.values["ranks"] == list(TUCKER_RANKS) and 0 < rec.values["fit"] < 1
    assert rec.values["shape"][0] == 200 and rec.values["shape"][2] == 384
