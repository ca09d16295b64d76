"""``repscope ood`` (CliRunner on small .npy/.safetensors inputs) and the OOD report sections."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from repscope.cli import cli
from repscope.db import ResultsDB


@pytest.fixture
def arrays(tmp_path):
    """Six classes in two layers; classes 0-2 are ID, 3-5 a nearby OOD."""
    rng = np.random.default_rng(0)
    n = 360
    y = np.arange(n) % 6
    centres = rng.standard_normal((6, 8)) * 3
    from safetensors.numpy import save_file

    late = (rng.standard_normal((n, 8)) + centres[y]).astype(np.float32)
    early = (rng.standard_normal((n, 5)) + 0.3 * centres[y, :5]).astype(np.float32)
    save_file({"early": early, "late": late}, str(tmp_path / "all.safetensors"))
    is_id = y < 3
    save_file({"early": early[is_id], "late": late[is_id]}, str(tmp_path / "id.safetensors"))
    save_file({"early": early[~is_id], "late": late[~is_id]}, str(tmp_path / "ood.safetensors"))
    np.save(tmp_path / "labels.npy", y)
    np.save(tmp_path / "id_labels.npy", y[is_id])
    np.save(tmp_path / "ood_mask.npy", (~is_id).astype(np.int64))
    return tmp_path


def _run(args, db):
    return CliRunner().invoke(cli, ["--db", str(db), "ood", *args])


DETS = ["--detector", "mahalanobis", "--detector", "energy", "--detector", "msp"]


def test_ood_command_two_sets_json_records_and_report(arrays, tmp_path):
    from repscope.report import render_report

    db = tmp_path / "r.db"
    res = _run([str(arrays / "id.safetensors"), str(arrays / "ood.safetensors"), "--labels",
                str(arrays / "id_labels.npy"), *DETS, "--json"], db)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["layers"] == ["early", "late"]
    assert {e["detector"] for e in out["entries"]} == {"mahalanobis", "energy", "msp"}
    aurocs = {(e["detector"], e["layer"]): e["metrics"]["auroc"] for e in out["entries"]}
    assert aurocs[("mahalanobis", "late")] > 0.8  # separated class centres
    with ResultsDB(db) as d:
        recs = d.query(analysis="ood")
        assert len(recs) == 6
        assert {r.params["detector"] for r in recs} == {"mahalanobis", "energy", "msp"}
        r = next(r for r in recs if r.params["detector"] == "mahalanobis" and r.layer == "late")
        assert sum(r.values["hist_id"]) == r.values["n_id"]
        assert sum(r.values["hist_ood"]) == r.values["n_ood"] == 180
        assert len(d.query(analysis="ood_diagnostics")) == 2
    html = render_report(db, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Out-of-distribution detection" in html and "PT-OOD diagnostics" in html
    assert "AUROC by detector" in html and "ROC curves" in html
    assert html.count("<svg") >= 4  # 3 histograms + ROC


def test_ood_command_one_store_split_by_id_classes_equals_two_sets(arrays, tmp_path):
    db = tmp_path / "r.db"
    two = _run([str(arrays / "id.safetensors"), str(arrays / "ood.safetensors"), "--labels",
                str(arrays / "id_labels.npy"), "--detector", "mahalanobis", "--layer", "late",
                "--no-diagnostics", "--json"], db)
    one = _run([str(arrays / "all.safetensors"), "--labels", str(arrays / "labels.npy"),
                "--id-classes", "0-2", "--detector", "mahalanobis", "--layer", "late",
                "--no-diagnostics", "--json"], db)
    mask = _run([str(arrays / "all.safetensors"), "--ood-labels", str(arrays / "ood_mask.npy"),
                 "--labels", str(arrays / "labels.npy"), "--detector", "mahalanobis",
                 "--layer", "late", "--no-diagnostics", "--json"], db)
    for r in (two, one, mask):
        assert r.exit_code == 0, r.output
    a = [json.loads(r.output)["entries"][0]["metrics"]["auroc"] for r in (two, one, mask)]
    assert a[0] == a[1] == a[2]


def test_ood_command_text_output_and_list(arrays, tmp_path):
    db = tmp_path / "r.db"
    res = _run([str(arrays / "all.safetensors"), "--labels", str(arrays / "labels.npy"),
                "--id-classes", "0,1,2", "--detector", "msp", "--detector", "mahalanobis",
                "--layer", "late"], db)
    assert res.exit_code == 0, res.output
    assert "AUROC" in res.output and "PT-OOD diagnostics" in res.output
    listing = _run(["--list", "--json"], db)
    assert listing.exit_code == 0, listing.output
    names = {d["name"]: d for d in json.loads(listing.output)}
    assert "mahalanobis" in names and "labels" in names["mahalanobis"]["needs"]
    assert names["msp"]["level"] == "class"


def test_ood_command_without_labels_reports_skipped_detectors(arrays, tmp_path):
    res = _run([str(arrays / "id.safetensors"), str(arrays / "ood.safetensors"), *DETS,
                "--no-diagnostics", "--json"], tmp_path / "r.db")
    assert res.exit_code == 0, res.output
    entries = json.loads(res.output)["entries"]
    assert all(e["metrics"] is None for e in entries)
    assert {e["reason"] for e in entries} >= {"needs class labels (none given)"}


@pytest.mark.parametrize(("args", "message"), [
    (["{a}/all.safetensors"], "exactly one of --id-classes"),
    (["{a}/all.safetensors", "--id-classes", "0-2"], "--id-classes needs --labels"),
    (["{a}/all.safetensors", "--labels", "{a}/labels.npy", "--id-classes", "0-9"],
     "--id-classes names 6, 7, 8, 9, not among the labels"),
    (["{a}/all.safetensors", "--labels", "{a}/labels.npy", "--id-classes", "0-5"],
     "leaves 360 ID and 0 OOD samples"),
    (["{a}/all.safetensors", "--ood-labels", "{a}/labels.npy"], "--ood-labels must hold 1/0"),
    (["{a}/id.safetensors", "{a}/ood.safetensors", "--id-classes", "0-2"],
     "with OOD_FEATURES given leave them out"),
    (["{a}/id.safetensors", "{a}/ood.safetensors", "--detector", "mahalanobs"],
     "mahalanobis"),
])
def test_ood_command_errors_are_one_line(arrays, tmp_path, args, message):
    res = _run([a.format(a=arrays) for a in args], tmp_path / "r.db")
    assert res.exit_code != 0
    assert message in res.output
    assert "Traceback" not in res.output


def test_demo_step_records_digits_0_4_vs_5_9_on_spread_layers(tmp_path):
    from repscope.capability import DemoContext
    from repscope.ood._demo import DEMO_LAYERS, demo_ood_step

    rng = np.random.default_rng(1)
    n, layers = 300, [f"b{i}" for i in range(9)]
    y = np.arange(n) % 10
    centres = rng.standard_normal((10, 6)) * 3

    class Store:
        def read(self, layer):
            return (rng.standard_normal((n, 6)) + centres[y]).astype(np.float32)

    ctx = DemoContext(stores={"toy": Store()}, layers={"toy": layers}, labels=y,
                      label_names=[str(i) for i in range(10)], inputs=None, ids=[],
                      dataset="digits", db=None, run_id="r", seed=0, log=lambda m: None,
                      out=tmp_path)
    recs = demo_ood_step(ctx)
    ood = [r for r in recs if r.analysis == "ood"]
    assert {r.layer for r in ood} == {"b0", "b2", "b4", "b6", "b8"}
    assert len({r.layer for r in ood}) == DEMO_LAYERS
    assert {r.params["detector"] for r in ood} == {"msp", "energy", "maxlogit", "mahalanobis",
                                                   "knn"}
    assert all(r.values["n_ood"] == 150 and r.dataset == "digits" for r in ood)
    assert all(r.params["split"] == "ID classes 0-4" for r in ood)
