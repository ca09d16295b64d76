"""Record types of the results database: what goes in and what comes out."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from repscope._version import __version__
from repscope.db._arrays import ArrayStore, decode_values, strict_jsonable
from repscope.exceptions import RepscopeTypeError, RepscopeValueError

__all__ = ["Record", "RecordLike", "RunInfo", "StoredRecord", "now_iso", "to_iso"]


def now_iso() -> str:
    """The current UTC time as ISO 8601 text with microseconds (sorts as text)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def to_iso(when: _dt.datetime | _dt.date | _dt.timedelta | str, *, name: str = "since") -> str:
    """Normalise a time to the database's UTC ISO text.

    A ``timedelta`` means that long before now; a naive ``datetime`` is local time; a string
    is parsed with :meth:`datetime.datetime.fromisoformat`.
    """
    if isinstance(when, _dt.timedelta):
        moment = _dt.datetime.now(_dt.timezone.utc) - when
    elif isinstance(when, _dt.datetime):
        moment = when
    elif isinstance(when, _dt.date):
        moment = _dt.datetime(when.year, when.month, when.day)
    elif isinstance(when, str):
        try:
            moment = _dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            raise RepscopeValueError(
                f"The {name!r} parameter must be an ISO 8601 time such as '2024-05-01' or "
                f"'2024-05-01T12:00:00+00:00'. Got {when!r} instead."
            ) from None
    else:
        raise RepscopeTypeError(
            f"The {name!r} parameter must be a datetime, date, timedelta or ISO string. "
            f"Got {type(when).__name__} instead."
        )
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time
    return moment.astimezone(_dt.timezone.utc).isoformat(timespec="microseconds")


class RecordLike(Protocol):
    """What the report needs from a record (:class:`Record` and :class:`StoredRecord` fit)."""

    @property
    def analysis(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def layer(self) -> str: ...
    @property
    def params(self) -> Mapping[str, Any]: ...
    @property
    def values(self) -> Mapping[str, Any]: ...
    @property
    def run_id(self) -> str | None: ...
    @property
    def created(self) -> str: ...
    @property
    def version(self) -> str: ...


@dataclass(frozen=True)
class Record:
    """One result of one analysis, ready to be added to a :class:`~repscope.db.ResultsDB`.

    Parameters
    ----------
    analysis : str
        The analysis name (``"separability"``, ``"cka"``, ...); the report picks its section
        by this name.
    values : mapping
        The results: scalars, strings, lists, numpy arrays, torch tensors. A non-mapping value
        ``v`` is stored as ``{"value": v}``.
    model, dataset, layer : str, default=""
        What the values describe (a layer is the model's own module path).
    params : mapping, default={}
        The analysis parameters (JSON-serialisable).
    run_id : str or None, default=None
        The run from :meth:`~repscope.db.ResultsDB.start_run` this record belongs to.
    created : str
        UTC ISO 8601 time; now by default.
    version : str
        The repscope version that produced it; the installed one by default.
    """

    analysis: str
    values: Mapping[str, Any]
    model: str = ""
    dataset: str = ""
    layer: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    created: str = field(default_factory=now_iso)
    version: str = __version__

    def __post_init__(self) -> None:
        if not isinstance(self.analysis, str) or not self.analysis.strip():
            raise RepscopeValueError(
                f"The 'analysis' parameter of Record must be a non-empty string. Got "
                f"{self.analysis!r} instead."
            )
        if not isinstance(self.values, Mapping):
            object.__setattr__(self, "values", {"value": self.values})
        if not isinstance(self.params, Mapping):
            raise RepscopeTypeError(
                f"The 'params' parameter of Record must be a mapping. Got "
                f"{type(self.params).__name__} instead."
            )
        for name in ("model", "dataset", "layer"):
            v = getattr(self, name)
            if not isinstance(v, str):
                object.__setattr__(self, name, "" if v is None else str(v))


@dataclass(frozen=True)
class StoredRecord:
    """A record read back from the database.

    ``values`` resolves array references to :class:`numpy.ndarray` on first access (and keeps
    them); ``raw_values`` is the stored JSON with the references.

    Attributes
    ----------
    id : int
        Row id, unique in the database, increasing with insertion.
    analysis, model, dataset, layer, run_id, created, version
        As in :class:`Record`.
    params : dict
    raw_values : dict
    """

    id: int
    analysis: str
    model: str
    dataset: str
    layer: str
    params: dict[str, Any]
    raw_values: dict[str, Any]
    run_id: str | None
    created: str
    version: str
    _arrays: ArrayStore | None = field(default=None, repr=False, compare=False)

    @cached_property
    def values(self) -> dict[str, Any]:
        """The values with every array (inline or by reference) as a numpy array."""
        out = decode_values(self.raw_values, self._arrays)
        return out if isinstance(out, dict) else {"value": out}

    def to_record(self) -> Record:
        """This record as a :class:`Record` (to copy it into another database)."""
        return Record(
            analysis=self.analysis,
            values=self.values,
            model=self.model,
            dataset=self.dataset,
            layer=self.layer,
            params=self.params,
            run_id=self.run_id,
            created=self.created,
            version=self.version,
        )

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON data: arrays as nested lists; NaN/inf as ``"nan"``/``"inf"``/``"-inf"``."""
        return {
            "id": self.id,
            "run_id": self.run_id,
            "analysis": self.analysis,
            "model": self.model,
            "dataset": self.dataset,
            "layer": self.layer,
            "params": strict_jsonable(self.params),
            "values": strict_jsonable(self.values),
            "version": self.version,
            "created": self.created,
        }


@dataclass(frozen=True)
class RunInfo:
    """One run (one command invocation) in the database.

    Attributes
    ----------
    id : str
        Sortable id: ``YYYYmmdd-HHMMSS-<8 hex>`` (UTC).
    created, finished : str
        UTC ISO times; ``finished`` is ``""`` while the run is going.
    command : str
        What ran (``"demo"``, ``"probe fit"``, ...).
    params : dict
        Its parameters.
    version, host : str
        repscope version and host name.
    status : str
        ``"running"``, ``"ok"`` or ``"failed"``.
    model, dataset, notes : str
    n_records : int
        Records stored under this run.
    """

    id: str
    created: str
    command: str
    params: dict[str, Any]
    version: str
    host: str
    status: str
    finished: str = ""
    model: str = ""
    dataset: str = ""
    notes: str = ""
    n_records: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON data."""
        return {
            "id": self.id,
            "created": self.created,
            "finished": self.finished,
            "command": self.command,
            "params": strict_jsonable(self.params),
            "version": self.version,
            "host": self.host,
            "status": self.status,
            "model": self.model,
            "dataset": self.dataset,
            "notes": self.notes,
            "n_records": self.n_records,
        }
