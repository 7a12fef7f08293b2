"""After a batch is committed: the half that may have arrived meanwhile.

Pending metrics move to ``evaluations`` once their span is stored, and a trace's child
spans roll their tokens and cost up onto its root. Both run after the commit of the batch
that could complete them, so that of two concurrent batches the later one always sees the
other (see ``assay.store.sql.ingest``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, Connection, Text, bindparam, cast, null, select, update

from assay.store.sql.aggregates import reopen_rows
from assay.store.sql.backend import EVALUATION_COLUMNS
from assay.store.sql.bulk import bulk_insert, chunks
from assay.store.sql.counters import count_written
from assay.store.sql.ingest.model import MODEL_KINDS, known_sum, token_counts
from assay.store.sql.ingest.write import looked_up, stored_roots
from assay.store.sql.tables import evaluations as evaluation_table
from assay.store.sql.tables import posted_evaluations, spans
from assay.store.sql.values import EVALUATION_VALUE_COLUMNS

# What a moved metric no longer needs in the ledger: everything but label, type, time.
_CLEARED = {name: null() for name in EVALUATION_VALUE_COLUMNS[2:-1]}


def _as_stored(name: str) -> Any:
    """A ledger value column as the bulk insert takes it: JSON columns as their text."""
    column = posted_evaluations.c[name]
    return cast(column, Text).label(name) if isinstance(column.type, JSON) else column


# The ledger's values in EVALUATION_VALUE_COLUMNS order, copied to ``evaluations`` as they
# are: decoding their JSON only to encode it again was much of the cost of moving them.
_STORED_VALUES = [_as_stored(name) for name in EVALUATION_VALUE_COLUMNS]
# Built once, as the look-ups of ``write`` are.
_PENDING = (
    posted_evaluations.c.experiment_id == bindparam("experiment_id"),
    posted_evaluations.c.span_id.in_(bindparam("keys", expanding=True)),
    posted_evaluations.c.pending.is_(True),
)
_WAITING = select(posted_evaluations.c.pk, posted_evaluations.c.span_id, *_STORED_VALUES).where(
    *_PENDING
)
# A trace's children, and their roots: looked up for every group of spans written.
_CHILDREN = select(
    spans.c.pk,
    spans.c.span_id,
    spans.c.parent_id,
    spans.c.trace_id,
    spans.c.kind,
    spans.c.run_iteration,
    spans.c.record_id,
    spans.c.idx,
    spans.c.input_tokens,
    spans.c.output_tokens,
    spans.c.total_tokens,
    spans.c.estimated_total_cost,
).where(
    spans.c.experiment_id == bindparam("experiment_id"),
    spans.c.parent_id.is_not(None),
    spans.c.trace_id.in_(bindparam("keys", expanding=True)),
)
_TRACE_ROOTS = select(
    spans.c.pk,
    spans.c.trace_id,
    spans.c.run_iteration,
    spans.c.record_id,
    spans.c.idx,
    spans.c.annotations,
).where(
    spans.c.experiment_id == bindparam("experiment_id"),
    spans.c.span_id.in_(bindparam("keys", expanding=True)),
    spans.c.parent_id.is_(None),
)
_PENDING_SPANS = select(posted_evaluations.c.span_id).where(*_PENDING).distinct()
_CLAIM = (
    update(posted_evaluations)
    .where(
        posted_evaluations.c.pk.in_(bindparam("pks", expanding=True)),
        posted_evaluations.c.pending.is_(True),
    )
    .values(pending=False, **_CLEARED)
    .returning(posted_evaluations.c.pk)
)


def adopt_pending(
    connection: Connection,
    *,
    experiment_id: str,
    span_ids: Sequence[str] = (),
    roots: Mapping[str, Any] | None = None,
    count: bool = True,
) -> set[tuple[str, str]]:
    """Move the pending metrics of these spans that are stored now into ``evaluations``.

    Each is claimed first (``pending`` true to false in one statement), so two callers
    never move one twice. Returns the (span_id, label) of each metric moved. ``roots``
    (span id to its ``run_iteration`` and ``record_id``) names spans known to be stored
    instead of ``span_ids``; ``count=False`` leaves the experiment's counters to the
    caller.
    """
    # The stored spans first: after a metrics post, whose spans are seldom stored yet,
    # that one look-up is all. Each look-up names its keys outright; an INSERT ... SELECT
    # joined to the spans would leave its plan to PostgreSQL's statistics, which lag
    # behind tables that are filling up, and a bad plan reads every span of the store.
    if roots is None:
        roots = stored_roots(connection, experiment_id, span_ids)
    waiting = list(looked_up(connection, _WAITING, experiment_id, sorted(roots)))
    claimed: set[int] = set()
    for pks in chunks([row.pk for row in waiting]):
        claimed.update(connection.execute(_CLAIM, {"pks": list(pks)}).scalars())
    rows = []
    moved = set()
    for row in waiting:
        if row.pk in claimed:
            span = roots[row.span_id]
            rows.append((experiment_id, span.run_iteration, span.record_id, *row[1:]))
            moved.add((row.span_id, row.label))
    bulk_insert(connection, evaluation_table, EVALUATION_COLUMNS).execute(connection, rows)
    if rows and count:
        count_written(connection, experiment_id, 0, len(rows))
    return moved


def pending_span_ids(
    connection: Connection, experiment_id: str, span_ids: Sequence[str]
) -> set[str]:
    """Which of these spans have metrics waiting for them."""
    return {row.span_id for row in looked_up(connection, _PENDING_SPANS, experiment_id, span_ids)}


def roll_up(connection: Connection, *, experiment_id: str, trace_ids: set[str]) -> None:
    """Sum the children's tokens and cost onto the root of each trace, as the SDK does,
    and give the children their root's record and run."""
    children = list(looked_up(connection, _CHILDREN, experiment_id, sorted(trace_ids)))
    if not children:
        return
    # The root is the one parent that is not itself a child (found by the span index).
    candidates = {child.parent_id for child in children} - {child.span_id for child in children}
    roots = list(looked_up(connection, _TRACE_ROOTS, experiment_id, sorted(candidates)))
    by_trace: dict[str, list[Any]] = {}
    for child in children:
        by_trace.setdefault(child.trace_id, []).append(child)
    for root in roots:
        members = by_trace.get(root.trace_id, [])
        own = (root.annotations or {}).get("metrics") or {}
        counts = [
            (child.input_tokens, child.output_tokens, child.total_tokens)
            for child in members
            if child.kind in MODEL_KINDS
        ]
        counts.append(token_counts(own))
        costs = [c.estimated_total_cost for c in members if c.estimated_total_cost is not None]
        connection.execute(
            update(spans)
            .where(spans.c.pk == root.pk)
            .values(
                input_tokens=known_sum(count[0] for count in counts),
                output_tokens=known_sum(count[1] for count in counts),
                total_tokens=known_sum(count[2] for count in counts),
                estimated_total_cost=sum(costs) if costs else None,
            )
        )
        place = (root.record_id, root.idx, root.run_iteration)
        strays = [c.pk for c in members if (c.record_id, c.idx, c.run_iteration) != place]
        for chunk in chunks(strays):
            connection.execute(
                update(spans)
                .where(spans.c.pk.in_(chunk))
                .values(record_id=root.record_id, idx=root.idx, run_iteration=root.run_iteration)
            )
    if roots:
        # The roots' tokens and cost changed in place: searches must see the new sums.
        reopen_rows(connection, experiment_id, min(root.pk for root in roots))
