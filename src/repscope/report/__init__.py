"""Results -> one self-contained HTML report (inline SVG plots, no scripts, no network).

The report only renders stored records; it never recomputes a measure. Each analysis gets the
section its capability declares (:class:`repscope.capability.Section`, imported only when its
records are shown), and records of an analysis without a section get a generic table.

.. code-block:: python

    from repscope.report import render_report

    render_report(db, "report.html", title="Demo", run_id=run_id)
"""

from repscope.report._common import as_float
from repscope.report._render import (
    ReportWarning,
    render_generic,
    render_html,
    render_report,
)
from repscope.report._sections import (
    Html,
    SectionRenderer,
    esc,
    figure,
    fmt,
    html_table,
    latest_per,
    ordered_unique,
    series_labels,
)
from repscope.report._svg import bar_chart, heatmap, line_chart, scatter

__all__ = [
    "Html",
    "ReportWarning",
    "SectionRenderer",
    "as_float",
    "bar_chart",
    "esc",
    "figure",
    "fmt",
    "heatmap",
    "html_table",
    "latest_per",
    "line_chart",
    "ordered_unique",
    "render_generic",
    "render_html",
    "render_report",
    "scatter",
    "series_labels",
]
