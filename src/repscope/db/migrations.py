"""Ordered, named schema migrations of the results database (llm's ``MIGRATIONS`` pattern).

Each migration is a function ``mNNN_description(conn)`` appended to :data:`MIGRATIONS`; it is
applied once, in order, inside its own ``BEGIN IMMEDIATE`` transaction, and recorded in the
``_migrations`` table (name, time). Never edit or reorder a released migration: add a new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from repscope.db._records import now_iso
from repscope.exceptions import RepscopeError

__all__ = ["MIGRATIONS", "Migration", "applied_migrations", "migrate"]

Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS: list[Migration] = []


def _migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@_migration
def m001_initial(conn: sqlite3.Connection) -> None:
    """Tables ``runs`` and ``records``."""
    conn.execute(
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            created TEXT NOT NULL,
            command TEXT NOT NULL,
            params TEXT NOT NULL DEFAULT '{}',
            version TEXT NOT NULL,
            host TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'running',
            finished TEXT NOT NULL DEFAULT ''
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE records (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT REFERENCES runs(id),
            analysis TEXT NOT NULL,
            model TEXT NOT NULL DEFAULT '',
            dataset TEXT NOT NULL DEFAULT '',
            layer TEXT NOT NULL DEFAULT '',
            params TEXT NOT NULL DEFAULT '{}',
            vals TEXT NOT NULL,
            version TEXT NOT NULL,
            created TEXT NOT NULL
        )
        """
    )


@_migration
def m002_run_model_dataset_notes(conn: sqlite3.Connection) -> None:
    """Columns ``model``, ``dataset`` and ``notes`` on ``runs``."""
    for column in ("model", "dataset", "notes"):
        conn.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")


@_migration
def m003_record_indexes(conn: sqlite3.Connection) -> None:
    """Indexes for the usual filters (analysis/model/dataset/layer, run, time)."""
    conn.execute("CREATE INDEX idx_records_analysis ON records (analysis, model, dataset, layer)")
    conn.execute("CREATE INDEX idx_records_run ON records (run_id)")
    conn.execute("CREATE INDEX idx_records_created ON records (created)")
    conn.execute("CREATE INDEX idx_runs_command ON runs (command, created)")


def _ensure_table(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied TEXT NOT NULL)"
    )


def applied_migrations(conn: sqlite3.Connection) -> list[str]:
    """Names of the migrations applied to ``conn``'s database, in the order applied."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'"
    ).fetchone()
    if not exists:
        return []
    return [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]


def _check_known(applied: set[str], known: set[str]) -> None:
    unknown = sorted(applied - known)
    if unknown:
        raise RepscopeError(
            f"the results database has migrations this repscope does not know "
            f"({', '.join(unknown)}); it was written by a newer repscope. Upgrade "
            "repscope or use another database (--db / REPSCOPE_HOME)."
        )


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] | None = None) -> list[str]:
    """Apply the pending migrations of ``migrations`` (default: all of :data:`MIGRATIONS`).

    Each runs in its own ``BEGIN IMMEDIATE`` transaction, which re-reads ``_migrations`` first,
    so several processes opening a new database at once apply each migration exactly once.

    Parameters
    ----------
    conn : sqlite3.Connection
        Opened with ``isolation_level=None`` (transactions are managed here).
    migrations : sequence of callables, optional
        A prefix of :data:`MIGRATIONS` (tests build old schemas with ``MIGRATIONS[:1]``).

    Returns
    -------
    list of str
        Names applied by this call.

    Raises
    ------
    RepscopeError
        When the database has migrations this repscope does not know (a newer version wrote it).
    """
    todo = list(MIGRATIONS if migrations is None else migrations)
    known = {m.__name__ for m in MIGRATIONS}
    already = set(applied_migrations(conn))
    _check_known(already, known)
    done_now: list[str] = []
    for fn in todo:
        if fn.__name__ in already:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            _ensure_table(conn)
            applied = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
            _check_known(applied, known)
            if fn.__name__ not in applied:
                fn(conn)
                conn.execute(
                    "INSERT INTO _migrations (name, applied) VALUES (?, ?)",
                    (fn.__name__, now_iso()),
                )
                done_now.append(fn.__name__)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return done_now
