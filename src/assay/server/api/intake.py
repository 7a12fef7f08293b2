"""The span intake (``POST /api/v2/llmobs``): ddtrace's span writer posts task spans here.

The body is a list of ``{"event_type": "span", "_dd.scope": "experiments", "spans":
[...]}``. Spans are grouped by their ``experiment_id`` tag and stored by
``assay.store.sql.ingest`` in one transaction. Spans of no experiment (ordinary LLM
Observability traces) and of experiments this server does not have (or the caller's API
key may not see) are counted as ``ignored``: Assay keeps experiments, not production
traces.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Body
from starlette.concurrency import run_in_threadpool

from assay.server.api.events import ingest_error
from assay.server.auth import Access, Caller
from assay.server.dependencies import Store, Writer
from assay.server.jsonapi import JsonApiResponse
from assay.server.wire import IntakeEvent
from assay.store.sql.backend import SqlBackend
from assay.store.sql.ingest import (
    EventBatch,
    IncomingSpan,
    IngestError,
    IngestResult,
    IngestWriter,
    JournalEntry,
)
from assay.store.sql.ingest.model import tag_dict
from assay.store.sql.lookups import experiment_projects

router = APIRouter(tags=["span intake"])
logger = logging.getLogger("assay.server")


@router.post("/api/v2/llmobs", status_code=202, summary="Post spans (ddtrace's span writer)")
async def post_spans(
    events: Annotated[list[IntakeEvent], Body()], store: Store, caller: Caller, writer: Writer
) -> JsonApiResponse:
    return JsonApiResponse(await accept_spans(events, store, caller, writer), status_code=202)


Placed = tuple[int, int, IncomingSpan]
"""A span with the positions of its event and of itself in that event."""


def span_groups(events: list[IntakeEvent]) -> tuple[dict[str, list[Placed]], int]:
    """The spans of a span intake post by experiment, and how many name no experiment."""
    groups: dict[str, list[Placed]] = defaultdict(list)
    without = 0
    for event_index, event in enumerate(events):
        for span_index, span in enumerate(event.spans or []):
            experiment_id = tag_dict(span.tags or []).get("experiment_id")
            if experiment_id:
                groups[experiment_id].append((event_index, span_index, span.incoming()))
            else:
                without += 1
    return groups, without


def span_batches(groups: dict[str, list[Placed]]) -> dict[str, EventBatch]:
    return {key: EventBatch(spans=[item[2] for item in items]) for key, items in groups.items()}


async def accept_spans(
    events: list[IntakeEvent],
    store: SqlBackend,
    caller: Access,
    writer: IngestWriter,
    *,
    entry: JournalEntry | None = None,
) -> dict[str, Any]:
    """Store a span intake post; the route's work, which the ingest lane (``lane``) shares.
    Returns the 202's document. ``entry`` (the post as sent) lets a writer with a queue
    answer before writing it."""
    # Async and group-committed, as the experiment events post (see there).
    groups, ignored = span_groups(events)
    total = ignored + sum(len(items) for items in groups.values())
    if caller.limited:
        # What is journaled is the post as sent: one of which some spans are left out
        # is written before it is answered.
        entry = None
        owners = await run_in_threadpool(experiment_projects, store.engine, sorted(groups))
        for experiment_id in sorted(groups):
            if not caller.sees(owners.get(experiment_id, "")):
                _ignore(experiment_id, len(groups[experiment_id]))
                ignored += len(groups.pop(experiment_id))
    batches = span_batches(groups)
    if not batches:
        return _answer(total=total, ignored=ignored, results={})
    try:
        ingested = await writer.accept(batches, skip_unknown=True, entry=entry)
    except IngestError as error:
        items = groups[error.experiment_id or ""]
        if error.index is None or error.experiment_id is None:
            raise ingest_error(error, prefix=()) from error
        event_index, span_index, _ = items[error.index]
        error.collection, error.index = "spans", span_index
        raise ingest_error(error, prefix=(event_index,)) from error
    for experiment_id in ingested.unknown:
        _ignore(experiment_id, len(groups[experiment_id]))
        ignored += len(groups[experiment_id])
    return _answer(total=total, ignored=ignored, results=ingested.results)


def _ignore(experiment_id: str, count: int) -> None:
    logger.warning("span intake: %d span(s) of unknown experiment %s ignored", count, experiment_id)


def _answer(*, total: int, ignored: int, results: dict[str, IngestResult]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "spans": total,
        "stored": sum(result.spans for result in results.values()),
        "duplicates": sum(result.duplicate_spans for result in results.values()),
        "ignored": ignored,
        "queued": sum(result.queued for result in results.values()),
    }
    return {"meta": meta}


@router.post(
    "/api/intake/llm-obs/v2/eval-metric",
    status_code=202,
    summary="Evaluations of production spans (accepted and not kept)",
)
def post_eval_metrics(body: Annotated[dict[str, Any], Body()]) -> JsonApiResponse:
    data = body.get("data")
    attributes = data.get("attributes") if isinstance(data, dict) else None
    metrics = attributes.get("metrics") if isinstance(attributes, dict) else None
    count = len(metrics) if isinstance(metrics, list) else 0
    return JsonApiResponse({"meta": {"metrics": count, "ignored": count}}, status_code=202)
