"""How the evaluations of a multi-run experiment become the numbers Assay shows.

An experiment runs its task over every record once per run. Each (record, run) pair is one
*row*, and each row carries one evaluation per evaluation label. This module aggregates
those evaluations at two levels.

**Record level** — across the runs of one record, per label:

- score: the mean of the run values;
- categorical: the mode of the run values;
- boolean: the share of runs that are ``True`` (a number between 0 and 1), and also the
  mode of the run values;
- json: not aggregated (the value is ``None``; the run values are still listed).

**Summary level** — across the records of the experiment, per label:

- score: the mean of the record means (every record weighs the same, however many runs
  it has usable values in);
- categorical: the mode of the record modes;
- boolean: the mean of the records' shares of ``True``;
- json: not aggregated (``None``).

Each summary also lists the same aggregate for every run alone (``per_run``): the rule
above applied to that run's rows only, where each record has a single value, so a score is
the mean over the records, a categorical label the mode over the records and a boolean
label the share of records that are ``True``.

**Errors and missing values.** An evaluation whose evaluator raised (it has an ``error``)
and an evaluation whose value is ``None`` are left out of every mean and mode and counted
instead: ``errors`` counts evaluations with an error, ``missing`` counts evaluations with
no error and a ``None`` value, plus every (record, run) pair that has no evaluation of the
label at all (a row that was never stored, or an evaluator that did not produce that
label for that row). A float ``NaN`` counts as missing too, so that one bad value cannot
turn a whole mean into ``NaN``. A record with no usable value for a label does not
contribute to that label's summary and is not counted in its ``records``. For every label,
``errors + missing + usable values = records x runs``, where the records are all records
that have a row in any of the runs.

**Mode ties** are broken the same way at both levels: among the most frequent values the
one whose text (``str(value)``) sorts first wins. For booleans this means ``False`` beats
``True`` on a tie (``"False" < "True"``): a boolean that passes exactly half the time is
not reported as passing.

**Metric type of a label** is decided by all usable values of that label in the
experiment, each typed by :func:`assay.evaluation.metric_type_of`. When they all have one
type, that is the label's type. When they mix booleans and numbers, the label is a score
and booleans count as 1 (``True``) and 0 (``False``). Any other mix makes the label
categorical, and each value is compared by its text: a string stays as it is and any other
value becomes ``str(value)``. A label with no usable value at all takes the metric type
recorded on its evaluations if they all agree, else categorical.

**Uncertainty and stability.** Each summary also carries its standard error and 95%
interval (``stderr``, ``ci95``), clustered by record: for a score the interval is of the
mean of the record means, for a boolean of the mean of the records' shares, with the
records as the independent units; ``run_sd``, the spread of the per-run values; and for
booleans ``pass_at_k`` and ``pass_hat_k``. Each record's aggregate carries how stable its
runs are: ``sd``, ``min`` and ``max`` for scores, ``agreement`` for categorical labels and
``flaky`` for booleans. :mod:`assay.stats` defines each of these statistics. None of them
changes a ``value``.

**Duplicates.** Rows whose ``run_iteration`` is not one of the experiment's run iterations
are ignored. If the same (record, run, label) appears more than once, the last one in
``rows`` wins.

Example::

    summary = summarize(rows, [1, 2, 3])
    summary["exact_match"]["value"]      # mean over records of each record's share of True
    summary["exact_match"]["per_run"]    # [share in run 1, share in run 2, share in run 3]
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Final, TypedDict

from assay import stats
from assay.evaluation import metric_type_of
from assay.store.records import (
    JSON,
    EvaluationRecord,
    MetricType,
    RowRecord,
    SummaryEvaluationRecord,
)

__all__ = [
    "AggregateValue",
    "EvaluationSummary",
    "RecordEvaluation",
    "RecordSummary",
    "SummaryEvaluationRuns",
    "summarize",
    "summarize_records",
    "summarize_summary_evaluations",
]

AggregateValue = float | str | None
"""An aggregate: a float for score and boolean labels, a string for categorical labels,
``None`` for json labels and wherever nothing usable was left to aggregate."""


class EvaluationSummary(TypedDict):
    """One evaluation label aggregated over the whole experiment."""

    metric_type: MetricType
    """The label's metric type, decided from all its usable values (see the module rules)."""

    value: AggregateValue
    """Score: mean of the record means. Categorical: mode of the record modes. Boolean: mean
    of the records' shares of ``True``. Json, or no usable value: ``None``."""

    records: int
    """How many records contributed, i.e. had at least one usable value for the label."""

    errors: int
    """How many evaluations of the label carry an error."""

    missing: int
    """Evaluations with no error and a ``None`` (or ``NaN``) value, plus (record, run) pairs
    with no evaluation of the label at all."""

    per_run: list[AggregateValue]
    """The summary rule applied to each run alone, in run order; ``None`` for a run with no
    usable value."""

    stderr: float | None
    """Score and boolean: the standard error of ``value``, clustered by record, i.e.
    ``sd(record values, ddof=1) / sqrt(records)``. ``None`` with fewer than two records and
    for other metric types."""

    ci95: list[float] | None
    """Score and boolean: the 95% interval ``[low, high]`` of ``value``, Student's t with
    ``records - 1`` degrees of freedom (cut to ``[0, 1]`` for booleans). ``None`` with fewer
    than two records and for other metric types."""

    run_sd: float | None
    """Score and boolean: the sample standard deviation of the ``per_run`` values, i.e. how
    much the summary moves from one run to another. ``None`` with fewer than two runs that
    have a value, and for other metric types."""

    pass_at_k: dict[int, float | None] | None
    """Boolean only: ``k`` to the chance that at least one of ``k`` runs of a record passes,
    for ``k = 1..runs`` (unbiased estimator, averaged over the records with at least ``k``
    usable runs; ``None`` for a ``k`` no record reaches). ``None`` for other types."""

    pass_hat_k: dict[int, float | None] | None
    """Boolean only: ``k`` to the chance that all of ``k`` runs of a record pass, for
    ``k = 1..runs``, averaged like ``pass_at_k``. ``None`` for other metric types."""


