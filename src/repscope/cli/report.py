"""``repscope report``: render recorded results into one self-contained HTML page."""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from typing import Any

import click

from repscope.cli._common import db_option, settings

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)", re.IGNORECASE)
_UNITS = {"s": "seconds", "sec": "seconds", "m": "minutes", "min": "minutes", "h": "hours",
          "d": "days", "w": "weeks"}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_when(text: str, option: str) -> _dt.datetime | _dt.timedelta:
    """The time ``option`` names: an ISO date or date-time, or a span before now (``2h``).

    A date alone is its midnight for ``--since`` and the next midnight for ``--until`` (so
    ``--until 2024-05-01`` keeps that whole day). Times without an offset are local time.
    """
    from repscope.exceptions import RepscopeValueError

    raw = text.strip()
    rel = _RELATIVE.fullmatch(raw)
    if rel:
        return _dt.timedelta(**{_UNITS[rel.group(2).lower()]: float(rel.group(1))})
    try:
        moment = _dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise RepscopeValueError(
            f"{option} must be an ISO date or time (2024-05-01, 2024-05-01T14:30, "
            f"2024-05-01T14:30Z) or a span before now (30m, 2h, 3d, 1w); got {text!r}."
        ) from None
    if option == "--until" and _DATE.fullmatch(raw):
        moment += _dt.timedelta(days=1)
    return moment


def _names(values: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return (shown + more) if values else "none"


def _quote(values: Sequence[str]) -> str:
    return " ".join(repr(v) for v in values)


def select(
    db: Any,
    *,
    runs: Sequence[str] = (),
    models: Sequence[str] = (),
    datasets: Sequence[str] = (),
    since: str | None = None,
    until: str | None = None,
    latest: int | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """The records the report options pick, and the runs they belong to.

    Every option narrows the selection (several values of one option: any of them). A
    filter that leaves nothing, or an unknown run id, is a one-line error naming the option.
    With no option at all every record is shown (an empty database renders an empty report).
    """
    from repscope.exceptions import DataNotFoundError, RepscopeValueError, UnknownNameError

    if latest is not None and runs:
        raise RepscopeValueError(
            "--latest and --run both choose runs; pass one of them (got --latest "
            f"{latest} and --run {_quote(runs)}).")
    if latest is not None and latest < 1:
        raise RepscopeValueError(f"--latest must be a number of runs >= 1; got {latest}.")
    for run_id in runs:
        try:
            db.get_run(run_id)
        except UnknownNameError:
            newest = tuple(r.id for r in db.runs(limit=5))
            hint = (f"newest runs: {', '.join(newest)} (all: repscope results runs)"
                    if newest else "the database has no runs yet")
            raise UnknownNameError(f"unknown run {run_id!r} in {db.path}; {hint}.",
                                   name=run_id, known=newest) from None
    when: dict[str, Any] = {}
    if since is not None:
        when["since"] = parse_when(since, "--since")
    if until is not None:
        when["until"] = parse_when(until, "--until")
    # narrow one option at a time, so that an empty result names the option that emptied it
    steps: list[tuple[str, dict[str, Any]]] = [("run", {"run_id": list(runs)} if runs else {})]
    if models:
        steps.append(("model", {"model": list(models)}))
    if datasets:
        steps.append(("dataset", {"dataset": list(datasets)}))
    if when:
        steps.append(("time", when))
    filters: dict[str, Any] = {}
    for what, extra in steps:
        before = dict(filters)
        filters.update(extra)
        if db.count(**filters):
            continue
        if what == "run":
            if runs:
                raise DataNotFoundError(
                    f"--run {_quote(runs)}: no records in {'that run' if len(runs) == 1 else 'those runs'}"
                    f" (see repscope results runs).")
            if latest is not None or models or datasets or when:
                raise DataNotFoundError(
                    f"the results database {db.path} has no records yet; run an analysis first.")
            break  # a plain report of an empty database: the empty report
        if what in ("model", "dataset"):
            known = sorted({getattr(r, what) for r in db.query(**before)})
            asked = models if what == "model" else datasets
            raise DataNotFoundError(
                f"no records match --{what} {_quote(asked)}; {what}s of the records "
                f"selected so far: {_names(known)}.")
        newest = db.query(**before, limit=1, newest_first=True)
        oldest = db.query(**before, limit=1)
        span = f"records were created from {oldest[0].created[:19]} to {newest[0].created[:19]} UTC"
        window = " ".join(f"--{k} {v!r}" for k, v in (("since", since), ("until", until)) if v)
        raise DataNotFoundError(f"no records match {window}; the selected {span}.")
    records = db.query(**filters)
    if latest is not None:
        newest_runs: list[str] = []
        for r in reversed(records):  # newest record first
            if r.run_id and r.run_id not in newest_runs:
                newest_runs.append(r.run_id)
        if not newest_runs:
            raise DataNotFoundError(
                "--latest: none of the selected records belongs to a run (records added "
                "without a run id); leave --latest out to show them.")
        keep = set(newest_runs[:latest])
        records = [r for r in records if r.run_id in keep]
    infos = {}
    for run_id in dict.fromkeys(r.run_id for r in records if r.run_id):
        infos[run_id] = db.get_run(run_id)
    return records, infos


@click.command()
@click.option("--out", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="HTML file to write.")
@click.option("--run", "runs", multiple=True, metavar="RUN_ID",
              help="Only this run (repeatable; ids from `repscope results runs`).")
@click.option("--latest", type=int, is_flag=False, flag_value=1, default=None, metavar="[N]",
              help="Only the most recent run (--latest N: the N most recent) holding the "
              "selected records.")
@click.option("--model", "models", multiple=True, metavar="NAME",
              help="Only records of this model (repeatable).")
@click.option("--dataset", "datasets", multiple=True, metavar="NAME",
              help="Only records on this dataset (repeatable).")
@click.option("--since", default=None, metavar="WHEN",
              help="Only records created at or after WHEN: an ISO date or time (local time "
              "unless it ends in Z or an offset) or a span before now such as 30m, 2h, 3d, 1w.")
@click.option("--until", default=None, metavar="WHEN",
              help="Only records created before WHEN (a date alone: up to the end of that day).")
@click.option("--title", default="repscope report", show_default=True)
@db_option
def report(out: str, runs: tuple[str, ...], latest: int | None, models: tuple[str, ...],
           datasets: tuple[str, ...], since: str | None, until: str | None, title: str) -> None:
    """Render the results database (or the runs and records chosen) into one self-contained
    HTML report.

    With records of several runs, every section shows one block per run, so results of two
    runs are never drawn as one series.
    """
    from repscope.report import render_report

    with settings().db() as db:
        records, infos = select(db, runs=runs, models=models, datasets=datasets, since=since,
                                until=until, latest=latest)
        path = render_report(records, out, title=title, runs=infos)
    click.echo(str(path))


COMMANDS = [report]
