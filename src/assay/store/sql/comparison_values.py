"""Each record's value of each evaluation label, read for a comparison without any row.

:class:`~assay.store.comparison_values.ComparisonValues` by the rules of
:func:`assay.aggregation.summarize_records`, read from the narrowest source that gives the
same numbers:

- **All runs.** Records and their ``idx`` come from ``record_aggregates`` (facet
  ``status``). A boolean label's share of True and mode, and a categorical label's mode,
  are that table's ``mean`` and ``mode``: a share is a count over a count, exact in any
  order. A score's mean is not: the database adds in its own order, where the reference
  adds exactly (``math.fsum``), and the last bit can differ, which would mark a record
  whose runs merely came in another order as improved. So a score label's run values
  (with their record id, by ``ix_evaluations_label``) are added here, one ``fsum`` per
  record.
- **One run.** Each record has one value, read off the covering indexes of the run (one
  range per label and type). That is exact only when every evaluation of the label is in
  those indexes — no errors, no ``None``, no JSON, no categorical value too long for the
  index — which four index-only counts per experiment tell (all evaluations of each label,
  and the usable values in each index).
- **Anything else** (JSON values, a categorical label mixed with numbers, a label with
  errors or ``None`` in the one-run case): the label's evaluations are read in full and
  given to ``summarize_records`` itself, with only the fields it reads.

Known difference, kept for speed: a categorical value stored from a non-string (a tuple,
say) is compared by its stored text rather than by the text of its JSON round trip.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, cast

import numpy
from sqlalchemy import Connection, case, func, or_, select, true

from assay.aggregation import AggregateValue, summarize_records
from assay.store.collector import collector_paused
from assay.store.comparison_values import ComparisonValues, LabelValues
from assay.store.records import EvaluationRecord, MetricType, RowRecord
from assay.store.sql.aggregates import EVALUATION_PREFIX, KIND_BITS
from assay.store.sql.tables import MODE_INDEX_LENGTH, evaluations, record_aggregates, spans
from assay.store.sql.values import evaluation_from_columns

__all__ = ["comparison_values"]

VALUE_KINDS = ("categorical", "score", "boolean", "json")
"""The kinds of usable value in ``record_aggregates.kinds``; ``stored:`` ones are the
metric types stored with the evaluations."""
INDEXED_COLUMNS = {
    "score": "score_value",
    "boolean": "boolean_value",
    "categorical": "categorical_value",
}
"""The value column of each type, each with a partial covering index on (experiment,
label, run, value, span) of its usable values (``tables.EVALUATION_VALUE_INDEXES``)."""


class _Records:
    """The side's records in dataset order, and where each one's values go."""

    def __init__(self, found: Iterable[tuple[str, int]]) -> None:
        ordered = sorted(found, key=itemgetter(1, 0))
        self.record_ids = [record_id for record_id, _ in ordered]
        self.idx = [idx for _, idx in ordered]
        self.position = {record_id: n for n, record_id in enumerate(self.record_ids)}


class _Roots:
    """The rows (root spans) of one run, or of every run, as columns."""

    def __init__(self, connection: Connection, experiment_id: str, run: int | None) -> None:
        query = select(
            spans.c.span_id, spans.c.record_id, spans.c.idx, spans.c.run_iteration
        ).where(spans.c.experiment_id == experiment_id, spans.c.parent_id.is_(None))
        if run is not None:
            query = query.where(spans.c.run_iteration == run)
        found = connection.execute(query).all()
        self.span_ids: list[str] = [row[0] for row in found]
        self.record_ids: list[str] = [row[1] for row in found]
        self.idx: list[int] = [row[2] for row in found]
        self.runs: list[int] = [row[3] for row in found]

    def places(self, records: _Records) -> dict[str, int]:
        """Span id to the position of its record."""
        position = records.position
        return dict(zip(self.span_ids, [position[r] for r in self.record_ids], strict=True))


@collector_paused()
def comparison_values(
    connection: Connection, experiment_id: str, *, run: int | None
) -> ComparisonValues:
    """The comparison values of one run of the experiment, or of all its runs (``None``;
    the caller refreshes the aggregates first)."""
    if run is None:
        return _all_runs(connection, experiment_id)
    return _one_run(connection, experiment_id, run)


def _usable(kind: str) -> list[Any]:
    """The condition of ``kind``'s partial index, repeated so that the database uses it."""
    column = evaluations.c[INDEXED_COLUMNS[kind]]
    condition: list[Any] = [column.is_not(None), evaluations.c.error_type.is_(None)]
    if kind == "categorical":
        condition.append(func.length(column) <= MODE_INDEX_LENGTH)
    return condition


