"""Writing a checked batch: runs, spans and metrics, each skipped when already stored."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from assay.store.sql.aggregates import count_written
from assay.store.sql.backend import EVALUATION_COLUMNS, SPAN_COLUMNS
from assay.store.sql.bulk import bulk_insert
from assay.store.sql.ingest.model import IncomingMetric, IngestResult, placeholder_run_id
from assay.store.sql.ingest.plan import Plan
from assay.store.sql.tables import evaluations as evaluation_table
from assay.store.sql.tables import posted_evaluations, runs, spans
from assay.store.sql.tables import summary_evaluations as summary_table
from assay.store.sql.values import EVALUATION_VALUE_COLUMNS, evaluation_values

T = TypeVar("T")
CHUNK = 500
"""Both dialects cap the bound parameters of a statement; ``IN`` lists stay far below."""
_ATTEMPTS = 5
_LEDGER_KEY = ("experiment_id", "span_id", "run_iteration", "pending", "trace_id")
_LEDGER_STORED = (*_LEDGER_KEY, "label", "metric_type", "timestamp_ms")
_LEDGER_PENDING = (*_LEDGER_KEY, *EVALUATION_VALUE_COLUMNS)
_SUMMARY_COLUMNS = ("experiment_id", "run_iteration", *EVALUATION_VALUE_COLUMNS)


def in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run ``work`` in a transaction, again when it lost a race on a unique key."""
    for attempt in range(_ATTEMPTS):
        try:
            with engine.begin() as connection:
                return work(connection)
        except IntegrityError:
            # An equal span or metric was committed between our look-up and our insert:
            # the next attempt sees it and skips it.
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def ensure_runs(connection: Connection, experiment_id: str, run_count: int) -> dict[int, str]:
    """Give the experiment runs ``1..run_count`` (placeholder ids for missing ones).

    Returns run iteration to run id, for every run of the experiment.
    """
    have: dict[int, str] = {
        row.run_iteration: row.run_id
        for row in connection.execute(
            select(runs.c.run_iteration, runs.c.run_id).where(runs.c.experiment_id == experiment_id)
        )
    }
    missing = {
        n: placeholder_run_id(experiment_id, n) for n in range(1, run_count + 1) if n not in have
    }
    if missing:
        connection.execute(
            insert(runs),
            [
                {"run_id": run_id, "experiment_id": experiment_id, "run_iteration": n}
                for n, run_id in missing.items()
            ],
        )
        have.update(missing)
    return have


def write_plan(connection: Connection, plan: Plan) -> IngestResult:
    result = IngestResult()
    plan.pending.clear()  # a retried transaction starts again
    experiment = plan.experiment
    current = ensure_runs(connection, experiment.id, experiment.run_count)
    for run_iteration, run_id in plan.run_ids.items():
        placeholder = placeholder_run_id(experiment.id, run_iteration)
        if current.get(run_iteration) == placeholder != run_id:
            _claim_run(connection, experiment.id, run_iteration, run_id, placeholder)
    roots = _write_spans(connection, plan, result)
    _write_metrics(connection, plan, result)
    # The experiment's counters are how a search knows its aggregates are stale.
    if roots or result.evaluations:
        count_written(connection, experiment.id, roots, result.evaluations)
    return result


def _claim_run(
    connection: Connection, experiment_id: str, run_iteration: int, run_id: str, placeholder: str
) -> None:
    """Give a run the id its client uses, unless another run already has that id."""
    taken = connection.execute(select(runs.c.run_id).where(runs.c.run_id == run_id)).first()
    if taken is None:
        connection.execute(
            update(runs)
            .where(
                runs.c.experiment_id == experiment_id,
                runs.c.run_iteration == run_iteration,
                runs.c.run_id == placeholder,
            )
            .values(run_id=run_id)
        )


def _write_spans(connection: Connection, plan: Plan, result: IngestResult) -> int:
    """Store the spans not stored yet; returns how many of them are rows (roots)."""
    if not plan.span_rows:
        return 0
    experiment_id = plan.experiment.id
    stored: set[str] = set()
    for chunk in chunks([key.span_id for key in plan.span_keys]):
        stored.update(
            connection.execute(
                select(spans.c.span_id).where(
                    spans.c.experiment_id == experiment_id, spans.c.span_id.in_(chunk)
                )
            ).scalars()
        )
    # A root is also one (run, record) row: another span for a row already stored is a
    # re-post of that row under a new id (a client that retried the whole record).
    taken: set[tuple[int, str]] = set()
    root_keys = [key for key in plan.span_keys if key.is_root]
    # The runs as well as the records: with the records alone the unique index (experiment,
    # run, record) cannot serve the look-up, which then reads every row of the experiment
    # and makes each post slower than the one before.
    root_runs = sorted({key.run_iteration for key in root_keys})
    for chunk in chunks(sorted({key.record_id for key in root_keys})):
        taken.update(
            (row.run_iteration, row.record_id)
            for row in connection.execute(
                select(spans.c.run_iteration, spans.c.record_id).where(
                    spans.c.experiment_id == experiment_id,
                    spans.c.parent_id.is_(None),
                    spans.c.run_iteration.in_(root_runs),
                    spans.c.record_id.in_(chunk),
                )
            )
        )
    fresh = []
    roots = 0
    for key, values in zip(plan.span_keys, plan.span_rows, strict=True):
        row = (key.run_iteration, key.record_id)
        if key.span_id in stored or (key.is_root and row in taken):
            result.duplicate_spans += 1
            continue
        if key.is_root:
            taken.add(row)
            roots += 1
        fresh.append(values)
    bulk_insert(connection, spans, SPAN_COLUMNS).execute(connection, fresh)
    result.spans += len(fresh)
    return roots


