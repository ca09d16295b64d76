"""``repscope probe`` (CliRunner on small .npy inputs) and the probe report sections."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from repscope.cli import cli
from repscope.db import Record, ResultsDB


@pytest.fixture
def arrays(tmp_path):
    rng = np.random.default_rng(0)
    n = 240
    y = np.arange(n) % 3
    centres = rng.standard_normal((3, 6)) * 2
    np.save(tmp_path / "layer_a.npy", (rng.standard_normal((n, 6)) + centres[y]).astype(np.float32))
    from safetensors.numpy import save_file

    save_file({"early": rng.standard_normal((n, 5)).astype(np.float32),
               "late": (rng.standard_normal((n, 6)) + 1.5 * centres[y]).astype(np.float32)},
              str(tmp_path / "feats.safetensors"))
    np.save(tmp_path / "labels.npy", y)
    return tmp_path


def _run(args, db):
    return CliRunner().invoke(cli, ["--db", str(db), "probe", *args])


@pytest.mark.parametrize("probe_name", ["ridge", "lda", "nb", "logistic", "knn"])
def test_probe_command_every_probe_json(arrays, tmp_path, probe_name):
    db = tmp_path / "r.db"
    res = _run([str(arrays / "feats.safetensors"), "--labels", str(arrays / "labels.npy"),
                "--probe", probe_name, "--folds", "3", "--json"], db)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    layers = out["layers"]
    assert layers["layers"] == ["early", "late"]
    assert layers["accuracy"][1] > 0.8
    assert layers["accuracy"][0] < 0.6
    with ResultsDB(db) as d:
        recs = d.query(analysis="probe")
        assert {r.layer for r in recs} == {"early", "late"}
        assert all(r.params["probe"] == probe_name for r in recs)


def test_probe_command_few_shot_curve_calibration_and_report(arrays, tmp_path):
    from repscope.report import render_report

    db = tmp_path / "r.db"
    res = _run([str(arrays / "feats.safetensors"), "--labels", str(arrays / "labels.npy"),
                "--layer", "late", "--layer", "early", "--few-shot", "1,5", "--tries", "3",
                "--learning-curve", "--calibration", "--probe", "logistic", "--folds", "3"], db)
    assert res.exit_code == 0, res.output
    assert "Few-shot at late" in res.output
    assert "calibration at late" in res.output
    with ResultsDB(db) as d:
        fs = d.query(analysis="probe_few_shot")[0]
        assert fs.layer == "late"
        assert fs.values["shots"] == [1, 5]
        lc = d.query(analysis="probe_learning_curve")[0]
        assert lc.values["reached_at"] in lc.values["sizes"]
        cal = d.query(analysis="probe_calibration")[0]
        assert cal.values["ece_after"] >= 0
    html = render_report(db, tmp_path / "report.html").read_text(encoding="utf-8")
    for title in ("Probe accuracy by layer", "Probe learning curves", "Few-shot probe accuracy",
                  "Probe calibration"):
        assert title in html
    assert html.count("<svg") >= 4


def test_probe_command_npy_and_text_output(arrays, tmp_path):
    res = _run([str(arrays / "layer_a.npy"), "--labels", str(arrays / "labels.npy"), "--probe",
                "knn", "--few-shot", "2", "--learning-curve"], tmp_path / "r.db")
    assert res.exit_code == 0, res.output
    assert "layer_a" in res.output
    assert "95% interval" in res.output


def test_probe_command_errors_are_one_line(arrays, tmp_path):
    res = _run([str(arrays / "missing.npy"), "--labels", str(arrays / "labels.npy")],
               tmp_path / "r.db")
    assert res.exit_code == 1
    assert "does not exist" in res.stderr
    res = _run([str(arrays / "layer_a.npy"), "--labels", str(arrays / "labels.npy"),
                "--few-shot", "1,x"], tmp_path / "r.db")
    assert res.exit_code == 1
    assert "--few-shot must be comma-separated" in res.stderr
    res = _run([str(arrays / "feats.safetensors"), "--labels", str(arrays / "labels.npy"),
                "--layer", "middle"], tmp_path / "r.db")
    assert res.exit_code == 1
    assert "unknown layer 'middle'" in res.stderr


def test_probe_sections_render_records_with_intervals():
    from repscope.capability import section_for
    from repscope.probe._report import render_probe, render_probe_learning_curve

    recs = [Record("probe", {"accuracy": a, "ci_low": a - 0.05, "ci_high": a + 0.05,
                             "chance": 0.1}, model=m, layer=f"l{i}", params={"probe": p})
            for m in ("m1", "m2") for p in ("ridge", "knn")
            for i, a in enumerate([0.3, 0.6, 0.9])]
    html = render_probe(recs)
    assert "<svg" in html
    assert "m1 · ridge" in html
    assert "m2 · knn" in html
    assert 'class="band"' in html and "stroke-dasharray" not in html  # intervals: bands
    for name in ("probe", "probe_learning_curve", "probe_few_shot", "probe_calibration"):
        assert section_for(name) is not None
    lc = Record("probe_learning_curve", {"sizes": [10, 100], "mean": [0.5, 0.8],
                                         "ci_low": [0.4, 0.75], "ci_high": [0.6, 0.85],
                                         "reached_at": 100, "asymptote_error": 0.2},
                model="m1", layer="l2", params={"probe": "nb"})
    out = render_probe_learning_curve([lc])
    assert "<svg" in out
    assert "flat from n" in out
    assert render_probe([]).startswith("<p>")