class RecordEvaluation(TypedDict):
    """One evaluation label of one record, aggregated across the runs."""

    metric_type: MetricType
    """The label's metric type in the whole experiment (the same for every record)."""

    value: AggregateValue
    """Score: mean over the runs. Categorical: mode over the runs. Boolean: share of runs
    that are ``True``. Json, or no usable value: ``None``."""

    runs: list[JSON]
    """The value of each run, in run order, as it enters the aggregate (booleans of a score
    label as 1/0, values of a categorical label as text); ``None`` where the evaluation
    failed or is missing."""

    errors: int
    """How many runs of this record have an evaluation of the label with an error."""

    missing: int
    """How many runs of this record have no usable value and no error."""

    mode: bool | None
    """Boolean labels only: the most frequent run value (``False`` wins a tie); ``None`` for
    other metric types and when no run has a usable value."""

    sd: float | None
    """Score labels only: the sample standard deviation of the usable run values
    (``ddof=1``); ``None`` with fewer than two, and for other metric types."""

    min: float | None
    """Score labels only: the smallest usable run value; ``None`` when there is none."""

    max: float | None
    """Score labels only: the largest usable run value; ``None`` when there is none."""

    agreement: float | None
    """Categorical labels only: the share of usable runs equal to the most frequent value
    (1.0 when all agree); ``None`` when there is none, and for other metric types."""

    flaky: bool | None
    """Boolean labels only: whether the usable runs disagree (some ``True``, some
    ``False``); ``None`` when there is none, and for other metric types."""


class RecordSummary(TypedDict):
    """Every evaluation label of one dataset record, aggregated across the runs."""

    record_id: str
    """The dataset record's id."""

    idx: int
    """The record's position in the dataset (the smallest one seen among its rows)."""

    evaluations: dict[str, RecordEvaluation]
    """Label to aggregate, for every label of the experiment, sorted by label."""