MetricKey = tuple[str, int, str]
"""(span_id, run_iteration, label): span_id empty for a summary metric, run 0 for a row
metric (its span gives the run)."""


def _latest(plan: Plan, result: IngestResult) -> dict[MetricKey, IncomingMetric]:
    """The batch's metrics by key; of two with one key, the later timestamp wins."""
    latest: dict[MetricKey, IncomingMetric] = {}
    for metric, run_iteration in plan.metrics:
        key = (
            ("", run_iteration, metric.label)
            if metric.summary
            else (metric.span_id, 0, metric.label)
        )
        known = latest.get(key)
        if known is not None:
            result.duplicate_metrics += 1
            if known.timestamp_ms > metric.timestamp_ms:
                continue
        latest[key] = metric
    return latest


def _write_metrics(connection: Connection, plan: Plan, result: IngestResult) -> None:
    if not plan.metrics:
        return
    experiment_id = plan.experiment.id
    latest = _latest(plan, result)
    ledger: dict[MetricKey, Any] = {}
    for chunk in chunks(sorted({key[0] for key in latest})):
        for row in connection.execute(
            select(
                posted_evaluations.c.pk,
                posted_evaluations.c.span_id,
                posted_evaluations.c.run_iteration,
                posted_evaluations.c.label,
                posted_evaluations.c.pending,
                posted_evaluations.c.timestamp_ms,
            ).where(
                posted_evaluations.c.experiment_id == experiment_id,
                posted_evaluations.c.span_id.in_(chunk),
            )
        ):
            ledger[(row.span_id, row.run_iteration, row.label)] = row
    roots = stored_roots(connection, experiment_id, [key[0] for key in latest if key[0]])

    evaluation_rows: list[tuple[Any, ...]] = []
    summary_rows: list[tuple[Any, ...]] = []
    pending_rows: list[tuple[Any, ...]] = []
    stored_keys: list[tuple[Any, ...]] = []
    for key, metric in latest.items():
        span_id, run_iteration, label = key
        before = ledger.get(key)
        if before is not None:
            if metric.timestamp_ms <= before.timestamp_ms:
                result.duplicate_metrics += 1
                continue
            result.updated += 1
            _forget(connection, experiment_id, before, key)
        evaluation = metric.evaluation()
        values = evaluation_values(evaluation)
        ledger_key = (experiment_id, span_id, run_iteration, False, metric.trace_id or None)
        span = roots.get(span_id)
        if metric.summary:
            summary_rows.append((experiment_id, run_iteration, *values))
        elif span is not None:
            evaluation_rows.append(
                (experiment_id, span.run_iteration, span.record_id, span_id, *values)
            )
        else:
            plan.pending.add((span_id, label))
            pending_rows.append((experiment_id, span_id, 0, True, metric.trace_id or None, *values))
            continue
        stored_keys.append((*ledger_key, label, evaluation.metric_type, metric.timestamp_ms))
    bulk_insert(connection, evaluation_table, EVALUATION_COLUMNS).execute(
        connection, evaluation_rows
    )
    bulk_insert(connection, summary_table, _SUMMARY_COLUMNS).execute(connection, summary_rows)
    bulk_insert(connection, posted_evaluations, _LEDGER_STORED).execute(connection, stored_keys)
    bulk_insert(connection, posted_evaluations, _LEDGER_PENDING).execute(connection, pending_rows)
    result.evaluations += len(evaluation_rows)
    result.summary_evaluations += len(summary_rows)
    result.pending += len(pending_rows)


def _forget(connection: Connection, experiment_id: str, before: Any, key: MetricKey) -> None:
    """Remove a metric that a later post of the same key replaces."""
    span_id, run_iteration, label = key
    connection.execute(delete(posted_evaluations).where(posted_evaluations.c.pk == before.pk))
    if before.pending:
        return
    if span_id:
        connection.execute(
            delete(evaluation_table).where(
                evaluation_table.c.experiment_id == experiment_id,
                evaluation_table.c.label == label,
                evaluation_table.c.span_id == span_id,
            )
        )
    else:
        connection.execute(
            delete(summary_table).where(
                summary_table.c.experiment_id == experiment_id,
                summary_table.c.run_iteration == run_iteration,
                summary_table.c.label == label,
            )
        )


def stored_roots(
    connection: Connection, experiment_id: str, span_ids: Iterable[str]
) -> dict[str, Any]:
    """Root spans among these ids: span id to (span_id, run_iteration, record_id)."""
    found: dict[str, Any] = {}
    for chunk in chunks(sorted(set(span_ids))):
        for row in connection.execute(
            select(spans.c.span_id, spans.c.run_iteration, spans.c.record_id).where(
                spans.c.experiment_id == experiment_id,
                spans.c.span_id.in_(chunk),
                spans.c.parent_id.is_(None),
            )
        ):
            found[row.span_id] = row
    return found
