"""Writing a checked batch: runs, spans and metrics, each skipped when already stored."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import BindParameter, Connection, Engine, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from assay.store.sql.backend import EVALUATION_COLUMNS, SPAN_COLUMNS
from assay.store.sql.bulk import bulk_insert, chunks
from assay.store.sql.counters import count_written
from assay.store.sql.ingest.model import IncomingMetric, IngestResult, placeholder_run_id
from assay.store.sql.ingest.plan import Plan
from assay.store.sql.tables import evaluations as evaluation_table
from assay.store.sql.tables import posted_evaluations, runs, spans
from assay.store.sql.tables import summary_evaluations as summary_table
from assay.store.sql.values import EVALUATION_VALUE_COLUMNS, evaluation_values

T = TypeVar("T")
_ATTEMPTS = 5
_LEDGER_KEY = ("experiment_id", "span_id", "run_iteration", "pending", "trace_id")
_LEDGER_STORED = (*_LEDGER_KEY, "label", "metric_type", "timestamp_ms")
_LEDGER_PENDING = (*_LEDGER_KEY, *EVALUATION_VALUE_COLUMNS)
_SUMMARY_COLUMNS = ("experiment_id", "run_iteration", *EVALUATION_VALUE_COLUMNS)

# The look-ups of every post, built once: building a statement with its ``IN`` list for
# each post (coercing each value) and finding it in the compiled cache cost more than
# running it. Each takes ``experiment_id`` and a list of ``keys``.
_EXPERIMENT: BindParameter[str] = bindparam("experiment_id")
_KEYS: BindParameter[Any] = bindparam("keys", expanding=True)
_STORED_SPANS = select(spans.c.span_id).where(
    spans.c.experiment_id == _EXPERIMENT, spans.c.span_id.in_(_KEYS)
)
_TAKEN_ROWS = select(spans.c.run_iteration, spans.c.record_id).where(
    spans.c.experiment_id == _EXPERIMENT,
    spans.c.parent_id.is_(None),
    spans.c.run_iteration.in_(bindparam("runs", expanding=True)),
    spans.c.record_id.in_(_KEYS),
)
_LEDGER = select(
    posted_evaluations.c.pk,
    posted_evaluations.c.span_id,
    posted_evaluations.c.run_iteration,
    posted_evaluations.c.label,
    posted_evaluations.c.pending,
    posted_evaluations.c.timestamp_ms,
).where(
    posted_evaluations.c.experiment_id == _EXPERIMENT,
    posted_evaluations.c.span_id.in_(_KEYS),
)
# Roots are told from children here, not in SQL: ``parent_id IS NULL`` would let
# PostgreSQL take a partial index of the roots, which a young table's missing statistics
# make look cheapest, and read every root of the experiment for each post (7 ms at 10,000
# rows, growing). By (experiment, span) it is a look-up of the unique index.
_STORED_ROOTS = select(
    spans.c.span_id, spans.c.run_iteration, spans.c.record_id, spans.c.parent_id
).where(spans.c.experiment_id == _EXPERIMENT, spans.c.span_id.in_(_KEYS))


def looked_up(
    connection: Connection, statement: Any, experiment_id: str, keys: Sequence[Any], **more: Any
) -> Iterator[Any]:
    """The rows of one of the built look-ups for these keys, a chunk at a time."""
    for chunk in chunks(keys):
        yield from connection.execute(
            statement, {"experiment_id": experiment_id, "keys": list(chunk), **more}
        )


def in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run ``work`` in a transaction, again when it lost a race on a unique key.

    On SQLite the transaction takes the database's write lock before its first read
    (``BEGIN IMMEDIATE``; the driver would begin only at the first write, after the
    look-ups), so the ingestion writes of every process are serialized and each sees all
    that was committed before it: nothing another writer commits can slip between a
    look-up and the write that relies on it (``serializes_writers``)."""
    for attempt in range(_ATTEMPTS):
        try:
            with engine.begin() as connection:
                if serializes_writers(connection):
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    # psycopg prepares a statement run five times, and PostgreSQL may then
                    # keep a generic plan made while the tables were nearly empty (or had
                    # no statistics yet): a scan of the experiment for every look-up of a
                    # post. Planned for its own values each time, a look-up stays a probe
                    # of the unique index (20 ms a post down to 7 on a new database). For
                    # this transaction only: the SDK's writer keeps its prepared inserts.
                    connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
                return work(connection)
        except IntegrityError:
            # An equal span or metric was committed between our look-up and our insert:
            # the next attempt sees it and skips it.
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def serializes_writers(bind: Engine | Connection) -> bool:
    """Whether ``in_transaction`` holds the write lock from its start: on SQLite."""
    return bind.dialect.name == "sqlite"


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


