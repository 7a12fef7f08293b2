"""Evaluations, spans and rows in and out of their typed columns."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from assay.store.records import (
    JSON,
    ErrorInfo,
    EvaluationRecord,
    MetricType,
    RowRecord,
    SpanRecord,
    TraceRollup,
)
from assay.store.sql.bulk import encode_json

EVALUATION_VALUE_COLUMNS = (
    "label",
    "metric_type",
    "score_value",
    "categorical_value",
    "boolean_value",
    "json_value",
    "raw_value",
    "reasoning",
    "assessment",
    "metadata",
    "tags",
    "error_type",
    "error_message",
    "error_stack",
    "timestamp_ms",
)
"""The columns :func:`evaluation_values` fills, in its order."""


def evaluation_values(evaluation: EvaluationRecord) -> tuple[Any, ...]:
    """One evaluation's typed columns (JSON encoded) in EVALUATION_VALUE_COLUMNS order."""
    value = evaluation.value
    metric_type = evaluation.metric_type
    score = categorical = boolean = json_value = raw = None
    if metric_type == "boolean":
        boolean = bool(value)
    elif metric_type == "score":
        score = float(value)
        # An int must come back an int: keep it whole when the float would lose that.
        if isinstance(value, int):
            raw = str(value)  # an int's JSON text is its decimal text
        elif score != score:
            score = None  # NaN is "no value" everywhere, and SQLite would store NULL anyway
    elif metric_type == "json":
        json_value = encode_json(value)
    elif value is not None:
        categorical = value if isinstance(value, str) else str(value)
        if not isinstance(value, str):
            raw = encode_json(value)
    error = evaluation.error
    return (
        evaluation.label,
        metric_type,
        score,
        categorical,
        boolean,
        json_value,
        raw,
        evaluation.reasoning,
        evaluation.assessment,
        encode_json(evaluation.metadata),
        encode_json(evaluation.tags),
        error.type if error else None,
        error.message if error else None,
        error.stack if error else None,
        evaluation.timestamp_ms,
    )


def evaluation_from_columns(row: Any) -> EvaluationRecord:
    """The inverse of :func:`evaluation_columns`, for a result row with the same names."""
    return EvaluationRecord(
        label=row.label,
        metric_type=row.metric_type,
        value=evaluation_value(row),
        timestamp_ms=row.timestamp_ms,
        reasoning=row.reasoning,
        assessment=row.assessment,
        metadata=row.metadata,
        tags=row.tags,
        error=error_from_columns(row),
    )


VALUE_COLUMNS = (
    "metric_type",
    "raw_value",
    "boolean_value",
    "score_value",
    "json_value",
    "categorical_value",
)
"""The columns :func:`evaluation_value` reads."""


def evaluation_value(row: Any) -> JSON:
    """An evaluation's value from its result row's ``VALUE_COLUMNS``."""
    return value_of(
        row.metric_type,
        row.raw_value,
        row.boolean_value,
        row.score_value,
        row.json_value,
        row.categorical_value,
    )


def value_of(
    metric_type: MetricType,
    raw_value: JSON,
    boolean_value: bool | None,
    score_value: float | None,
    json_value: JSON,
    categorical_value: str | None,
) -> JSON:
    """An evaluation's value from its ``VALUE_COLUMNS``, in that order: a page of search
    results unpacks its rows' columns into this, where naming each column of a result row
    cost 40% of reading the page's evaluations."""
    if raw_value is not None:
        return raw_value
    if metric_type == "boolean":
        return boolean_value
    if metric_type == "score":
        return score_value
    if metric_type == "json":
        return json_value
    return categorical_value


def error_from_columns(row: Any) -> ErrorInfo | None:
    """The error of a span or evaluation result row (``error_type``, ``_message``, ``_stack``)."""
    if row.error_type is None:
        return None
    return ErrorInfo(
        type=row.error_type, message=row.error_message or "", stack=row.error_stack or ""
    )


def span_from_columns(row: Any) -> SpanRecord:
    """A child span from its ``spans`` row."""
    return SpanRecord(
        span_id=row.span_id,
        parent_id=row.parent_id,
        trace_id=row.trace_id,
        name=row.name,
        kind=row.kind,
        start_ns=row.start_ns,
        duration_ns=row.duration_ns,
        error=error_from_columns(row),
        input=row.input,
        output=row.output,
        metadata=row.metadata,
        tags=row.tags,
        model_name=row.model_name,
        model_provider=row.model_provider,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        total_tokens=row.total_tokens,
        estimated_cost=row.estimated_total_cost,
    )


def rows_from_columns(
    roots: Sequence[Any], evaluations: Iterable[Any], children: Iterable[Any] = ()
) -> list[RowRecord]:
    """Rows from their root ``spans`` rows, with their ``evaluations`` rows (in the order
    given) and their child ``spans`` rows, in the order of ``roots``."""
    by_span: dict[str, list[EvaluationRecord]] = defaultdict(list)
    for evaluation in evaluations:
        by_span[evaluation.span_id].append(evaluation_from_columns(evaluation))
    by_trace: dict[str, list[SpanRecord]] = defaultdict(list)
    for child in children:
        by_trace[child.trace_id].append(span_from_columns(child))
    found = []
    for row in roots:
        record = RowRecord(
            experiment_id=row.experiment_id,
            run_iteration=row.run_iteration,
            record_id=row.record_id,
            idx=row.idx,
            span_id=row.span_id,
            trace_id=row.trace_id,
            span_name=row.name,
            start_ns=row.start_ns,
            duration_ns=row.duration_ns,
            input_data=row.input,
            output=row.output,
            expected_output=row.expected_output,
            record_metadata=row.metadata,
            tags=row.tags,
            error=error_from_columns(row),
            retries=row.retries,
            evaluations=by_span.get(row.span_id, []),
            spans=by_trace.get(row.trace_id, []),
            root_metadata=row.annotations,
        )
        if row.total_tokens is not None or row.estimated_total_cost is not None:
            record.rollup = TraceRollup(
                input_tokens=row.input_tokens,
                output_tokens=row.output_tokens,
                total_tokens=row.total_tokens,
                estimated_total_cost=row.estimated_total_cost,
            )
        found.append(record)
    return found
