"""The geometry capability end to end: the per-layer driver on real features from a
FeatureStore, ``repscope geometry`` (CliRunner), records -> database -> report sections, the
demo step, and the driver's refusal above the O(n^2) limit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from repscope.cli import cli
from repscope.db import ResultsDB
from repscope.exceptions import RepscopeValueError
from repscope.geometry import geometry_info, geometry_layers, list_geometry_measures


def _run(args, db):
    return CliRunner().invoke(cli, ["--db", str(db), "geometry", *args])


def test_every_measure_per_layer_from_a_store(lite0_mnist, tmp_path):
    """Real features (EfficientNet-Lite0 on MNIST) streamed from the FeatureStore: every
    registered measure runs at each layer, lands in the database and in the report."""
    from repscope.report import render_report
    from repscope.store import FeatureStore

    store = FeatureStore.open(lite0_mnist.store, verify="none")
    layers = [lite0_mnist.layers[4], lite0_mnist.layers[10]]
    res = geometry_layers(store, lite0_mnist.y, layers=layers, max_samples=300,
                          persistence=True, coding_rate=True)
    assert set(res.measures) == set(list_geometry_measures())
    assert res.n_samples == 1000 and res.n_pairwise == 300
    vals = np.asarray(res.values)
    assert vals.shape == (2, len(res.measures)) and np.isfinite(vals).all()
    # moments-based measures use every sample: equal to the function on the whole layer
    from repscope.geometry import fisher_ratio

    X = lite0_mnist.X[layers[-1]].astype(np.float64)
    assert res.value("fisher_ratio")[1] == pytest.approx(fisher_ratio(X, lite0_mnist.y), rel=1e-6)
    assert res.value("fisher_ratio")[1] > res.value("fisher_ratio")[0]  # deeper: more separable
    assert res.coding_rates is not None and res.persistence is not None
    assert res.coding_rates[1].rate_reduction > 2 * res.coding_rates[1].rate_reduction_shuffled
    records = res.to_records(model="lite0", dataset="mnist")
    assert {r.analysis for r in records} == {"geometry", "geometry_persistence",
                                             "geometry_coding_rate"}
    with ResultsDB(tmp_path / "r.db") as db:
        db.add_many(records)
        stored = db.query(analysis="geometry")
        assert [r.layer for r in stored] == layers
        assert stored[1].values["measures"]["fisher_ratio"] == pytest.approx(
            res.value("fisher_ratio")[1])
        html = render_report(db, tmp_path / "r.html").read_text()
    for sec in ("geometry", "geometry-persistence", "geometry-coding-rate"):
        assert f'id="sec-{sec}"' in html
    assert "could not be rendered" not in html
    assert "Supervised separability" in html and "<rect" in html  # panel + barcode
    assert f"value {res.value('fisher_ratio')[1]:.4g}" in html  # hover text of a point


def test_label_free_persistence_on_minilm(minilm_austen):
    """Persistence on L2-normalised MiniLM-L6 embeddings of Austen paragraphs, without labels:
    only label-free measures run."""
    layers = {name: minilm_austen.X[name] for name in minilm_austen.layers[-2:]}
    res = geometry_layers(layers, None, max_samples=600, persistence=True)
    assert all(geometry_info(m)["labels"] != "required" for m in res.measures)
    assert "persistence_entropy" in res.measures and "fisher_ratio" not in res.measures
    assert res.persistence is not None and res.persistence[0].normalized
    assert all(1.0 < p.max_ratio < 100 for p in res.persistence)
    with pytest.raises(RepscopeValueError, match="needs labels"):
        geometry_layers(layers, None, ["fisher_ratio"])


def test_every_measure_per_layer_on_minilm_austen_store(minilm_austen, tmp_path):
    """Real text features (MiniLM-L6 on Austen paragraphs, labelled by novel) streamed from
    their FeatureStore: every registered measure runs at each layer and lands in the
    database."""
    from repscope.store import FeatureStore

    assert minilm_austen.store is not None
    store = FeatureStore.open(minilm_austen.store, verify="none")
    layers = minilm_austen.layers[-2:]
    res = geometry_layers(store, minilm_austen.y, layers=layers, max_samples=400)
    assert set(res.measures) == set(list_geometry_measures())
    assert np.isfinite(np.asarray(res.values)).all()
    with ResultsDB(tmp_path / "r.db") as db:
        db.add_many(res.to_records(model="minilm-l6", dataset="austen"))
        assert [r.layer for r in db.query(analysis="geometry")] == list(layers)


def test_geometry_command(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    centres = rng.standard_normal((3, 8)) * 3
    np.save(tmp_path / "late.npy", (centres[y] + rng.standard_normal((120, 8))).astype(np.float32))
    np.save(tmp_path / "labels.npy", y)
    db = tmp_path / "r.db"
    feats = str(tmp_path / "late.npy")
    res = _run([feats, "--labels", str(tmp_path / "labels.npy"), "--measure", "fisher_ratio",
                "--measure", "silhouette", "--persistence", "--coding-rate", "--json"], db)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["measures"] == ["fisher_ratio", "silhouette"]
    assert out["values"][0][0] > 5
    assert "deaths" not in out["persistence"][0]
    with ResultsDB(db) as d:
        assert len(d.query(analysis="geometry")) == 1
        assert len(d.query(analysis="geometry_persistence")) == 1
        assert d.query(analysis="geometry_coding_rate")[0].values["rate_reduction"] > 0
    res = _run([feats, "--max-samples", "50"], db)  # label-free, subsampled
    assert res.exit_code == 0, res.output
    assert "O(n^2) measures on 50" in res.output and "fisher_ratio" not in res.output
    res = _run([feats, "--measure", "fisher_ratio"], db)
    assert res.exit_code == 1 and "needs labels (--labels)" in res.output
    res = _run([feats, "--coding-rate"], db)
    assert res.exit_code == 1 and "--coding-rate needs --labels" in res.output
    res = _run([feats, "--measure", "fisher_ratoi", "--labels", str(tmp_path / "labels.npy")], db)
    assert res.exit_code == 1 and "fisher_ratio" in res.output
    res = _run([feats, "--max-samples", "1"], db)
    assert res.exit_code == 1 and "--max-samples" in res.output
    res = _run(["--list"], db)
    assert res.exit_code == 0
    assert "persistence_entropy" in res.output and "higher: more separable classes" in res.output


def test_driver_refuses_large_n_without_a_subsample():
    X = np.zeros((50_001, 2), dtype=np.float32)
    with pytest.raises(RepscopeValueError, match="at most 50000 samples.*--max-samples 50000"):
        geometry_layers({"l": X}, None, ["persistence_entropy"])


def test_demo_step(lite0_mnist, tmp_path):
    from repscope.capability import DemoContext
    from repscope.geometry._demo import demo_geometry_step
    from repscope.store import FeatureStore

    store = FeatureStore.open(lite0_mnist.store, verify="none")
    with ResultsDB(tmp_path / "r.db") as db:
        ctx = DemoContext(stores={"lite0": store}, layers={"lite0": lite0_mnist.layers[8:10]},
                          labels=lite0_mnist.y, label_names=lite0_mnist.label_names,
                          inputs=None, ids=[], dataset="mnist", db=db, run_id="r", seed=0,
                          log=lambda _m: None, out=tmp_path)
        records = demo_geometry_step(ctx)
    geo = [r for r in records if r.analysis == "geometry"]
    assert [r.layer for r in geo] == lite0_mnist.layers[8:10]
    assert {"fisher_ratio", "coding_rate", "persistence_entropy"} <= set(geo[0].values["measures"])
    assert ("twonn" in geo[0].values["measures"]) == ("twonn" in list_geometry_measures())
    assert sum(r.analysis == "geometry_coding_rate" for r in records) == 2


def test_persistence_track_section(tmp_path):
    from repscope.geometry import track
    from repscope.report import render_report

    rng = np.random.default_rng(0)
    base = rng.standard_normal((80, 4))
    y = np.repeat([0, 1], 40)
    ckpts = {f"ckpt{i}": base + np.outer(y * s, np.eye(4)[0]) for i, s in enumerate((0, 3, 6, 6))}
    res = track(ckpts, tol=1e-3)
    with ResultsDB(tmp_path / "r.db") as db:
        db.add_many(res.to_records(model="m", dataset="d"))
        html = render_report(db, tmp_path / "r.html").read_text()
    assert 'id="sec-geometry-persistence-track"' in html
    assert "ckpt3" in html and "could not be rendered" not in html
