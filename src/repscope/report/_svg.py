"""Small, dependency-free SVG charts for the HTML report.

Every function returns one ``<svg role="img">`` string whose first child is a ``<title>``;
all text is HTML-escaped; NaN values leave gaps (lines), are skipped (points, bars) or drawn
grey (heat maps); constant data and empty data never divide by zero. The SVG has a
``viewBox`` and scales to its container. No ids are used, so any number of charts can share
one page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import numpy as np

__all__ = ["PALETTE", "bar_chart", "colour_for", "heatmap", "line_chart", "nice_ticks", "scatter"]

#: Colour-blind-safe categorical palette (Paul Tol's "bright" + extras).
PALETTE = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#555555",
           "#ee8866", "#44bb99", "#994455")

_VIRIDIS = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962",
            "#addc30", "#fde725")
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
_AXIS = "#444"
_GRID = "#e5e7eb"
_CHAR_W = 6.4  # approximate width of one character at font-size 11

Series = Mapping[str, tuple[Any, Any]]


def colour_for(i: int) -> str:
    """The ``i``-th categorical colour (cycling)."""
    return PALETTE[i % len(PALETTE)]


def _e(text: Any) -> str:
    return escape(str(text), quote=True)


def _n(v: float) -> str:
    """Compact coordinate text."""
    return f"{v:.1f}".rstrip("0").rstrip(".") if math.isfinite(v) else "0"


def _truncate(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(1, n - 1)] + "…"


def _open(width: float, height: float, title: str, desc: str = "") -> list[str]:
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {_n(width)} {_n(height)}" '
        f'width="{_n(width)}" height="{_n(height)}" style="max-width:100%;height:auto" '
        f'font-family="{_e(_FONT)}" font-size="11">',
        f"<title>{_e(title)}</title>",
    ]
    if desc:
        parts.append(f"<desc>{_e(desc)}</desc>")
    return parts


def _text(x: float, y: float, s: str, *, anchor: str = "middle", size: float = 11,
          fill: str = _AXIS, weight: str = "", rotate: float | None = None,
          baseline: str = "") -> str:
    attrs = f'x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" font-size="{_n(size)}" fill="{fill}"'
    if weight:
        attrs += f' font-weight="{weight}"'
    if baseline:
        attrs += f' dominant-baseline="{baseline}"'
    if rotate is not None:
        attrs += f' transform="rotate({_n(rotate)} {_n(x)} {_n(y)})"'
    return f"<text {attrs}>{_e(s)}</text>"


# -- scales and ticks ----------------------------------------------------------------------


def _finite(a: Any) -> np.ndarray:
    arr = np.asarray(a, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def _span(values: Sequence[np.ndarray], include_zero: bool = False) -> tuple[float, float]:
    finite = [v for v in (_finite(a) for a in values) if v.size]
    if not finite:
        return (0.0, 1.0)
    lo = min(float(v.min()) for v in finite)
    hi = max(float(v.max()) for v in finite)
    if include_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):  # constant data
        pad = abs(lo) * 0.1 if lo != 0 else 1.0
        lo, hi = lo - pad, hi + pad
    return lo, hi


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]`` (first <= lo, last >= hi)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi < lo:
        lo, hi = hi, lo
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        pad = abs(lo) * 0.1 if lo != 0 else 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, n)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = mag * 10
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= m * mag * (1 + 1e-9):
            step = m * mag
            break
    start = math.floor(lo / step + 1e-9) * step
    count = math.ceil((hi - start) / step - 1e-9)
    return [round(start + i * step, 12) for i in range(count + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1.0,) if k1 - k0 > 2 else (1.0, 2.0, 5.0)
    ticks = [m * 10.0**k for k in range(k0, k1 + 1) for m in mults]
    inside = [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
    return inside if len(inside) >= 2 else [lo, hi]


def _fmt_tick(v: float, ticks: Sequence[float]) -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(v) or 1.0
    big = max(abs(t) for t in ticks)
    if big >= 1e5 or (0 < step < 1e-3):
        return f"{v:.3g}"
    decimals = 0 if step >= 1 else math.ceil(-math.log10(step) - 1e-9)
    if step < 1 and abs(round(step * 10**decimals) - step * 10**decimals) > 1e-6:
        decimals += 1
    out = f"{v:.{decimals}f}"
    return "0" if float(out) == 0 else out


class _Axes:
    """Data-to-pixel mapping and axis drawing for cartesian charts."""

    def __init__(self, left: float, top: float, width: float, height: float,
                 x: tuple[float, float], y: tuple[float, float], *, x_log: bool = False) -> None:
        self.left, self.top, self.width, self.height = left, top, width, height
        self.x_log = x_log
        self.x_lo, self.x_hi = (math.log10(x[0]), math.log10(x[1])) if x_log else x
        self.y_lo, self.y_hi = y
        if self.x_hi - self.x_lo <= 0:
            self.x_lo, self.x_hi = self.x_lo - 0.5, self.x_hi + 0.5
        if self.y_hi - self.y_lo <= 0:
            self.y_lo, self.y_hi = self.y_lo - 0.5, self.y_hi + 0.5

    def px(self, x: float) -> float:
        v = math.log10(x) if self.x_log else x
        return self.left + (v - self.x_lo) / (self.x_hi - self.x_lo) * self.width

    def py(self, y: float) -> float:
        return self.top + (1 - (y - self.y_lo) / (self.y_hi - self.y_lo)) * self.height

    def draw(self, x_ticks: Sequence[float], y_ticks: Sequence[float], *,
             x_tick_labels: Sequence[str] | None = None, x_label: str = "",
             y_label: str = "", rotate_x: bool = False) -> list[str]:
        out = ['<g class="axes">']
        bottom, right = self.top + self.height, self.left + self.width
        for t in y_ticks:
            y = self.py(t)
            out.append(f'<line x1="{_n(self.left)}" y1="{_n(y)}" x2="{_n(right)}" y2="{_n(y)}" '
                       f'stroke="{_GRID}"/>')
            out.append(_text(self.left - 6, y, _fmt_tick(t, y_ticks), anchor="end",
                             baseline="middle"))
        labels = x_tick_labels or [_fmt_tick(t, x_ticks) if not self.x_log else f"{t:g}"
                                   for t in x_ticks]
        for t, lab in zip(x_ticks, labels):
            x = self.px(t)
            out.append(f'<line x1="{_n(x)}" y1="{_n(bottom)}" x2="{_n(x)}" y2="{_n(bottom + 4)}" '
                       f'stroke="{_AXIS}"/>')
            if rotate_x:
                tick = _text(x + 3, bottom + 10, _truncate(lab, 22), anchor="end", rotate=-40)
            else:
                tick = _text(x, bottom + 16, _truncate(lab, 22))
            if len(lab) > 22:  # shortened: the full name on hover
                tick = tick.replace(">", f"><title>{_e(lab)}</title>", 1)
            out.append(tick)
        out.append(f'<path d="M{_n(self.left)},{_n(self.top)} V{_n(bottom)} H{_n(right)}" '
                   f'fill="none" stroke="{_AXIS}"/>')
        if x_label:
            longest = max((len(s) for s in labels), default=1)
            extra = 22 + min(22, longest) * _CHAR_W * 0.64 if rotate_x else 34
            out.append(_text(self.left + self.width / 2, bottom + extra, x_label, size=12))
        if y_label:
            cx, cy = self.left - 46, self.top + self.height / 2
            out.append(_text(cx, cy, y_label, size=12, rotate=-90))
        out.append("</g>")
        return out


#: Characters per legend line; longer names wrap onto more lines (never cut).
_LEGEND_CHARS = 30
_LEGEND_LINE = 14.0


def _wrap(text: str, n: int = _LEGEND_CHARS) -> list[str]:
    """``text`` in lines of at most ``n`` characters, broken at spaces (a longer word is split)."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        while len(word) > n:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:n])
            word = word[n:]
        if line and len(line) + 1 + len(word) > n:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return lines


