"""Records -> one self-contained HTML page (inline CSS and SVG; no scripts, no network)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import traceback
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repscope._io import atomic_path
from repscope._version import __version__
from repscope.db._database import ResultsDB
from repscope.db._records import RecordLike, RunInfo
from repscope.exceptions import DataNotFoundError, RepscopeTypeError
from repscope.report._sections import (
    Html,
    esc,
    fmt,
    html_table,
    ordered_unique,
)

__all__ = ["ReportWarning", "render_generic", "render_html", "render_report"]

_GENERIC_ORDER = 1000
_MAX_GENERIC_ROWS = 500


class ReportWarning(UserWarning):
    """A section could not be rendered (its records then get the generic table)."""


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, k = f"sec-{base}", 2
    while slug in used:
        slug, k = f"sec-{base}-{k}", k + 1
    used.add(slug)
    return slug


def _summarise(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, (bool, int, float, str, np.generic)) or value is None:
        return value
    return fmt(value)


def _cell(r: RecordLike, key: str) -> Any:
    """A generic table cell: the summarised value; NaN as "—" with the record's reason."""
    if key not in r.values:
        return None
    v = _summarise(r.values[key])
    if isinstance(v, (float, np.floating)) and np.isnan(v):
        from repscope.report._common import missing

        return missing(r)
    return v


def render_generic(records: Sequence[RecordLike]) -> str:
    """The fallback section: one table row per record, one column per value."""
    value_keys = ordered_unique(k for r in records for k in r.values)
    with_params = any(r.params for r in records)
    runs = ordered_unique(r.run_id for r in records)
    headers = ["model", "dataset", "layer", *value_keys]
    if with_params:
        headers.append("params")
    if len(runs) > 1:
        headers.append("run")
    rows = []
    for r in records[:_MAX_GENERIC_ROWS]:
        row: list[Any] = [r.model or "—", r.dataset or "—", r.layer or "—"]
        row += [_cell(r, k) for k in value_keys]
        if with_params:
            row.append(fmt(dict(r.params)) if r.params else "—")
        if len(runs) > 1:
            row.append(r.run_id or "—")
        rows.append(row)
    note = ""
    if len(records) > _MAX_GENERIC_ROWS:
        note = f"<p class=\"note\">Showing the first {_MAX_GENERIC_ROWS} of {len(records)}.</p>"
    return html_table(headers, rows) + note


def _collect(
    records_or_db: Any, run_id: str | Sequence[str] | None
) -> tuple[list[RecordLike], dict[str, RunInfo]]:
    db: ResultsDB | None = None
    close = False
    if isinstance(records_or_db, ResultsDB):
        db = records_or_db
    elif isinstance(records_or_db, (str, os.PathLike)):
        path = Path(records_or_db)
        if not path.is_file():
            raise DataNotFoundError(
                f"no results database at {path}. Pass the path of an existing results.db "
                "(run an analysis first), a ResultsDB, or a list of records."
            )
        db, close = ResultsDB(path), True
    try:
        if db is not None:
            if run_id == "latest":
                latest = db.latest_run()
                run_id = latest.id if latest else None
            records: list[RecordLike] = list(db.query(run_id=run_id))
            runs = {}
            for rid in ordered_unique(r.run_id for r in records):
                if rid:
                    with contextlib.suppress(KeyError):
                        runs[rid] = db.get_run(rid)
            return records, runs
        if not isinstance(records_or_db, Iterable):
            raise RepscopeTypeError(
                f"render_report needs a ResultsDB, a database path or records; got "
                f"{type(records_or_db).__name__}."
            )
        records = list(records_or_db)
        if run_id is not None and run_id != "latest":
            wanted = {run_id} if isinstance(run_id, str) else set(run_id)
            records = [r for r in records if r.run_id in wanted]
        return records, {}
    finally:
        if close and db is not None:
            db.close()


def _when(iso: str) -> str:
    try:
        moment = _dt.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _header(title: str, records: Sequence[RecordLike], runs: dict[str, RunInfo]) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    models = ordered_unique(r.model for r in records if r.model)
    datasets = ordered_unique(r.dataset for r in records if r.dataset)
    facts = [("repscope", __version__), ("generated", now), ("records", str(len(records))),
             ("models", ", ".join(models) or "—"), ("datasets", ", ".join(datasets) or "—")]
    dl = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in facts)
    out = [f'<header class="page-head"><h1>{esc(title)}</h1><dl class="facts">{dl}</dl>']
    if runs:
        rows = [[Html(f'<code class="nowrap">{esc(r.id)}</code>'), r.command, r.status,
                 Html(f'<span class="nowrap">{esc(_when(r.created))}</span>'),
                 r.model or "—", r.dataset or "—", r.host, r.version, r.n_records]
                for r in runs.values()]
        out.append(html_table(["run", "command", "status", "started", "model", "dataset",
                               "host", "repscope", "records"], rows, caption="Runs",
                              css_class="runs"))
    out.append("</header>")
    return "".join(out)