class WriteState:
    """What the plans written in one transaction share: each experiment's runs, read
    once, and the counters, added once per experiment at the end (``count``)."""

    def __init__(self, runs: Mapping[str, Mapping[int, str]] | None = None) -> None:
        self.runs: dict[str, dict[int, str]] = {
            key: dict(value) for key, value in (runs or {}).items()
        }
        """Each experiment's runs (``runs`` seeds it with what an earlier commit left)."""
        self.written: dict[str, list[int]] = {}
        self.roots: dict[str, dict[str, RootRef]] = {}
        """Each experiment's root spans written in this transaction, by span id."""

    def count(self, connection: Connection) -> None:
        """Add the rows and evaluations written to each experiment's counters, in id order
        (the order every transaction locks experiments in)."""
        for experiment_id, (rows, evaluations) in sorted(self.written.items()):
            if rows or evaluations:
                count_written(connection, experiment_id, rows, evaluations)
        self.written.clear()


def write_plan(
    connection: Connection, plan: Plan, *, state: WriteState | None = None
) -> IngestResult:
    """Write one checked batch. With ``state`` (shared by the plans of one transaction),
    the counters wait for ``state.count``; without, they are added here."""
    return write_plans(connection, [plan], state=state)[0]


def write_plans(
    connection: Connection, plans: Sequence[Plan], *, state: WriteState | None = None
) -> list[IngestResult]:
    """Write checked batches of one experiment, with the outcome of writing them one after
    the other, in a few statements for all of them.

    Batches that share no span, row or metric are written together: each look-up and each
    insert is one statement for the lot. A batch that shares one with an earlier batch
    starts a new round, so that it sees that batch as stored (a duplicate, or a metric to
    replace), as it would have when written after it.
    """
    own = state is None
    state = WriteState() if state is None else state
    results: list[IngestResult] = []
    rounds: list[list[Plan]] = [[]]
    keys: set[Hashable] = set()
    for plan in plans:
        mine = _keys(plan)
        if not keys.isdisjoint(mine):
            rounds.append([])
            keys = set()
        rounds[-1].append(plan)
        keys |= mine
    for members in rounds:
        if members:
            results.extend(_write_round(connection, members, state))
    if own:
        state.count(connection)
    return results


def _keys(plan: Plan) -> set[Hashable]:
    """What makes two batches depend on each other's write: spans, rows, metric keys."""
    found: set[Hashable] = {key.span_id for key in plan.span_keys}
    found.update((key.run_iteration, key.record_id) for key in plan.span_keys if key.is_root)
    found.update(_metric_key(metric, run_iteration) for metric, run_iteration in plan.metrics)
    return found


def _write_round(
    connection: Connection, plans: Sequence[Plan], state: WriteState
) -> list[IngestResult]:
    experiment = plans[0].experiment
    current = state.runs.get(experiment.id)
    if current is None:
        current = state.runs[experiment.id] = ensure_runs(
            connection, experiment.id, experiment.run_count
        )
    results = []
    for plan in plans:
        results.append(IngestResult())
        plan.pending.clear()  # a retried transaction starts again
        for run_iteration, run_id in plan.run_ids.items():
            placeholder = placeholder_run_id(experiment.id, run_iteration)
            if current.get(run_iteration) == placeholder != run_id and _claim_run(
                connection, experiment.id, run_iteration, run_id, placeholder
            ):
                current[run_iteration] = run_id
    written = state.roots.setdefault(experiment.id, {})
    roots = _write_spans(connection, plans, results, written)
    _write_metrics(connection, plans, results)
    # The experiment's counters are how a search knows its aggregates are stale.
    counts = state.written.setdefault(experiment.id, [0, 0])
    counts[0] += roots
    counts[1] += sum(result.evaluations for result in results)
    return results


def _claim_run(
    connection: Connection, experiment_id: str, run_iteration: int, run_id: str, placeholder: str
) -> bool:
    """Give a run the id its client uses, unless another run already has that id."""
    taken = connection.execute(select(runs.c.run_id).where(runs.c.run_id == run_id)).first()
    if taken is not None:
        return False
    connection.execute(
        update(runs)
        .where(
            runs.c.experiment_id == experiment_id,
            runs.c.run_iteration == run_iteration,
            runs.c.run_id == placeholder,
        )
        .values(run_id=run_id)
    )
    return True


