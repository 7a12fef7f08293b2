"""The backend's records as JSON, both ways, for the remote SDK protocol.

The server writes these shapes (``assay.server.api.sdk`` and the Datadog-shaped routes it
shares them with) and the ``HttpBackend`` reads them back into the same dataclasses the
``SqlBackend`` returns. Field names are the dataclasses' own, so a record crosses the wire
without renaming.

Request bodies are encoded as the store encodes JSON columns (objects that are not JSON
become their ``repr``), except that NaN and infinities are written as the ``NaN`` and
``Infinity`` tokens Python's ``json`` reads back: the server then stores exactly what a
local store would (a NaN score is "no value", a NaN inside an output is ``null``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any, TypeVar

from assay.store.records import (
    UNCHANGED,
    DatasetInfo,
    DatasetVersionInfo,
    ErrorInfo,
    EvaluationRecord,
    ExperimentInfo,
    ExperimentSpec,
    PinnedBaseline,
    ProjectInfo,
    RecordAggregate,
    RecordInsert,
    RecordUpdate,
    RowRecord,
    RunInfo,
    SpanRecord,
    StoredRecord,
    SummaryEvaluationRecord,
    TraceRollup,
)

JsonObject = dict[str, Any]

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=True, default=repr, separators=(",", ":"))
_strict = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode(document: Any) -> str:
    """Compact JSON text of a request body (see the module docstring for NaN)."""
    return _encoder.encode(document)


def encode_strict(value: Any) -> str:
    """JSON text of ``value``; a ``TypeError`` or ``ValueError`` when it is not plain JSON."""
    return _strict.encode(value)


def resource(kind: str, identifier: str | None, attributes: Mapping[str, Any]) -> JsonObject:
    """A JSON:API resource object."""
    found: JsonObject = {"type": kind, "attributes": dict(attributes)}
    if identifier is not None:
        found["id"] = identifier
    return found


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


# Projects and datasets ----------------------------------------------------------------------


def project_from(item: Mapping[str, Any]) -> ProjectInfo:
    attributes = item["attributes"]
    return ProjectInfo(
        id=item["id"], name=attributes["name"], description=attributes.get("description") or ""
    )


def dataset_from(item: Mapping[str, Any]) -> DatasetInfo:
    """A dataset from the resource of the Datadog-shaped dataset routes."""
    attributes = item["attributes"]
    created_at = _parse_time(attributes["created_at"])
    updated_at = _parse_time(attributes["updated_at"])
    assert created_at is not None and updated_at is not None
    return DatasetInfo(
        id=item["id"],
        project_id=attributes["project_id"],
        name=attributes["name"],
        description=attributes.get("description") or "",
        current_version=attributes["current_version"],
        created_at=created_at,
        updated_at=updated_at,
    )


def stored_record_from(item: Mapping[str, Any]) -> StoredRecord:
    """A record from the resource of the Datadog-shaped records route."""
    attributes = item["attributes"]
    return StoredRecord(
        record_id=item["id"],
        input_data=attributes.get("input"),
        expected_output=attributes.get("expected_output"),
        metadata=attributes.get("metadata") or {},
        tags=list(attributes.get("tags") or []),
        canonical_id=attributes.get("canonical_id"),
    )


def version_from(item: Mapping[str, Any]) -> DatasetVersionInfo:
    attributes = item["attributes"]
    return DatasetVersionInfo(
        version=attributes["version"],
        records=attributes["records"],
        created_at=_parse_time(attributes.get("created_at")),
    )


def insert_json(record: RecordInsert) -> JsonObject:
    return {
        "record_id": record.record_id,
        "input_data": record.input_data,
        "expected_output": record.expected_output,
        "metadata": record.metadata,
        "tags": record.tags,
    }


def update_json(record: RecordUpdate) -> JsonObject:
    """An update; a field left ``UNCHANGED`` is absent (``null`` means set to None)."""
    found: JsonObject = {"record_id": record.record_id}
    if record.input_data is not UNCHANGED:
        found["input_data"] = record.input_data
    if record.expected_output is not UNCHANGED:
        found["expected_output"] = record.expected_output
    if record.metadata is not UNCHANGED:
        found["metadata"] = record.metadata
    operations = record.tag_operations
    if operations is not None:
        found["tag_operations"] = {
            "add": list(operations.add),
            "remove": list(operations.remove),
            "replace": list(operations.replace) if operations.replace is not None else None,
        }
    return found


# Experiments ----------------------------------------------------------------------------------


def spec_json(spec: ExperimentSpec, runs: Sequence[RunInfo]) -> JsonObject:
    return {
        "project_id": spec.project_id,
        "dataset_id": spec.dataset_id,
        "dataset_version": spec.dataset_version,
        "name": spec.name,
        "description": spec.description,
        "config": spec.config,
        "tags": spec.tags,
        "run_count": spec.run_count,
        "parent_experiment_id": spec.parent_experiment_id,
        "task_name": spec.task_name,
        "evaluator_names": list(spec.evaluator_names),
        "summary_evaluator_names": list(spec.summary_evaluator_names),
        "sample_size": spec.sample_size,
        "runs": [run_json(run) for run in runs],
    }


def run_json(run: RunInfo) -> JsonObject:
    return {"run_id": run.run_id, "run_iteration": run.run_iteration}


def experiment_json(info: ExperimentInfo) -> JsonObject:
    """Every field of an experiment but its id (the resource's)."""
    return {
        "project_id": info.project_id,
        "project_name": info.project_name,
        "dataset_id": info.dataset_id,
        "dataset_name": info.dataset_name,
        "dataset_version": info.dataset_version,
        "name": info.name,
        "description": info.description,
        "config": info.config,
        "tags": info.tags,
        "run_count": info.run_count,
        "status": info.status,
        "error": info.error,
        "parent_experiment_id": info.parent_experiment_id,
        "task_name": info.task_name,
        "evaluator_names": list(info.evaluator_names),
        "summary_evaluator_names": list(info.summary_evaluator_names),
        "sample_size": info.sample_size,
        "runner": info.runner,
        "runs": [run_json(run) for run in info.runs],
        "created_at": _time(info.created_at),
        "updated_at": _time(info.updated_at),
    }


def experiment_from(item: Mapping[str, Any]) -> ExperimentInfo:
    attributes = item["attributes"]
    created_at = _parse_time(attributes["created_at"])
    updated_at = _parse_time(attributes["updated_at"])
    assert created_at is not None and updated_at is not None
    return ExperimentInfo(
        id=item["id"],
        project_id=attributes["project_id"],
        project_name=attributes["project_name"],
        dataset_id=attributes["dataset_id"],
        dataset_name=attributes["dataset_name"],
        dataset_version=attributes["dataset_version"],
        name=attributes["name"],
        description=attributes["description"],
        config=attributes["config"],
        tags=attributes["tags"],
        run_count=attributes["run_count"],
        status=attributes["status"],
        error=attributes["error"],
        parent_experiment_id=attributes["parent_experiment_id"],
        task_name=attributes["task_name"],
        evaluator_names=tuple(attributes["evaluator_names"]),
        summary_evaluator_names=tuple(attributes["summary_evaluator_names"]),
        sample_size=attributes["sample_size"],
        runner=attributes["runner"],
        runs=tuple(
            RunInfo(run_id=run["run_id"], run_iteration=run["run_iteration"])
            for run in attributes["runs"]
        ),
        created_at=created_at,
        updated_at=updated_at,
    )


# Rows and evaluations -------------------------------------------------------------------------


_Flat = TypeVar("_Flat")


def _flat_json(record: Any) -> JsonObject:
    """A dataclass of plain fields as JSON: each field under its own name."""
    return {field.name: getattr(record, field.name) for field in fields(record)}


def _flat_from(cls: type[_Flat], data: Mapping[str, Any]) -> _Flat:
    """The inverse of :func:`_flat_json` (keys a newer server adds are ignored)."""
    return cls(**{field.name: data[field.name] for field in fields(cls)})  # type: ignore[arg-type]


def error_json(error: ErrorInfo | None) -> JsonObject | None:
    return None if error is None else _flat_json(error)


def error_from(data: Mapping[str, Any] | None) -> ErrorInfo | None:
    return None if data is None else _flat_from(ErrorInfo, data)


def evaluation_json(evaluation: EvaluationRecord) -> JsonObject:
    return {
        "label": evaluation.label,
        "metric_type": evaluation.metric_type,
        "value": evaluation.value,
        "timestamp_ms": evaluation.timestamp_ms,
        "reasoning": evaluation.reasoning,
        "assessment": evaluation.assessment,
        "metadata": evaluation.metadata,
        "tags": evaluation.tags,
        "error": error_json(evaluation.error),
    }


def evaluation_from(data: Mapping[str, Any]) -> EvaluationRecord:
    return EvaluationRecord(
        label=data["label"],
        metric_type=data["metric_type"],
        value=data["value"],
        timestamp_ms=data["timestamp_ms"],
        reasoning=data["reasoning"],
        assessment=data["assessment"],
        metadata=data["metadata"],
        tags=data["tags"],
        error=error_from(data["error"]),
    )


def span_json(span: SpanRecord) -> JsonObject:
    return {
        "span_id": span.span_id,
        "parent_id": span.parent_id,
        "trace_id": span.trace_id,
        "name": span.name,
        "kind": span.kind,
        "start_ns": span.start_ns,
        "duration_ns": span.duration_ns,
        "error": error_json(span.error),
        "input": span.input,
        "output": span.output,
        "metadata": span.metadata,
        "tags": span.tags,
        "model_name": span.model_name,
        "model_provider": span.model_provider,
        "input_tokens": span.input_tokens,
        "output_tokens": span.output_tokens,
        "total_tokens": span.total_tokens,
        "estimated_cost": span.estimated_cost,
    }


def span_from(data: Mapping[str, Any]) -> SpanRecord:
    return SpanRecord(
        span_id=data["span_id"],
        parent_id=data["parent_id"],
        trace_id=data["trace_id"],
        name=data["name"],
        kind=data["kind"],
        start_ns=data["start_ns"],
        duration_ns=data["duration_ns"],
        error=error_from(data["error"]),
        input=data["input"],
        output=data["output"],
        metadata=data["metadata"],
        tags=data["tags"],
        model_name=data["model_name"],
        model_provider=data["model_provider"],
        input_tokens=data["input_tokens"],
        output_tokens=data["output_tokens"],
        total_tokens=data["total_tokens"],
        estimated_cost=data["estimated_cost"],
    )


def rollup_json(rollup: TraceRollup | None) -> JsonObject | None:
    return None if rollup is None else _flat_json(rollup)


def row_json(row: RowRecord) -> JsonObject:
    """Every field of a row but ``experiment_id`` (the URL's)."""
    return {
        "run_iteration": row.run_iteration,
        "record_id": row.record_id,
        "idx": row.idx,
        "span_id": row.span_id,
        "trace_id": row.trace_id,
        "span_name": row.span_name,
        "start_ns": row.start_ns,
        "duration_ns": row.duration_ns,
        "input_data": row.input_data,
        "output": row.output,
        "expected_output": row.expected_output,
        "record_metadata": row.record_metadata,
        "tags": row.tags,
        "error": error_json(row.error),
        "retries": row.retries,
        "evaluations": [evaluation_json(evaluation) for evaluation in row.evaluations],
        "spans": [span_json(span) for span in row.spans],
        "rollup": rollup_json(row.rollup),
        "root_metadata": row.root_metadata,
    }


def row_from(experiment_id: str, data: Mapping[str, Any]) -> RowRecord:
    rollup = data["rollup"]
    return RowRecord(
        experiment_id=experiment_id,
        run_iteration=data["run_iteration"],
        record_id=data["record_id"],
        idx=data["idx"],
        span_id=data["span_id"],
        trace_id=data["trace_id"],
        span_name=data["span_name"],
        start_ns=data["start_ns"],
        duration_ns=data["duration_ns"],
        input_data=data["input_data"],
        output=data["output"],
        expected_output=data["expected_output"],
        record_metadata=data["record_metadata"],
        tags=data["tags"],
        error=error_from(data["error"]),
        retries=data["retries"],
        evaluations=[evaluation_from(item) for item in data["evaluations"]],
        spans=[span_from(item) for item in data["spans"]],
        rollup=_flat_from(TraceRollup, rollup) if rollup is not None else None,
        root_metadata=data["root_metadata"],
    )


def summary_evaluation_json(item: SummaryEvaluationRecord) -> JsonObject:
    return {"run_iteration": item.run_iteration, **evaluation_json(item.evaluation)}


def summary_evaluation_from(data: Mapping[str, Any]) -> SummaryEvaluationRecord:
    return SummaryEvaluationRecord(
        run_iteration=data["run_iteration"], evaluation=evaluation_from(data)
    )


def aggregate_json(aggregate: RecordAggregate) -> JsonObject:
    return _flat_json(aggregate)


def aggregate_from(data: Mapping[str, Any]) -> RecordAggregate:
    return _flat_from(RecordAggregate, data)


# Baselines ----------------------------------------------------------------------------------


def baseline_json(item: PinnedBaseline) -> JsonObject:
    return {
        "project_id": item.project_id,
        "project_name": item.project_name,
        "dataset_id": item.dataset_id,
        "dataset_name": item.dataset_name,
        "experiment_id": item.experiment_id,
        "experiment_name": item.experiment_name,
        "set_at": _time(item.set_at),
    }


def baseline_from(item: Mapping[str, Any]) -> PinnedBaseline:
    attributes = item["attributes"]
    set_at = _parse_time(attributes["set_at"])
    assert set_at is not None
    return PinnedBaseline(
        project_id=attributes["project_id"],
        project_name=attributes["project_name"],
        dataset_id=attributes["dataset_id"],
        dataset_name=attributes["dataset_name"],
        experiment_id=attributes["experiment_id"],
        experiment_name=attributes["experiment_name"],
        set_at=set_at,
    )