_CSS = """
:root{--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#ffffff;--panel:#f8fafc;
--accent:#4477aa}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:#f3f4f6;color:var(--fg);font:15px/1.55 system-ui,-apple-system,
"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",sans-serif}
.page{max-width:1080px;margin:0 auto;padding:32px 28px 48px;background:var(--bg);
min-height:100vh;box-shadow:0 0 0 1px var(--line)}
h1{font-size:1.9rem;margin:0 0 .4rem;letter-spacing:-.01em}
h2{font-size:1.3rem;margin:0 0 .3rem;padding-bottom:.35rem;border-bottom:2px solid var(--accent)}
.facts{display:flex;flex-wrap:wrap;gap:.3rem 1.6rem;margin:.6rem 0 1rem;color:var(--muted);
font-size:.9rem}
.facts div{display:flex;gap:.4rem}.facts dt{font-weight:600}.facts dd{margin:0;color:var(--fg)}
nav.toc{background:var(--panel);border:1px solid var(--line);border-radius:8px;
padding:.8rem 1.2rem;margin:1.2rem 0 1.6rem}
nav.toc h2{font-size:1rem;border:0;margin:0 0 .3rem;padding:0}
nav.toc ol{margin:0;padding-left:1.3rem;columns:2;column-gap:2rem}
nav.toc li{margin:.15rem 0}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.count{color:var(--muted);font-size:.85em}
section{margin:2.2rem 0;scroll-margin-top:1rem}
.desc{color:var(--muted);margin:.2rem 0 1rem;max-width:75ch}
.source{color:var(--muted);font-size:.8rem;margin-top:.6rem}
figure.chart{margin:1rem 0 1.2rem;padding:12px;border:1px solid var(--line);border-radius:8px;
overflow-x:auto}
figure.chart svg{display:block;margin:0 auto}
.panel-grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:10px}
td.na{color:var(--muted);text-align:center;cursor:help}.table-note{margin:-.4rem 0 .8rem}
figcaption{color:var(--muted);font-size:.88rem;margin-top:.4rem;text-align:center}
.table-wrap{overflow-x:auto;margin:.8rem 0}
table{border-collapse:collapse;width:100%;font-size:.9rem}
caption{text-align:left;font-weight:600;padding:.2rem 0 .45rem;color:var(--fg)}
th,td{border:1px solid var(--line);padding:.38rem .6rem;text-align:left;vertical-align:top}
th{background:var(--panel);font-weight:600}
th.group{text-align:center;border-bottom-color:#cbd5e1}
tbody tr:nth-child(even){background:#fbfcfd}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.86em;
background:var(--panel);padding:.05rem .3rem;border-radius:4px;word-break:break-all}
.nowrap{white-space:nowrap;word-break:normal}
details{margin:.6rem 0}summary{cursor:pointer;color:var(--accent)}
ul.layers{margin:.3rem 0;padding-left:1.2rem;columns:2}
.block+.block{margin-top:1.6rem}
.run-block{margin:1.2rem 0 1.8rem;padding-left:.9rem;border-left:3px solid var(--line)}
h3.run-head{font-size:1rem;margin:0 0 .4rem}.run-fact{color:var(--muted);font-weight:400}
.warn,.error{background:#fff7ed;border:1px solid #fed7aa;border-radius:6px;padding:.6rem .8rem}
.error pre{white-space:pre-wrap;font-size:.8rem;margin:.4rem 0 0}
.note{color:var(--muted);font-size:.88rem}
footer{margin-top:3rem;padding-top:1rem;border-top:1px solid var(--line);color:var(--muted);
font-size:.85rem}
@media print{body{background:#fff}.page{box-shadow:none;max-width:none}}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _render_section(name: str, sec: Any, recs: Sequence[RecordLike]) -> str:
    """The section's fragment, or an error note plus the generic table when it fails."""
    try:
        return str(sec.renderer()(recs)) if sec is not None else render_generic(recs)
    except Exception as err:
        warnings.warn(f"report section {name!r} failed: {err!r}", ReportWarning, stacklevel=3)
        tb = "".join(traceback.format_exception_only(type(err), err))
        return (f'<div class="error"><strong>This section could not be rendered.'
                f"</strong><pre>{esc(tb)}</pre></div>" + render_generic(recs))


def _run_order(records: Sequence[RecordLike], runs: Mapping[str, RunInfo]) -> list[str | None]:
    """The runs of ``records``, newest first (by the run's start, else its newest record);
    records without a run come last."""
    newest: dict[str | None, str] = {}
    for r in records:
        rid = r.run_id or None
        info = runs.get(rid) if rid else None
        created = info.created if info is not None else r.created
        newest[rid] = max(newest.get(rid, ""), str(created or ""))
    return sorted(newest, key=lambda rid: (rid is not None, newest[rid]), reverse=True)


