"""Evaluation values in and out of their typed columns."""

from __future__ import annotations

from typing import Any

from assay.store.records import JSON, ErrorInfo, EvaluationRecord, MetricType
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
    metric_type: MetricType = row.metric_type
    value: JSON
    if row.raw_value is not None:
        value = row.raw_value
    elif metric_type == "boolean":
        value = row.boolean_value
    elif metric_type == "score":
        value = row.score_value
    elif metric_type == "json":
        value = row.json_value
    else:
        value = row.categorical_value
    error = (
        ErrorInfo(type=row.error_type, message=row.error_message or "", stack=row.error_stack or "")
        if row.error_type is not None
        else None
    )
    return EvaluationRecord(
        label=row.label,
        metric_type=metric_type,
        value=value,
        timestamp_ms=row.timestamp_ms,
        reasoning=row.reasoning,
        assessment=row.assessment,
        metadata=row.metadata,
        tags=row.tags,
        error=error,
    )
