"""Which results ``repscope report`` shows: several runs, filters by model, dataset and time,
the latest N runs, one block per run (two runs never merged into one series), and one-line
errors naming the filter that matched nothing. Real databases, through the CLI."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from click.testing import CliRunner

from repscope.cli import cli
from repscope.db import Record, ResultsDB


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _report(runner, db, tmp_path, *args: str) -> tuple[object, str]:
    out = tmp_path / "r.html"
    if out.exists():
        out.unlink()
    res = runner.invoke(cli, ["--db", str(db), "report", "--out", str(out), *args])
    return res, out.read_text() if out.exists() else ""


def _section(html: str, analysis: str) -> str:
    start = html.index(f'<section id="sec-{analysis}"')
    return html[start:html.index("</section>", start)]


def _one_line_error(res, *patterns: str) -> str:
    assert res.exit_code == 1, (res.exit_code, res.output)
    err = res.stderr.strip()
    assert err.startswith("Error: ") and "\n" not in err, err
    for p in patterns:
        assert p in err, err
    return err


@pytest.fixture
def two_demo_runs(tmp_path, fill_db):
    db = tmp_path / "results.db"
    first = fill_db(db, seed=0)
    second = fill_db(db, seed=1)
    return db, first, second


def test_plain_report_shows_each_run_as_its_own_block(runner, tmp_path, two_demo_runs):
    db, first, second = two_demo_runs
    res, html = _report(runner, db, tmp_path)
    assert res.exit_code == 0, res.output
    probe = _section(html, "probe")
    blocks = probe.split('<div class="run-block">')[1:]
    assert len(blocks) == 2
    # newest run first; each block holds that run's own chart and table
    assert second in blocks[0] and first not in blocks[0]
    assert first in blocks[1] and second not in blocks[1]
    for block in blocks:
        assert block.count("<svg") >= 1
        assert "efficientnet_lite0" in block and "efficientnet_lite1" in block
    # every section is split, the generic one too
    for analysis in ("pca-spectrum", "similarity-matrix", "mystery-metric", "extraction"):
        assert _section(html, analysis).count('<div class="run-block">') == 2, analysis


def test_one_run_has_no_run_blocks(runner, tmp_path, two_demo_runs):
    db, first, _second = two_demo_runs
    res, html = _report(runner, db, tmp_path, "--run", first)
    assert res.exit_code == 0, res.output
    assert '<div class="run-block">' not in html
    assert first in html


def test_run_may_be_given_several_times(runner, tmp_path, fill_db):
    db = tmp_path / "results.db"
    ids = [fill_db(db, seed=s) for s in range(3)]
    res, html = _report(runner, db, tmp_path, "--run", ids[0], "--run", ids[2])
    assert res.exit_code == 0, res.output
    probe = _section(html, "probe")
    assert ids[0] in probe and ids[2] in probe
    assert ids[1] not in html


def test_latest_and_latest_n(runner, tmp_path, fill_db):
    db = tmp_path / "results.db"
    ids = [fill_db(db, seed=s) for s in range(3)]
    res, html = _report(runner, db, tmp_path, "--latest")
    assert res.exit_code == 0, res.output
    assert ids[2] in html and ids[1] not in html and ids[0] not in html
    res, html = _report(runner, db, tmp_path, "--latest", "2")
    assert res.exit_code == 0, res.output
    assert ids[2] in html and ids[1] in html and ids[0] not in html
    res, _ = _report(runner, db, tmp_path, "--latest", "--run", ids[0])
    _one_line_error(res, "--latest", "--run")


def _db_of_models(path) -> dict[str, str]:
    """Three runs: model a on d1 (January 2024), model b on d2 (March 2024), model a on d2
    (now)."""
    runs = {}
    jan = dt.datetime(2024, 1, 10, 12, tzinfo=dt.timezone.utc).isoformat()
    mar = dt.datetime(2024, 3, 10, 12, tzinfo=dt.timezone.utc).isoformat()
    with ResultsDB(path) as db:
        for key, model, dataset, created in (("jan", "model-a", "d1", jan),
                                             ("mar", "model-b", "d2", mar),
                                             ("now", "model-a", "d2", None)):
            run = db.start_run("probe", {}, model=model, dataset=dataset)
            kw = {"created": created} if created else {}
            db.add_many([Record("mystery_metric", {"score": 0.5 + 0.01 * i}, model=model,
                                dataset=dataset, layer=f"l{i}", run_id=run, **kw)
                         for i in range(3)])
            db.finish_run(run)
            runs[key] = run
    return runs


def _shown_runs(html: str, runs: dict[str, str]) -> set[str]:
    return {k for k, rid in runs.items() if rid in html}


def test_filters_by_model_dataset_and_time(runner, tmp_path):
    db = tmp_path / "results.db"
    runs = _db_of_models(db)
    cases = {
        ("--model", "model-a"): {"jan", "now"},
        ("--model", "model-b", "--model", "model-a"): {"jan", "mar", "now"},
        ("--dataset", "d2"): {"mar", "now"},
        ("--model", "model-a", "--dataset", "d2"): {"now"},
        ("--until", "2024-02-01"): {"jan"},
        ("--until", "2024-01-10"): {"jan"},  # a date alone: up to the end of that day
        ("--since", "2024-02-01", "--until", "2024-04-01T00:00Z"): {"mar"},
        ("--since", "2h"): {"now"},
        ("--since", "2024-01-01", "--latest", "2"): {"mar", "now"},
        ("--model", "model-a", "--latest"): {"now"},
    }
    for args, expected in cases.items():
        res, html = _report(runner, db, tmp_path, *args)
        assert res.exit_code == 0, (args, res.output)
        assert _shown_runs(html, runs) == expected, args
        n_runs = len(expected)
        assert html.count('<div class="run-block">') == (n_runs if n_runs > 1 else 0), args


def test_filters_matching_nothing_are_one_line_errors_naming_the_filter(runner, tmp_path):
    db = tmp_path / "results.db"
    _db_of_models(db)
    out = tmp_path / "r.html"
    err = _one_line_error(_report(runner, db, tmp_path, "--model", "nope")[0],
                          "--model 'nope'", "model-a", "model-b")
    assert "--dataset" not in err
    _one_line_error(_report(runner, db, tmp_path, "--model", "model-b", "--dataset", "d1")[0],
                    "--dataset 'd1'", "'d2'")
    _one_line_error(_report(runner, db, tmp_path, "--until", "2023-12-31")[0],
                    "--until '2023-12-31'", "2024-01-10")
    _one_line_error(_report(runner, db, tmp_path, "--since", "yesterday")[0],
                    "--since", "'yesterday'", "2h")
    _one_line_error(_report(runner, db, tmp_path, "--latest", "0")[0], "--latest", "got 0")
    assert not out.exists()
    empty = tmp_path / "empty.db"
    _one_line_error(_report(runner, empty, tmp_path, "--model", "a")[0], "no records")
    res, html = _report(runner, empty, tmp_path)  # no filter: the empty report
    assert res.exit_code == 0 and "No results" in html


def test_runs_table_lists_the_shown_runs_newest_first(runner, tmp_path, two_demo_runs):
    db, first, second = two_demo_runs
    _res, html = _report(runner, db, tmp_path)
    table = html[html.index('<table class="runs">'):]
    table = table[:table.index("</table>")]
    assert re.search(re.escape(second) + ".*" + re.escape(first), table, re.S)
