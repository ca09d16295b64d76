"""The small HTML helpers that section renderers share.

Sections are declared by capabilities (:class:`repscope.capability.Section`).

A section renderer takes the records of one analysis and returns an HTML fragment. It only
formats what the records hold; it never recomputes a measure. Every string that comes from
data must pass through :func:`esc` (the helpers here do that for you).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from html import escape
from typing import Any, TypeVar

import numpy as np

from repscope.db._records import RecordLike

__all__ = [
    "Html",
    "Missing",
    "SectionRenderer",
    "esc",
    "figure",
    "fmt",
    "html_table",
    "latest_per",
    "ordered_unique",
    "panels",
    "series_labels",
]

#: What a section's render function is: records of one analysis -> an HTML fragment.
SectionRenderer = Callable[[Sequence[RecordLike]], str]

T = TypeVar("T")


class Html(str):
    """A string of trusted HTML (made by repscope's helpers), inserted without escaping."""

    __slots__ = ()


class Missing:
    """A table cell with no value: shown as "—", with ``reason`` as hover text and footnote.

    :func:`html_table` shows a NaN cell as ``Missing("not computed")``; a section that knows
    why a value is missing passes ``Missing("not computed: constant features")`` instead.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str = "not computed") -> None:
        self.reason = str(reason) or "not computed"

    def __repr__(self) -> str:
        return f"Missing({self.reason!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Missing) and other.reason == self.reason

    def __hash__(self) -> int:
        return hash(("Missing", self.reason))


def esc(value: Any) -> str:
    """HTML-escape ``str(value)`` (quotes included); :class:`Html` passes through."""
    if isinstance(value, Html):
        return str(value)
    return escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """Plain text for a table cell: numbers to ``digits`` significant digits, arrays summarised.

    Returns plain text (escape it, or let :func:`html_table` do so).
    """
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(int(value)) >= 10000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "—"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v.is_integer() and abs(v) < 1e15:
            return fmt(int(v))
        if 1 <= abs(v) < 1e15:  # no scientific notation for ordinary magnitudes
            decimals = max(0, digits - math.floor(math.log10(abs(v))) - 1)
            return f"{v:.{decimals}f}"
        return f"{v:.{digits}g}"
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return fmt(value.item(), digits)
        return f"array {'×'.join(str(s) for s in value.shape)} {value.dtype}"
    if isinstance(value, (list, tuple)):
        if len(value) <= 6 and all(isinstance(v, (str, int, float)) for v in value):
            return ", ".join(fmt(v, digits) for v in value)
        return f"list of {len(value)}"
    if isinstance(value, dict):
        text = json.dumps(_jsonish(value), ensure_ascii=False, default=str)
        return text if len(text) <= 120 else text[:119] + "…"
    return str(value)


def _jsonish(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return fmt(value)
    if isinstance(value, dict):
        return {str(k): _jsonish(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonish(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return fmt(value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def html_table(
    headers: Sequence[Any],
    rows: Iterable[Sequence[Any]],
    *,
    caption: str = "",
    digits: int = 4,
    css_class: str = "",
    header_groups: Sequence[tuple[str, int]] | None = None,
) -> str:
    """An HTML table; cells are formatted with :func:`fmt` and escaped.

    Numeric cells are right-aligned. :class:`Html` cells are inserted as they are.
    ``header_groups`` adds a header row above ``headers``: (label, number of columns spanned).
    A NaN cell, or a :class:`Missing` one, shows "—" with its reason as hover text and in a
    footnote below the table (numbered when the table's missing cells have several reasons).
    """
    cls = f' class="{esc(css_class)}"' if css_class else ""
    out = [f"<div class=\"table-wrap\"><table{cls}>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead>")
    if header_groups:
        out.append("<tr>" + "".join(
            f'<th scope="colgroup" colspan="{int(n)}" class="group">{esc(label)}</th>'
            if n > 1 else f'<th scope="col" class="group">{esc(label)}</th>'
            for label, n in header_groups) + "</tr>")
    out.append("<tr>" + "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
               + "</tr></thead><tbody>")
    body = [list(row) for row in rows]
    reasons = ordered_unique(
        (v if isinstance(v, Missing) else Missing()).reason
        for row in body for v in row if isinstance(v, Missing) or _is_nan(v))
    marks = {r: (_SUPERSCRIPTS[i] if len(reasons) > 1 and i < len(_SUPERSCRIPTS) else "")
             for i, r in enumerate(reasons)}
    for row in body:
        cells = []
        for v in row:
            if isinstance(v, Missing) or _is_nan(v):
                why = v.reason if isinstance(v, Missing) else Missing().reason
                cells.append(f'<td class="num na" title="{esc(why)}">—{marks[why]}</td>')
            elif isinstance(v, Html):
                cells.append(f"<td>{v}</td>")
            elif _is_number(v):
                cells.append(f'<td class="num">{esc(fmt(v, digits))}</td>')
            else:
                cells.append(f"<td>{esc(fmt(v, digits))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    if reasons:
        notes = "; ".join(f"—{marks[r]} {r}" for r in reasons)
        out.append(f'<p class="note table-note">{esc(notes)}.</p>')
    return "".join(out)


_SUPERSCRIPTS = "¹²³⁴⁵⁶⁷⁸⁹"


def _is_nan(value: Any) -> bool:
    return (isinstance(value, (float, np.floating)) and math.isnan(float(value))) or (
        isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind == "f"
        and bool(np.isnan(value)))


def figure(svg: str, caption: str = "") -> str:
    """Wrap an SVG chart in a ``<figure>`` with an escaped caption."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="chart">{svg}{cap}</figure>'


def panels(svgs: Sequence[str], caption: str = "") -> str:
    """Small multiples: several SVG charts side by side in one ``<figure>`` (a grid that
    wraps on narrow screens), with one escaped caption."""
    if len(svgs) == 1:
        return figure(svgs[0], caption)
    cells = "".join(f'<div class="panel">{s}</div>' for s in svgs)
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="chart panels"><div class="panel-grid">{cells}</div>{cap}</figure>'


def ordered_unique(items: Iterable[T]) -> list[T]:
    """Items in order of first appearance, without repeats."""
    seen: dict[Any, None] = {}
    for it in items:
        seen.setdefault(it, None)
    return list(seen)


def latest_per(
    records: Sequence[RecordLike], fields: Sequence[str] = ("model", "dataset", "layer")
) -> list[RecordLike]:
    """One record per combination of ``fields``: the last one given (the newest when records
    come from :meth:`~repscope.db.ResultsDB.query`), kept at its key's first position."""
    best: dict[Hashable, RecordLike] = {}
    for r in records:
        best[tuple(getattr(r, f) for f in fields)] = r
    return list(best.values())


def series_labels(records: Sequence[RecordLike]) -> dict[tuple[str, str], str]:
    """Label for each (model, dataset) pair: the model name, plus the data set when the
    records span several data sets."""
    pairs = ordered_unique((r.model, r.dataset) for r in records)
    many_datasets = len({d for _, d in pairs}) > 1
    out = {}
    for m, d in pairs:
        name = m or "(model)"
        out[(m, d)] = f"{name} · {d}" if many_datasets and d else name
    return out
