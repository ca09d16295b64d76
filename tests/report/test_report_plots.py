"""Plots and tables a reader understands (issue 12, item 17): intervals as bands, small
multiples beyond six lines, legends that wrap instead of being cut, probe kinds named in full,
hover text on every point, layer names on the x axis, and "—" with a reason instead of NaN.
Demo-like records, written through the result types' ``to_records`` as the commands write
them."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from repscope.align._report import render_alignment
from repscope.capability import kinds
from repscope.db import Record
from repscope.probe._report import render_probe, render_probe_learning_curve
from repscope.report import render_html, render_report
from repscope.report._sections import Missing, html_table
from repscope.report._svg import line_chart
from repscope.stats._report import render_pca_spectrum

LAYERS = ["_bn0", *(f"_blocks.{i}" for i in range(16)), "_bn1"]
KINDS = ("ridge", "lda", "nb", "logistic", "knn")


def _svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(s) for s in re.findall(r"<svg.*?</svg>", html, re.S)]


def _series_groups(svg: ET.Element) -> list[ET.Element]:
    return [g for g in svg.iter() if g.tag.endswith("g") and g.get("class") == "series"]


def _probe_records(make_probe, models=("efficientnet-lite0", "efficientnet-lite1"),
                   probes=("ridge", "knn"), layers=LAYERS):
    depth = np.linspace(0, 1, len(layers))
    recs = []
    for m, model in enumerate(models):
        for p, probe in enumerate(probes):
            acc = 0.2 + 0.7 * (1 - np.exp(-4 * depth)) - 0.02 * p + 0.01 * m
            recs += make_probe(layers, acc, probe=probe).to_records(
                model=model, dataset="mnist", params={"probe": probe, "n_folds": 3})
    return recs


def test_intervals_are_translucent_bands_not_dashed_lines(make_probe):
    html = render_probe(_probe_records(make_probe))
    bands = re.findall(r'<polygon class="band"[^>]*>', html)
    assert len(bands) == 4  # one per model and probe kind
    assert all('fill-opacity="0.18"' in b for b in bands)
    assert "stroke-dasharray" not in html
    assert "(95% low)" not in html and "(95% high)" not in html  # no interval "series"


def test_more_than_six_lines_become_small_multiples(make_probe):
    # 2 models x 5 probe kinds = 10 series: one panel per probe kind, a line per model
    html = render_probe(_probe_records(make_probe, probes=KINDS))
    svgs = _svgs(html)
    assert len(svgs) == 5
    assert 'class="chart panels"' in html
    for svg in svgs:
        assert len(_series_groups(svg)) == 2
    # 8 models of one probe kind: too many lines for one chart, one panel per model
    html = render_probe(_probe_records(make_probe, models=[f"m{i}" for i in range(8)],
                                       probes=("ridge",)))
    assert len(_svgs(html)) == 8


def test_every_point_has_hover_text_with_series_layer_value_and_interval(make_probe):
    recs = _probe_records(make_probe)
    html = render_probe(recs)
    circles = [c for svg in _svgs(html) for c in svg.iter() if c.tag.endswith("circle")]
    assert len(circles) == len(recs)
    for c in circles:
        title = c.find("title")
        assert title is not None
        text = title.text or ""
        assert re.search(r"efficientnet-lite[01] — layer _(bn[01]|blocks\.\d+): 0\.\d+ "
                         r"\(95% interval 0\.\d+–[01](\.\d+)?\)", text), text


def test_x_ticks_are_layer_names(make_probe):
    html = render_probe(_probe_records(make_probe))
    assert "relative depth" not in html
    for svg in _svgs(html):
        ticks = [t.text for t in svg.iter() if t.tag.endswith("text") and t.get("transform")
                 and "rotate(-40" in t.get("transform", "")]
        assert "_bn0" in ticks and any(t.startswith("_blocks.") for t in ticks)
        assert set(ticks) <= set(LAYERS)


def test_models_of_other_depths_share_a_named_axis(make_probe):
    """Lite1 has five more blocks than Lite0: once the x axis was "relative depth"."""
    lite1 = ["_bn0", *(f"_blocks.{i}" for i in range(21)), "_bn1"]
    recs = _probe_records(make_probe, models=("lite0",)) + _probe_records(
        make_probe, models=("lite1",), layers=lite1)
    html = render_probe(recs)
    assert "relative depth" not in html
    for svg in _svgs(html):
        labels = {t.text for t in svg.iter() if t.tag.endswith("text")}
        assert {"_bn0", "_bn1", "_blocks.20"} <= labels


def test_probe_kinds_are_named_in_full_from_the_registry(make_probe):
    html = render_probe(_probe_records(make_probe, probes=KINDS))
    registry = kinds("probe")
    for kind in KINDS:
        assert f"{kind} = {registry[kind].help}" in html, kind
    assert "Gaussian naive Bayes" in html  # "nb" is explained
    lc = [Record("probe_learning_curve", {"sizes": [20, 40, 80], "mean": [0.3, 0.5, 0.6],
                                          "ci_low": [0.2, 0.4, 0.5], "ci_high": [0.4, 0.6, 0.7]},
                 model="lite1", layer="_blocks.15", params={"probe": "nb"})]
    html = render_probe_learning_curve(lc)
    assert "nb = Gaussian naive Bayes" in html
    assert 'class="band"' in html


def test_long_legend_names_wrap_and_are_never_cut():
    long = "efficientnet-lite1 · nb @ _blocks.15 (90 training samples, seed 3, fold 2)"
    svg = line_chart({long: ([0, 1, 2], [0.1, 0.5, 0.9]), "short": ([0, 1, 2], [0.2, 0.3, 0.4])},
                     title="t", width=470)
    root = ET.fromstring(svg)
    assert "…" not in svg
    entries = [g for g in root.iter() if g.tag.endswith("g") and g.get("class") == "legend-entry"]
    assert len(entries) == 2
    text = next(t for t in entries[0].iter() if t.tag.endswith("text"))
    lines = [s.text for s in text]
    assert len(lines) > 1  # wrapped
    assert " ".join(lines) == long
    assert entries[0].find("title").text == long
    # the chart grows so that the legend fits
    assert float(root.get("height")) >= 14 * len(lines) + 30


def test_nan_cells_show_a_dash_with_the_reason():
    table = html_table(["layer", "accuracy", "p"],
                       [["a", float("nan"), Missing("not computed: constant features")],
                        ["b", np.float32("nan"), 0.5]])
    assert "NaN" not in table and "nan" not in table
    assert table.count("—") >= 3
    assert 'title="not computed"' in table
    assert 'title="not computed: constant features"' in table
    assert "not computed: constant features" in re.sub(r"<td[^>]*>.*?</td>", "", table)
    # two reasons: numbered marks, each explained once below the table
    assert "—¹" in table and "—²" in table


def test_no_nan_anywhere_in_a_demo_like_report(tmp_path, fill_db, make_probe):
    db = tmp_path / "results.db"
    fill_db(db)
    html = render_report(db, tmp_path / "r.html").read_text()
    recs = [Record("probe", {"accuracy": float("nan"), "ci_low": float("nan"),
                             "ci_high": float("nan"), "reason": "constant features"},
                   model="m", layer="l0", params={"probe": "ridge"}),
            Record("probe", {"accuracy": 0.7, "ci_low": 0.6, "ci_high": 0.8},
                   model="m", layer="l1", params={"probe": "ridge"}),
            Record("pca_spectrum", {"effective_rank": float("nan")}, model="m", layer="l0"),
            Record("alignment", {"retrieval": {"1": 0.9}, "retrieval_unmapped": {"1": 0.5},
                                 "cosine": 0.6, "cosine_unmapped": float("nan"), "r2": 0.3,
                                 "matching": float("nan"), "kernel_agreement": 0.7},
                   model="a vs b")]
    page = render_html(recs)
    for text in (html, page):
        assert not re.search(r">\s*NaN\s*<|>nan<", text)
    assert "not computed: constant features" in page
    assert "not computed: the two spaces have different widths" in render_alignment(recs[3:])
    assert "not applicable" in render_alignment(recs[3:])
    assert "—" in render_pca_spectrum(recs[2:3])
    generic = render_html([Record("mystery_metric", {"score": float("nan"),
                                                     "reason": "too few samples"}, model="m")])
    assert "not computed: too few samples" in generic and "NaN" not in generic


@pytest.mark.parametrize("n_points", [20, 500])
def test_long_curves_keep_hover_targets(n_points):
    y = np.linspace(0, 1, n_points)
    root = ET.fromstring(line_chart({"s": (np.arange(n_points), y)}, title="t",
                                    x_label="components"))
    circles = [c for c in root.iter() if c.tag.endswith("circle")]
    assert 0 < len(circles) <= 300
    assert all(c.find("title") is not None and "components" in c.find("title").text
               for c in circles)


def test_layer_table_lines_up_models_of_other_depths():
    lite1 = ["_bn0", *(f"_blocks.{i}" for i in range(21)), "_bn1"]
    recs = [Record("pca_spectrum", {"effective_rank": 1.0 + i}, model=m, layer=layer)
            for m, layers in (("lite0", LAYERS), ("lite1", lite1))
            for i, layer in enumerate(layers)]
    html = render_pca_spectrum(recs)
    table = html[html.index("<table"):]
    body = table[table.index("<tbody>"):table.index("</tbody>")]
    assert body.count("<tr>") == len(lite1)  # one row per layer, a column group per model
    n_metrics = 3  # effective rank, components for 90%, top component
    assert body.count('title="no such layer in this model"') == n_metrics * (len(lite1)
                                                                              - len(LAYERS))
    assert "not computed: no explained-variance ratios recorded" in html
    assert "relative depth" not in html