def _legend_size(names: Sequence[str]) -> tuple[float, float]:
    """Width and height of the legend of ``names`` (0, 0 for fewer than two)."""
    if len(names) < 2:
        return 0.0, 0.0
    wrapped = [_wrap(n) for n in names]
    longest = max(len(line) for w in wrapped for line in w)
    height = sum(_LEGEND_LINE * len(w) + 6 for w in wrapped)
    return 36 + longest * _CHAR_W, height


def _legend(names: Sequence[str], x: float, y: float, *, marker: str = "line",
            colours: Sequence[str] = (), dashed: Sequence[bool] = (),
            banded: Sequence[bool] = ()) -> list[str]:
    out = ['<g class="legend">']
    yy = y
    for i, name in enumerate(names):
        c = colours[i] if i < len(colours) else colour_for(i)
        lines = _wrap(name)
        out.append(f'<g class="legend-entry"><title>{_e(name)}</title>')
        if marker == "line":
            if i < len(banded) and banded[i]:
                out.append(f'<rect x="{_n(x)}" y="{_n(yy - 6)}" width="18" height="12" '
                           f'fill="{c}" fill-opacity="0.2"/>')
            dash = ' stroke-dasharray="5 3"' if i < len(dashed) and dashed[i] else ""
            out.append(f'<line x1="{_n(x)}" y1="{_n(yy)}" x2="{_n(x + 18)}" y2="{_n(yy)}" '
                       f'stroke="{c}" stroke-width="2.5"{dash}/>')
        else:
            out.append(f'<circle cx="{_n(x + 9)}" cy="{_n(yy)}" r="4" fill="{c}"/>')
        spans = "".join(
            f'<tspan x="{_n(x + 24)}" dy="{0 if k == 0 else _n(_LEGEND_LINE)}">{_e(line)}</tspan>'
            for k, line in enumerate(lines))
        out.append(f'<text x="{_n(x + 24)}" y="{_n(yy)}" dominant-baseline="middle" '
                   f'fill="{_AXIS}">{spans}</text></g>')
        yy += _LEGEND_LINE * len(lines) + 6
    out.append("</g>")
    return out