def _indexed_values(
    connection: Connection, experiment_id: str, label: str, kind: str, run: int | None
) -> Sequence[Any]:
    """``(span_id, value)`` of the label's usable values of one type, off its index."""
    query = select(evaluations.c.span_id, evaluations.c[INDEXED_COLUMNS[kind]]).where(
        evaluations.c.experiment_id == experiment_id,
        evaluations.c.label == label,
        *_usable(kind),
    )
    if run is not None:
        query = query.where(evaluations.c.run_iteration == run)
    return connection.execute(query).all()


# All runs -------------------------------------------------------------------------------


def _all_runs(connection: Connection, experiment_id: str) -> ComparisonValues:
    records = _Records(
        connection.execute(
            select(record_aggregates.c.record_id, record_aggregates.c.idx).where(
                record_aggregates.c.experiment_id == experiment_id,
                record_aggregates.c.facet == "status",
            )
        )
    )
    tallies: dict[str, Counter[str]] = {}
    for facet, kinds, count in connection.execute(
        select(record_aggregates.c.facet, record_aggregates.c.kinds, func.count())
        .where(
            record_aggregates.c.experiment_id == experiment_id,
            # A range of the primary key, where LIKE would read every facet.
            record_aggregates.c.facet >= EVALUATION_PREFIX,
            record_aggregates.c.facet < EVALUATION_PREFIX[:-1] + chr(ord(":") + 1),
        )
        .group_by(record_aggregates.c.facet, record_aggregates.c.kinds)
    ):
        tally = tallies.setdefault(facet[len(EVALUATION_PREFIX) :], Counter())
        for name, bit in KIND_BITS.items():
            if (kinds or 0) & bit:
                tally[name] += count
    labels: dict[str, LabelValues] = {}
    rest: list[str] = []
    for label, tally in sorted(tallies.items()):
        kinds = {name for name in VALUE_KINDS if tally[name]}
        stored = {name for name in VALUE_KINDS if tally["stored:" + name]}
        if "json" in kinds or "json" in stored:
            rest.append(label)
        elif kinds == {"boolean"} or kinds == {"categorical"}:
            labels[label] = _from_aggregates(connection, experiment_id, label, kinds, records)
        elif "score" in kinds and kinds <= {"score", "boolean"}:
            labels[label] = _score_means(connection, experiment_id, label, records)
        elif not kinds:
            labels[label] = _no_values(stored, records)
        else:
            rest.append(label)
    if rest:
        roots = _Roots(connection, experiment_id, None)
        labels.update(_summarized(connection, experiment_id, rest, None, roots, records))
    return ComparisonValues(records.record_ids, records.idx, dict(sorted(labels.items())))


def _from_aggregates(
    connection: Connection, experiment_id: str, label: str, kinds: set[str], records: _Records
) -> LabelValues:
    boolean = kinds == {"boolean"}
    values: list[AggregateValue] = [None] * len(records.record_ids)
    modes: list[bool | None] = [None] * len(values)
    for record_id, mean, mode in connection.execute(
        select(
            record_aggregates.c.record_id, record_aggregates.c.mean, record_aggregates.c.mode
        ).where(
            record_aggregates.c.experiment_id == experiment_id,
            record_aggregates.c.facet == EVALUATION_PREFIX + label,
        )
    ):
        position = records.position.get(record_id)
        if position is None:
            continue
        if boolean:
            values[position] = mean
            modes[position] = None if mode is None else mode == "true"
        else:
            values[position] = mode
    if boolean:
        return LabelValues("boolean", values, modes)
    return LabelValues("categorical", values)


