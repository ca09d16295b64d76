"""The main job at small size, end to end: extraction into stores, analyses recorded in the
results database, the report rendered; re-running resumes from the stores."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from repscope.cli import cli

pytestmark = pytest.mark.real  # every test here runs EfficientNet-Lite0

MODELS = ("efficientnet-lite0", "efficientnet-lite1")
PROBES = ("ridge", "knn")  # the probes the demo runs at every layer


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
    for title in ("Feature extraction", "Probe accuracy by layer", "Layer-to-layer similarity",
                  "PCA spectrum"):
        assert f"<h2>{title}" in html, title
    assert "retired analysis" not in html
    assert html.count("<svg") >= 3
    assert "http://" not in html
    assert "https://" not in html


def test_small_demo_records_every_layer(demo_run):
    from repscope.db import ResultsDB

    _out, db_path, _res = demo_run
    with ResultsDB(db_path) as db:
        count = {a: db.count(analysis=a) for a in ("extraction", "similarity_matrix", "probe",
                                                   "pca_spectrum", "separability", "cka")}
        probes = db.query(analysis="probe")
        (layer_map,) = db.query(analysis="similarity_matrix")
    assert count["extraction"] == 2
    assert count["similarity_matrix"] == 1
    assert count["separability"] == count["cka"] == 0  # retired: a new demo records neither
    # one spectrum record per layer of each model (Lite0: 18, Lite1: 23), and one probe record
    # per layer of each model for each probe
    assert count["pca_spectrum"] >= 30
    assert count["probe"] == len(PROBES) * count["pca_spectrum"]
    for name in PROBES:
        assert sum(r.params["probe"] == name for r in probes) == count["pca_spectrum"]
    assert max(r.values["accuracy"] for r in probes if r.params["probe"] == "ridge") > 0.5
    # one linear-CKA map: every layer of Lite0 against every layer of Lite1
    assert layer_map.values["measure"] == "linear_cka"
    assert (layer_map.values["model_a"], layer_map.values["model_b"]) == MODELS
    assert len(layer_map.values["rows"]) + len(layer_map.values["cols"]) == count["pca_spectrum"]


def test_readme_screenshot_shows_the_demo_of_today(demo_run):
    """The screenshot's sidecar (written by scripts/update_screenshot.py from the full demo)
    lists the sections a freshly rendered demo report has: a stale screenshot fails here."""
    import importlib.util
    import json
    from pathlib import Path

    import repscope

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("update_screenshot",
                                                  root / "scripts" / "update_screenshot.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    sidecar = json.loads((root / "docs" / "report-screenshot.json").read_text())
    html = (demo_run[0] / "report.html").read_text()
    assert sidecar["sections"] == script.section_titles(html), (
        "docs/report-screenshot.png is stale: run scripts/update_screenshot.py")
    assert sidecar["version"] == repscope.__version__
    assert (root / "docs" / "report-screenshot.png").stat().st_size > 50_000


def _section(html: str, section_id: str) -> str:
    start = html.index(f'<section id="{section_id}"')
    return html[start:html.index("</section>", start)]


def test_small_demo_report_has_one_probe_and_one_similarity_section(demo_run):
    out, _db, _res = demo_run
    html = (out / "report.html").read_text()
    assert html.count('<section id="sec-similarity-matrix"') == 1
    assert html.count('<section id="sec-probe"') == 1
    # render_probe draws one accuracy-by-layer chart per probe kind (named in full): in it,
    # one line per model, its 95% interval a translucent band
    probe = _section(html, "sec-probe")
    assert probe.count("<svg") == len(PROBES)
    for name in PROBES:
        assert len(re.findall(rf"<title>{name} probe \([^)]+\): accuracy by layer</title>",
                              probe)) == 1
    for model in MODELS:
        assert probe.count(f'<g class="series"><title>{model}</title>') == len(PROBES)
    assert probe.count('<g class="series">') == len(MODELS) * len(PROBES)
    assert probe.count('<polygon class="band"') == len(MODELS) * len(PROBES)
    assert "stroke-dasharray" not in probe
    sim = _section(html, "sec-similarity-matrix")
    assert sim.count("<svg") == 1  # one heat map
    assert f"linear_cka: {MODELS[0]} (rows) × {MODELS[1]} (columns)" in sim


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
