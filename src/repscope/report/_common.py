"""Helpers shared by the built-in sections (layer positions, numeric coercion)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from repscope.db._records import RecordLike
from repscope.report._sections import Missing, html_table, ordered_unique, series_labels

__all__ = ["as_float", "by_series", "cell", "floats", "latest_by_values", "layer_axis",
           "layer_table", "merged_layers", "missing"]

#: Record values that may say why an analysis left a value out (first one found wins).
REASON_KEYS = ("reason", "skipped", "skip_reason")


def as_float(value: Any) -> float:
    """``float(value)``, or NaN for anything that is not a number (None, strings, arrays)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def missing(record: RecordLike | None = None, default: str = "not computed") -> Missing:
    """A missing cell for ``record``: "not computed", with the record's own reason when it
    gives one (a ``reason``/``skipped`` value), e.g. "not computed: constant features"."""
    if record is not None:
        for key in REASON_KEYS:
            why = record.values.get(key)
            if isinstance(why, str) and why.strip():
                return Missing(f"{default}: {why.strip()}")
    return Missing(default)


def cell(record: RecordLike, key: str, default: str = "not computed") -> float | Missing:
    """``record.values[key]`` as a float for a table, or a :class:`Missing` cell (with the
    record's reason) when it is absent or not a finite number."""
    v = as_float(record.values.get(key))
    if math.isnan(v):
        return missing(record, default)
    return v


def merged_layers(layer_lists: Sequence[Sequence[str]]) -> list[str] | None:
    """One order of every layer name in ``layer_lists`` that keeps each list's order, when the
    lists largely share their names (the same model family at other depths); ``None`` when
    they do not (different architectures) or order the shared names differently.

    Example: ``[_bn0, b.0, b.1, _bn1]`` and ``[_bn0, b.0, b.1, b.2, _bn1]`` merge into
    ``[_bn0, b.0, b.1, b.2, _bn1]``.
    """
    lists: list[list[str]] = [list(ordered_unique(ls)) for ls in layer_lists if len(ls)]
    if not lists:
        return []
    if len(lists) > 1:
        for i, ls in enumerate(lists):
            others = {n for j, o in enumerate(lists) if j != i for n in o}
            if sum(n in others for n in ls) < 0.5 * len(ls):
                return None
    merged = list(lists[int(np.argmax([len(ls) for ls in lists]))])
    for ls in lists:
        pos = -1
        for name in ls:
            if name in merged:
                at = merged.index(name)
                if at < pos:
                    return None  # the shared names come in another order
                pos = at
            else:
                pos += 1
                merged.insert(pos, name)
    for ls in lists:  # inserting may not reorder anything that was placed before
        idx = [merged.index(n) for n in ls]
        if idx != sorted(idx):
            return None
    return merged


def latest_by_values(records: Sequence[RecordLike], *keys: str) -> list[RecordLike]:
    """The last record per (model, dataset, layer and the values of ``keys``), kept at its
    combination's first position (the newest when records come from a query)."""
    best: dict[tuple[Any, ...], RecordLike] = {}
    for r in records:
        best[(r.model, r.dataset, r.layer, *(str(r.values.get(k, "")) for k in keys))] = r
    return list(best.values())


def floats(value: Any) -> np.ndarray:
    """A stored list of numbers as a float array (``"nan"`` and ``None`` entries -> NaN); a
    single number gives a one-element array, ``None`` an empty one."""
    if value is None:
        return np.zeros(0)
    items = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
    return np.asarray([as_float(x) for x in items], dtype=float)


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

    When the series' layers merge into one order (:func:`merged_layers`: the same names, or
    one model family at several depths), x is the position in that order and the ticks are
    the layer names; otherwise (different architectures) x is the relative depth in [0, 1]
    and the ticks are None: draw one panel per series instead (see
    :func:`repscope.report.panels`) to keep the layer names.
    """
    layer_lists = [[r.layer for r in rs] for rs in groups.values()]
    names = merged_layers(layer_lists)
    xs: dict[str, np.ndarray] = {}
    if names is not None:
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

    When the series' layers merge into one order (:func:`merged_layers`), one row per layer
    and a column group per model (a model without that layer: "—", "no such layer");
    otherwise one row per (model, layer).
    """
    layer_lists = [[r.layer for r in rs] for rs in groups.values()]
    order = merged_layers(layer_lists) if len(groups) > 1 else None
    unique = all(len(set(ls)) == len(ls) for ls in layer_lists)
    names = [m for m, _ in metrics]
    if order is None or not unique:
        rows = [[label, r.layer, *(f(r) for _, f in metrics)]
                for label, rs in groups.items() for r in rs]
        return html_table(["model", "layer", *names], rows, caption=caption, digits=digits)
    at = [{r.layer: r for r in rs} for rs in groups.values()]
    absent = Missing("no such layer in this model")
    rows = []
    for layer in order:
        row: list[Any] = [layer]
        for by_layer in at:
            rec = by_layer.get(layer)
            row += [f(rec) if rec is not None else absent for _, f in metrics]
        rows.append(row)
    header_groups = [("", 1), *((label, len(metrics)) for label in groups)]
    return html_table(["layer", *(names * len(groups))], rows, caption=caption, digits=digits,
                      header_groups=header_groups)