def _no_data(out: list[str], ax: _Axes) -> None:
    out.append(_text(ax.left + ax.width / 2, ax.top + ax.height / 2, "no finite data",
                     fill="#888"))


def _xy(series: Series) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for name, (xs, ys) in series.items():
        x = np.asarray(xs, dtype=float).ravel()
        y = np.asarray(ys, dtype=float).ravel()
        m = min(x.size, y.size)
        out.append((str(name), x[:m], y[:m]))
    return out


#: Hover targets drawn per series at most (evenly spaced) on very long curves.
_MAX_HOVER_POINTS = 300


def _fmt_value(v: float) -> str:
    return f"{v:.4g}"


def _segments(ok: np.ndarray) -> list[np.ndarray]:
    """Index runs where ``ok`` holds (a NaN breaks a line or a band)."""
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return []
    return np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)


def _cartesian(kind: str, series: Series, *, title: str, x_label: str, y_label: str,
               x_tick_labels: Sequence[str] | None, x_log: bool,
               y_range: tuple[float, float] | None, width: float, height: float,
               colours: Sequence[int] | None = None, dashed: Sequence[bool] | None = None,
               bands: Mapping[str, tuple[Any, Any]] | None = None, band_label: str = "",
               point_labels: Mapping[str, Sequence[str]] | None = None,
               y_format: str = "") -> str:
    data = _xy(series)
    cols = [colour_for(colours[i] if colours is not None and i < len(colours) else i)
            for i in range(len(data))]
    dash = [bool(dashed[i]) if dashed is not None and i < len(dashed) else False
            for i in range(len(data))]
    if x_log:  # non-positive x has no place on a log axis
        data = [(n, np.where(x > 0, x, np.nan), y) for n, x, y in data]
    band_of: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, x, _y in data:
        if bands and name in bands:
            lo = np.asarray(bands[name][0], dtype=float).ravel()[: x.size]
            hi = np.asarray(bands[name][1], dtype=float).ravel()[: x.size]
            if lo.size == x.size and hi.size == x.size and (np.isfinite(lo) & np.isfinite(hi)).any():
                band_of[name] = (lo, hi)
    names = [n for n, _, _ in data]
    legend_w, legend_h = _legend_size(names)
    title_lines = _wrap(title, max(20, int((width - 62.0) / 7.6)))  # a long title wraps
    left, top, right_pad = 62.0, 30.0 + 16 * (len(title_lines) - 1), 16.0 + legend_w
    rotate_x = bool(x_tick_labels) and max((len(s) for s in x_tick_labels or [""]),
                                           default=0) * _CHAR_W * len(x_tick_labels or []) > (
        width - left - right_pad) * 0.9
    bottom_pad = (34 + min(22, max(len(s) for s in x_tick_labels or [""])) * _CHAR_W * 0.64
                  + (12 if x_label else 0) if rotate_x else 48.0)
    height = max(height, top + 8 + legend_h + bottom_pad)  # the legend gets the room it needs
    pw, ph = max(60.0, width - left - right_pad), max(60.0, height - top - bottom_pad)
    xs_all = [x[np.isfinite(y)] for _, x, y in data]
    if x_tick_labels:
        x_span: tuple[float, float] = (-0.3, len(x_tick_labels) - 0.7)
    elif x_log:
        fx = [v for v in (_finite(a) for a in xs_all) if v.size]
        x_span = (min(float(v.min()) for v in fx), max(float(v.max()) for v in fx)) if fx \
            else (1.0, 10.0)
        if x_span[1] <= x_span[0]:
            x_span = (x_span[0] / 2, x_span[1] * 2)
    else:
        x_span = _span(xs_all)
    y_span = y_range or _span([y for _, _, y in data] + [b for lh in band_of.values() for b in lh])
    y_ticks = nice_ticks(*y_span)
    if y_range is None:
        y_span = (y_ticks[0], y_ticks[-1])
    if x_tick_labels:
        step = max(1, math.ceil(len(x_tick_labels) / max(1, pw / 14)))
        x_ticks = [float(i) for i in range(0, len(x_tick_labels), step)]
        tick_labels: Sequence[str] | None = [x_tick_labels[int(i)] for i in x_ticks]
    elif x_log:
        x_ticks, tick_labels = _log_ticks(*x_span), None
    else:
        x_ticks, tick_labels = nice_ticks(*x_span, n=6), None
        x_span = (min(x_span[0], x_ticks[0]), max(x_span[1], x_ticks[-1]))
    ax = _Axes(left, top, pw, ph, x_span, y_span, x_log=x_log)
    out = _open(width, height, title)
    for k, line in enumerate(title_lines):
        out.append(_text(left, 16 + 16 * k, line, anchor="start", size=13, weight="600",
                         fill="#111"))
    out += ax.draw(x_ticks, y_ticks, x_tick_labels=tick_labels, x_label=x_label,
                   y_label=y_label, rotate_x=rotate_x)

    def clamp(v: float) -> float:  # bands may reach past a fixed y range
        return min(max(v, ax.y_lo), ax.y_hi)

    for i, (name, x, _y) in enumerate(data):  # bands under every line
        if name not in band_of:
            continue
        lo, hi = band_of[name]
        good = np.isfinite(x) & np.isfinite(lo) & np.isfinite(hi)
        for seg in _segments(good):
            if seg.size == 1:
                j = int(seg[0])
                out.append(f'<path class="band" d="M{_n(ax.px(x[j]))},{_n(ax.py(clamp(lo[j])))} '
                           f'V{_n(ax.py(clamp(hi[j])))}" stroke="{cols[i]}" stroke-opacity="0.45" '
                           'stroke-width="6"/>')
                continue
            upper = [f"{_n(ax.px(x[j]))},{_n(ax.py(clamp(hi[j])))}" for j in seg]
            lower = [f"{_n(ax.px(x[j]))},{_n(ax.py(clamp(lo[j])))}" for j in seg[::-1]]
            out.append(f'<polygon class="band" points="{" ".join(upper + lower)}" '
                       f'fill="{cols[i]}" fill-opacity="0.18" stroke="none"/>')
    any_point = False
    for i, (name, x, y) in enumerate(data):
        c = cols[i]
        dash_attr = ' stroke-dasharray="6 4"' if dash[i] else ""
        ok = np.isfinite(x) & np.isfinite(y)
        any_point |= bool(ok.any())
        out.append(f'<g class="series"><title>{_e(name)}</title>')
        segs = _segments(ok)
        if kind == "line":
            for seg in segs:
                if seg.size > 1:
                    pts = " ".join(f"{_n(ax.px(x[j]))},{_n(ax.py(y[j]))}" for j in seg)
                    out.append(f'<polyline points="{pts}" fill="none" stroke="{c}" '
                               f'stroke-width="2" stroke-linejoin="round"{dash_attr}/>')
        labels_i = point_labels.get(name) if point_labels else None
        visible = kind != "line" or int(ok.sum()) <= 60
        idx = np.flatnonzero(ok)
        if idx.size > _MAX_HOVER_POINTS and visible is False:
            idx = idx[np.unique(np.linspace(0, idx.size - 1, _MAX_HOVER_POINTS).round()
                                .astype(int))]
        lone = {int(seg[0]) for seg in segs if seg.size == 1}
        for jj in idx:
            j = int(jj)
            k = round(float(x[j]))
            if labels_i is not None and j < len(labels_i):
                where = str(labels_i[j])
            elif x_tick_labels and 0 <= k < len(x_tick_labels):
                where = f"{x_label or 'x'} {x_tick_labels[k]}"
            else:
                where = f"{x_label or 'x'} = {_fmt_value(x[j])}"
            tip = f"{name} — {where}: {y_format}{_fmt_value(y[j])}"
            if name in band_of and np.isfinite(band_of[name][0][j]):
                lo_j, hi_j = band_of[name][0][j], band_of[name][1][j]
                tip += f" ({band_label or 'interval'} {_fmt_value(lo_j)}–{_fmt_value(hi_j)})"
            r, style = ("3.2", ' fill-opacity="0.75"') if kind != "line" else ("3", "")
            if kind == "line" and not visible and j not in lone:
                style = ' fill-opacity="0"'  # a hover target on a long curve
            out.append(f'<circle cx="{_n(ax.px(x[j]))}" cy="{_n(ax.py(y[j]))}" r="{r}" '
                       f'fill="{c}"{style}><title>{_e(tip)}</title></circle>')
        out.append("</g>")
    if not any_point:
        _no_data(out, ax)
    if legend_w:
        out += _legend(names, left + pw + 16, top + 8, marker="line" if kind == "line" else "dot",
                       colours=cols, dashed=dash, banded=[n in band_of for n in names])
    out.append("</svg>")
    return "\n".join(out)