def _write_spans(
    connection: Connection,
    plans: Sequence[Plan],
    results: Sequence[IngestResult],
    written: dict[str, RootRef],
) -> int:
    """Store the spans not stored yet; returns how many of them are rows (roots), and adds
    those to ``written``."""
    keys = [key for plan in plans for key in plan.span_keys]
    if not keys:
        return 0
    experiment_id = plans[0].experiment.id
    stored = {
        row.span_id
        for row in looked_up(connection, _STORED_SPANS, experiment_id, [k.span_id for k in keys])
    }
    # A root is also one (run, record) row: another span for a row already stored is a
    # re-post of that row under a new id (a client that retried the whole record).
    taken: set[tuple[int, str]] = set()
    root_keys = [key for key in keys if key.is_root]
    # The runs as well as the records: with the records alone the unique index (experiment,
    # run, record) cannot serve the look-up, which then reads every row of the experiment
    # and makes each post slower than the one before.
    if root_keys:
        taken.update(
            (row.run_iteration, row.record_id)
            for row in looked_up(
                connection,
                _TAKEN_ROWS,
                experiment_id,
                sorted({key.record_id for key in root_keys}),
                runs=sorted({key.run_iteration for key in root_keys}),
            )
        )
    fresh = []
    roots = 0
    for plan, result in zip(plans, results, strict=True):
        for key, values in zip(plan.span_keys, plan.span_rows, strict=True):
            row = (key.run_iteration, key.record_id)
            if key.span_id in stored or (key.is_root and row in taken):
                result.duplicate_spans += 1
                continue
            if key.is_root:
                taken.add(row)
                roots += 1
                written[key.span_id] = RootRef(key.span_id, key.run_iteration, key.record_id)
            result.spans += 1
            fresh.append(values)
    bulk_insert(connection, spans, SPAN_COLUMNS).execute(connection, fresh)
    return roots


class RootRef(NamedTuple):
    """A stored root span: what a metric of it needs to become an evaluation."""

    span_id: str
    run_iteration: int
    record_id: str


MetricKey = tuple[str, int, str]
"""(span_id, run_iteration, label): span_id empty for a summary metric, run 0 for a row
metric (its span gives the run)."""


def _metric_key(metric: IncomingMetric, run_iteration: int) -> MetricKey:
    if metric.summary:
        return ("", run_iteration, metric.label)
    return (metric.span_id, 0, metric.label)


def _latest(plan: Plan, result: IngestResult) -> dict[MetricKey, IncomingMetric]:
    """The batch's metrics by key; of two with one key, the later timestamp wins."""
    latest: dict[MetricKey, IncomingMetric] = {}
    for metric, run_iteration in plan.metrics:
        key = _metric_key(metric, run_iteration)
        known = latest.get(key)
        if known is not None:
            result.duplicate_metrics += 1
            if known.timestamp_ms > metric.timestamp_ms:
                continue
        latest[key] = metric
    return latest


def _write_metrics(
    connection: Connection, plans: Sequence[Plan], results: Sequence[IngestResult]
) -> None:
    latests = [_latest(plan, result) for plan, result in zip(plans, results, strict=True)]
    if not any(latests):
        return
    experiment_id = plans[0].experiment.id
    ledger: dict[MetricKey, Any] = {}
    for row in looked_up(
        connection, _LEDGER, experiment_id, sorted({key[0] for latest in latests for key in latest})
    ):
        ledger[(row.span_id, row.run_iteration, row.label)] = row
    span_ids = [key[0] for latest in latests for key in latest if key[0]]
    roots = stored_roots(connection, experiment_id, span_ids)

    evaluation_rows: list[tuple[Any, ...]] = []
    summary_rows: list[tuple[Any, ...]] = []
    pending_rows: list[tuple[Any, ...]] = []
    stored_keys: list[tuple[Any, ...]] = []
    for plan, result, latest in zip(plans, results, latests, strict=True):
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
                result.summary_evaluations += 1
            elif span is not None:
                evaluation_rows.append(
                    (experiment_id, span.run_iteration, span.record_id, span_id, *values)
                )
                result.evaluations += 1
            else:
                plan.pending.add((span_id, label))
                pending_rows.append(
                    (experiment_id, span_id, 0, True, metric.trace_id or None, *values)
                )
                result.pending += 1
                continue
            stored_keys.append((*ledger_key, label, evaluation.metric_type, metric.timestamp_ms))
    bulk_insert(connection, evaluation_table, EVALUATION_COLUMNS).execute(
        connection, evaluation_rows
    )
    bulk_insert(connection, summary_table, _SUMMARY_COLUMNS).execute(connection, summary_rows)
    bulk_insert(connection, posted_evaluations, _LEDGER_STORED).execute(connection, stored_keys)
    bulk_insert(connection, posted_evaluations, _LEDGER_PENDING).execute(connection, pending_rows)


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
    found = looked_up(connection, _STORED_ROOTS, experiment_id, sorted(set(span_ids)))
    return {row.span_id: row for row in found if row.parent_id is None}
