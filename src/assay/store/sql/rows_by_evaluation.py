"""One run's matching rows in the order of an evaluation's value: the sort of a score column.

``store.search`` sorts rows by their own columns (duration, tokens, cost...); the records
view of one run also sorts by an evaluation, ``sort=@evaluations.custom.<label>`` (``-``
for descending). The value is the row's evaluation of that label: its score (a boolean
counting 1/0), or its categorical label as text; rows without a usable value come last
either way, then run and dataset order break ties. The filter, the total and the "of" are
those of ``store.search`` (the caller asks it for a page of nothing); this module finds
the span ids in that order (:func:`span_ids_by_evaluation`) and reads their columns and
evaluations (:func:`row_items`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Float, case, cast, false, func, select, true

from assay.errors import QueryError
from assay.query import resolve
from assay.store.records import ExperimentInfo, MetricType
from assay.store.sql.search import load_catalog, row_items
from assay.store.sql.search_compile import QueryCompiler
from assay.store.sql.tables import evaluations, spans

__all__ = ["EVALUATION_SORT", "row_items", "span_ids_by_evaluation"]

EVALUATION_SORT = "@evaluations.custom."
"""The prefix of an evaluation sort key."""


def _sort_value(metric_type: MetricType) -> Any:
    if metric_type == "categorical":
        return evaluations.c.categorical_value
    boolean = case(
        (evaluations.c.boolean_value == true(), 1.0),
        (evaluations.c.boolean_value == false(), 0.0),
        else_=None,
    )
    return func.coalesce(cast(evaluations.c.score_value, Float), boolean)


def span_ids_by_evaluation(
    connection: Connection,
    info: ExperimentInfo,
    query: str,
    *,
    run: int,
    sort: str,
    limit: int,
    offset: int,
) -> list[str]:
    """The span ids of one page of run ``run``'s rows matching ``query``, sorted by
    ``sort`` (``[-]@evaluations.custom.<label>``); :func:`row_items` reads them."""
    catalog = load_catalog(connection, info.id)
    descending = sort.startswith("-")
    label = sort.lstrip("-+").removeprefix(EVALUATION_SORT)
    metric_type = catalog.evaluations.get(label)
    if metric_type is None or metric_type == "json":
        known = ", ".join(sorted(k for k, v in catalog.evaluations.items() if v != "json"))
        raise QueryError(
            f"Cannot sort by evaluation {label!r}; this experiment's are {known or 'none'}",
            query=query,
        )
    resolved = resolve(query, catalog)
    runs = {item.run_id: item.run_iteration for item in info.runs}
    compiler = QueryCompiler(
        dialect=connection.dialect.name, experiment_id=info.id, runs=runs, query_text=query
    )
    condition = compiler.rows(resolved.node) if resolved.node is not None else true()
    scope = [
        spans.c.experiment_id == info.id,
        spans.c.parent_id.is_(None),
        spans.c.run_iteration == run,
        condition,
    ]
    value = _sort_value(metric_type)
    # Driven from the label's evaluations and joined to their rows (the join reads each
    # evaluation once; a per-row subquery would probe an index per row, twice as slow).
    # Rows without a usable value are not in the join: they follow, in dataset order.
    valued = (
        select(spans.c.span_id)
        .select_from(
            evaluations.join(
                spans,
                (spans.c.experiment_id == evaluations.c.experiment_id)
                & (spans.c.span_id == evaluations.c.span_id),
            )
        )
        .where(
            evaluations.c.experiment_id == info.id,
            evaluations.c.label == label,
            evaluations.c.run_iteration == run,
            evaluations.c.error_type.is_(None),
            value.is_not(None),
            *scope,
        )
    )
    ids = list(
        connection.execute(
            valued.order_by(value.desc() if descending else value.asc(), spans.c.idx)
            .limit(limit)
            .offset(offset)
        ).scalars()
    )
    if len(ids) < limit:
        with_value = connection.execute(
            select(func.count()).select_from(valued.subquery())
        ).scalar_one()
        ids += connection.execute(
            select(spans.c.span_id)
            .where(*scope, spans.c.span_id.not_in(valued.with_only_columns(spans.c.span_id)))
            .order_by(spans.c.idx)
            .limit(limit - len(ids))
            .offset(max(offset - int(with_value), 0))
        ).scalars()
    return ids
