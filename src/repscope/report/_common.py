"""Helpers shared by the built-in sections (layer positions, numeric coercion)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._sections import html_table, ordered_unique, series_labels

__all__ = ["as_float", "by_series", "layer_axis", "layer_table"]


def as_float(value: Any) -> float:
    """``float(value)``, or NaN for anything that is not a number (None, strings, arrays)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def by_series(records: Sequence[RecordLike]) -> dict[str, list[RecordLike]]:
    """Records grouped by series label (model, plus data set when several), layer order kept."""
    labels = series_labels(records)
    out: dict[str, list[RecordLike]] = {}
    for r in records:
        out.setdefault(labels[(r.model, r.dataset)], []).append(r)
    return out


def layer_axis(
    groups: dict[str, list[RecordLike]],
) -> tuple[dict[str, np.ndarray], list[str] | None, str]:
    """x positions per series, categorical tick labels (or None) and the x-axis label.

    When every series has the same layers in the same order, x is the layer position and the
    ticks are the layer names; otherwise x is the relative depth in [0, 1].
    """
    layer_lists = [[r.layer for r in rs] for rs in groups.values()]
    shared = all(ls == layer_lists[0] for ls in layer_lists)
    xs: dict[str, np.ndarray] = {}
    if shared:
        names = ordered_unique(layer_lists[0]) if layer_lists else []
        pos = {n: i for i, n in enumerate(names)}
        for label, rs in groups.items():
            xs[label] = np.array([pos[r.layer] for r in rs], dtype=float)
        return xs, [n or "(all)" for n in names], "layer"
    for label, rs in groups.items():
        n = len(rs)
        xs[label] = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(n)
    return xs, None, "relative depth (0 = first layer analysed, 1 = last)"


def layer_table(
    groups: dict[str, list[RecordLike]],
    metrics: Sequence[tuple[str, Callable[[RecordLike], Any]]],
    *,
    caption: str = "",
    digits: int = 3,
) -> str:
    """A table of ``metrics`` by layer.

    When every series has the same layers, one row per layer and a column group per model;
    otherwise one row per (model, layer).
    """
    layer_lists = [[r.layer for r in rs] for rs in groups.values()]
    shared = len(groups) > 1 and all(ls == layer_lists[0] for ls in layer_lists)
    names = [m for m, _ in metrics]
    if not shared:
        rows = [[label, r.layer, *(f(r) for _, f in metrics)]
                for label, rs in groups.items() for r in rs]
        return html_table(["model", "layer", *names], rows, caption=caption, digits=digits)
    rows = []
    for i, layer in enumerate(layer_lists[0]):
        rows.append([layer, *(f(rs[i]) for rs in groups.values() for _, f in metrics)])
    header_groups = [("", 1), *((label, len(metrics)) for label in groups)]
    return html_table(["layer", *(names * len(groups))], rows, caption=caption, digits=digits,
                      header_groups=header_groups)
