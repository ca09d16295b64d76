"""The SVG chart helpers: well-formed, accessible, escaped, robust to NaN and constant data."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from repscope.report import bar_chart, heatmap, line_chart, scatter
from repscope.report._svg import nice_ticks

EVIL = '<b onload="x">&"label'
NUMERIC_ATTRS = ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "r", "width", "height")


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML (escaping done right)
    assert root.tag == "svg"
    assert root.get("role") == "img"
    assert root[0].tag == "title"
    assert root[0].text
    for el in root.iter():
        for name in NUMERIC_ATTRS:
            if name in el.attrib:
                assert math.isfinite(float(el.attrib[name])), (el.tag, name, el.attrib[name])
        for name in ("points", "d"):
            if name in el.attrib:
                assert not re.search(r"nan|inf", el.attrib[name], re.I), el.attrib[name]
    assert "http://" not in svg
    assert "https://" not in svg
    return root


def _charts(values, labels):
    x = np.arange(len(values))
    return [
        line_chart({labels[0]: (x, values), labels[1]: (x, values[::-1])}, title=labels[0],
                   x_label=labels[1], y_label=labels[0]),
        line_chart({labels[0]: (x, values)}, title="cat", x_tick_labels=labels * len(values)),
        scatter({labels[0]: (values, x)}, title=labels[0]),
        bar_chart([labels[0]] * len(values), values, errors=np.ones(len(values)),
                  title=labels[0]),
        heatmap(np.outer(values, values), title=labels[0], row_labels=labels * 10,
                col_labels=labels * 10, row_title=labels[0], col_title=labels[1],
                colour_label=labels[0]),
    ]


@pytest.mark.parametrize(
    "values",
    [
        np.array([0.1, 0.5, 0.7, 0.9]),
        np.array([3.0, 3.0, 3.0, 3.0]),  # constant
        np.array([0.0, 0.0, 0.0]),  # constant zero
        np.array([0.2, np.nan, 0.4, np.inf, 0.8]),  # gaps
        np.array([np.nan, np.nan]),  # nothing finite
        np.array([]),  # empty
        np.array([1e-9, 2e-9, 5e-9]),  # tiny range
        np.array([-5e6, 2e7]),  # large values
    ],
    ids=["normal", "constant", "zeros", "nan", "all-nan", "empty", "tiny", "large"],
)
def test_every_chart_is_valid_svg_for_awkward_data(values):
    for svg in _charts(values, ["a", "b"]):
        _parse(svg)


def test_labels_are_escaped_everywhere():
    for svg in _charts(np.array([0.1, 0.2]), [EVIL, "<script>alert(1)</script>"]):
        _parse(svg)
        assert "<b " not in svg
        assert "<script" not in svg
        assert "&lt;b onload=&quot;x&quot;&gt;&amp;&quot;label" in svg


def test_nan_breaks_the_line_into_segments():
    svg = line_chart({"s": ([0, 1, 2, 3, 4, 5], [1, 2, np.nan, 3, 4, 5])}, title="t")
    root = _parse(svg)
    polylines = [el for el in root.iter("polyline")]
    assert len(polylines) == 2
    assert [len(p.get("points").split()) for p in polylines] == [2, 3]


def test_isolated_point_gets_a_marker_in_long_series():
    y = np.full(100, np.nan)
    y[:70] = np.linspace(0, 1, 70)
    y[90] = 1.0
    root = _parse(line_chart({"s": (np.arange(100), y)}, title="t"))
    circles = list(root.iter("circle"))
    visible = [c for c in circles if c.get("fill-opacity") != "0"]
    assert len(visible) == 1  # only the isolated point (series > 60 points)
    # every point keeps hover text: the others are invisible hover targets
    assert len(circles) == 71
    assert all(c.find("title") is not None for c in circles)


def test_all_nan_says_no_data():
    svg = line_chart({"s": ([0, 1], [np.nan, np.nan])}, title="t")
    assert "no finite data" in svg
    assert "no finite data" in heatmap(np.full((2, 2), np.nan), title="t")
    assert "no finite data" in bar_chart(["a"], [np.nan], title="t")


def test_bar_chart_marks_missing_values():
    svg = bar_chart(["a", "b", "c"], [1.0, np.nan, -2.0], title="bars")
    root = _parse(svg)
    assert "n/a" in svg
    assert len([r for r in root.iter("rect")]) == 2


def test_heatmap_draws_nan_cells_grey_and_a_colour_bar():
    m = np.array([[0.0, 0.5], [np.nan, 1.0]])
    svg = heatmap(m, title="cka", row_labels=["r0", "r1"], col_labels=["c0", "c1"], vmin=0,
                  vmax=1)
    root = _parse(svg)
    fills = [r.get("fill") for r in root.iter("rect")]
    assert "#d9d9d9" in fills  # the NaN cell
    assert "#440154" in fills
    assert "#fde725" in fills
    assert "grey: not computed" in svg
    assert "NaN" not in svg and "nan<" not in svg
    assert sum(1 for r in root.iter("rect") if r.find("title") is not None) == 4


def test_constant_heatmap_uses_one_colour():
    root = _parse(heatmap(np.full((3, 3), 0.7), title="flat"))
    cells = [r.get("fill") for r in root.iter("rect") if r.find("title") is not None]
    assert len(set(cells)) == 1


def test_log_axis_uses_decades_and_drops_non_positive_x():
    svg = line_chart({"s": (np.arange(0, 500), np.linspace(0, 1, 500))}, title="t", x_log=True)
    root = _parse(svg)
    texts = [t.text for t in root.iter("text")]
    assert {"1", "10", "100"} <= set(texts)


@pytest.mark.parametrize(("lo", "hi"), [(0, 1), (0.55, 0.97), (-3, 7), (5, 5), (1e-7, 3e-7),
                                        (0, 1234), (-1e6, 1e6)])
def test_nice_ticks_cover_the_range_with_round_steps(lo, hi):
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo
    assert ticks[-1] >= hi
    assert 2 <= len(ticks) <= 12
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    assert any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 2.5, 5, 10))
