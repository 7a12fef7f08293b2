"""Checking a batch and laying out its rows, before anything is written."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy import Connection, select

from assay import pricing
from assay.errors import ExperimentNotFoundError
from assay.store.records import ErrorInfo
from assay.store.sql import datasets as dataset_store
from assay.store.sql.bulk import encode_json
from assay.store.sql.ingest.model import (
    MODEL_KINDS,
    TOKEN_METRIC_NAMES,
    EventBatch,
    IncomingMetric,
    IncomingSpan,
    IngestError,
    tag_dict,
    token_counts,
    whole_number,
)
from assay.store.sql.tables import experiments

_MAX_RECORD_ID = 64


@dataclass(slots=True)
class ExperimentRef:
    id: str
    run_count: int
    dataset_id: str
    dataset_version: int


@dataclass(slots=True)
class SpanKey:
    span_id: str
    is_root: bool
    run_iteration: int
    record_id: str


@dataclass(slots=True)
class Plan:
    """One experiment's batch, checked: span rows ready to insert, metrics with their run."""

    experiment: ExperimentRef
    span_rows: list[tuple[Any, ...]] = field(default_factory=list)
    """In ``SqlBackend``'s SPAN_COLUMNS order."""
    span_keys: list[SpanKey] = field(default_factory=list)
    """One per span row."""
    trace_ids: set[str] = field(default_factory=set)
    """Traces whose roll-up may change: those of every span of the batch."""
    run_ids: dict[int, str] = field(default_factory=dict)
    """Run iteration to the id the client gave it (``run_id`` tags)."""
    metrics: list[tuple[IncomingMetric, int]] = field(default_factory=list)
    """Each metric with the run of its event (what a summary metric belongs to)."""
    pending: set[tuple[str, str]] = field(default_factory=set)
    """(span_id, label) of the metrics the write left pending."""


def plan_batch(
    connection: Connection,
    experiment_id: str,
    batch: EventBatch,
    *,
    known: dict[str, ExperimentRef | None] | None = None,
) -> Plan:
    """Check one experiment's batch; raises ``IngestError`` or ``ExperimentNotFoundError``.

    ``known`` holds the experiments already looked up in this transaction (None for one
    that does not exist); the look-up of this one is added to it.
    """
    try:
        return _checked(connection, experiment_id, batch, {} if known is None else known)
    except IngestError as error:
        error.experiment_id = experiment_id
        raise


def _experiment(
    connection: Connection, experiment_id: str, known: dict[str, ExperimentRef | None]
) -> ExperimentRef:
    if experiment_id not in known:
        row = connection.execute(
            select(
                experiments.c.id,
                experiments.c.run_count,
                experiments.c.dataset_id,
                experiments.c.dataset_version,
            ).where(experiments.c.id == experiment_id)
        ).first()
        known[experiment_id] = (
            None
            if row is None
            else ExperimentRef(row.id, row.run_count, row.dataset_id, row.dataset_version)
        )
    found = known[experiment_id]
    if found is None:
        raise ExperimentNotFoundError(f"No experiment with id {experiment_id!r}")
    return found


def _checked(
    connection: Connection,
    experiment_id: str,
    batch: EventBatch,
    known: dict[str, ExperimentRef | None],
) -> Plan:
    plan = Plan(_experiment(connection, experiment_id, known))
    event_tags = tag_dict(batch.tags)
    event_run = _run_iteration(event_tags, plan.experiment, collection="tags", index=None)
    _note_run_id(plan, event_run, event_tags)
    positions = _RecordPositions(connection, plan.experiment)
    seen: set[str] = set()
    for index, span in enumerate(batch.spans):
        if span.span_id not in seen:  # a span twice in one batch: the first one counts
            seen.add(span.span_id)
            plan.span_rows.append(_span_row(plan, span, index, positions))
    for index, metric in enumerate(batch.metrics):
        if not metric.summary and not metric.span_id:
            raise IngestError(
                f"Metric {metric.label!r} has no span_id; a row metric names the span it "
                "scores (metric_source 'summary' makes it a summary evaluation)",
                collection="metrics",
                index=index,
                field="span_id",
            )
        plan.metrics.append((metric, event_run or 1))
    return plan


def _fail(span: IncomingSpan, index: int, message: str, *, field: str = "tags") -> IngestError:
    return IngestError(
        f"Span {span.span_id}: {message}", collection="spans", index=index, field=field
    )


