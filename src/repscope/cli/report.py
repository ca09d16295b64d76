"""``repscope report``: render recorded results into one self-contained HTML page."""

from __future__ import annotations

import click

from repscope.cli._common import db_option, settings


@click.command()
@click.option("--out", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="HTML file to write.")
@click.option("--run", "run_id", default=None, help="Only this run (default: every record).")
@click.option("--latest", is_flag=True, help="Only the most recent run.")
@click.option("--title", default="repscope report", show_default=True)
@db_option
def report(out: str, run_id: str | None, latest: bool, title: str) -> None:
    """Render the results database (or one run) into a self-contained HTML report."""
    from repscope.exceptions import RepscopeValueError, UnknownNameError
    from repscope.report import render_report

    with settings().db() as db:
        if latest:
            last = db.latest_run()
            if last is None:
                raise RepscopeValueError("the results database has no runs yet; run an analysis first.")
            run_id = last.id
        elif run_id is not None:
            try:
                db.get_run(run_id)
            except UnknownNameError:
                newest = tuple(r.id for r in db.runs(limit=5))
                hint = (f"newest runs: {', '.join(newest)} (all: repscope results runs)"
                        if newest else "the database has no runs yet")
                raise UnknownNameError(f"unknown run {run_id!r} in {db.path}; {hint}.",
                                       name=run_id, known=newest) from None
        path = render_report(db, out, title=title, run_id=run_id)
    click.echo(str(path))


COMMANDS = [report]
