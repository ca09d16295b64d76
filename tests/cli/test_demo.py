"""The main job at small size, end to end: extraction into stores, analyses recorded in the
results database, the report rendered; re-running resumes from the stores."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from repscope.cli import cli

pytestmark = pytest.mark.real  # every test here runs EfficientNet-Lite0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    db = out / "results.db"
    res = CliRunner().invoke(cli, ["--db", str(db), "demo", "--n-images", "100", "--resolution", "64",
                                   "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    return out, db, res


def test_small_demo_writes_the_report(demo_run):
    out, _db, res = demo_run
    report = out / "report.html"
    assert res.stdout.strip().splitlines()[-1] == str(report.resolve())
    html = report.read_text()
    for title in ("Feature extraction", "Class separability", "similarity (CKA)", "PCA spectrum"):
        assert title.lower() in html.lower(), title
    assert html.count("<svg") >= 3
    assert "http://" not in html
    assert "https://" not in html


def test_small_demo_records_every_layer(demo_run):
    from repscope.db import ResultsDB

    _out, db_path, _res = demo_run
    with ResultsDB(db_path) as db:
        count = {a: db.count(analysis=a) for a in ("extraction", "cka", "separability", "pca_spectrum")}
        accs = [r.values["accuracy"] for r in db.query(analysis="separability")]
    assert count["extraction"] == 2
    assert count["cka"] == 1
    # one separability and one spectrum record per layer of each model (Lite0: 18, Lite1: 23)
    assert count["separability"] == count["pca_spectrum"] >= 30
    assert max(accs) > 0.5  # 10 classes: chance is 0.1


def test_demo_rerun_resumes_from_the_stores(demo_run, tmp_path):
    out, _db, _res = demo_run
    res = CliRunner().invoke(cli, ["--db", str(tmp_path / "r.db"), "demo", "--n-images", "100",
                                   "--resolution", "64", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    timing = next(ln for ln in res.stderr.splitlines() if "extract efficientnet-lite0" in ln)
    assert float(timing.split(":")[1].split()[0]) < 5.0  # nothing left to extract


def test_extract_command_into_a_store(tmp_path):
    from repscope.store import FeatureStore

    res = CliRunner().invoke(cli, ["--db", str(tmp_path / "r.db"), "extract", "efficientnet-lite0",
                                   "--dataset", "mnist", "--n", "40", "--resolution", "32",
                                   "--pooling", "avg", "--layer", "_blocks.3", "--layer", "_blocks.15",
                                   "--out", str(tmp_path / "s"), "--no-progress"])
    assert res.exit_code == 0, res.output
    s = FeatureStore.open(tmp_path / "s")
    assert s.layers == ["_blocks.3", "_blocks.15"]
    assert s.read("_blocks.15").shape == (40, 320)
    res = CliRunner().invoke(cli, ["--db", str(tmp_path / "r.db"), "extract", "efficientnet-lite0",
                                   "--dataset", "mnist", "--n", "40", "--layer", "_blocks.99",
                                   "--out", str(tmp_path / "t")])
    assert res.exit_code == 1
    assert "_blocks.99" in res.stderr
    assert "Traceback" not in res.output
