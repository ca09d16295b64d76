"""Built-in report sections, one module per analysis; every module here is imported by
:func:`repscope.report.render_report`. Capabilities outside ``report/`` register theirs in a
``repscope/<package>/_report.py`` module, which is discovered the same way."""
