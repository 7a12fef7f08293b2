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