def _score_means(
    connection: Connection, experiment_id: str, label: str, records: _Records
) -> LabelValues:
    # Every evaluation of the label, by ix_evaluations_label: one range read in table order.
    # The usable values are picked here, since naming them in SQL would steer the database
    # to the value indexes, which hold no record id and cost one table visit per value.
    # (An evaluation is stored only for a row's span, so its record id is the row's.)
    found = connection.execute(
        select(
            evaluations.c.record_id,
            func.coalesce(
                evaluations.c.score_value,
                case((evaluations.c.boolean_value == true(), 1.0), else_=0.0),
            ),
        ).where(
            evaluations.c.experiment_id == experiment_id,
            evaluations.c.label == label,
            evaluations.c.error_type.is_(None),
            or_(evaluations.c.score_value.is_not(None), evaluations.c.boolean_value.is_not(None)),
        )
    ).all()
    position = records.position
    # Group the run values by record with one sort, then one exact sum per record.
    where = numpy.array([position.get(row[0], -1) for row in found], dtype=numpy.int64)
    numbers = numpy.array([row[1] for row in found], dtype=numpy.float64)
    order = numpy.argsort(where, kind="stable")
    where, ordered = where[order], numbers[order].tolist()
    starts = numpy.flatnonzero(numpy.diff(where, prepend=-2)).tolist()
    ends = [*starts[1:], len(ordered)]
    values: list[AggregateValue] = [None] * len(records.record_ids)
    for start, end, place in zip(starts, ends, where[starts].tolist(), strict=True):
        if place >= 0:  # -1: a record with no row in the runs, which rows do not carry
            values[place] = _mean(ordered[start:end])
    return LabelValues("score", values)


def _mean(numbers: list[float]) -> float:
    try:
        return math.fsum(numbers) / len(numbers)
    except (OverflowError, ValueError):
        # As the reference does: fsum refuses inf - inf; plain addition gives nan.
        return float(sum(numbers)) / len(numbers)


def _no_values(stored: set[str], records: _Records) -> LabelValues:
    """A label none of whose evaluations has a usable value: the type stored with them if
    they agree, else categorical (the reference's rule)."""
    metric_type = cast(MetricType, next(iter(stored)) if len(stored) == 1 else "categorical")
    count = len(records.record_ids)
    nothing: list[AggregateValue] = [None] * count
    return LabelValues(metric_type, nothing, [None] * count if metric_type == "boolean" else None)


# One run --------------------------------------------------------------------------------


def _label_counts(connection: Connection, experiment_id: str, kind: str | None) -> Counter[str]:
    """Per label, how many evaluations (``kind=None``), or how many usable values of the
    type ``kind`` its index holds, in every run: each an index-only count."""
    query = select(evaluations.c.label, func.count()).where(
        evaluations.c.experiment_id == experiment_id
    )
    if kind is not None:
        query = query.where(*_usable(kind))
    found = connection.execute(query.group_by(evaluations.c.label))
    return Counter({label: count for label, count in found})


def _one_run(connection: Connection, experiment_id: str, run: int) -> ComparisonValues:
    roots = _Roots(connection, experiment_id, run)
    records = _Records(zip(roots.record_ids, roots.idx, strict=True))
    places = roots.places(records)
    totals = _label_counts(connection, experiment_id, None)
    indexed = {kind: _label_counts(connection, experiment_id, kind) for kind in INDEXED_COLUMNS}
    labels: dict[str, LabelValues] = {}
    rest: list[str] = []
    for label, total in sorted(totals.items()):
        kinds = {kind for kind, counts in indexed.items() if counts[label]}
        complete = total == sum(counts[label] for counts in indexed.values())
        if complete and (kinds <= {"score", "boolean"} or kinds == {"categorical"}):
            found = _one_run_label(connection, experiment_id, label, kinds, run, places, records)
            if found is not None:  # None: not evaluated in this run
                labels[label] = found
        else:
            rest.append(label)
    if rest:
        labels.update(_summarized(connection, experiment_id, rest, run, roots, records))
    return ComparisonValues(records.record_ids, records.idx, dict(sorted(labels.items())))


