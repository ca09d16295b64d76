"""The SQLite results database: :class:`ResultsDB`."""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import math
import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from repscope._version import __version__
from repscope.db._arrays import ArrayStore, dumps, encode_values, is_scalar, strict_jsonable
from repscope.db._records import Record, RunInfo, StoredRecord, now_iso, to_iso
from repscope.db.migrations import MIGRATIONS, applied_migrations, migrate
from repscope.exceptions import RepscopeTypeError, RepscopeValueError, UnknownNameError

__all__ = ["DB_ENV", "HOME_ENV", "ResultsDB", "default_db_path"]

#: Environment variable naming repscope's home folder (default ``~/.repscope``).
HOME_ENV = "REPSCOPE_HOME"
#: Environment variable naming the results database file (wins over ``$REPSCOPE_HOME``).
DB_ENV = "REPSCOPE_DB"

Filter = str | Sequence[str] | None
Since = _dt.datetime | _dt.date | _dt.timedelta | str | None

_RUN_COLUMNS = (
    "id, created, command, params, version, host, status, finished, model, dataset, notes, "
    "(SELECT COUNT(*) FROM records r WHERE r.run_id = runs.id) AS n_records"
)
_RECORD_COLUMNS = "id, analysis, model, dataset, layer, params, vals, run_id, created, version"


def default_db_path() -> Path:
    """``$REPSCOPE_DB`` when set, else ``$REPSCOPE_HOME/results.db`` (home ``~/.repscope``)."""
    env_db = os.environ.get(DB_ENV, "").strip()
    if env_db:
        return Path(env_db).expanduser()
    home = os.environ.get(HOME_ENV, "").strip() or "~/.repscope"
    return Path(home).expanduser() / "results.db"


def _new_run_id() -> str:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


