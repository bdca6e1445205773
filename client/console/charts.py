"""Server-rendered SVG line charts (no chart library: a chart is a few hundred bytes
of SVG the browser draws at once, and nothing to vendor).

Pure functions; any thread. A chart is a fixed viewBox that scales to its box's
width: each series is one polyline, y from 0 to a rounded-up maximum, x over
the window the samples span, newest at the right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 600, 160
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 10, 20   # margins for the axis labels


@dataclass(frozen=True)
class Series:
    label: str
    css_class: str                 # colour, from console.css
    points: list[tuple[float, float]]   # (time_s, value)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is >= value (1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def line_chart(title: str, series: list[Series], unit_format, window_s: float) -> str:
    """An SVG document fragment; ``unit_format(value) -> str`` labels the y axis."""
    points = [p for s in series for p in s.points]
    if not points:
        return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
                f'aria-label="{escape(title)}"><text x="{WIDTH // 2}" y="{HEIGHT // 2}" '
                f'text-anchor="middle" class="axis">waiting for samples…</text></svg>')
    newest = max(t for t, _ in points)
    y_max = nice_ceiling(max(v for _, v in points))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(t: float, v: float) -> str:
        x = LEFT + plot_w * (1 - min(newest - t, window_s) / window_s)
        return f"{x:.1f},{TOP + plot_h * (1 - v / y_max):.1f}"

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(title)}" data-points="{len(points)}">',
             _grid(y_max, unit_format, plot_w, plot_h, window_s)]
    for s in series:
        if s.points:
            coords = " ".join(xy(t, v) for t, v in s.points)
            parts.append(f'<polyline class="line {s.css_class}" points="{coords}"/>')
    parts.append(_legend(series))
    parts.append("</svg>")
    return "".join(parts)


def _grid(y_max: float, unit_format, plot_w: int, plot_h: int, window_s: float) -> str:
    rows = []
    for i in range(3):
        value = y_max * i / 2
        y = TOP + plot_h * (1 - i / 2)
        rows.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" '
                    f'y2="{y:.1f}"/><text class="axis" x="{LEFT - 4}" y="{y + 4:.1f}" '
                    f'text-anchor="end">{escape(unit_format(value))}</text>')
    minutes = window_s / 60
    rows.append(f'<text class="axis" x="{LEFT}" y="{HEIGHT - 4}">−{minutes:g} min</text>'
                f'<text class="axis" x="{LEFT + plot_w}" y="{HEIGHT - 4}" '
                f'text-anchor="end">now</text>')
    return "".join(rows)


def _legend(series: list[Series]) -> str:
    items, x = [], LEFT + 8
    for s in series:
        if not s.points:
            continue
        items.append(f'<rect class="{s.css_class}" x="{x}" y="{TOP + 2}" width="10" height="4"/>'
                     f'<text class="axis" x="{x + 14}" y="{TOP + 8}">{escape(s.label)}</text>')
        x += 14 + 8 * len(s.label) + 12
    return "".join(items)
