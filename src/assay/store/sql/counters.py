"""The writers' counters: how many rows and evaluations each experiment has stored.

Every writer (the SDK's and the server's ingestion) adds what it stored to the
experiment's ``row_count`` and ``evaluation_count`` in its own transaction; the
aggregates' refresh records the counts it was built from (``aggregate_state``), so that
comparing the two tells a search whether the aggregates are stale
(``assay.store.sql.aggregates``), and whether the per-run counts it reads instead of rows
include every row (``current_conditions``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from assay.store.sql.tables import aggregate_state, experiments, run_aggregate_state

_COUNT_WRITTEN = (  # built once: every ingest group ends with it
    update(experiments)
    .where(experiments.c.id == bindparam("experiment_id"))
    .values(
        row_count=experiments.c.row_count + bindparam("rows"),
        evaluation_count=experiments.c.evaluation_count + bindparam("evaluations"),
    )
)


def count_written(connection: Connection, experiment_id: str, rows: int, evaluations: int) -> None:
    """Add what a writer stored to the experiment's counters (in the writer's transaction)."""
    values = {"experiment_id": experiment_id, "rows": rows, "evaluations": evaluations}
    connection.execute(_COUNT_WRITTEN, values)


# Built once, as the update above: every search asks it first.
_FRESHNESS = select(
    aggregate_state.c.rows == experiments.c.row_count,
    aggregate_state.c.evaluations == experiments.c.evaluation_count,
).where(
    aggregate_state.c.experiment_id == bindparam("experiment_id"),
    experiments.c.id == aggregate_state.c.experiment_id,
)


def aggregates_are_fresh(connection: Connection, experiment_id: str) -> bool:
    """Whether the aggregates were built from every row and evaluation now stored.

    One statement of two primary-key lookups: the writers' counters against the counts the
    last refresh saw.
    """
    found = connection.execute(_FRESHNESS, {"experiment_id": experiment_id}).first()
    return found is not None and all(found)


def current_conditions(experiment_id: Any) -> list[Any]:
    """The conditions, over ``aggregate_state``, ``experiments`` and
    ``run_aggregate_state``, under which the per-run totals, token counts and score
    buckets include every row stored: the refresh's row count is the writers' counter,
    and they were brought up to the same rows as the record aggregates (reopened rows
    lower the latter's marks)."""
    return [
        aggregate_state.c.experiment_id == experiment_id,
        experiments.c.id == experiment_id,
        run_aggregate_state.c.experiment_id == experiment_id,
        aggregate_state.c.rows == experiments.c.row_count,
        run_aggregate_state.c.row_mark == aggregate_state.c.row_mark,
        run_aggregate_state.c.evaluation_mark == aggregate_state.c.evaluation_mark,
    ]


CURRENT = current_conditions(bindparam("experiment_id"))
"""``current_conditions`` of the experiment bound as ``experiment_id``, built once."""
