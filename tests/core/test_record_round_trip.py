"""Each result owns its record: result -> to_records -> database -> report section shows the
numbers, under the section its capability declares, for every recorded analysis."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.capability import section_for
from repscope.db import ResultsDB
from repscope.report import fmt, render_report


def _round_trip(tmp_path, result, **context):
    """Store ``result``'s records, read them back, render; returns (stored records, html)."""
    records = result.to_records(**context)
    assert records and all(r.analysis == type(result).analysis for r in records)
    with ResultsDB(tmp_path / "r.db") as db:
        run = db.start_run("test", {})
        db.add_many([r for r in records if r.run_id is None] or records)
        stored = list(db.query(analysis=type(result).analysis))
        html = render_report(db, tmp_path / "r.html").read_text()
    sec = section_for(type(result).analysis)
    assert sec is not None
    assert f'id="sec-{type(result).analysis.replace("_", "-")}"' in html
    assert "could not be rendered" not in html
    del run
    return stored, html


def _shows(html: str, value: float, digits: int = 3) -> None:
    assert fmt(value, digits) in html, (fmt(value, digits), value)


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    means = rng.standard_normal((3, 6)) * 2
    X = means[y] + rng.standard_normal((120, 6))
    return X, y


def test_probe_layerwise(tmp_path, blobs):
    from repscope.probe import KFold, RidgeProbe, probe_layers

    X, y = blobs
    res = probe_layers({"l1": X, "l2": X[:, :2]}, y, probe=RidgeProbe(), protocol=KFold(3, 0))
    stored, html = _round_trip(tmp_path, res, model="m", dataset="d", params={"probe": "ridge"})
    assert [r.layer for r in stored] == ["l1", "l2"]
    assert stored[0].values["accuracy"] == pytest.approx(res.accuracy[0])
    assert stored[1].values["ci_low"] == pytest.approx(res.ci_low[1])
    _shows(html, res.accuracy[1])


def test_few_shot_and_learning_curve(tmp_path, blobs):
    from repscope.probe import RidgeProbe, few_shot, learning_curve

    X, y = blobs
    fs = few_shot(RidgeProbe(), X, y, shots=(1, 5), n_tries=3, seed=0)
    stored, html = _round_trip(tmp_path / "fs", fs, model="m", layer="l1")
    assert stored[0].values["mean"] == pytest.approx(list(fs.mean))
    assert stored[0].layer == "l1"
    _shows(html, fs.mean[-1])
    lc = learning_curve(RidgeProbe(), X, y, [12, 30, 60], n_repeats=2, seed=0)
    stored, html = _round_trip(tmp_path / "lc", lc, model="m", layer="l1")
    assert stored[0].values["sizes"] == [12, 30, 60]
    _shows(html, lc.mean[-1])


def test_calibration(tmp_path, blobs):
    from repscope.probe import calibration_report

    rng = np.random.default_rng(1)
    Z = rng.standard_normal((200, 3)) * 3
    yv = Z.argmax(1)
    cal = calibration_report(Z[:100], yv[:100], Z[100:], yv[100:])
    stored, html = _round_trip(tmp_path, cal, model="m", layer="l1")
    assert stored[0].values["temperature"] == pytest.approx(cal.temperature)
    _shows(html, cal.ece_after)


def test_similarity_matrix(tmp_path, blobs):
    from repscope.similarity import compare_layers

    X, _ = blobs
    lm = compare_layers({"a1": X, "a2": X[:, :3]}, {"b1": X @ np.eye(6)[::-1], "b2": X ** 2})
    stored, html = _round_trip(tmp_path, lm, model_a="A", model_b="B", dataset="d")
    assert stored[0].model == "A vs B"
    np.testing.assert_allclose(stored[0].values["matrix"], lm.values)
    assert stored[0].values["best_matches"] == [list(b) for b in lm.best_matches]
    _shows(html, lm.best_matches[1][2])


def test_alignment(tmp_path, blobs):
    from repscope.align import evaluate_alignment

    X, _ = blobs
    rng = np.random.default_rng(2)
    Q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    ev = evaluate_alignment(X, X @ Q + 0.1 * rng.standard_normal(X.shape), n_train=80, seed=0,
                            retrieval_ks=(1, 5))
    stored, html = _round_trip(tmp_path, ev, model_a="A", model_b="B", layer_a="x",
                               layer_b="y", extra={"note": "n"})
    assert stored[0].model == "A vs B" and stored[0].layer == "x -> y"
    assert stored[0].values["note"] == "n"
    _shows(html, ev.retrieval[1])