class ResultsDB:
    """Results of every analysis, in one SQLite file (WAL mode, safe for concurrent writers).

    Opening a database creates its folder and file if needed and applies pending schema
    migrations (:mod:`repscope.db.migrations`). Arrays larger than ``inline_array_max``
    elements are saved as ``.npy`` files in an ``arrays/`` folder beside the database and the
    JSON holds a ``{"$array": sha256, "shape", "dtype"}`` reference.

    Parameters
    ----------
    path : path-like, optional
        The database file (a directory means ``<dir>/results.db``). Default:
        :func:`default_db_path`: ``$REPSCOPE_DB`` when set, else ``$REPSCOPE_HOME/results.db``
        (an explicit ``path`` wins over both).
    timeout : float, default=60.0
        Seconds a writer waits for another writer's lock before failing.
    inline_array_max : int, default=64
        Arrays with at most this many elements stay inline in the JSON.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from repscope.db import ResultsDB, Record
    >>> db = ResultsDB(tempfile.mkdtemp() + "/results.db")
    >>> run = db.start_run("probe", {"C": 1.0}, model="m")
    >>> _ = db.add(Record("separability", {"accuracy": 0.9}, model="m", layer="l1", run_id=run))
    >>> db.finish_run(run)
    >>> db.query(analysis="separability")[0].values["accuracy"]
    0.9
    >>> db.close()
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 60.0,
        inline_array_max: int = 64,
    ) -> None:
        p = default_db_path() if path is None else Path(path).expanduser()
        if p.is_dir():
            p = p / "results.db"
        p.parent.mkdir(parents=True, exist_ok=True)
        self.path = p
        self.arrays = ArrayStore(p.parent / "arrays")
        self.inline_array_max = int(inline_array_max)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(p), timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        migrate(self._conn)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (the object cannot be used afterwards)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsDB({str(self.path)!r})"

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # -- schema ----------------------------------------------------------------------------

    @property
    def applied_migrations(self) -> list[str]:
        """Names of the applied migrations, in order."""
        with self._lock:
            return applied_migrations(self._conn)

    @property
    def schema_version(self) -> int:
        """Number of applied migrations (``len(MIGRATIONS)`` once opened)."""
        return len(self.applied_migrations)

    @staticmethod
    def latest_schema_version() -> int:
        """The schema version this repscope writes."""
        return len(MIGRATIONS)

    # -- runs ------------------------------------------------------------------------------

    def start_run(
        self,
        command: str,
        params: Mapping[str, Any] | None = None,
        *,
        model: str = "",
        dataset: str = "",
    ) -> str:
        """Register a new run and return its id (``YYYYmmdd-HHMMSS-<8 hex>``, UTC).

        Parameters
        ----------
        command : str
            What runs (``"demo"``, ``"probe fit"``, ...).
        params : mapping, optional
            Its parameters (JSON-serialisable; arrays are stored like record values).
        model, dataset : str, default=""
            The main model and data set, for listings.
        """
        run_id = _new_run_id()
        params_json = dumps(encode_values(dict(params or {}), self.arrays, inline_max=10**9))
        with self._write() as conn:
            conn.execute(
                "INSERT INTO runs (id, created, command, params, version, host, status, model,"
                " dataset) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                (run_id, now_iso(), str(command), params_json, __version__,
                 socket.gethostname(), str(model), str(dataset)),
            )
        return run_id

    def finish_run(
        self, run_id: str, status: Literal["ok", "failed"] = "ok", *, notes: str | None = None
    ) -> None:
        """Mark a run finished with ``status`` (``"ok"`` or ``"failed"``), optionally with notes."""
        if status not in ("ok", "failed"):
            raise RepscopeValueError(
                f"The 'status' parameter of finish_run must be 'ok' or 'failed'. Got {status!r} "
                "instead."
            )
        with self._write() as conn:
            sql = "UPDATE runs SET status = ?, finished = ?"
            args: list[Any] = [status, now_iso()]
            if notes is not None:
                sql += ", notes = ?"
                args.append(str(notes))
            cur = conn.execute(sql + " WHERE id = ?", [*args, run_id])
            if cur.rowcount == 0:
                raise self._unknown_run(run_id)

    @contextlib.contextmanager
    def run(
        self,
        command: str,
        params: Mapping[str, Any] | None = None,
        *,
        model: str = "",
        dataset: str = "",
    ) -> Iterator[str]:
        """Context manager: start a run, yield its id, finish it ``"ok"`` or ``"failed"``."""
        run_id = self.start_run(command, params, model=model, dataset=dataset)
        try:
            yield run_id
        except BaseException:
            self.finish_run(run_id, "failed")
            raise
        self.finish_run(run_id, "ok")

    def _unknown_run(self, run_id: str) -> UnknownNameError:
        known = tuple(r.id for r in self.runs(limit=5))
        hint = f" Recent runs: {', '.join(known)}." if known else " The database has no runs."
        return UnknownNameError(
            f"unknown run {run_id!r} in {self.path}.{hint} Start one with db.start_run(...).",
            name=str(run_id),
            known=known,
        )

    @staticmethod
    def _run_from_row(row: Sequence[Any]) -> RunInfo:
        return RunInfo(
            id=row[0], created=row[1], command=row[2], params=json.loads(row[3]),
            version=row[4], host=row[5], status=row[6], finished=row[7], model=row[8],
            dataset=row[9], notes=row[10], n_records=int(row[11]),
        )

    def runs(self, limit: int | None = None, *, command: str | None = None) -> list[RunInfo]:
        """Runs, newest first (at most ``limit``; only ``command``'s when given)."""
        sql = f"SELECT {_RUN_COLUMNS} FROM runs"
        args: list[Any] = []
        if command is not None:
            sql += " WHERE command = ?"
            args.append(command)
        sql += " ORDER BY created DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [self._run_from_row(r) for r in rows]

    def latest_run(self, command: str | None = None) -> RunInfo | None:
        """The newest run (of ``command`` when given), or ``None`` when there is none."""
        found = self.runs(limit=1, command=command)
        return found[0] if found else None

    def get_run(self, run_id: str) -> RunInfo:
        """The run ``run_id``; raises :class:`~repscope.exceptions.UnknownNameError` if absent."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
        if row is None:
            raise self._unknown_run(run_id)
        return self._run_from_row(row)

    # -- records ---------------------------------------------------------------------------

    def _row_args(self, rec: Record) -> tuple[Any, ...]:
        if not isinstance(rec, Record):
            raise RepscopeTypeError(
                f"ResultsDB.add expects repscope.db.Record objects; got {type(rec).__name__}. "
                "Build one with Record(analysis, values, model=..., layer=...)."
            )
        vals = dumps(encode_values(rec.values, self.arrays, inline_max=self.inline_array_max))
        params = dumps(encode_values(rec.params, self.arrays, inline_max=self.inline_array_max))
        return (rec.run_id, rec.analysis, rec.model, rec.dataset, rec.layer, params, vals,
                rec.version, rec.created)

    def add(self, record: Record) -> int:
        """Store one record; returns its id."""
        return self.add_many([record])[0]

    def add_many(self, records: Iterable[Record]) -> list[int]:
        """Store records in one transaction (all or none); returns their ids in order.

        Raises
        ------
        RepscopeValueError
            If a record names a run that is not in the database.
        """
        rows = [self._row_args(r) for r in records]  # arrays are written before the lock
        ids: list[int] = []
        try:
            with self._write() as conn:
                for row in rows:
                    cur = conn.execute(
                        "INSERT INTO records (run_id, analysis, model, dataset, layer, params,"
                        " vals, version, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    ids.append(int(cur.lastrowid or 0))
        except sqlite3.IntegrityError as err:
            bad = sorted({str(r[0]) for r in rows if r[0] is not None})
            raise RepscopeValueError(
                f"records refer to a run that is not in {self.path} (run_id in {bad}): {err}. "
                "Use the id returned by db.start_run(...), or run_id=None."
            ) from None
        return ids

    def _record_from_row(self, row: Sequence[Any]) -> StoredRecord:
        return StoredRecord(
            id=int(row[0]), analysis=row[1], model=row[2], dataset=row[3], layer=row[4],
            params=json.loads(row[5]), raw_values=json.loads(row[6]), run_id=row[7],
            created=row[8], version=row[9], _arrays=self.arrays,
        )

    def query(
        self,
        *,
        analysis: Filter = None,
        model: Filter = None,
        dataset: Filter = None,
        layer: Filter = None,
        run_id: Filter = None,
        since: Since = None,
        until: Since = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[StoredRecord]:
        """Records matching every given filter, oldest first (by id).

        Parameters
        ----------
        analysis, model, dataset, layer, run_id : str or sequence of str, optional
            Keep records whose field equals the string (or is one of the strings).
        since : datetime, date, timedelta or ISO str, optional
            Keep records created at or after this time (a timedelta: that long ago).
        until : datetime, date, timedelta or ISO str, optional
            Keep records created before this time (a timedelta: that long ago; a date: its
            midnight, so ``until=date(2024, 5, 2)`` keeps the records of May 1st and before).
        limit : int, optional
            At most this many records.
        newest_first : bool, default=False
            Order by decreasing id (with ``limit``: the latest records).

        Returns
        -------
        list of StoredRecord
            ``record.values`` resolves stored arrays to numpy arrays on first access.
        """
        where, args = self._where(analysis=analysis, model=model, dataset=dataset, layer=layer,
                                  run_id=run_id, since=since, until=until)
        sql = f"SELECT {_RECORD_COLUMNS} FROM records{where} ORDER BY id"
        sql += " DESC" if newest_first else ""
        if limit is not None:
            if int(limit) < 0:
                raise RepscopeValueError(
                    f"The 'limit' parameter of query must be >= 0. Got {limit!r} instead.")
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [self._record_from_row(r) for r in rows]

    def count(self, **filters: Any) -> int:
        """Number of records matching the :meth:`query` filters."""
        where, args = self._where(**filters)
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM records{where}", args)
                       .fetchone()[0])

    @staticmethod
    def _where(
        *, since: Since = None, until: Since = None, **fields: Filter
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        for name, value in fields.items():
            if name not in ("analysis", "model", "dataset", "layer", "run_id"):
                raise RepscopeTypeError(
                    f"unknown filter {name!r}; use analysis, model, dataset, layer, run_id, "
                    "since, until or limit."
                )
            if value is None:
                continue
            if isinstance(value, str):
                clauses.append(f"{name} = ?")
                args.append(value)
            else:
                vals = [str(v) for v in value]
                if not vals:
                    clauses.append("0")
                    continue
                clauses.append(f"{name} IN ({', '.join('?' * len(vals))})")
                args.extend(vals)
        if since is not None:
            clauses.append("created >= ?")
            args.append(to_iso(since))
        if until is not None:
            clauses.append("created < ?")
            args.append(to_iso(until, name="until"))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    # -- comparison and export ---------------------------------------------------------------

    def compare(
        self,
        analysis: str,
        *,
        key: str | Sequence[str] = "layer",
        runs: Sequence[str] | None = None,
        value: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows comparing ``analysis`` across runs, matched on ``key``.

        Parameters
        ----------
        analysis : str
            The analysis name.
        key : str or sequence of str, default="layer"
            Record fields (``model``, ``dataset``, ``layer``) or ``params.NAME`` entries that
            identify comparable records.
        runs : sequence of str, optional
            Run ids (columns, in this order). Default: the two most recent runs with records
            of ``analysis``, older first.
        value : str, optional
            One entry of the values to compare; by default every scalar entry.

        Returns
        -------
        list of dict
            One row per key (in order of first appearance): the key fields, then one entry per
            run id — the chosen value (``None`` when the run lacks the key) or, without
            ``value``, a dict of the record's scalar values. With ``value`` and two runs, a
            ``"delta"`` entry holds ``second - first`` when both are finite numbers. When a
            run has several records for one key, the newest wins.
        """
        keys = [key] if isinstance(key, str) else list(key)
        if runs is None:
            with self._lock:
                found = self._conn.execute(
                    "SELECT run_id, MAX(id) AS last FROM records WHERE analysis = ? AND run_id "
                    "IS NOT NULL GROUP BY run_id ORDER BY last DESC LIMIT 2", (analysis,)
                ).fetchall()
            runs = [r[0] for r in reversed(found)]
        run_list = [str(r) for r in runs]
        table: dict[tuple[Any, ...], dict[str, Any]] = {}
        for rec in self.query(analysis=analysis, run_id=run_list):
            k = tuple(_key_value(rec, name) for name in keys)
            row = table.setdefault(k, {**dict(zip(keys, k)), **{r: None for r in run_list}})
            vals = rec.values
            if value is not None:
                row[str(rec.run_id)] = vals.get(value)
            else:
                row[str(rec.run_id)] = {n: v for n, v in vals.items() if is_scalar(v)}
        rows = list(table.values())
        if value is not None and len(run_list) == 2:
            for row in rows:
                a, b = row[run_list[0]], row[run_list[1]]
                ok = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                         and math.isfinite(v) for v in (a, b))
                row["delta"] = (b - a) if ok else None
        return rows

    def export(
        self,
        path: str | os.PathLike[str],
        fmt: Literal["json", "csv"] | None = None,
        **filters: Any,
    ) -> Path:
        """Write the records matching ``filters`` (as in :meth:`query`) to a file.

        Parameters
        ----------
        path : path-like
            The output file.
        fmt : {"json", "csv"}, optional
            Default: from the suffix of ``path`` (``.csv`` -> csv, otherwise json).
        **filters
            Passed to :meth:`query`.

        Returns
        -------
        Path
            ``path``.

        Notes
        -----
        JSON is a strict-JSON list of :meth:`StoredRecord.to_dict` objects: arrays written
        out as nested lists, non-finite floats as the strings ``"nan"``, ``"inf"``,
        ``"-inf"`` (the :func:`repscope.results.to_jsonable` convention). CSV has one row
        per record: ``id, run_id, analysis, model, dataset, layer, version, created, params,
        values`` (the last two as that JSON) and a ``values.NAME`` column per scalar value.
        """
        out = Path(path)
        fmt = fmt or ("csv" if out.suffix.lower() == ".csv" else "json")
        if fmt not in ("json", "csv"):
            raise RepscopeValueError(
                f"The 'fmt' parameter of export must be 'json' or 'csv'. Got {fmt!r} instead.")
        dicts = [r.to_dict() for r in self.query(**filters)]
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "json":
            out.write_text(json.dumps(dicts, indent=1, allow_nan=False, ensure_ascii=False),
                           encoding="utf-8")
            return out
        fixed = ["id", "run_id", "analysis", "model", "dataset", "layer", "version", "created"]
        scalar_names: dict[str, None] = {}
        for d in dicts:
            for n, v in d["values"].items():
                if is_scalar(v):
                    scalar_names.setdefault(n, None)
        header = [*fixed, "params", "values", *(f"values.{n}" for n in scalar_names)]
        with out.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for d in dicts:
                row = ["" if d[c] is None else d[c] for c in fixed]
                row += [json.dumps(d["params"], allow_nan=False, ensure_ascii=False),
                        json.dumps(d["values"], allow_nan=False, ensure_ascii=False)]
                for n in scalar_names:
                    v = d["values"].get(n)
                    row.append("" if v is None or not is_scalar(v) else v)
                writer.writerow(row)
        return out


def _key_value(rec: StoredRecord, name: str) -> Any:
    if name in ("model", "dataset", "layer", "analysis", "run_id"):
        return getattr(rec, name)
    if name.startswith("params."):
        v = strict_jsonable(rec.params.get(name[len("params."):]))
        return json.dumps(v) if isinstance(v, (list, dict)) else v
    raise RepscopeValueError(
        f"The 'key' parameter of compare must name model, dataset, layer or params.NAME. Got "
        f"{name!r} instead."
    )
