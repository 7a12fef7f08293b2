"""The first view of an experiment: every record by its aggregates, one page, in order.

The all-runs records view with an empty search bar lists every record. Through
``store.search`` that is the query ``@multi_run_mode.@status:*``, whose matching set — every
record — is built, counted and sorted before the page is cut: 150 to 400 ms at 100,000
records, on the page everyone opens first. Here the count is the one the last aggregate
rebuild stored (``aggregate_state.records``), and the page is one range of the covering
index ``ix_record_aggregates_mean``: a record's ``status`` row has no mean, so within
(experiment, ``status``) the index is in (idx, record_id) order, and the read stops after
the page. The items are those ``store.search`` gives for the same query (a test checks).

This belongs in ``store.search`` itself (an empty multi-run query taking this path), where
the API would profit too; it lives here until then.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from assay.store.records import ExperimentInfo, SearchPage
from assay.store.sql.search import record_items
from assay.store.sql.tables import aggregate_state, record_aggregates

__all__ = ["all_records_page"]


def all_records_page(
    connection: Connection, info: ExperimentInfo, *, limit: int, offset: int
) -> SearchPage:
    """Every record of the experiment, by ``idx``: one page, as ``store.search`` items.

    The aggregates must be fresh (``refresh_aggregates(id, only_if_stale=True)`` first).
    """
    table = record_aggregates
    total = int(
        connection.execute(
            select(aggregate_state.c.records).where(aggregate_state.c.experiment_id == info.id)
        ).scalar()
        or 0
    )
    page = connection.execute(
        select(table.c.record_id, table.c.idx)
        .where(
            table.c.experiment_id == info.id,
            table.c.facet == "status",
            table.c.mean.is_(None),
        )
        .order_by(table.c.idx, table.c.record_id)
        .limit(limit)
        .offset(offset)
    ).all()
    items = record_items(connection, info, [(row.record_id, row.idx) for row in page])
    return SearchPage(total=total, items=items, multi_run=True, description="all records", of=total)