def test_pca_spectrum(tmp_path, blobs):
    from repscope.stats import pca_spectrum

    X, _ = blobs
    spec = pca_spectrum(X)
    stored, html = _round_trip(tmp_path, spec, model="m", layer="l1")
    assert stored[0].values["effective_rank"] == pytest.approx(spec.effective_rank)
    _shows(html, spec.effective_rank)


def test_ood_layers_and_diagnostics(tmp_path, blobs):
    from repscope.ood import evaluate_detectors

    X, y = blobs
    keep = y < 2
    res = evaluate_detectors({"l1": X[keep], "l2": X[keep, :3]}, {"l1": X[~keep],
                             "l2": X[~keep, :3]}, labels=y[keep],
                             detectors=["mahalanobis", "energy"], folds=3)
    stored, html = _round_trip(tmp_path, res, model="m", dataset="d", params={"seed": 0})
    assert {(r.params["detector"], r.layer) for r in stored} == {
        (d, layer) for d in ("mahalanobis", "energy") for layer in ("l1", "l2")}
    e = res.get("mahalanobis", "l2")
    got = next(r for r in stored if r.params["detector"] == "mahalanobis" and r.layer == "l2")
    assert got.values["auroc"] == pytest.approx(e.metrics.auroc)
    assert got.values["hist_ood"] == list(e.hist_ood)
    _shows(html, e.metrics.auroc)
    stored, html = _round_trip(tmp_path / "d", res.diagnostics, model="m", dataset="d")
    assert [r.layer for r in stored] == ["l1", "l2"]
    _shows(html, res.diagnostics.separability_accuracy[0])


def test_extraction(tmp_path):
    from repscope.extract import ExtractionResult

    ex = ExtractionResult(n_samples=123, layers=("a", "b"), seconds=4.5, store="/x/s",
                          details={"resolution": 112})
    stored, html = _round_trip(tmp_path, ex, model="m", dataset="d")
    assert stored[0].values["resolution"] == 112
    assert "123" in html


def test_retired_analyses_still_render(tmp_path):
    """Databases written before ``separability`` and ``cka`` were retired render through the
    sections that replaced them, with the numbers."""
    from repscope.db import Record

    M = np.array([[0.91, 0.2], [0.3, 0.87]])
    recs = [Record("separability", {"accuracy": 0.8123, "accuracy_std": 0.01, "chance": 0.1},
                   model="m", layer="l1", params={"n_folds": 5}),
            Record("cka", {"matrix": M, "rows": ["r0", "r1"], "cols": ["c0", "c1"],
                           "model_a": "A", "model_b": "B"}, model="A vs B")]
    html = render_report(recs, tmp_path / "old.html").read_text()
    assert "retired analysis" in html and "could not be rendered" not in html
    assert "0.812" in html and "0.87" in html and "c1" in html


def test_low_rank_spectrum(tmp_path):
    import torch

    from repscope.nn import low_rank_spectrum

    torch.manual_seed(0)
    res = low_rank_spectrum(torch.nn.Linear(24, 16))
    stored, html = _round_trip(tmp_path, res, model="m", layer="fc")
    np.testing.assert_allclose(stored[0].values["singular_values"], res.singular_values)
    assert stored[0].values["n_components_90"] == res.n_components_90
    _shows(html, res.effective_rank)


def test_tucker(tmp_path):
    from repscope.nn import tucker

    X = np.random.default_rng(0).standard_normal((12, 6, 8))
    res = tucker(X, (3, 3, 4), n_iter=5)
    stored, html = _round_trip(tmp_path, res, model="m", layer="tokens",
                               params={"kind": "tokens"})
    assert stored[0].values["fit"] == pytest.approx(res.fit)
    _shows(html, res.fit)


def test_probe_margins(tmp_path, blobs):
    from repscope.probe import compare_margins

    X, y = blobs
    res = compare_margins(X, y, "cosface", test_size=0.3, seed=0)
    stored, html = _round_trip(tmp_path, res, model="m", layer="l1", params={"probe": "cosface"})
    assert stored[0].values["heads"]["softmax"]["accuracy"] == pytest.approx(
        res.heads["softmax"]["accuracy"])
    assert stored[0].values["n_test"] == res.n_test
    _shows(html, res.heads["cosface"]["margin_mean"])