class SummaryEvaluationRuns(TypedDict):
    """One summary-evaluation label across the runs, for display."""

    metric_type: MetricType
    """Decided from the label's usable values by the same rule as row evaluations."""

    per_run: list[JSON]
    """The value of each run as returned by the summary evaluator, in run order; ``None``
    where it failed or is missing."""

    errors: int
    """How many runs' summary evaluations of the label carry an error."""


class _Failed:
    """The cell of an evaluation whose evaluator raised."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<failed>"


_FAILED: Final = _Failed()


def summarize(
    rows: Iterable[RowRecord], run_iterations: Sequence[int]
) -> dict[str, EvaluationSummary]:
    """Aggregate every evaluation label of an experiment over its records and runs.

    ``rows`` are the experiment's rows (any order); ``run_iterations`` its runs, e.g.
    ``[1, 2, 3]``, which fix the order of ``per_run``. Returns label to summary, sorted by
    label. The rules are those of the module docstring.
    """
    runs = _run_positions(run_iterations)
    table = _Table.build(rows, runs)
    return {label: _summarize_label(table, label) for label in table.labels}


def summarize_records(
    rows: Iterable[RowRecord], run_iterations: Sequence[int]
) -> list[RecordSummary]:
    """Aggregate every evaluation label of every record across the runs.

    One :class:`RecordSummary` per record that has a row in any of ``run_iterations``,
    sorted by ``idx`` (then ``record_id``). Every record lists every label of the
    experiment, so a label a record never got shows ``value=None`` and all runs missing.
    """
    runs = _run_positions(run_iterations)
    table = _Table.build(rows, runs)
    per_label = {label: _record_evaluations(table, label) for label in table.labels}
    return [
        RecordSummary(
            record_id=record_id,
            idx=table.records[record_id],
            evaluations={label: per_label[label][position] for label in table.labels},
        )
        for position, record_id in enumerate(table.record_order)
    ]


def summarize_summary_evaluations(
    items: Iterable[SummaryEvaluationRecord], run_iterations: Sequence[int]
) -> dict[str, SummaryEvaluationRuns]:
    """Lay out summary evaluations (one value per run and label) by label, in run order.

    Nothing is aggregated: a summary evaluator already sees a whole run. Items of runs not
    in ``run_iterations`` are ignored; the last item of a (run, label) wins.
    """
    runs = _run_positions(run_iterations)
    slots: dict[str, list[object]] = {}
    stored_types: dict[str, set[MetricType]] = {}
    for item in items:
        position = runs.get(item.run_iteration)
        if position is None:
            continue
        evaluation = item.evaluation
        cells = slots.get(evaluation.label)
        if cells is None:
            cells = slots[evaluation.label] = [None] * len(runs)
            stored_types[evaluation.label] = set()
        cells[position] = _cell(evaluation)
        stored_types[evaluation.label].add(evaluation.metric_type)

    result: dict[str, SummaryEvaluationRuns] = {}
    for label in sorted(slots):
        cells = slots[label]
        result[label] = SummaryEvaluationRuns(
            metric_type=_label_metric_type(cells, stored_types[label]),
            per_run=[None if cell is _FAILED else cell for cell in cells],
            errors=cells.count(_FAILED),
        )
    return result


class _Table:
    """Every evaluation of an experiment laid out as label → record → one cell per run.

    A cell is the evaluation's value, ``_FAILED`` for an evaluation with an error, or
    ``None`` where the value is missing: ``None`` or ``NaN``, or no evaluation of the label
    for that (record, run) pair at all.
    """

    __slots__ = ("cells", "labels", "metric_types", "record_order", "records", "runs")

    def __init__(
        self,
        runs: dict[int, int],
        records: dict[str, int],
        cells: dict[str, dict[str, list[JSON]]],
        stored_types: dict[str, set[MetricType]],
    ) -> None:
        self.runs = runs
        self.records = records
        self.record_order = sorted(records, key=lambda record_id: (records[record_id], record_id))
        self.cells = cells
        self.labels = sorted(cells)
        self.metric_types: dict[str, MetricType] = {
            label: _label_metric_type(
                # One value per Python type is enough to know the metric types present.
                {type(cell): cell for by_run in cells[label].values() for cell in by_run}.values(),
                stored_types[label],
            )
            for label in self.labels
        }

    @classmethod
    def build(cls, rows: Iterable[RowRecord], runs: dict[int, int]) -> _Table:
        # The one pass over the rows; everything after works on these cells.
        run_count = len(runs)
        records: dict[str, int] = {}
        cells: dict[str, dict[str, list[JSON]]] = {}
        # Only the evaluations without a usable value: their recorded type is the fallback.
        stored_types: dict[str, set[MetricType]] = {}
        for row in rows:
            position = runs.get(row.run_iteration)
            if position is None:
                continue
            record_id = row.record_id
            idx = records.get(record_id)
            if idx is None or row.idx < idx:
                records[record_id] = row.idx
            for evaluation in row.evaluations:
                label = evaluation.label
                by_record = cells.get(label)
                if by_record is None:
                    by_record = cells[label] = {}
                    stored_types[label] = set()
                by_run = by_record.get(record_id)
                if by_run is None:
                    by_run = by_record[record_id] = [None] * run_count
                cell = _cell(evaluation)
                by_run[position] = cell
                if cell is None or cell is _FAILED:
                    stored_types[label].add(evaluation.metric_type)
        return cls(runs, records, cells, stored_types)


def _cell(evaluation: EvaluationRecord) -> JSON:
    if evaluation.error is not None:
        return _FAILED
    value = evaluation.value
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _summarize_label(table: _Table, label: str) -> EvaluationSummary:
    metric_type = table.metric_types[label]
    evaluations = _record_evaluations(table, label)
    record_values = [e["value"] for e in evaluations if e["value"] is not None]
    contributing = sum(1 for e in evaluations if e["errors"] + e["missing"] < len(e["runs"]))
    per_run: list[AggregateValue] = []
    for position in range(len(table.runs)):
        run_values = [e["runs"][position] for e in evaluations]
        per_run.append(_aggregate(metric_type, [v for v in run_values if v is not None]))
    estimate = stats.MeanEstimate(None, None, None)
    spread: float | None = None
    at_k: dict[int, float | None] | None = None
    hat_k: dict[int, float | None] | None = None
    if metric_type in ("score", "boolean"):
        bounds = (0.0, 1.0) if metric_type == "boolean" else None
        numbers = [value for value in record_values if isinstance(value, float)]
        estimate = stats.clustered_mean(numbers, bounds=bounds)
        spread = stats.run_sd([v for v in per_run if isinstance(v, float)])
    if metric_type == "boolean":
        counts = [
            (len(e["runs"]) - e["errors"] - e["missing"], e["runs"].count(True))
            for e in evaluations
            if e["value"] is not None
        ]
        at_k, hat_k = stats.pass_curves(counts, len(table.runs))
    return EvaluationSummary(
        metric_type=metric_type,
        value=_aggregate(metric_type, record_values),
        records=contributing,
        errors=sum(e["errors"] for e in evaluations),
        missing=sum(e["missing"] for e in evaluations),
        per_run=per_run,
        stderr=estimate.stderr,
        ci95=estimate.ci95,
        run_sd=spread,
        pass_at_k=at_k,
        pass_hat_k=hat_k,
    )


def _record_evaluations(table: _Table, label: str) -> list[RecordEvaluation]:
    """The label's aggregate for every record, in ``table.record_order``."""
    metric_type = table.metric_types[label]
    run_count = len(table.runs)
    by_record = table.cells[label]
    as_metric = _metric_form(metric_type, by_record.values())
    result: list[RecordEvaluation] = []
    for record_id in table.record_order:
        cells = by_record.get(record_id)
        if cells is None:
            result.append(_no_evaluation(metric_type, run_count))
            continue
        errors = cells.count(_FAILED)
        runs = [None if cell is _FAILED else cell for cell in cells] if errors else cells[:]
        if as_metric is not None:
            runs = [None if cell is None else as_metric(cell) for cell in runs]
        values = [cell for cell in runs if cell is not None]
        mode: bool | None = None
        if metric_type == "boolean" and values:
            # More True than False; a tie goes to False, whose text sorts first.
            mode = 2 * sum(values) > len(values)
        entry = RecordEvaluation(
            metric_type=metric_type,
            value=_aggregate(metric_type, values),
            runs=runs,
            errors=errors,
            missing=run_count - errors - len(values),
            mode=mode,
            sd=None,
            min=None,
            max=None,
            agreement=None,
            flaky=None,
        )
        if values:
            _add_stability(entry, values)
        result.append(entry)
    return result


