"""The HTML report: sections, escaping, self-containment, inputs, failures."""

from __future__ import annotations

import re
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest

from repscope import __version__
from repscope.db import Record, ResultsDB
from repscope.exceptions import DataNotFoundError, RepscopeValueError
from repscope.report import (
    SECTIONS,
    ReportWarning,
    load_sections,
    register_section,
    render_html,
    render_report,
)

BUILT_IN = {
    "extraction": "Feature extraction",
    "separability": "Class separability by layer",
    "cka": "Layer-to-layer similarity (CKA)",
    "pca_spectrum": "PCA spectrum and effective rank",
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
    assert parsed.section_ids[0] == "sec-extraction"  # ordered by registered order
    assert parsed.section_ids[-1] == "sec-mystery-metric"
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
    sep = html[html.index('id="sec-separability"'):html.index('id="sec-cka"')]
    assert "Best layer per model" in sep
    assert "blocks.6" in sep
    cka = html[html.index('id="sec-cka"'):html.index('id="sec-pca-spectrum"')]
    assert "best-matching efficientnet_lite1 layer" in cka
    assert "linear_cka" in cka
    pca = html[html.index('id="sec-pca-spectrum"'):html.index('id="sec-mystery-metric"')]
    assert "Cumulative explained variance" in pca
    assert "effective rank" in pca
    generic = html[html.index('id="sec-mystery-metric"'):]
    assert "array 200 float64" in generic
    assert "0.42" in generic
    assert "{&quot;k&quot;: 5}" in generic


def test_render_from_records_and_run_filters(tmp_path, fill_db):
    db_path = tmp_path / "results.db"
    first = fill_db(db_path, seed=1)
    with ResultsDB(db_path) as db:
        second = db.start_run("probe")
        db.add(Record("only_in_second", {"v": 1.0}, run_id=second))
        db.finish_run(second)
        latest = render_report(db, tmp_path / "latest.html", run_id="latest").read_text()
        assert "only_in_second" in latest
        assert "Class separability" not in latest
        one = render_report(db, tmp_path / "first.html", run_id=first).read_text()
        assert "only_in_second" not in one
        assert "Class separability" in one
        every = render_report(db, tmp_path / "all.html").read_text()
        assert "only_in_second" in every
        assert "Class separability" in every
        recs = db.query(analysis="separability")
    from_list = render_report(recs, tmp_path / "list.html").read_text()
    assert "Class separability by layer" in from_list
    plain = [Record("separability", {"accuracy": 0.5 + i / 10, "accuracy_std": 0.01},
                    model="m", layer=f"l{i}") for i in range(3)]
    assert "Class separability by layer" in render_report(plain, tmp_path / "p.html").read_text()


def test_models_with_different_layers_use_relative_depth(tmp_path):
    recs = [Record("separability", {"accuracy": a, "accuracy_std": 0.0}, model="small",
                   layer=f"s{i}") for i, a in enumerate([0.5, 0.7])]
    recs += [Record("separability", {"accuracy": a, "accuracy_std": 0.0}, model="big",
                    layer=f"b{i}") for i, a in enumerate([0.4, 0.6, 0.8, 0.9])]
    html = render_html(recs)
    assert "relative depth" in html
    assert "Best layer per model" in html


def test_missing_values_do_not_break_sections():
    recs = [
        Record("separability", {"accuracy": float("nan")}, model="m", layer="a"),
        Record("separability", {"accuracy": None}, model="m", layer="b"),
        Record("pca_spectrum", {"effective_rank": 3.0}, model="m", layer="a"),
        Record("cka", {"matrix": np.full((2, 3), np.nan)}, model="m"),
        Record("extraction", {"layers": "all"}, model="m"),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReportWarning)
        html = render_html(recs)
    assert html.count("<section") == 4
    assert "could not be rendered" not in html


def test_a_failing_section_is_reported_and_the_rest_renders(tmp_path):
    @register_section("test_exploding_section", title="Exploding", order=1)
    def _boom(records):
        raise RuntimeError("kaboom <b>")

    try:
        recs = [Record("test_exploding_section", {"x": 1.0}),
                Record("separability", {"accuracy": 0.9}, model="m", layer="l")]
        with pytest.warns(ReportWarning, match="kaboom"):
            html = render_html(recs)
        assert "could not be rendered" in html
        assert "kaboom &lt;b&gt;" in html
        assert "Class separability by layer" in html
    finally:
        SECTIONS._entries.pop("test_exploding_section")


def test_registering_a_section_twice_is_refused():
    load_sections()
    with pytest.raises(RepscopeValueError, match="already registered"):
        register_section("separability", title="again")(lambda records: "")


def test_builtin_sections_are_registered_with_order_and_title():
    load_sections()
    for name, title in BUILT_IN.items():
        assert SECTIONS.meta(name)["title"] == title
        assert isinstance(SECTIONS.meta(name)["order"], int)


def test_empty_input_gives_a_page_saying_so():
    html = render_html([])
    assert "No results" in html
    assert "<nav" not in html


def test_missing_database_path_raises(tmp_path):
    with pytest.raises(DataNotFoundError, match="no results database"):
        render_report(tmp_path / "nope.db", tmp_path / "r.html")
    assert not (tmp_path / "nope.db").exists()


def test_sections_in_a_subpackage_report_module_are_discovered(tmp_path, monkeypatch):
    import sys

    import repscope

    pkg = tmp_path / "zz_fake_capability"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_report.py").write_text(
        "from repscope.report import register_section, html_table\n"
        "@register_section('zz_fake_analysis', title='Fake capability section', order=5)\n"
        "def _render(records):\n"
        "    return html_table(['layer'], [[r.layer] for r in records])\n"
    )
    monkeypatch.setattr(repscope, "__path__", [*repscope.__path__, str(tmp_path)])
    try:
        assert "repscope.zz_fake_capability._report" in load_sections()
        html = render_html([Record("zz_fake_analysis", {"x": 1}, layer="L7")])
        assert "<h2>Fake capability section</h2>" in html
        assert "<td>L7</td>" in html
    finally:
        SECTIONS._entries.pop("zz_fake_analysis", None)
        for name in ("repscope.zz_fake_capability._report", "repscope.zz_fake_capability"):
            sys.modules.pop(name, None)
