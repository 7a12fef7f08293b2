"""Spans and evaluation metrics posted over HTTP, as ddtrace sends them, made into rows.

ddtrace sends an experiment's results in two streams that arrive separately and in any
order: task spans through the span intake (``POST /api/v2/llmobs``) and evaluation metrics
through the experiment events endpoint. A record's metrics are usually posted *before* its
span, which the span writer flushes later. This module stores both so that the SDK's own
readers (``SqlBackend.experiment_rows``, ``summary_evaluations``, ``pulled_experiment``)
see the same rows as after an SDK run:

- A **root span** (``parent_id`` absent or ``"undefined"``) is one row: its record is the
  tag ``dataset_record_id``, its run the tag ``run_iteration`` (1 when absent; a value
  outside ``1..run_count`` is refused), ``meta.input`` / ``output`` / ``expected_output`` /
  ``metadata`` / ``error`` its columns, and its index the record's position in the
  experiment's pinned dataset version.
- A **child span** (an LLM call, a tool) is stored with its ``parent_id``; its tokens
  and estimated cost (``assay.pricing``) roll up onto the root as the SDK does: the sums
  over the trace's ``llm`` and ``embedding`` spans, plus the root's own token metrics.
- A **row metric** is joined to its root span by ``span_id``. Until that span is stored
  it waits in ``posted_evaluations`` (``pending``), and it moves to ``evaluations`` when
  the span comes. A **summary metric** (``metric_source: "summary"``) belongs to the run
  named by the ``run_iteration`` tag of the event that carried it.
- The **runs** of an experiment created over HTTP have placeholder ids until a span or an
  event tagged with the client's ``run_id`` for that run arrives.

**Order and concurrency.** Each call validates everything first (an error writes
nothing), then writes in one transaction, moving there the pending metrics of the spans
it stored. On PostgreSQL it then, after the commit, looks once more for the other half:
spans of the metrics it left pending, metrics now pending for the spans it stored,
children of the traces it touched. Whichever of two concurrent writers commits last sees
the other's rows, so nothing waits for ever; moving a pending metric claims it first
(``UPDATE ... WHERE pending``), so two movers never store it twice. On SQLite each
transaction holds the write lock from its start (``write.in_transaction``), so writers
take turns and each sees what every earlier one committed: it rolls up its traces inside
and needs no look after its commit. The server writes the requests of
many clients through one ``IngestWriter`` (``group``), many requests to a transaction.

**Idempotency.** ddtrace retries a request that timed out or got a 5xx. A span is known
by ``(experiment, span_id)`` (and a root by its ``(run, record)``), a metric by
``(experiment, span_id or run, label)``: all unique keys, so a re-post is recognised and
skipped, and a write that loses a race to an equal one retries and then skips. A metric
re-posted with a *later* ``timestamp_ms`` replaces the stored one, as ddtrace's reader
keeps the latest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import Engine

from assay.store.sql.ingest.group import Ingested, IngestWriter, write_batches
from assay.store.sql.ingest.journal import Decoded, JournalEntry
from assay.store.sql.ingest.model import (
    EventBatch,
    IncomingMetric,
    IncomingSpan,
    IngestError,
    IngestResult,
    placeholder_run_id,
)
from assay.store.sql.ingest.write import ensure_runs

__all__ = [
    "Decoded",
    "EventBatch",
    "IncomingMetric",
    "IncomingSpan",
    "IngestError",
    "IngestResult",
    "IngestWriter",
    "Ingested",
    "JournalEntry",
    "ensure_runs",
    "ingest_batches",
    "ingest_events",
    "ingest_metrics",
    "ingest_spans",
    "placeholder_run_id",
    "write_batches",
]


def ingest_spans(engine: Engine, experiment_id: str, spans: Sequence[IncomingSpan]) -> IngestResult:
    """Store spans of one experiment: roots as rows, children under them."""
    return ingest_events(engine, experiment_id, spans=spans)


def ingest_metrics(
    engine: Engine,
    experiment_id: str,
    metrics: Sequence[IncomingMetric],
    *,
    tags: Sequence[str] = (),
) -> IngestResult:
    """Store evaluation metrics of one experiment; ``tags`` are those of their event."""
    return ingest_events(engine, experiment_id, metrics=metrics, tags=tags)


def ingest_events(
    engine: Engine,
    experiment_id: str,
    *,
    spans: Sequence[IncomingSpan] = (),
    metrics: Sequence[IncomingMetric] = (),
    tags: Sequence[str] = (),
) -> IngestResult:
    """One experiment events post: its spans first, then its metrics, in one transaction.

    Raises ``ExperimentNotFoundError`` for an unknown experiment and ``IngestError`` for
    input that cannot be stored; either way nothing is written.
    """
    batch = EventBatch(spans=spans, metrics=metrics, tags=tuple(tags))
    return ingest_batches(engine, {experiment_id: batch})[experiment_id]


def ingest_batches(engine: Engine, batches: Mapping[str, EventBatch]) -> dict[str, IngestResult]:
    """Batches of several experiments (one span intake request) in one transaction."""
    return write_batches(engine, batches).results
