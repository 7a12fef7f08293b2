"""What a comparison reads of one side: each record's value of each evaluation label.

A comparison (:mod:`assay.compare`) pairs records by id and needs, per side, nothing but
each record's value of each label over the selected runs — the mean (a boolean's share of
True), or the mode of a categorical label — and, for booleans, the record's mode. These
are :func:`assay.aggregation.summarize_records`'s ``value`` and ``mode``, so they follow
the same rules (metric type from the selected runs' values, errors and ``None`` left out,
ties to the first text).

``Backend.comparison_values`` returns them: ``SqlBackend`` computes them in the database
(:mod:`assay.store.sql.comparison_values`), never building a row; :func:`values_from_rows`
computes them from stored rows, as the reference the SQL path is tested against.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assay.store.records import JSON, MetricType, RowRecord

if TYPE_CHECKING:  # assay.aggregation imports the store, which imports this module
    from assay.aggregation import AggregateValue

__all__ = ["ComparisonValues", "LabelValues", "values_from_rows"]


@dataclass(frozen=True)
class LabelValues:
    """One evaluation label of every record of one side."""

    metric_type: MetricType
    """The label's metric type over the side's selected runs."""
    values: list[AggregateValue]
    """Per record (in ``ComparisonValues.record_ids`` order): the mean over the runs (a
    boolean's share of True), the mode of a categorical label, or ``None`` (no usable
    value, or a json label)."""
    modes: list[bool | None] | None = None
    """Boolean labels: each record's most frequent value (a tie is ``False``)."""

    def summary(self) -> AggregateValue:
        """The side's value of the label, by :func:`assay.aggregation.summarize`'s rule:
        the mean of the record values, or the mode of the record modes."""
        present = [value for value in self.values if value is not None]
        if not present or self.metric_type == "json":
            return None
        if self.metric_type == "categorical":
            counts = Counter(str(value) for value in present)
            best = max(counts.values())
            return min(value for value, count in counts.items() if count == best)
        numbers = [float(value) for value in present]
        try:
            return math.fsum(numbers) / len(numbers)
        except (OverflowError, ValueError):
            # As aggregation does: fsum refuses inf - inf, plain addition gives nan.
            return float(sum(numbers)) / len(numbers)


@dataclass(frozen=True)
class ComparisonValues:
    """Every record with a row in the selected runs, and its value of every label."""

    record_ids: list[str]
    """In dataset order: by ``idx``, then record id."""
    idx: list[int]
    """Each record's position in the dataset (the smallest among its rows)."""
    labels: dict[str, LabelValues]
    """Every label with an evaluation in the selected runs, errors included, by name."""

    def to_json(self) -> dict[str, JSON]:
        """A JSON form (``from_json`` reads it back); non-finite numbers become text,
        since JSON has none."""
        return {
            "record_ids": list(self.record_ids),
            "idx": list(self.idx),
            "labels": {
                label: {
                    "metric_type": item.metric_type,
                    "values": [_number_json(value) for value in item.values]
                    if item.metric_type in ("score", "boolean")
                    else list(item.values),
                    "modes": list(item.modes) if item.modes is not None else None,
                }
                for label, item in self.labels.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ComparisonValues:
        """The inverse of :meth:`to_json`."""
        labels: dict[str, LabelValues] = {}
        for label, item in data["labels"].items():
            metric_type: MetricType = item["metric_type"]
            numeric = metric_type in ("score", "boolean")
            labels[label] = LabelValues(
                metric_type,
                [_number_from(value) if numeric else value for value in item["values"]],
                item["modes"],
            )
        return cls(list(data["record_ids"]), list(data["idx"]), labels)


def _number_json(value: AggregateValue) -> JSON:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "nan", "inf", "-inf": float() reads them back
    return value


def _number_from(value: JSON) -> AggregateValue:
    if isinstance(value, str):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def values_from_rows(rows: Iterable[RowRecord], run_iterations: Sequence[int]) -> ComparisonValues:
    """The comparison values of stored rows, by :func:`assay.aggregation.summarize_records`.

    The reference for every backend, and what a backend that cannot compute them closer
    to the data falls back to.
    """
    from assay.aggregation import summarize_records

    records = summarize_records(rows, run_iterations)
    labels: dict[str, LabelValues] = {}
    names = sorted({label for record in records for label in record["evaluations"]})
    for label in names:
        entries = [record["evaluations"][label] for record in records]
        metric_type = entries[0]["metric_type"]
        labels[label] = LabelValues(
            metric_type,
            [entry["value"] for entry in entries],
            [entry["mode"] for entry in entries] if metric_type == "boolean" else None,
        )
    return ComparisonValues(
        [record["record_id"] for record in records],
        [record["idx"] for record in records],
        labels,
    )