def line_chart(series: Series, *, title: str, x_label: str = "", y_label: str = "",
               x_tick_labels: Sequence[str] | None = None, x_log: bool = False,
               y_range: tuple[float, float] | None = None, width: float = 920,
               height: float = 360, colours: Sequence[int] | None = None,
               dashed: Sequence[bool] | None = None,
               bands: Mapping[str, tuple[Any, Any]] | None = None, band_label: str = "",
               point_labels: Mapping[str, Sequence[str]] | None = None) -> str:
    """A line chart of one or more series.

    Every point has hover text (an SVG ``<title>``): the series, where it is (its point label,
    tick label or x value), the value and, with a band, the interval. Long curves (over 60
    points) draw no markers but keep up to 300 invisible hover targets. Legends wrap long
    names onto several lines (the chart grows to fit) and are never cut.

    Parameters
    ----------
    series : mapping of str to (x, y)
        Series name -> x and y values (array-likes of equal length). NaN in ``y`` (or ``x``)
        breaks the line there.
    title, x_label, y_label : str
        Chart title (also the SVG's accessible ``<title>``) and axis labels.
    x_tick_labels : sequence of str, optional
        Categorical x axis: x values are positions ``0..len-1`` labelled with these (thinned
        when crowded, rotated when long).
    x_log : bool, default=False
        Logarithmic x axis (non-positive x values are dropped).
    y_range : (float, float), optional
        Fixed y limits (e.g. ``(0, 1)`` for accuracies).
    width, height : float
        Size in pixels (the SVG scales down with its container).
    colours : sequence of int, optional
        Palette index of each series (default: 0, 1, 2, ...).
    dashed : sequence of bool, optional
        Which series to draw dashed.
    bands : mapping of str to (low, high), optional
        An interval per series name, drawn as a translucent band of the series' colour under
        its line (a lone point gets a bar). NaN bounds leave a gap.
    band_label : str
        What the band is, for the hover text (default ``"interval"``).
    point_labels : mapping of str to sequence of str, optional
        Per series, what each point is (e.g. its layer name) for the hover text.

    Returns
    -------
    str
        An ``<svg role="img">`` element.
    """
    return _cartesian("line", series, title=title, x_label=x_label, y_label=y_label,
                      x_tick_labels=x_tick_labels, x_log=x_log, y_range=y_range,
                      width=width, height=height, colours=colours, dashed=dashed,
                      bands=bands, band_label=band_label, point_labels=point_labels)


