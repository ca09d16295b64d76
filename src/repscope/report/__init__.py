"""Results -> one self-contained HTML report (inline SVG plots, no scripts, no network).

The report only renders stored records; it never recomputes a measure. Each analysis gets the
section registered for its name; capabilities add theirs with :func:`register_section` in a
``repscope/<package>/_report.py`` module (found automatically), and records of an analysis
without a section get a generic table.

.. code-block:: python

    from repscope.report import render_report

    render_report(db, "report.html", title="Demo", run_id=run_id)
"""

from repscope.report._render import (
    ENTRY_POINT_GROUP,
    ReportWarning,
    load_sections,
    render_generic,
    render_html,
    render_report,
)
from repscope.report._sections import (
    SECTIONS,
    Html,
    SectionRenderer,
    esc,
    figure,
    fmt,
    html_table,
    latest_per,
    ordered_unique,
    register_section,
    series_labels,
)
from repscope.report._svg import bar_chart, heatmap, line_chart, scatter

__all__ = [
    "ENTRY_POINT_GROUP",
    "SECTIONS",
    "Html",
    "ReportWarning",
    "SectionRenderer",
    "bar_chart",
    "esc",
    "figure",
    "fmt",
    "heatmap",
    "html_table",
    "latest_per",
    "line_chart",
    "load_sections",
    "ordered_unique",
    "register_section",
    "render_generic",
    "render_html",
    "render_report",
    "scatter",
    "series_labels",
]