def _add_stability(entry: RecordEvaluation, values: list[JSON]) -> None:
    """Fill in how much a record's usable run values agree (see :mod:`assay.stats`)."""
    metric_type = entry["metric_type"]
    if metric_type == "score":
        entry["sd"] = stats.sample_sd(values)
        entry["min"] = min(values)
        entry["max"] = max(values)
    elif metric_type == "categorical":
        entry["agreement"] = stats.agreement(values)
    elif metric_type == "boolean":
        entry["flaky"] = stats.flaky(values)


def _no_evaluation(metric_type: MetricType, run_count: int) -> RecordEvaluation:
    return RecordEvaluation(
        metric_type=metric_type,
        value=None,
        runs=[None] * run_count,
        errors=0,
        missing=run_count,
        mode=None,
        sd=None,
        min=None,
        max=None,
        agreement=None,
        flaky=None,
    )


def _metric_form(
    metric_type: MetricType, by_record: Iterable[list[JSON]]
) -> Callable[[JSON], JSON] | None:
    """How to put a value in the form its label aggregates; ``None`` if it already is."""
    if metric_type == "categorical":
        return _as_text
    if metric_type == "score" and any(
        isinstance(cell, bool) for by_run in by_record for cell in by_run
    ):
        return _bool_as_number
    return None


