"""Frozen result types returned by registry-level APIs, and how a result becomes records.

A measure function returns a plain float; ``compare``-style APIs, layer matrices and the CLI
return these results. They are frozen dataclasses with ``to_dict()`` giving JSON-ready data.
Every result type's name ends in ``Result``.

**Each result owns its record.** A result that is stored in the results database declares its
analysis name once (``analysis``, a class attribute) and how it becomes database records
(``to_records(model=..., dataset=..., run_id=..., params=...)``). The CLI and the demo both call
``to_records``, so each record schema is written in one place, and the report section of that
analysis reads exactly those keys. :class:`RecordedResult` is the base to build on;
:func:`make_record` fills the shared context.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

if TYPE_CHECKING:
    from repscope.db import Record

__all__ = ["RecordedResult", "Result", "Score", "make_record", "to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """Convert numpy/torch values, dataclasses and containers into JSON-serialisable data.

    Non-finite floats become ``None`` is *not* done silently: they are kept as the strings
    ``"nan"``, ``"inf"`` and ``"-inf"`` so nothing is lost.
    """
    from repscope._array import is_torch, to_numpy

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if is_torch(value):
        value = to_numpy(value)
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()] if value.dtype.kind == "f" else value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class Result:
    """Base of every result record: ``to_dict()`` gives JSON-ready data."""

    def to_dict(self) -> dict[str, Any]:
        out = to_jsonable(self)
        out["type"] = type(self).__name__
        return out


@dataclass(frozen=True)
class Score(Result):
    """A single value of a named measure.

    Attributes
    ----------
    value : float
        The value.
    measure : str
        The registered measure name.
    direction : {"similarity", "distance", "score"}
        Whether higher means more alike (similarity), 0 means identical (distance), or a
        generic higher-is-better score.
    estimator : str
        Which estimator produced it (e.g. ``"biased"``, ``"debiased"``, ``"feature-space"``).
    n_samples : int
    n_features : tuple of int
        Widths of the inputs.
    details : mapping
        Extra values (intervals, p-values, parameters).
    """

    value: float
    measure: str
    direction: Literal["similarity", "distance", "score"] = "score"
    estimator: str = ""
    n_samples: int = 0
    n_features: tuple[int, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.value)


def make_record(
    analysis: str,
    values: Mapping[str, Any],
    *,
    model: str = "",
    dataset: str = "",
    layer: str = "",
    run_id: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> Record:
    """One database record of ``analysis`` with the caller's context (what ``to_records`` of
    every result uses)."""
    from repscope.db import Record

    return Record(analysis, dict(values), model=model, dataset=dataset, layer=layer,
                  params=dict(params or {}), run_id=run_id)


@dataclass(frozen=True)
class RecordedResult(Result, abc.ABC):
    """A result that is stored in the results database.

    Subclasses set ``analysis`` (the record's analysis name, which picks its report section)
    and implement :meth:`record_rows`: the values of each record, written once. The CLI and the
    demo call :meth:`to_records`, which adds the caller's context. A result that needs more
    context than the keywords below (the two models of a layer map) extends ``to_records``.
    """

    analysis: ClassVar[str] = ""

    @abc.abstractmethod
    def record_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """``(layer, values)`` of each record; a layer of ``""`` takes the caller's ``layer``."""

    def to_records(
        self,
        *,
        model: str = "",
        dataset: str = "",
        layer: str = "",
        run_id: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> list[Record]:
        """The database records of this result.

        Parameters
        ----------
        model, dataset : str
            What the values describe (the model name, or ``"A vs B"`` for paired results).
        layer : str
            The layer the values describe, for results computed on one layer (results that
            carry their own layers fill them in).
        run_id : str or None
            The run the records belong to.
        params : mapping or None
            The analysis parameters to store with the records.

        Returns
        -------
        list of Record
        """
        return [make_record(self.analysis, values, model=model, dataset=dataset,
                            layer=row_layer or layer, run_id=run_id, params=params)
                for row_layer, values in self.record_rows()]
