"""The results database: every analysis's records in one SQLite file.

.. code-block:: python

    from repscope.db import Record, ResultsDB

    db = ResultsDB()  # $REPSCOPE_DB, else $REPSCOPE_HOME/results.db
    with db.run("probe", {"C": 1.0}, model="m") as run_id:
        db.add(Record("separability", {"accuracy": 0.91}, model="m", layer="l3", run_id=run_id))
    db.query(analysis="separability", model="m")

The database is the source of truth that the CLI lists and compares and that
:func:`repscope.report.render_report` renders. Large arrays live beside it, in ``arrays/``.
"""

from repscope.db._arrays import ArrayStore
from repscope.db._database import DB_ENV, HOME_ENV, ResultsDB, default_db_path
from repscope.db._records import Record, RecordLike, RunInfo, StoredRecord
from repscope.db.migrations import MIGRATIONS, migrate

__all__ = [
    "DB_ENV",
    "HOME_ENV",
    "MIGRATIONS",
    "ArrayStore",
    "Record",
    "RecordLike",
    "ResultsDB",
    "RunInfo",
    "StoredRecord",
    "default_db_path",
    "migrate",
]