def _as_text(value: JSON) -> str:
    return value if isinstance(value, str) else str(value)


def _bool_as_number(value: JSON) -> JSON:
    return int(value) if isinstance(value, bool) else value


def _aggregate(metric_type: MetricType, values: list[JSON]) -> AggregateValue:
    """The aggregate of usable values already in the label's metric form.

    The same rule serves both levels: a record's run values, the records' aggregates and
    one run's values across records. Score and boolean take the mean (of the numbers, of
    the shares, or of ``True`` as 1 and ``False`` as 0); categorical takes the mode.
    """
    if not values or metric_type == "json":
        return None
    if metric_type == "categorical":
        return _mode(values)
    return _mean(values)


def _label_metric_type(cells: Iterable[JSON], stored_types: set[MetricType]) -> MetricType:
    types = {metric_type_of(cell) for cell in cells if cell is not None and cell is not _FAILED}
    if not types:
        return next(iter(stored_types)) if len(stored_types) == 1 else "categorical"
    if len(types) == 1:
        return types.pop()
    if types == {"boolean", "score"}:
        return "score"
    return "categorical"


def _mean(values: list[JSON]) -> float:
    try:
        return math.fsum(values) / len(values)
    except (OverflowError, ValueError):
        # fsum refuses inf - inf and intermediate overflow; plain addition gives inf or nan.
        return float(sum(values)) / len(values)


def _mode(values: list[str]) -> str:
    """The most frequent text; a tie goes to the one that sorts first."""
    counts = Counter(values)
    best = max(counts.values())
    return min(value for value, count in counts.items() if count == best)


def _run_positions(run_iterations: Sequence[int]) -> dict[int, int]:
    positions = {run: position for position, run in enumerate(run_iterations)}
    if len(positions) != len(run_iterations):
        raise ValueError(
            f"run_iterations {list(run_iterations)!r} repeats a run; pass each run once"
        )
    return positions
