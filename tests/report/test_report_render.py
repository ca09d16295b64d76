"""The HTML report: sections (declared by capabilities), escaping, self-containment, inputs,
failures, and databases holding records of retired analyses."""

from __future__ import annotations

import re
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest

from repscope import __version__
from repscope import capability as cap_mod
from repscope.capability import Capability, Section, capabilities, section_for, sections
from repscope.db import Record, ResultsDB
from repscope.exceptions import DataNotFoundError
from repscope.report import ReportWarning, render_html, render_report

BUILT_IN = {
    "extraction": "Feature extraction",
    "probe": "Probe accuracy by layer",
    "similarity_matrix": "Layer-to-layer similarity",
    "pca_spectrum": "PCA spectrum and effective rank",
}
#: Sections of retired analyses (records of databases written before they were retired).
RETIRED = {
    "separability": "Class separability by layer (retired analysis)",
    "cka": "Layer-to-layer CKA (retired analysis)",
}


class _Tags(HTMLParser):
    """Counts open/close tags and collects section ids and TOC links."""

    VOID = frozenset({"meta", "br", "img", "input", "hr", "link", "circle", "line", "rect", "path",
            "polyline"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.section_ids: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.section_ids.append(a.get("id", ""))
        if tag == "a":
            self.links.append(a.get("href", ""))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.add(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()


def _parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    p.close()
    return p


def test_report_renders_every_builtin_section_and_the_unknown_one(demo_db, tmp_path):
    db_path, run_id = demo_db
    out = render_report(db_path, tmp_path / "out" / "report.html", title="Demo report")
    html = out.read_text(encoding="utf-8")
    for title in BUILT_IN.values():
        assert f"<h2>{title}</h2>" in html
    assert "<h2>mystery_metric</h2>" in html  # generic section for the unknown analysis
    parsed = _parse(html)
    assert not parsed.errors
    assert not parsed.stack
    assert len(parsed.section_ids) == 5
    assert len(set(parsed.section_ids)) == 5
    assert {f"#{s}" for s in parsed.section_ids} <= set(parsed.links)  # table of contents
    # ordered by the declared orders; the generic section last
    assert parsed.section_ids == ["sec-extraction", "sec-probe", "sec-similarity-matrix",
                                  "sec-pca-spectrum", "sec-mystery-metric"]
    assert html.count('<svg class="chart" role="img"') >= 4
    assert "<title>Demo report</title>" in html
    assert f"repscope</dt><dd>{__version__}" in html
    assert run_id in html
    assert "efficientnet_lite1" in html
    assert "mnist-digits (sklearn)" in html
    assert "<td>demo</td>" in html  # the command


def test_report_is_self_contained(demo_db, tmp_path):
    html = render_report(demo_db[0], tmp_path / "r.html").read_text(encoding="utf-8")
    assert re.search(r"https?://", html) is None
    assert re.search(r"<script|<link|<img|<iframe|@import|url\(", html, re.I) is None
    assert "Content-Security-Policy" in html
    assert "default-src 'none'" in html


def test_data_strings_are_escaped(hostile_db, tmp_path):
    html = render_report(hostile_db[0], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script>alert" not in html
    assert re.search(r"<script", html, re.I) is None
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not _parse(html).errors


def test_builtin_section_contents(demo_db, tmp_path):
    html = render_report(demo_db[0], tmp_path / "r.html").read_text(encoding="utf-8")
    probe = html[html.index('id="sec-probe"'):html.index('id="sec-similarity-matrix"')]
    assert "Best layer per model and probe" in probe
    assert "blocks.6" in probe
    # one chart per probe kind, named in full from the kinds' registry
    assert "<title>logistic probe (softmax regression): accuracy by layer</title>" in probe
    for model in ("efficientnet_lite0", "efficientnet_lite1"):  # one series per model
        assert f"<title>{model}</title>" in probe
    sim = html[html.index('id="sec-similarity-matrix"'):html.index('id="sec-pca-spectrum"')]
    assert "best-matching efficientnet_lite1 layer" in sim
    assert "linear_cka" in sim
    pca = html[html.index('id="sec-pca-spectrum"'):html.index('id="sec-mystery-metric"')]
    assert "Cumulative explained variance" in pca
    assert "effective rank" in pca
    generic = html[html.index('id="sec-mystery-metric"'):]
    assert "array 200 float64" in generic
    assert "0.42" in generic
    assert "{&quot;k&quot;: 5}" in generic


def test_render_from_records_and_run_filters(tmp_path, fill_db, make_probe):
    db_path = tmp_path / "results.db"
    first = fill_db(db_path, seed=1)
    with ResultsDB(db_path) as db:
        second = db.start_run("probe")
        db.add(Record("only_in_second", {"v": 1.0}, run_id=second))
        db.finish_run(second)
        latest = render_report(db, tmp_path / "latest.html", run_id="latest").read_text()
        assert "only_in_second" in latest
        assert "Probe accuracy by layer" not in latest
        one = render_report(db, tmp_path / "first.html", run_id=first).read_text()
        assert "only_in_second" not in one
        assert "Probe accuracy by layer" in one
        every = render_report(db, tmp_path / "all.html").read_text()
        assert "only_in_second" in every
        assert "Probe accuracy by layer" in every
        recs = db.query(analysis="probe")
    from_list = render_report(recs, tmp_path / "list.html").read_text()
    assert "Probe accuracy by layer" in from_list
    plain = make_probe([f"l{i}" for i in range(3)], [0.5 + i / 10 for i in range(3)]).to_records(
        model="m", params={"probe": "ridge"})
    assert "Probe accuracy by layer" in render_report(plain, tmp_path / "p.html").read_text()


def test_models_with_different_layers_get_a_panel_each_with_their_layer_names(make_probe):
    params = {"probe": "ridge"}
    recs = make_probe(["s0", "s1"], [0.5, 0.7]).to_records(model="small", params=params)
    recs += make_probe([f"b{i}" for i in range(4)], [0.4, 0.6, 0.8, 0.9]).to_records(
        model="big", params=params)
    html = render_html(recs)
    assert "relative depth" not in html
    probe = html[html.index('id="sec-probe"'):]
    svgs = re.findall(r"<svg.*?</svg>", probe, re.S)
    assert len(svgs) == 2
    ticks = [re.findall(r"<text [^>]*>([^<]*)</text>", s) for s in svgs]
    assert {"s0", "s1"} <= set(ticks[0]) and "b0" not in ticks[0]
    assert {"b0", "b1", "b2", "b3"} <= set(ticks[1])
    assert "Best layer per model" in html


def test_models_of_one_family_share_a_layer_axis(make_probe):
    """Lite0's layers are a subset of Lite1's: one axis of layer names, no relative depth."""
    lite0 = ["_bn0", *(f"_blocks.{i}" for i in range(16)), "_bn1"]
    lite1 = ["_bn0", *(f"_blocks.{i}" for i in range(21)), "_bn1"]
    params = {"probe": "ridge"}
    recs = make_probe(lite0, np.linspace(0.5, 0.9, 18)).to_records(model="lite0", params=params)
    recs += make_probe(lite1, np.linspace(0.5, 0.95, 23)).to_records(model="lite1",
                                                                      params=params)
    html = render_html(recs)
    probe = html[html.index('id="sec-probe"'):]
    svgs = re.findall(r"<svg.*?</svg>", probe, re.S)
    assert len(svgs) == 1
    assert "relative depth" not in html
    ticks = re.findall(r"<text [^>]*>([^<]*)</text>", svgs[0])
    assert "_bn0" in ticks and "_bn1" in ticks and "_blocks.20" in ticks


def test_missing_values_do_not_break_sections():
    recs = [
        Record("probe", {"accuracy": float("nan")}, model="m", layer="a"),
        Record("probe", {"accuracy": None}, model="m", layer="b"),
        Record("pca_spectrum", {"effective_rank": 3.0}, model="m", layer="a"),
        Record("similarity_matrix", {"matrix": np.full((2, 3), np.nan)}, model="m"),
        Record("extraction", {"layers": "all"}, model="m"),
        # the same gaps in records of the retired analyses
        Record("separability", {"accuracy": float("nan")}, model="m", layer="a"),
        Record("cka", {"matrix": np.full((2, 3), np.nan)}, model="m"),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReportWarning)
        html = render_html(recs)
    assert html.count("<section") == 6
    assert "could not be rendered" not in html


def _explode(records):
    raise RuntimeError("kaboom <b>")


def test_a_failing_section_is_reported_and_the_rest_renders(monkeypatch, make_probe):
    boom = Capability("test_exploding", sections=(
        Section("test_exploding_section", "Exploding", order=1, render=f"{__name__}:_explode"),))
    monkeypatch.setattr(cap_mod, "_cache", {**capabilities(), boom.name: boom})
    recs = [Record("test_exploding_section", {"x": 1.5}),
            *make_probe(["l"], [0.9]).to_records(model="m")]
    with pytest.warns(ReportWarning, match="kaboom"):
        html = render_html(recs)
    assert "could not be rendered" in html
    assert "kaboom &lt;b&gt;" in html
    assert '<td class="num">1.500</td>' in html  # its records fall back to the generic table
    assert "Probe accuracy by layer" in html


def test_builtin_sections_are_declared_with_order_and_title():
    for name, title in {**BUILT_IN, **RETIRED}.items():
        sec = section_for(name)
        assert sec is not None, name
        assert sec.title == title
        assert isinstance(sec.order, int)
    # the retired analyses come after every current section
    current = [s.order for s in sections().values() if s.analysis not in RETIRED]
    assert max(current) < section_for("separability").order < section_for("cka").order
    assert section_for("mystery_metric") is None  # an undeclared analysis: the generic table


def test_a_legacy_database_renders_its_retired_analyses(legacy_db, tmp_path, fill_db,
                                                        make_probe):
    """A database written before ``separability`` and ``cka`` were retired: their records
    render through the sections that replaced them, labelled, naming today's commands."""
    db_path, run_id = legacy_db
    html = render_report(db_path, tmp_path / "legacy.html", run_id=run_id).read_text()
    parsed = _parse(html)
    assert not parsed.errors
    assert not parsed.stack
    assert parsed.section_ids == ["sec-extraction", "sec-pca-spectrum", "sec-separability",
                                  "sec-cka", "sec-mystery-metric"]
    for title in RETIRED.values():
        assert f"<h2>{title}</h2>" in html
    assert "could not be rendered" not in html
    sep = html[html.index('id="sec-separability"'):html.index('id="sec-cka"')]
    assert "repscope probe FEATURES --labels label --probe logistic" in sep
    assert "Best layer per model and probe" in sep
    assert "blocks.6" in sep
    cka = html[html.index('id="sec-cka"'):html.index('id="sec-mystery-metric"')]
    assert "repscope similarity FEATURES_A FEATURES_B --measure linear_cka" in cka
    assert "best-matching efficientnet_lite1 layer" in cka
    # the best match of each row is read off the stored matrix (its diagonal dominates)
    for layer in ("stem", "blocks.3", "conv_head"):
        assert f"<tr><td>{layer}</td><td>{layer}</td>" in cka
    # the database gets a run of the analyses that replaced them: both render, current first
    with ResultsDB(db_path) as db:
        new = db.start_run("probe")
        db.add_many(make_probe(["stem", "blocks.0"], [0.4, 0.6]).to_records(
            model="efficientnet_lite0", run_id=new, params={"probe": "logistic"}))
        db.finish_run(new)
    ids = _parse(render_report(db_path, tmp_path / "both.html").read_text()).section_ids
    assert ids.index("sec-probe") < ids.index("sec-separability") < ids.index("sec-cka")
    # strings from a legacy database are escaped too
    hostile = tmp_path / "hostile-legacy" / "results.db"
    fill_db(hostile, hostile=True, legacy=True)
    html = render_report(hostile, tmp_path / "h.html").read_text()
    assert re.search(r"<script", html, re.I) is None
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not _parse(html).errors


def test_empty_input_gives_a_page_saying_so():
    html = render_html([])
    assert "No results" in html
    assert "<nav" not in html


def test_missing_database_path_raises(tmp_path):
    with pytest.raises(DataNotFoundError, match="no results database"):
        render_report(tmp_path / "nope.db", tmp_path / "r.html")
    assert not (tmp_path / "nope.db").exists()


def test_a_section_declared_in_a_subpackage_capability_is_discovered(tmp_path, monkeypatch):
    import sys

    import repscope

    pkg = tmp_path / "zz_fake_capability"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_capability.py").write_text(
        "from repscope.capability import Capability, Section\n"
        "CAPABILITY = Capability('zz_fake', sections=(Section(\n"
        "    'zz_fake_analysis', 'Fake capability section', order=5,\n"
        "    render='repscope.zz_fake_capability._report:render'),))\n"
    )
    (pkg / "_report.py").write_text(
        "from repscope.report import html_table\n"
        "def render(records):\n"
        "    return html_table(['layer'], [[r.layer] for r in records])\n"
    )
    monkeypatch.setattr(repscope, "__path__", [*repscope.__path__, str(tmp_path)])
    modules = ("repscope.zz_fake_capability._report", "repscope.zz_fake_capability._capability",
               "repscope.zz_fake_capability")
    try:
        assert "zz_fake" in capabilities(reload=True)
        assert modules[0] not in sys.modules  # the renderer is imported when first used
        html = render_html([Record("zz_fake_analysis", {"x": 1}, layer="L7")])
        assert "<h2>Fake capability section</h2>" in html
        assert "<td>L7</td>" in html
    finally:
        monkeypatch.undo()
        capabilities(reload=True)
        for name in modules:
            sys.modules.pop(name, None)
