"""Small charts drawn on the server as inline SVG: no chart library, nothing to load.

- :func:`run_values`: an evaluation's value in each run, as dots on a line, with the
  experiment's value and its 95% interval as a band behind them;
- :func:`interval`: one value with its interval on a horizontal scale;
- :func:`bars`: one bar per side of a comparison, with interval whiskers;
- :func:`histogram`: how a score's record values are spread.

Every text placed in the SVG is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#3b6fd8", "#d8793b", "#3ba374", "#9b59b6", "#c0392b", "#7f8c8d")


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _scale(values: Sequence[float], *, unit_interval: bool) -> tuple[float, float]:
    if unit_interval:
        return 0.0, 1.0
    low, high = min(values), max(values)
    if low == high:
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.1
    return low - pad, high + pad


def run_values(
    per_run: Sequence[float | None],
    *,
    value: float | None = None,
    ci95: Sequence[float] | None = None,
    unit_interval: bool = False,
    width: int = 180,
    height: int = 44,
) -> str:
    """Dots for each run's value (run 1 at the left), over the interval of ``value``."""
    numbers = _finite(per_run)
    if not numbers:
        return ""
    everything = numbers + _finite([value, *(ci95 or [])])
    low, high = _scale(everything, unit_interval=unit_interval)
    pad_x, pad_y = 8, 6

    def y(number: float) -> float:
        return height - pad_y - (number - low) / (high - low) * (height - 2 * pad_y)

    count = len(per_run)
    step = (width - 2 * pad_x) / max(count - 1, 1)
    parts = [
        f'<svg class="chart runs" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="value in each of {count} runs">'
    ]
    if ci95 is not None and len(ci95) == 2:
        top, bottom = y(ci95[1]), y(ci95[0])
        parts.append(
            f'<rect x="0" y="{top:.1f}" width="{width}" height="{max(bottom - top, 1):.1f}" '
            'class="band"><title>95% interval</title></rect>'
        )
    if value is not None:
        parts.append(
            f'<line x1="0" x2="{width}" y1="{y(value):.1f}" y2="{y(value):.1f}" class="mean"/>'
        )
    points = [
        (pad_x + index * step, y(number))
        for index, number in enumerate(per_run)
        if number is not None and math.isfinite(number)
    ]
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{py:.1f}" for x, py in points)
        parts.append(f'<polyline points="{path}" class="trend"/>')
    for index, number in enumerate(per_run):
        if number is None or not math.isfinite(number):
            continue
        parts.append(
            f'<circle cx="{pad_x + index * step:.1f}" cy="{y(number):.1f}" r="3.5" class="dot">'
            f"<title>run {index + 1}: {number:.4g}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def interval(
    value: float | None,
    ci95: Sequence[float] | None,
    *,
    low: float = 0.0,
    high: float = 1.0,
    width: int = 140,
    height: int = 14,
) -> str:
    """A value (dot) and its interval (line) on ``[low, high]``."""
    if value is None or high <= low:
        return ""

    def x(number: float) -> float:
        clipped = min(max(number, low), high)
        return 4 + (clipped - low) / (high - low) * (width - 8)

    parts = [
        f'<svg class="chart interval" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="value and 95% interval">',
        f'<line x1="4" x2="{width - 4}" y1="{height / 2}" y2="{height / 2}" class="axis"/>',
    ]
    if ci95 is not None and len(ci95) == 2:
        parts.append(
            f'<line x1="{x(ci95[0]):.1f}" x2="{x(ci95[1]):.1f}" y1="{height / 2}" '
            f'y2="{height / 2}" class="whisker"/>'
        )
    parts.append(f'<circle cx="{x(value):.1f}" cy="{height / 2}" r="4" class="dot"/>')
    parts.append("</svg>")
    return "".join(parts)


def bars(
    sides: Sequence[tuple[str, float | None, Sequence[float] | None]],
    *,
    unit_interval: bool = False,
    width: int = 220,
    bar_height: int = 16,
) -> str:
    """One horizontal bar per ``(name, value, ci95)``, with the interval as a whisker."""
    numbers = _finite([value for _, value, _ in sides])
    if not numbers:
        return ""
    extents = numbers + _finite([bound for _, _, ci in sides for bound in (ci or [])])
    high = 1.0 if unit_interval else max(max(extents), 0.0) or 1.0
    low = 0.0 if unit_interval else min(min(extents), 0.0)
    label_width = 22
    span = width - label_width - 8
    height = len(sides) * (bar_height + 6) + 4

    def x(number: float) -> float:
        return label_width + (min(max(number, low), high) - low) / (high - low) * span

    parts = [
        f'<svg class="chart bars" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="value of each side">'
    ]
    for index, (name, value, ci) in enumerate(sides):
        top = 4 + index * (bar_height + 6)
        color = PALETTE[index % len(PALETTE)]
        parts.append(
            f'<text x="0" y="{top + bar_height - 4}" class="side">{escape(name[:3])}</text>'
        )
        if value is None or not math.isfinite(value):
            continue
        start, end = x(min(0.0, value) if low < 0 else low), x(value)
        parts.append(
            f'<rect x="{min(start, end):.1f}" y="{top}" width="{max(abs(end - start), 1):.1f}" '
            f'height="{bar_height}" fill="{color}" class="bar">'
            f"<title>{escape(name)}: {value:.4g}</title></rect>"
        )
        if ci is not None and len(ci) == 2:
            middle = top + bar_height / 2
            parts.append(
                f'<line x1="{x(ci[0]):.1f}" x2="{x(ci[1]):.1f}" y1="{middle}" y2="{middle}" '
                'class="whisker"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def histogram(
    values: Sequence[float | None],
    *,
    unit_interval: bool = False,
    bins: int = 10,
    width: int = 180,
    height: int = 44,
) -> str:
    """How many records fall in each of ``bins`` equal slices of the value range."""
    numbers = _finite(values)
    if not numbers:
        return ""
    low, high = (0.0, 1.0) if unit_interval else (min(numbers), max(numbers))
    if high == low:
        high = low + 1.0
    counts = [0] * bins
    for number in numbers:
        position = int((number - low) / (high - low) * bins)
        counts[min(max(position, 0), bins - 1)] += 1
    return histogram_of_counts(counts, low=low, high=high, width=width, height=height)


def histogram_of_counts(
    counts: Sequence[int], *, low: float, high: float, width: int = 180, height: int = 44
) -> str:
    """The histogram of counts already sliced (by the database) over ``[low, high]``."""
    bins = len(counts)
    tallest = max(counts, default=0)
    if not tallest:
        return ""
    step = width / bins
    parts = [
        f'<svg class="chart histogram" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="distribution of {sum(counts)} record values">'
    ]
    for index, count in enumerate(counts):
        if not count:
            continue
        bar = count / tallest * (height - 4)
        start = low + index * (high - low) / bins
        end = start + (high - low) / bins
        parts.append(
            f'<rect x="{index * step + 1:.1f}" y="{height - bar:.1f}" width="{step - 2:.1f}" '
            f'height="{bar:.1f}" class="bin"><title>{start:.3g}–{end:.3g}: {count} '
            "record(s)</title></rect>"
        )
    parts.append("</svg>")
    return "".join(parts)
