"""Schema migrations: ordered, named, applied once, recorded in _migrations."""

from __future__ import annotations

import json
import sqlite3

import pytest

from repscope.db import MIGRATIONS, Record, ResultsDB, migrate
from repscope.exceptions import RepscopeError


def test_migrations_are_named_in_order():
    names = [m.__name__ for m in MIGRATIONS]
    assert len(names) >= 2
    assert names == sorted(names)
    assert all(n.startswith(f"m{i + 1:03d}_") for i, n in enumerate(names))


def test_new_database_is_at_current_schema(tmp_path):
    with ResultsDB(tmp_path / "r.db") as db:
        assert db.schema_version == len(MIGRATIONS) == db.latest_schema_version()
        assert db.applied_migrations == [m.__name__ for m in MIGRATIONS]


def test_v1_database_is_migrated_with_data_intact(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:1]) == ["m001_initial"]
    run_cols = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    assert "notes" not in run_cols  # really the v1 schema
    conn.execute(
        "INSERT INTO runs (id, created, command, params, version, host, status) "
        "VALUES ('old-run', '2024-01-01T00:00:00.000000+00:00', 'probe', '{\"C\": 1}', '0.0.1',"
        " 'h', 'ok')"
    )
    for i in range(3):
        conn.execute(
            "INSERT INTO records (run_id, analysis, model, layer, params, vals, version, created)"
            " VALUES ('old-run', 'separability', 'm', ?, '{}', ?, '0.0.1',"
            " '2024-01-01T00:00:00.000000+00:00')",
            (f"l{i}", json.dumps({"accuracy": 0.5 + i / 10})),
        )
    conn.close()

    with ResultsDB(path) as db:
        assert db.schema_version == len(MIGRATIONS)
        assert db.applied_migrations == [m.__name__ for m in MIGRATIONS]
        recs = db.query(analysis="separability")
        assert [r.layer for r in recs] == ["l0", "l1", "l2"]
        assert recs[2].values["accuracy"] == pytest.approx(0.7)
        run = db.get_run("old-run")
        assert run.params == {"C": 1}
        assert run.notes == ""
        assert run.n_records == 3
        db.add(Record("separability", {"accuracy": 0.9}, layer="l3", run_id="old-run"))
        indexes = {r[1] for r in db._conn.execute("PRAGMA index_list(records)")}
        assert "idx_records_analysis" in indexes
        logged = db._conn.execute("SELECT name, applied FROM _migrations").fetchall()
        assert [n for n, _ in logged] == [m.__name__ for m in MIGRATIONS]
        assert all(t for _, t in logged)

    with ResultsDB(path) as db:  # reopening applies nothing new
        assert db.count() == 4
        assert db.schema_version == len(MIGRATIONS)


def test_migrate_is_idempotent(tmp_path):
    conn = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    assert len(migrate(conn)) == len(MIGRATIONS)
    assert migrate(conn) == []
    conn.close()


def test_database_from_newer_repscope_is_refused(tmp_path):
    path = tmp_path / "new.db"
    with ResultsDB(path) as db:
        db._conn.execute("INSERT INTO _migrations VALUES ('m999_future', 'now')")
    with pytest.raises(RepscopeError, match="written by a newer repscope"):
        ResultsDB(path)
