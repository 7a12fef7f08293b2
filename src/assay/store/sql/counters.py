"""The writers' counters: how many rows and evaluations each experiment has stored.

Every writer (the SDK's and the server's ingestion) adds what it stored to the
experiment's ``row_count`` and ``evaluation_count`` in its own transaction; the
aggregates' refresh records the counts it was built from (``aggregate_state``), so that
comparing the two tells a search whether the aggregates are stale
(``assay.store.sql.aggregates``).
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, select, update

from assay.store.sql.tables import aggregate_state, experiments

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


def _counts(connection: Connection, experiment_id: str) -> tuple[int, int]:
    found = connection.execute(
        select(experiments.c.row_count, experiments.c.evaluation_count).where(
            experiments.c.id == experiment_id
        )
    ).first()
    return (int(found.row_count), int(found.evaluation_count)) if found else (0, 0)


def aggregates_are_fresh(connection: Connection, experiment_id: str) -> bool:
    """Whether the aggregates were built from every row and evaluation now stored.

    Two primary-key lookups: the writers' counters against the counts the last refresh saw.
    """
    state = connection.execute(
        select(aggregate_state.c.rows, aggregate_state.c.evaluations).where(
            aggregate_state.c.experiment_id == experiment_id
        )
    ).first()
    return state is not None and (state.rows, state.evaluations) == _counts(
        connection, experiment_id
    )