def _one_run_label(
    connection: Connection,
    experiment_id: str,
    label: str,
    kinds: set[str],
    run: int,
    places: dict[str, int],
    records: _Records,
) -> LabelValues | None:
    """A label all of whose evaluations are usable values in the covering indexes."""
    count = len(records.record_ids)
    # Object arrays: a record without a value keeps None, and tolist() gives back the
    # Python values unchanged.
    values = numpy.full(count, None, dtype=object)
    modes = numpy.full(count, None, dtype=object)
    seen: set[str] = set()
    for kind in sorted(kinds):
        found = _indexed_values(connection, experiment_id, label, kind, run)
        # -1: a span that is no row of the run, which rows do not carry either.
        where = numpy.array([places.get(row[0], -1) for row in found], dtype=numpy.int64)
        kept = where >= 0
        if not kept.any():
            continue
        seen.add(kind)
        column = [row[1] for row in found]
        if kind == "categorical":
            values[where[kept]] = numpy.array(column, dtype=object)[kept]
            continue
        # One run's mean is its value; a boolean's share is 1 or 0.
        numbers = numpy.array(column, dtype=numpy.float64)[kept]
        values[where[kept]] = numbers.tolist()
        if kind == "boolean":
            modes[where[kept]] = (numbers > 0).tolist()
    if not seen:
        return None
    if seen == {"categorical"}:
        return LabelValues("categorical", values.tolist())
    if seen == {"boolean"}:
        return LabelValues("boolean", values.tolist(), modes.tolist())
    return LabelValues("score", values.tolist())


# Everything else: the reference itself ---------------------------------------------------


@dataclass(slots=True)
class _Row:
    """What ``summarize_records`` reads of a row, and nothing more."""

    run_iteration: int
    record_id: str
    idx: int
    evaluations: list[EvaluationRecord]


def _summarized(
    connection: Connection,
    experiment_id: str,
    labels: list[str],
    run: int | None,
    roots: _Roots,
    records: _Records,
) -> dict[str, LabelValues]:
    """The labels' values by ``summarize_records`` over their evaluations, read in full."""
    query = select(evaluations).where(
        evaluations.c.experiment_id == experiment_id, evaluations.c.label.in_(labels)
    )
    if run is not None:
        query = query.where(evaluations.c.run_iteration == run)
    rows = {
        span_id: _Row(run_iteration, record_id, idx, [])
        for span_id, record_id, idx, run_iteration in zip(
            roots.span_ids, roots.record_ids, roots.idx, roots.runs, strict=True
        )
    }
    # In key order, as rows carry them: of two evaluations of one label, the last wins.
    for found in connection.execute(query.order_by(evaluations.c.pk)):
        row = rows.get(found.span_id)
        if row is not None:  # else not a row's span: rows do not carry it either
            row.evaluations.append(evaluation_from_columns(found))
    iterations = sorted(set(roots.runs))
    evaluated = [row for row in rows.values() if row.evaluations]
    summaries = summarize_records(cast(list[RowRecord], evaluated), iterations)
    result: dict[str, LabelValues] = {}
    count = len(records.record_ids)
    for label in labels:
        entries = [
            (records.position[summary["record_id"]], summary["evaluations"][label])
            for summary in summaries
            if label in summary["evaluations"]
        ]
        if not entries:
            continue
        metric_type = entries[0][1]["metric_type"]
        values: list[AggregateValue] = [None] * count
        modes: list[bool | None] = [None] * count
        for position, entry in entries:
            values[position] = entry["value"]
            modes[position] = entry["mode"]
        result[label] = LabelValues(
            metric_type, values, modes if metric_type == "boolean" else None
        )
    return result
