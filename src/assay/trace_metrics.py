"""The automatic metrics of an experiment: duration, tokens and estimated cost.

Each is aggregated like a score evaluation — a record's value is the mean over its runs,
the experiment's ``value`` the mean of those record means — so that a record with more
runs does not weigh more. ``total`` sums every row (what the experiment cost), and
duration also gets the median and 95th percentile of single calls. Rows without the
metric (a task that reported no tokens, a model with no known price) are left out and
counted in ``rows`` only when present.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TypedDict

from assay.store.records import RowRecord


class TraceMetric(TypedDict):
    value: float | None
    """Mean over records of each record's mean over its runs."""
    total: float | None
    """Sum over all rows."""
    rows: int
    """Rows that reported the metric."""
    p50: float | None
    """Median of single rows (duration only)."""
    p95: float | None
    """95th percentile of single rows (duration only)."""


def _percentile(sorted_values: Sequence[float], share: float) -> float:
    # Linear interpolation between closest ranks, numpy's default method.
    position = (len(sorted_values) - 1) * share
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


_METRICS: dict[str, Callable[[RowRecord], float | None]] = {
    "duration": lambda row: row.duration_ns / 1e9,
    "input_tokens": lambda row: row.rollup.input_tokens if row.rollup else None,
    "output_tokens": lambda row: row.rollup.output_tokens if row.rollup else None,
    "total_tokens": lambda row: row.rollup.total_tokens if row.rollup else None,
    "estimated_total_cost": lambda row: row.rollup.estimated_total_cost if row.rollup else None,
}
"""Duration in seconds; tokens as counts; cost in nanodollars (1e-9 US dollars)."""


def summarize_trace_metrics(rows: Sequence[RowRecord]) -> dict[str, TraceMetric]:
    """Duration, token and cost aggregates of these rows (see the module docstring)."""
    summary: dict[str, TraceMetric] = {}
    for name, read in _METRICS.items():
        by_record: dict[str, list[float]] = defaultdict(list)
        for row in rows:
            value = read(row)
            if value is not None:
                by_record[row.record_id].append(float(value))
        values = sorted(v for record in by_record.values() for v in record)
        means = [math.fsum(record) / len(record) for record in by_record.values()]
        with_percentiles = name == "duration" and bool(values)
        summary[name] = {
            "value": math.fsum(means) / len(means) if means else None,
            "total": math.fsum(values) if values else None,
            "rows": len(values),
            "p50": _percentile(values, 0.5) if with_percentiles else None,
            "p95": _percentile(values, 0.95) if with_percentiles else None,
        }
    return summary
