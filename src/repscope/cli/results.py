"""``repscope results list|show|runs|compare|export``: the results database."""

from __future__ import annotations

from typing import Any

import click
import numpy as np

from repscope.cli._common import db_option, echo_json, json_option, print_table, settings
from repscope.results import to_jsonable


def _short(values: dict, width: int = 60) -> str:
    parts = []
    for k, v in values.items():
        if isinstance(v, (int, float, str, bool)) or v is None:
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
        else:
            shape = getattr(v, "shape", None)
            parts.append(f"{k}=<array {tuple(shape)}>" if shape is not None else f"{k}=<{type(v).__name__}>")
    text = ", ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"


def _cell(v: Any) -> str:
    """One value for a table cell: numbers to 4 significant digits, arrays and lists as a
    summary, a dict as ``name=value`` pairs, a missing value as ``-``."""
    if v is None:
        return "-"
    if isinstance(v, (bool, str, np.bool_)):
        return str(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_cell(x)}" for k, x in v.items()) or "-"
    shape = getattr(v, "shape", None)
    if shape is not None:
        return f"<array {'x'.join(str(int(s)) for s in shape) or 'scalar'}>"
    if isinstance(v, (list, tuple)):
        return f"[{len(v)} items]"
    return f"<{type(v).__name__}>"


filters = [
    click.option("--analysis", default=None, help="Only this analysis."),
    click.option("--model", default=None, help="Only this model."),
    click.option("--dataset", default=None, help="Only this dataset."),
    click.option("--layer", default=None, help="Only this layer."),
    click.option("--run", "run_id", default=None, help="Only this run id."),
]


def with_filters(f: Any) -> Any:
    for opt in reversed(filters):
        f = opt(f)
    return f


@click.group()
def results() -> None:
    """List, show, compare and export recorded results."""


@results.command(name="list")
@with_filters
@click.option("--limit", default=50, show_default=True, help="At most this many records.")
@db_option
@json_option
def list_(analysis, model, dataset, layer, run_id, limit: int, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """List records, newest first."""
    with settings().db() as db:
        recs = db.query(analysis=analysis, model=model, dataset=dataset, layer=layer,
                        run_id=run_id, limit=limit, newest_first=True)
        if as_json:
            echo_json([r.to_dict() for r in recs])
            return
        print_table([(r.id, r.created[:19], r.analysis, r.model, r.dataset, r.layer, _short(dict(r.values)))
                     for r in recs], ["id", "created", "analysis", "model", "dataset", "layer", "values"])


@results.command()
@click.argument("record_id", type=int)
@db_option
def show(record_id: int) -> None:
    """Show one record in full (JSON)."""
    from repscope.exceptions import UnknownNameError

    with settings().db() as db:
        recs = [r for r in db.query(ids=[record_id])] if _supports_ids(db) else [
            r for r in db.query() if r.id == record_id]
        if not recs:
            raise UnknownNameError(f"no record with id {record_id}; see `repscope results list`.")
        echo_json(recs[0].to_dict())


def _supports_ids(db) -> bool:  # type: ignore[no-untyped-def]
    import inspect

    return "ids" in inspect.signature(db.query).parameters


@results.command()
@click.option("--limit", default=20, show_default=True)
@db_option
@json_option
def runs(limit: int, as_json: bool) -> None:
    """List runs, newest first."""
    with settings().db() as db:
        rs = db.runs(limit=limit)
        if as_json:
            echo_json([to_jsonable(r) for r in rs])
            return
        print_table([(r.id, r.created[:19], r.command, r.model, r.dataset, r.status) for r in rs],
                    ["run", "created", "command", "model", "dataset", "status"])


@results.command()
@click.argument("analysis")
@click.option("--runs", "run_ids", multiple=True, required=True,
              help="Run ids to compare (repeat: --runs A --runs B).")
@click.option("--key", "keys", multiple=True, default=("model", "dataset", "layer"),
              show_default=True,
              help="Field(s) to align records on: model, dataset, layer or params.NAME (repeat).")
@click.option("--value", default=None,
              help="One entry of the values to compare (default: every scalar entry).")
@db_option
@json_option
def compare(analysis: str, run_ids: tuple[str, ...], keys: tuple[str, ...], value: str | None,
            as_json: bool) -> None:
    """Compare ANALYSIS across runs, side by side by KEY (model, dataset and layer)."""
    with settings().db() as db:
        rows = db.compare(analysis, key=list(keys), runs=list(run_ids), value=value)
        if as_json:
            echo_json(rows)
            return
        if not rows:
            click.echo("no records to compare")
            return
        headers = list(rows[0].keys())
        print_table([[_cell(r[h]) for h in headers] for r in rows], headers)


@results.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default=None,
              help="Default: from the file extension.")
@with_filters
@db_option
def export(path: str, fmt: str | None, analysis, model, dataset, layer, run_id) -> None:  # type: ignore[no-untyped-def]
    """Export records to PATH as JSON or CSV."""
    fmt = fmt or ("csv" if path.lower().endswith(".csv") else "json")
    with settings().db() as db:
        out = db.export(path, fmt=fmt, analysis=analysis, model=model, dataset=dataset,
                        layer=layer, run_id=run_id)
    click.echo(f"wrote {out}")


COMMANDS = [results]