def _run_heading(run_id: str | None, runs: Mapping[str, RunInfo]) -> str:
    if run_id is None:
        return '<h3 class="run-head">Records without a run</h3>'
    info = runs.get(run_id)
    facts = []
    if info is not None:
        facts = [info.command, f"started {_when(info.created)}"]
        facts += [x for x in (info.model, info.dataset) if x]
    tail = "".join(f' <span class="run-fact">· {esc(f)}</span>' for f in facts if f)
    return f'<h3 class="run-head">Run <code class="nowrap">{esc(run_id)}</code>{tail}</h3>'


def render_html(
    records: Sequence[RecordLike],
    *,
    title: str = "repscope report",
    runs: dict[str, RunInfo] | None = None,
) -> str:
    """The report page for ``records`` as a string (see :func:`render_report`)."""
    from repscope.capability import section_for

    by_analysis: dict[str, list[RecordLike]] = {}
    for r in records:
        by_analysis.setdefault(r.analysis, []).append(r)
    first = {name: i for i, name in enumerate(by_analysis)}
    declared = {name: section_for(name) for name in by_analysis}

    def order(name: str) -> tuple[int, int]:
        sec = declared[name]
        return (sec.order if sec is not None else _GENERIC_ORDER, first[name])

    runs = dict(runs or {})
    run_order = _run_order(records, runs)
    several_runs = len(run_order) > 1
    used: set[str] = set()
    toc, body = [], []
    for name in sorted(by_analysis, key=order):
        recs = by_analysis[name]
        sec = declared[name]
        sec_title = sec.title if sec is not None else name
        slug = _slug(name, used)
        if several_runs:  # one block per run: two runs are never drawn as one series
            blocks = []
            for rid in run_order:
                part = [r for r in recs if r.run_id == rid]
                if part:
                    blocks.append(f'<div class="run-block">{_run_heading(rid, runs)}'
                                  f"{_render_section(name, sec, part)}</div>")
            fragment = "".join(blocks)
        else:
            fragment = _render_section(name, sec, recs)
        desc = sec.description if sec is not None else ""
        body.append(
            f'<section id="{slug}"><h2>{esc(sec_title)}</h2>'
            + (f'<p class="desc">{esc(desc)}</p>' if desc else "")
            + fragment
            + f'<p class="source">{len(recs)} record{"s" if len(recs) != 1 else ""} of '
            f"analysis <code>{esc(name)}</code></p></section>"
        )
        toc.append(f'<li><a href="#{slug}">{esc(sec_title)}</a> '
                   f'<span class="count">({len(recs)})</span></li>')
    if not body:
        body.append('<section id="sec-empty"><h2>No results</h2><p class="note">There are no '
                    "records to show. Run an analysis first.</p></section>")
    nav = (f'<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>{"".join(toc)}</ol>'
           "</nav>") if toc else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="repscope {esc(__version__)}">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><main class=\"page\">"
        + _header(title, records, {rid: runs[rid] for rid in run_order if rid in runs})
        + nav
        + "\n".join(body)
        + f"<footer>Made by repscope {esc(__version__)}. The report only shows stored results;"
        " it computes nothing. Open it offline: it loads no scripts, fonts or images.</footer>"
        "</main></body></html>\n"
    )


def render_report(
    records_or_db: ResultsDB | str | os.PathLike[str] | Iterable[RecordLike],
    path: str | os.PathLike[str],
    *,
    title: str = "repscope report",
    run_id: str | Sequence[str] | None = None,
    runs: Mapping[str, RunInfo] | None = None,
) -> Path:
    """Render records into one self-contained HTML file.

    Parameters
    ----------
    records_or_db : ResultsDB, path-like or iterable of records
        A database (or the path of an existing ``results.db``), or records
        (:class:`~repscope.db.StoredRecord` or :class:`~repscope.db.Record`).
    path : path-like
        The HTML file to write (folders are created).
    title : str, default="repscope report"
        Page title.
    run_id : str, sequence of str or None, default=None
        Only records of these runs; ``"latest"`` means the newest run in the database;
        ``None`` renders every record given.
    runs : mapping of run id to RunInfo, optional
        The runs of ``records`` (for the header's run table), when records are given; a
        database supplies them itself.

    Returns
    -------
    Path
        ``path``.

    Notes
    -----
    When the records come from more than one run, every section shows one block per run
    (newest first, headed by the run's id, command and start), so the same model in two
    runs is never drawn or tabulated as one series.

    Each analysis gets the section its capability declares for its name
    (:class:`~repscope.capability.Section`, imported only when its records are shown), or a
    generic table. Plots are inline SVG;
    there are no scripts and no network URLs, and a Content-Security-Policy forbids loading
    anything. Every string from the data is HTML-escaped. A section that fails to render is
    replaced by an error note plus the generic table, with a :class:`ReportWarning`.
    """
    records, found = _collect(records_or_db, run_id)
    html = render_html(records, title=title, runs={**found, **(runs or {})})
    out = Path(path)
    with atomic_path(out) as tmp:  # creates the folders; fsync, rename, fsync the folder
        tmp.write_text(html, encoding="utf-8")
    return out