def _span_row(
    plan: Plan, span: IncomingSpan, index: int, positions: _RecordPositions
) -> tuple[Any, ...]:
    tags = tag_dict(span.tags)
    run_iteration = _run_iteration(tags, plan.experiment, collection="spans", index=index) or 1
    _note_run_id(plan, run_iteration, tags)
    record_id = tags.get("dataset_record_id", "")
    if span.is_root and not record_id:
        raise _fail(
            span,
            index,
            "a task span (no parent) needs a dataset_record_id tag, "
            "e.g. 'dataset_record_id:<record id>'",
        )
    if len(record_id) > _MAX_RECORD_ID:
        raise _fail(span, index, f"dataset_record_id is longer than {_MAX_RECORD_ID} characters")
    metadata = span.metadata if span.metadata is not None else {}
    if not isinstance(metadata, dict):
        raise _fail(span, index, "meta.metadata must be an object", field="meta/metadata")
    error = span.error
    if error is None and span.status == "error":
        error = ErrorInfo(type=tags.get("error_type", "Error"), message="", stack="")
    plan.span_keys.append(SpanKey(span.span_id, span.is_root, run_iteration, record_id))
    input_tokens, output_tokens, total_tokens = token_counts(span.metrics)
    cost = None
    if span.is_root:
        kind = span.kind or "experiment"
        # The root's own token metrics join its children's in the trace's roll-up; its
        # children may have come first, so its trace is rolled up in any case.
        annotations = {"metrics": dict(span.metrics)} if span.metrics else None
        plan.trace_ids.add(span.trace_id)
    else:
        kind = span.kind or "task"
        plan.trace_ids.add(span.trace_id)
        others = {k: v for k, v in span.metrics.items() if k not in TOKEN_METRIC_NAMES}
        if others:  # as the SDK keeps a child's other metrics
            metadata = {**metadata, "metrics": others}
        annotations = None
        if kind in MODEL_KINDS and (input_tokens is not None or output_tokens is not None):
            cost = pricing.estimate_cost(
                span.model_name, span.model_provider, input_tokens, output_tokens
            )
    return (
        plan.experiment.id,
        run_iteration,
        record_id,
        positions.index(record_id) if record_id else 0,
        span.span_id,
        span.trace_id,
        None if span.is_root else span.parent_id,
        span.name[:400],
        kind[:32],
        span.start_ns,
        span.duration_ns,
        "error" if error else "ok",
        encode_json(span.input),
        encode_json(span.output),
        encode_json(span.expected_output) if span.is_root else None,
        encode_json(metadata),
        encode_json(list(span.tags)),
        error.type[:400] if error else None,
        error.message if error else None,
        error.stack if error else None,
        whole_number(tags.get("retries")) or 0,
        input_tokens,
        output_tokens,
        total_tokens,
        cost,
        span.model_name[:200] if span.model_name else None,
        span.model_provider[:100] if span.model_provider else None,
        encode_json(annotations),
    )


def _run_iteration(
    tags: Mapping[str, str], experiment: ExperimentRef, *, collection: str, index: int | None
) -> int | None:
    text = tags.get("run_iteration")
    if text is None:
        return None
    value = whole_number(text)
    if value is None or not 1 <= value <= experiment.run_count:
        raise IngestError(
            f"run_iteration {text!r} is outside 1..{experiment.run_count}: experiment "
            f"{experiment.id} has run_count {experiment.run_count}",
            collection=collection,
            index=index,
            field="tags",
        )
    return value


def _note_run_id(plan: Plan, run_iteration: int | None, tags: Mapping[str, str]) -> None:
    run_id = tags.get("run_id")
    if run_iteration is None or not run_id or run_iteration in plan.run_ids:
        return
    try:
        plan.run_ids[run_iteration] = str(uuid.UUID(run_id))
    except ValueError:
        return  # not a UUID: the run keeps its own id (results give run ids as UUIDs)


class _RecordPositions:
    """Record id to its position in the experiment's dataset version, read once."""

    # Shared by every batch: a pinned dataset version does not change.
    _cache: ClassVar[dict[tuple[str, str, int], dict[str, int]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, connection: Connection, experiment: ExperimentRef) -> None:
        self.connection = connection
        url = str(connection.engine.url)
        self.key = (url, experiment.dataset_id, experiment.dataset_version)
        self.positions: dict[str, int] | None = None
        self.reloaded = False

    def _load(self) -> dict[str, int]:
        order = dataset_store.record_order(self.connection, self.key[1], self.key[2])
        positions = {record_id: n for n, record_id in enumerate(order)}
        with self._lock:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[self.key] = positions
        return positions

    def index(self, record_id: str) -> int:
        if self.positions is None:
            with self._lock:
                self.positions = self._cache.get(self.key)
            if self.positions is None:
                self.positions = self._load()
        found = self.positions.get(record_id)
        if found is None and not self.reloaded:
            # The pinned version may have grown in place (a push without a new version).
            self.reloaded = True
            self.positions = self._load()
            found = self.positions.get(record_id)
        # A record outside the dataset's version sorts after every record of it.
        return found if found is not None else len(self.positions)
