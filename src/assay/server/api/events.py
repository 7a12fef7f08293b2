"""Experiment events: metrics (and spans) posted by the client, and read back.

``POST /experiments/{id}/events`` is where ddtrace sends evaluation metrics (and, when
re-running evaluators, copies of spans); the task spans themselves come through the span
intake (``assay.server.api.intake``). ``GET`` returns the experiment's task spans with
their ``eval_metrics`` and the ``summary_metrics``, as ``LLMObs.pull_experiment`` reads.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from assay.errors import ExperimentNotFoundError
from assay.server.api.experiments import experiment_or_404
from assay.server.auth import Access, Caller
from assay.server.dependencies import Store, Writer
from assay.server.jsonapi import (
    ApiError,
    JsonApiResponse,
    bad_parameter,
    document,
    invalid,
    not_found,
    pointer,
    resource,
)
from assay.server.wire import EventsBody
from assay.store.records import EvaluationRecord, ExperimentFilter, ExperimentInfo, RowRecord
from assay.store.sql.backend import SqlBackend
from assay.store.sql.ingest import EventBatch, IngestError, IngestWriter, JournalEntry

router = APIRouter(tags=["experiment events"])
ingest_router = APIRouter(tags=["experiment events"])
"""The events post alone, included where the OpenAPI document lists it (``assay.server.app``);
the ingest lane (``assay.server.lane``) serves it before any route is tried."""


def ingest_error(error: IngestError, *, prefix: tuple[str | int, ...]) -> ApiError:
    """A 422 pointing at the item and field of a refused span or metric."""
    if error.collection == "tags" or error.index is None:
        where = pointer(*prefix, "tags")
    else:
        where = pointer(*prefix, error.collection, error.index, *error.field.split("/"))
    return invalid(str(error), pointer=where)


@ingest_router.post(
    "/experiments/{experiment_id}/events",
    status_code=202,
    summary="Post evaluation metrics (and spans) of an experiment",
)
async def post_events(
    experiment_id: str, body: EventsBody, store: Store, caller: Caller, writer: Writer
) -> JsonApiResponse:
    answer = await accept_events(experiment_id, body, store, caller, writer)
    return JsonApiResponse(answer, status_code=202)


def events_batch(body: EventsBody) -> EventBatch:
    """What an events post brings, for the store."""
    attributes = body.data.attributes
    return EventBatch(
        spans=[span.incoming() for span in attributes.spans or []],
        metrics=[metric.incoming() for metric in attributes.metrics or []],
        tags=tuple(attributes.tags or ()),
    )


async def accept_events(
    experiment_id: str,
    body: EventsBody,
    store: SqlBackend,
    caller: Access,
    writer: IngestWriter,
    *,
    entry: JournalEntry | None = None,
) -> dict[str, Any]:
    """Store an events post; the route's work, which the ingest lane (``lane``) shares.
    Returns the 202's document. ``entry`` (the post as sent) lets a writer with a queue
    answer before writing it."""
    # Async, and written by the store's group-commit writer: a thread-pool hop and a
    # transaction of its own for every small post were most of its cost.
    if caller.limited:
        await run_in_threadpool(
            caller.check_experiment, store, experiment_id, parameter="experiment_id"
        )
    batch = events_batch(body)
    try:
        ingested = await writer.accept({experiment_id: batch}, entry=entry)
    except ExperimentNotFoundError as error:
        raise not_found(str(error), parameter="experiment_id") from error
    except IngestError as error:
        raise ingest_error(error, prefix=("data", "attributes")) from error
    result = ingested.results[experiment_id]
    return {"data": resource("experiment_events", experiment_id, result.counts())}


def metric_event(
    evaluation: EvaluationRecord,
    *,
    experiment_id: str,
    span_id: str = "",
    trace_id: str = "",
    summary: bool = False,
) -> dict[str, Any]:
    """One evaluation as ddtrace posts (and reads back) an eval metric."""
    error = evaluation.error
    event: dict[str, Any] = {
        "metric_source": "summary" if summary else "custom",
        "span_id": span_id,
        "trace_id": trace_id,
        "timestamp_ms": evaluation.timestamp_ms,
        "metric_type": evaluation.metric_type,
        "label": evaluation.label,
        f"{evaluation.metric_type}_value": evaluation.value,
        "error": (
            {"type": error.type, "message": error.message, "stack": error.stack} if error else None
        ),
        "tags": [f"{key}:{value}" for key, value in (evaluation.tags or {}).items()],
        "experiment_id": experiment_id,
    }
    if not summary:
        event["status"] = "ERROR" if error else "OK"
    for name in ("reasoning", "assessment", "metadata"):
        value = getattr(evaluation, name)
        if value is not None:
            event[name] = value
    return event


def span_event(row: RowRecord, info: ExperimentInfo, *, with_metrics: bool) -> dict[str, Any]:
    """A stored row as the task span ddtrace sent, tagged so its record can be found."""
    run_ids = {run.run_iteration: run.run_id for run in info.runs}
    tags = list(row.tags or [])
    present = {tag.partition(":")[0] for tag in tags}
    for key, value in (
        ("experiment_id", info.id),
        ("dataset_record_id", row.record_id),
        ("run_iteration", str(row.run_iteration)),
        ("run_id", run_ids.get(row.run_iteration, "")),
    ):
        if key not in present:
            tags.append(f"{key}:{value}")
    error = row.error
    event: dict[str, Any] = {
        "span_id": row.span_id,
        "trace_id": row.trace_id,
        "parent_id": "undefined",
        "name": row.span_name,
        "start_ns": row.start_ns,
        "duration": row.duration_ns,
        "status": row.status,
        "tags": tags,
        "meta": {
            "span": {"kind": "experiment"},
            "input": row.input_data,
            "output": row.output,
            "expected_output": row.expected_output,
            "metadata": row.record_metadata,
            "error": (
                {"type": error.type, "message": error.message, "stack": error.stack}
                if error
                else {}
            ),
        },
        "metrics": {
            name: value
            for name, value in dataclasses.asdict(row.rollup).items()
            if value is not None
        }
        if row.rollup
        else {},
    }
    if with_metrics:
        event["eval_metrics"] = [
            metric_event(e, experiment_id=info.id, span_id=row.span_id, trace_id=row.trace_id)
            for e in row.evaluations
        ]
    return event


def _events(
    store: SqlBackend, info: ExperimentInfo, *, with_metrics: bool, run: int | None
) -> JsonApiResponse:
    iterations = [item.run_iteration for item in info.runs]
    if run is not None and run not in iterations:
        raise bad_parameter(
            f"Experiment {info.name!r} has runs {iterations}; there is no run {run}",
            parameter="filter[run_iteration]",
        )
    rows = store.experiment_rows(info.id, run_iteration=run)
    summaries = [
        {
            **metric_event(item.evaluation, experiment_id=info.id, summary=True),
            "run_iteration": item.run_iteration,
        }
        for item in store.summary_evaluations(info.id)
        if run is None or item.run_iteration == run
    ]
    attributes = {
        "spans": [span_event(row, info, with_metrics=with_metrics) for row in rows],
        "summary_metrics": summaries,
    }
    return document(resource("experiment_events", info.id, attributes))


IncludeMetrics = Annotated[bool, Query(alias="include[eval_metrics]")]
RunFilter = Annotated[int | None, Query(alias="filter[run_iteration]", ge=1)]


@router.get("/experiments/events", summary="An experiment's spans and metrics, by names")
def events_by_name(
    store: Store,
    caller: Caller,
    project_name: Annotated[str, Query(alias="filter[project_name]")],
    experiment_name: Annotated[str, Query(alias="filter[experiment_name]")],
    include_eval_metrics: IncludeMetrics = False,
    run: RunFilter = None,
) -> JsonApiResponse:
    project = store.find_project(project_name)
    if project is None or not caller.sees(project.id):
        raise not_found(f"No project named {project_name!r}", parameter="filter[project_name]")
    found = store.list_experiments(
        ExperimentFilter(name=experiment_name, project_id=project.id, limit=1)
    )
    if not found:
        raise not_found(
            f"No experiment named {experiment_name!r} in project {project_name!r}",
            parameter="filter[experiment_name]",
        )
    return _events(store, found[0], with_metrics=include_eval_metrics, run=run)


@router.get("/experiments/{experiment_id}/events", summary="An experiment's spans and metrics")
def get_events(
    experiment_id: str,
    store: Store,
    caller: Caller,
    include_eval_metrics: IncludeMetrics = False,
    run: RunFilter = None,
) -> JsonApiResponse:
    info = experiment_or_404(store, experiment_id, caller)
    return _events(store, info, with_metrics=include_eval_metrics, run=run)
