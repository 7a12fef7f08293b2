"""The rows of a page of records: what a page shows side by side, and nothing more.

A comparison pairs every record by its values (:mod:`assay.store.sql.comparison_values`)
but shows inputs and outputs only for the records on the page; this reads those rows —
by ``uq_spans_row`` (experiment, run, record) and ``ix_evaluations_span`` — so a page of
25 records costs the same however big the experiment.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, select

from assay.store.records import RowRecord
from assay.store.sql.tables import evaluations, spans
from assay.store.sql.values import rows_from_columns

__all__ = ["page_rows"]


def page_rows(
    engine: Engine, experiment_id: str, record_ids: Sequence[str], *, runs: Sequence[int]
) -> list[RowRecord]:
    """The rows of these records in these runs, in run order, with their evaluations
    (no child spans)."""
    if not record_ids or not runs:
        return []
    with engine.connect() as connection:
        roots = connection.execute(
            select(spans)
            .where(
                spans.c.experiment_id == experiment_id,
                spans.c.run_iteration.in_(list(runs)),
                spans.c.record_id.in_(list(record_ids)),
                spans.c.parent_id.is_(None),
            )
            .order_by(spans.c.run_iteration, spans.c.idx)
        ).all()
        if not roots:
            return []
        found = connection.execute(
            select(evaluations)
            .where(
                evaluations.c.experiment_id == experiment_id,
                evaluations.c.span_id.in_([row.span_id for row in roots]),
            )
            .order_by(evaluations.c.pk)
        ).all()
    return rows_from_columns(roots, found)
