"""Charts as inline SVG strings, drawn here in Python.

The report is one HTML file that works offline and can be attached to a ticket or
archived by CI: no JavaScript, no chart library, no CDN. Three shapes cover what
the report shows: a histogram (latencies), lines over time (events per second,
memory per service) and a timeline (faults and recoveries).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from e2e.measure import percentile

__all__ = ["histogram", "lines", "timeline"]

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04",
           "#db2777", "#4b5563")
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step) + 2)
            if first + i * step <= high + step * 0.001]


def _fmt(value: float) -> str:
    if abs(value) >= 10_000:
        return f"{value / 1000:.4g}k"
    if abs(value) >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.1f}"


def _frame(width: int, height: int, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">'
            f"<title>{escape(title)}</title>"
            f'<text x="{width / 2}" y="14" text-anchor="middle" {_FONT} font-weight="600">'
            f"{escape(title)}</text>" + "".join(body) + "</svg>")


class _Plot:
    """The plotting area of a chart and its scales."""

    def __init__(self, width: int, height: int, x: tuple[float, float],
                 y: tuple[float, float], left: int = 48) -> None:
        self.left, self.top, self.right, self.bottom = left, 24, width - 12, height - 34
        self.x0, self.x1 = x
        self.y0, self.y1 = y

    def sx(self, value: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (value - self.x0) / span * (self.right - self.left)

    def sy(self, value: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.bottom - (value - self.y0) / span * (self.bottom - self.top)

    def axes(self, x_label: str, y_label: str) -> list[str]:
        out = [f'<line x1="{self.left}" y1="{self.bottom}" x2="{self.right}" '
               f'y2="{self.bottom}" stroke="#6b7280"/>',
               f'<line x1="{self.left}" y1="{self.top}" x2="{self.left}" y2="{self.bottom}" '
               f'stroke="#6b7280"/>']
        for tick in _ticks(self.x0, self.x1):
            x = self.sx(tick)
            out.append(f'<text x="{x:.1f}" y="{self.bottom + 13}" text-anchor="middle" '
                       f'{_FONT} fill="#374151">{_fmt(tick)}</text>')
        for tick in _ticks(self.y0, self.y1, 4):
            y = self.sy(tick)
            out.append(f'<line x1="{self.left}" y1="{y:.1f}" x2="{self.right}" y2="{y:.1f}" '
                       f'stroke="#e5e7eb"/><text x="{self.left - 4}" y="{y + 4:.1f}" '
                       f'text-anchor="end" {_FONT} fill="#374151">{_fmt(tick)}</text>')
        out.append(f'<text x="{(self.left + self.right) / 2}" y="{self.bottom + 28}" '
                   f'text-anchor="middle" {_FONT}>{escape(x_label)}</text>')
        out.append(f'<text x="12" y="{(self.top + self.bottom) / 2}" text-anchor="middle" '
                   f'{_FONT} transform="rotate(-90 12 {(self.top + self.bottom) / 2})">'
                   f"{escape(y_label)}</text>")
        return out


def histogram(values: Sequence[float], *, title: str, unit: str = "ms", bins: int = 30,
              width: int = 560, height: int = 220) -> str:
    """Bars of how many values fall in each range, with p50 and p95 marked. Values
    beyond p99.5 go to the last bar, so one outlier does not flatten the rest."""
    if not values:
        return _frame(width, height, title, [
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" {_FONT}>'
            "no values</text>"])
    low, high = min(values), max(percentile(list(values), 0.995), min(values) + 1e-9)
    size = (high - low) / bins
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, int((value - low) / size)))] += 1
    plot = _Plot(width, height, (low, high), (0, max(counts) * 1.1))
    body = plot.axes(unit, "count")
    for index, count in enumerate(counts):
        x0, x1 = plot.sx(low + index * size), plot.sx(low + (index + 1) * size)
        y = plot.sy(count)
        body.append(f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 1, 0.5):.1f}" '
                    f'height="{plot.bottom - y:.1f}" fill="{PALETTE[0]}"><title>'
                    f"{_fmt(low + index * size)} to {_fmt(low + (index + 1) * size)} {unit}: "
                    f"{count}</title></rect>")
    for q, colour in ((0.5, PALETTE[2]), (0.95, PALETTE[1])):
        value = percentile(list(values), q)
        x = plot.sx(min(value, high))
        anchor, dx = ("end", -3) if x > plot.right - 70 else ("start", 3)
        body.append(f'<line x1="{x:.1f}" y1="{plot.top}" x2="{x:.1f}" y2="{plot.bottom}" '
                    f'stroke="{colour}" stroke-dasharray="4 3"/><text x="{x + dx:.1f}" '
                    f'y="{plot.top + 10 + 12 * (q > 0.5)}" text-anchor="{anchor}" {_FONT} '
                    f'fill="{colour}">p{round(q * 100)} {_fmt(value)}</text>')
    return _frame(width, height, title, body)


def lines(series: Mapping[str, Sequence[tuple[float, float]]], *, title: str,
          x_label: str = "seconds", y_label: str = "", limit: float | None = None,
          limit_label: str = "", width: int = 560, height: int = 240) -> str:
    """One line per series of (x, y) points, a legend, and an optional dashed
    horizontal line for a threshold."""
    points = [p for values in series.values() for p in values]
    if not points:
        return _frame(width, height, title, [
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" {_FONT}>'
            "no values</text>"])
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    top = max([*ys, limit or 0]) * 1.1 or 1.0
    bottom = min(0.0, min(ys))
    plot = _Plot(width, height - 16 * math.ceil(len(series) / 3), (min(xs), max(xs)),
                 (bottom, top))
    body = plot.axes(x_label, y_label)
    for index, (name, values) in enumerate(sorted(series.items())):
        colour = PALETTE[index % len(PALETTE)]
        path = " ".join(f"{plot.sx(x):.1f},{plot.sy(y):.1f}" for x, y in values)
        body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                    f'stroke-width="1.5"><title>{escape(name)}</title></polyline>')
        lx = 12 + (index % 3) * (width // 3)
        ly = plot.bottom + 44 + 16 * (index // 3)
        body.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>'
                    f'<text x="{lx + 14}" y="{ly - 4}" {_FONT}>{escape(name)}</text>')
    if limit is not None:
        y = plot.sy(limit)
        body.append(f'<line x1="{plot.left}" y1="{y:.1f}" x2="{plot.right}" y2="{y:.1f}" '
                    f'stroke="{PALETTE[1]}" stroke-dasharray="6 3"/><text x="{plot.right}" '
                    f'y="{y - 3:.1f}" text-anchor="end" {_FONT} fill="{PALETTE[1]}">'
                    f"{escape(limit_label or _fmt(limit))}</text>")
    return _frame(width, height, title, body)


def timeline(entries: Sequence[dict[str, Any]], *, title: str, width: int = 720) -> str:
    """A lane per fault: a mark where it struck and a bar until service was back
    (green), or to the end of the chart when it never came back (red)."""
    lane = 26
    height = 64 + lane * max(1, len(entries))
    ends = [float(e.get("recovered_s", e.get("at_s", 0))) for e in entries]
    starts = [float(e.get("at_s", 0)) for e in entries]
    if not entries:
        return _frame(width, 60, title, [
            f'<text x="{width / 2}" y="40" text-anchor="middle" {_FONT}>no faults</text>'])
    low, high = min(starts), max([*ends, *starts]) + 1
    plot = _Plot(width - 80, height, (low, high), (0, 1), left=200)  # room for the labels
    body = [f'<line x1="{plot.left}" y1="{height - 34}" x2="{plot.right}" y2="{height - 34}" '
            f'stroke="#6b7280"/>']
    for tick in _ticks(low, high, 8):
        body.append(f'<text x="{plot.sx(tick):.1f}" y="{height - 21}" text-anchor="middle" '
                    f"{_FONT}>{_fmt(tick)}</text>")
    body.append(f'<text x="{(plot.left + plot.right) / 2}" y="{height - 6}" '
                f'text-anchor="middle" {_FONT}>seconds since the scenario started</text>')
    for index, entry in enumerate(entries):
        y = 30 + index * lane
        ok = bool(entry.get("ok"))
        start = plot.sx(float(entry.get("at_s", 0)))
        end = plot.sx(float(entry["recovered_s"])) if "recovered_s" in entry else plot.right
        colour = PALETTE[2] if ok else PALETTE[1]
        label = str(entry.get("fault", "?"))
        duration = entry.get("duration_ms")
        text = ("not back" if duration is None else f"{float(duration) / 1000:.1f} s"
                if float(duration) >= 10_000 else f"{float(duration):.0f} ms")
        body.append(f'<text x="{plot.left - 6}" y="{y + 12}" text-anchor="end" {_FONT}>'
                    f"{escape(label)}</text>"
                    f'<rect x="{start:.1f}" y="{y + 3}" width="{max(end - start, 2):.1f}" '
                    f'height="12" fill="{colour}" opacity="0.8"><title>{escape(label)}: '
                    f"{escape(text)} {escape(str(entry.get('detail', '')))}</title></rect>"
                    f'<circle cx="{start:.1f}" cy="{y + 9}" r="4" fill="{PALETTE[1]}"/>'
                    f'<text x="{end + 6:.1f}" y="{y + 13}" {_FONT}>{escape(text)}</text>')
    return _frame(width, height, title, body)
