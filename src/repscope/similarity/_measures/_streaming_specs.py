"""Which measures can be computed from streamed :class:`PairStats`, and how."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["StreamSpec", "register_streaming", "stream_spec", "streaming_measures"]

StatsCompute = Callable[..., float]


@dataclass(frozen=True)
class StreamSpec:
    """How a Moments-based measure is computed from accumulated statistics.

    ``compute(stats, **opts)`` gets one :class:`PairStats` or, when ``folds`` is set, a list of
    per-fold ``PairStats`` (rows assigned to folds by their running index modulo the number of
    folds, the option named ``folds``).
    """

    compute: StatsCompute
    row_norms: bool = False
    folds: str | None = None
    defaults: tuple[tuple[str, Any], ...] = ()


_SPECS: dict[str, StreamSpec] = {}


def register_streaming(
    name: str, *, row_norms: bool = False, folds: str | None = None, **defaults: Any
) -> Callable[[StatsCompute], StatsCompute]:
    def deco(fn: StatsCompute) -> StatsCompute:
        _SPECS[name] = StreamSpec(fn, row_norms, folds, tuple(defaults.items()))
        return fn

    return deco


def stream_spec(name: str) -> StreamSpec | None:
    return _SPECS.get(name)


def streaming_measures() -> list[str]:
    return sorted(_SPECS)

