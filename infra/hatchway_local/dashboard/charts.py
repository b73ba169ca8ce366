"""Small line charts as SVG, drawn on the server: the page shows each as an image (no script
draws anything, no library is fetched), and every text in it is escaped."""

from __future__ import annotations

import datetime as dt
from xml.sax.saxutils import escape, quoteattr

from hatchway_local.dashboard.metrics import Chart

WIDTH, HEIGHT = 360, 140
"""The chart's size in CSS pixels (it scales with its box)."""

MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 44, 8, 10, 34

COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#4b5563")
"""One per line, in order; colour-blind-distinguishable enough next to the legend's labels."""


def _nice_ceiling(value: float) -> float:
    """The axis top: 1, 2 or 5 times a power of ten, at least ``value``."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return float(step * magnitude)
    return float(10 * magnitude)


def _label(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _clock(stamp: float, span: float) -> str:
    """A time on the axis; with the day when the chart spans one (both ends read 13:45)."""
    moment = dt.datetime.fromtimestamp(stamp, dt.UTC)
    return moment.strftime("%d %b %H:%M" if span > 12 * 3600 else "%H:%M")


def render(chart: Chart) -> str:
    """``chart`` as a standalone SVG document (times in UTC, like CloudWatch's API)."""
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    span = max(chart.end - chart.start, 1.0)
    top = _nice_ceiling(max((v for s in chart.series for _, v in s.points), default=0.0))

    def x(stamp: float) -> float:
        # A point stands for its period: draw it at the period's middle.
        return MARGIN_LEFT + (stamp + chart.period / 2 - chart.start) / span * plot_w

    def y(value: float) -> float:
        return MARGIN_TOP + plot_h - value / top * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="10">',
        f"<title>{escape(chart.title)}</title>",
        f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" '
        'fill="#fff" stroke="#d1d5db"/>',
    ]
    for fraction in (0.5, 1.0):
        level = y(top * fraction)
        parts.append(
            f'<line x1="{MARGIN_LEFT}" y1="{level:.1f}" x2="{MARGIN_LEFT + plot_w}" '
            f'y2="{level:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{MARGIN_LEFT - 4}" y="{level + 3:.1f}" text-anchor="end" fill="#4b5563">'
            f"{escape(_label(top * fraction))}</text>"
        )
    parts.append(
        f'<text x="{MARGIN_LEFT - 4}" y="{MARGIN_TOP + plot_h + 3}" text-anchor="end" '
        'fill="#4b5563">0</text>'
    )
    for stamp, anchor in ((chart.start, "start"), (chart.end, "end")):
        parts.append(
            f'<text x="{MARGIN_LEFT if anchor == "start" else MARGIN_LEFT + plot_w}" '
            f'y="{MARGIN_TOP + plot_h + 12}" text-anchor="{anchor}" fill="#4b5563">'
            f"{_clock(stamp, span)} UTC</text>"
        )
    if not any(s.points for s in chart.series):
        parts.append(
            f'<text x="{MARGIN_LEFT + plot_w / 2}" y="{MARGIN_TOP + plot_h / 2}" '
            'text-anchor="middle" fill="#6b7280">no data in this window</text>'
        )
    legend_x = MARGIN_LEFT
    for index, series in enumerate(chart.series):
        colour = COLOURS[index % len(COLOURS)]
        if len(series.points) == 1:
            ((stamp, value),) = series.points
            parts.append(
                f'<circle cx="{x(stamp):.1f}" cy="{y(value):.1f}" r="2.5" fill="{colour}"/>'
            )
        elif series.points:
            path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in series.points)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            )
        parts.append(
            f'<rect x="{legend_x}" y="{HEIGHT - 10}" width="8" height="8" fill="{colour}"/>'
            f'<text x="{legend_x + 11}" y="{HEIGHT - 2}" fill="#111827" '
            f"data-series={quoteattr(series.label)}>{escape(series.label)}</text>"
        )
        legend_x += 18 + 6 * len(series.label)
    parts.append("</svg>")
    return "".join(parts)