def scatter(series: Series, *, title: str, x_label: str = "", y_label: str = "",
            x_log: bool = False, y_range: tuple[float, float] | None = None,
            width: float = 640, height: float = 440,
            point_labels: Mapping[str, Sequence[str]] | None = None) -> str:
    """A scatter plot; points with a NaN coordinate are skipped, every point has hover text
    (see :func:`line_chart`)."""
    return _cartesian("scatter", series, title=title, x_label=x_label, y_label=y_label,
                      x_tick_labels=None, x_log=x_log, y_range=y_range, width=width,
                      height=height, point_labels=point_labels)


def bar_chart(labels: Sequence[str], values: Any, *, title: str, errors: Any = None,
              x_label: str = "", y_label: str = "", y_range: tuple[float, float] | None = None,
              width: float = 920, height: float = 340) -> str:
    """A bar chart of one value per label, with optional symmetric error bars.

    NaN values draw no bar, only an ``n/a`` mark. Bars start at zero.
    """
    vals = np.asarray(values, dtype=float).ravel()
    labs = [str(s) for s in labels][: vals.size]
    errs = None if errors is None else np.abs(np.asarray(errors, dtype=float).ravel())
    longest = max((len(s) for s in labs), default=1)
    rotate = longest * _CHAR_W > (width - 80) / max(1, len(labs)) * 0.9
    bottom_pad = 34 + min(22, longest) * _CHAR_W * 0.64 + (12 if x_label else 0) if rotate \
        else 48.0
    left, top = 62.0, 30.0
    pw, ph = max(60.0, width - left - 16), max(60.0, height - top - bottom_pad)
    tops = [vals + (errs if errs is not None else 0), vals - (errs if errs is not None else 0)]
    y_span = y_range or _span(tops, include_zero=True)
    y_ticks = nice_ticks(*y_span)
    if y_range is None:
        y_span = (y_ticks[0], y_ticks[-1])
    ax = _Axes(left, top, pw, ph, (-0.5, max(1, len(labs)) - 0.5), y_span)
    out = _open(width, height, title)
    out.append(_text(left, 16, title, anchor="start", size=13, weight="600", fill="#111"))
    out += ax.draw([float(i) for i in range(len(labs))], y_ticks, x_tick_labels=labs,
                   x_label=x_label, y_label=y_label, rotate_x=rotate)
    bw = pw / max(1, len(labs)) * 0.7
    zero = ax.py(min(max(0.0, y_span[0]), y_span[1]))
    for i, (lab, v) in enumerate(zip(labs, vals)):
        cx = ax.px(i)
        if not math.isfinite(v):
            out.append(_text(cx, zero - 4, "n/a", fill="#888"))
            continue
        y = ax.py(v)
        out.append(f'<rect x="{_n(cx - bw / 2)}" y="{_n(min(y, zero))}" width="{_n(bw)}" '
                   f'height="{_n(abs(zero - y))}" fill="{colour_for(0)}">'
                   f"<title>{_e(lab)}: {v:.4g}</title></rect>")
        if errs is not None and i < errs.size and math.isfinite(errs[i]):
            y1, y2 = ax.py(v - errs[i]), ax.py(v + errs[i])
            out.append(f'<path d="M{_n(cx)},{_n(y1)} V{_n(y2)} M{_n(cx - 4)},{_n(y1)} '
                       f'H{_n(cx + 4)} M{_n(cx - 4)},{_n(y2)} H{_n(cx + 4)}" stroke="#222"/>')
    if not np.isfinite(vals).any():
        _no_data(out, ax)
    out.append("</svg>")
    return "\n".join(out)


