"""Frozen result records returned by registry-level APIs.

A measure function returns a plain float; ``compare``-style APIs, layer matrices and the CLI
return these records. They are frozen dataclasses with ``to_dict()`` giving JSON-ready data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["Result", "Score", "to_jsonable"]


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
