"""How many rows of each run report each token count (``run_token_counts``), and counting
a row query on a token facet from them.

The total of ``run_iteration:1 @trace.total_tokens:>1000`` over 100,000 rows a run was a
walk of 50,000 index entries, 2.5 to 5 ms, the longest part of such a search. Rows with
the same count all match or all fail a condition on that count alone, so summing the
matching counts' ``n`` gives the same total from one entry per distinct count: a run's
token counts take a few thousand values where it has a hundred thousand rows.

The counts are kept with the per-run totals (``run_aggregates.py``), to the same marks, and
by the same rule: rows are only ever added, and a refresh adds the rows past the last mark;
where rows were reopened (tokens rolled onto an old root) the marks differ, and the
refresh recomputes both. A search uses them only while they include every row stored
(``counters.current_conditions``); else it counts the rows themselves.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import visitors

from assay.store.sql.counters import CURRENT
from assay.store.sql.tables import (
    run_aggregates,
    run_token_counts,
    spans,
)

__all__ = [
    "TOKEN_COLUMNS",
    "add_token_counts",
    "count_by_tokens",
    "rebuild_token_counts",
]

TOKEN_COLUMNS = ("total_tokens", "input_tokens", "output_tokens")
"""The root-span columns counted by value (also ``run_aggregates``' facet names)."""


def _grouped(experiment_id: str, name: str, rows: Any) -> Any:
    """The rows' counts by run and value of the token column ``name``."""
    column = spans.c[name]
    return (
        select(
            literal(experiment_id),
            literal(name),
            spans.c.run_iteration,
            column,
            func.count(),
        )
        .where(rows, spans.c.parent_id.is_(None), column.is_not(None))
        .group_by(spans.c.run_iteration, column)
    )


_COLUMNS = ["experiment_id", "facet", "run_iteration", "tokens", "n"]


def rebuild_token_counts(connection: Connection, experiment_id: str, rows: Any) -> None:
    """Count the experiment's ``rows`` (a condition on ``spans``: those up to the marks)
    afresh."""
    connection.execute(
        delete(run_token_counts).where(run_token_counts.c.experiment_id == experiment_id)
    )
    for name in TOKEN_COLUMNS:
        connection.execute(
            insert(run_token_counts).from_select(_COLUMNS, _grouped(experiment_id, name, rows))
        )


def add_token_counts(connection: Connection, experiment_id: str, rows: Any) -> None:
    """Add the experiment's ``rows`` (a condition on ``spans``: those past the last mark)
    to its counts: one statement per column, which adds to the counts already there."""
    upsert: Any = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    for name in TOKEN_COLUMNS:
        statement = upsert(run_token_counts).from_select(
            _COLUMNS, _grouped(experiment_id, name, rows)
        )
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=[run_token_counts.c[column] for column in _COLUMNS[:4]],
                set_={"n": run_token_counts.c.n + statement.excluded.n},
            )
        )


def _token_column(condition: Any) -> Column[Any] | None:
    """The one token column of ``spans`` that ``condition`` tests, if it tests nothing
    else."""
    found = {
        element
        for element in visitors.iterate(condition)
        if isinstance(element, Column) and element.table is not None
    }
    if len(found) != 1:
        return None
    column = found.pop()
    if column.table is not spans or column.name not in TOKEN_COLUMNS:
        return None
    return column


def _replaced(condition: Any, column: Any, by: Any) -> Any:
    return visitors.replacement_traverse(
        condition, {}, lambda element, **_: by if element is column else None
    )


# The parts of a count that do not depend on its condition, built once: building them
# took as long as running the count.
_MATCHED = select(func.coalesce(func.sum(run_token_counts.c.n), 0)).where(
    run_token_counts.c.experiment_id == bindparam("experiment_id"),
    run_token_counts.c.facet == bindparam("facet"),
)
_OF_RUN = run_token_counts.c.run_iteration == bindparam("run")
_NULL = cast(null(), BigInteger)


def count_by_tokens(
    connection: Connection, experiment_id: str, condition: Any, run: int | None
) -> int | None:
    """How many rows of the experiment (of run ``run``, if given) match ``condition``, a
    condition on one token column of ``spans`` and nothing else; None where the condition
    tests anything else or the counts do not include every row stored.

    The condition is tested on each distinct count instead of each row. Rows without the
    metric have no count: whether they match is the condition tested on NULL, and how many
    there are is the run's rows less those that report it (``run_aggregates``)."""
    column = _token_column(condition)
    if column is None:
        return None
    matched = _MATCHED.where(_replaced(condition, column, run_token_counts.c.tokens))
    if run is not None:
        matched = matched.where(_OF_RUN)
    without = case((_replaced(condition, column, _NULL), 1), else_=0)
    found = connection.execute(
        select(matched.scalar_subquery(), without).where(*CURRENT),
        {"experiment_id": experiment_id, "facet": column.name, "run": run},
    ).first()
    if found is None:
        return None
    total = int(found[0])
    if found[1]:
        total += _rows_without(connection, experiment_id, column.name, run)
    return total


def _rows_without(connection: Connection, experiment_id: str, name: str, run: int | None) -> int:
    """The rows that do not report the token column ``name``: every row (``status``) less
    those that do."""
    totals = run_aggregates
    signed = case((totals.c.facet == "status", totals.c.n), else_=-totals.c.n)
    conditions = [
        totals.c.experiment_id == experiment_id,
        totals.c.facet.in_(["status", name]),
        totals.c.value.is_(None),
    ]
    if run is not None:
        conditions.append(totals.c.run_iteration == run)
    found = connection.execute(select(func.coalesce(func.sum(signed), 0)).where(and_(*conditions)))
    return int(found.scalar_one())