def _viridis(t: float) -> str:
    t = min(1.0, max(0.0, t)) * (len(_VIRIDIS) - 1)
    i = min(int(t), len(_VIRIDIS) - 2)
    f = t - i
    a, b = _VIRIDIS[i], _VIRIDIS[i + 1]
    rgb = [round(int(a[k:k + 2], 16) * (1 - f) + int(b[k:k + 2], 16) * f) for k in (1, 3, 5)]
    return "#" + "".join(f"{c:02x}" for c in rgb)


def heatmap(matrix: Any, *, title: str, row_labels: Sequence[str] | None = None,
            col_labels: Sequence[str] | None = None, row_title: str = "", col_title: str = "",
            vmin: float | None = None, vmax: float | None = None,
            colour_label: str = "", max_width: float = 900) -> str:
    """A heat map of a matrix, with row/column labels and a colour bar (viridis).

    Parameters
    ----------
    matrix : array-like of shape (n_rows, n_cols)
    title : str
    row_labels, col_labels : sequence of str, optional
        Default: indices. Long labels are shortened; the full text is in each cell's tooltip.
    row_title, col_title : str
        Axis titles (e.g. the two models' names).
    vmin, vmax : float, optional
        Colour limits; default the finite min and max (constant data gets a unit range).
    colour_label : str
        Caption of the colour bar.
    max_width : float
        Width budget in pixels for the whole figure.

    Returns
    -------
    str
        An ``<svg role="img">``; NaN cells are grey.
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2:
        m = np.atleast_2d(m.reshape(m.shape[0], -1) if m.ndim > 2 else m)
    n_rows, n_cols = m.shape
    rows = [str(s) for s in (row_labels if row_labels is not None else range(n_rows))]
    cols = [str(s) for s in (col_labels if col_labels is not None else range(n_cols))]
    rows += [str(i) for i in range(len(rows), n_rows)]
    cols += [str(i) for i in range(len(cols), n_cols)]
    finite = m[np.isfinite(m)]
    lo = float(finite.min()) if vmin is None and finite.size else (vmin if vmin is not None
                                                                     else 0.0)
    hi = float(finite.max()) if vmax is None and finite.size else (vmax if vmax is not None
                                                                     else 1.0)
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        lo, hi = lo - 0.5, hi + 0.5
    row_chars = min(28, max((len(s) for s in rows), default=1))
    col_chars = min(28, max((len(s) for s in cols), default=1))
    left = 24 + row_chars * _CHAR_W + (18 if row_title else 0)
    bar_w = 90.0
    cell = max(4.0, min(34.0, (max_width - left - bar_w) / max(1, n_cols), 520 / max(1, n_rows)))
    top = 34.0
    gw, gh = cell * n_cols, cell * n_rows
    bottom = 20 + col_chars * _CHAR_W * 0.72 + (20 if col_title else 0)
    width, height = left + gw + bar_w, max(top + gh + bottom, top + 160)
    out = _open(width, height, title)
    out.append(_text(8, 18, title, anchor="start", size=13, weight="600", fill="#111"))
    annotate = cell >= 30 and n_rows * n_cols <= 400
    cell_titles = n_rows * n_cols <= 40000
    out.append('<g class="cells">')
    for i in range(n_rows):
        for j in range(n_cols):
            v = m[i, j]
            fill = _viridis((v - lo) / (hi - lo)) if math.isfinite(v) else "#d9d9d9"
            shown = f"{v:.4g}" if math.isfinite(v) else "— (not computed)"
            tip = (f"<title>{_e(rows[i])} × {_e(cols[j])}: "
                   f"{shown}</title>" if cell_titles else "")
            out.append(f'<rect x="{_n(left + j * cell)}" y="{_n(top + i * cell)}" '
                       f'width="{_n(cell + 0.3)}" height="{_n(cell + 0.3)}" fill="{fill}">'
                       f"{tip}</rect>")
            if annotate and math.isfinite(v):
                dark = (v - lo) / (hi - lo) > 0.6
                out.append(_text(left + (j + 0.5) * cell, top + (i + 0.5) * cell, f"{v:.2f}",
                                 size=9, fill="#111" if dark else "#fff", baseline="middle"))
    out.append("</g>")
    label_every_r = max(1, math.ceil(11 / cell))
    label_every_c = max(1, math.ceil(11 / cell))
    for i in range(0, n_rows, label_every_r):
        out.append(_text(left - 5, top + (i + 0.5) * cell, _truncate(rows[i], 28), anchor="end",
                         baseline="middle", size=10))
    for j in range(0, n_cols, label_every_c):
        x, y = left + (j + 0.5) * cell, top + gh + 6
        out.append(_text(x, y, _truncate(cols[j], 28), anchor="end", size=10, rotate=-50,
                         baseline="middle"))
    if row_title:
        out.append(_text(10, top + gh / 2, row_title, size=12, rotate=-90))
    if col_title:
        out.append(_text(left + gw / 2, height - 6, col_title, size=12))
    # colour bar: stacked rects (no gradient ids, so many heat maps can share a page)
    bx, bh, steps = left + gw + 18, min(gh, 220.0) if gh >= 80 else 120.0, 48
    for k in range(steps):
        t = 1 - (k + 0.5) / steps
        out.append(f'<rect x="{_n(bx)}" y="{_n(top + k * bh / steps)}" width="12" '
                   f'height="{_n(bh / steps + 0.4)}" fill="{_viridis(t)}"/>')
    out.append(f'<rect x="{_n(bx)}" y="{_n(top)}" width="12" height="{_n(bh)}" fill="none" '
               f'stroke="{_AXIS}" stroke-width="0.5"/>')
    for t in nice_ticks(lo, hi, n=4):
        if lo - 1e-12 <= t <= hi + 1e-12:
            y = top + (1 - (t - lo) / (hi - lo)) * bh
            out.append(f'<line x1="{_n(bx + 12)}" y1="{_n(y)}" x2="{_n(bx + 16)}" y2="{_n(y)}" '
                       f'stroke="{_AXIS}"/>')
            out.append(_text(bx + 19, y, _fmt_tick(t, nice_ticks(lo, hi, n=4)), anchor="start",
                             baseline="middle", size=10))
    if colour_label:
        out.append(_text(bx, top + bh + 16, _truncate(colour_label, 14), anchor="start", size=10))
    if not finite.size:
        out.append(_text(left + gw / 2, top + gh / 2, "no finite data", fill="#555"))
    elif not np.isfinite(m).all():
        out.append(_text(bx, top + bh + 30, "grey: not computed", anchor="start", size=10, fill="#666"))
    out.append("</svg>")
    return "\n".join(out)
