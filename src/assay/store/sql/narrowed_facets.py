"""Facet counts that follow the query: how many of the matching records have each value.

A checkbox facet of the records view counts, for each of its values, the records (all
runs) or rows (one run) that have it *among those matching the rest of the query*: the
query without that facet's own terms, so that ticking ``positive`` does not make
``negative`` drop to 0 while the other facets narrow to what is left. Which terms a facet
owns is the UI's business (:mod:`assay.server.ui.facets`); it hands each facet's rest of
the query here, and facets with the same rest share one statement.

Everything is counted in the database, over the same compiled conditions as
``store.search``: in the all-runs view the matching set of a multi-run query (or the
records with a matching row, for a query without multi-run terms) joined with the
records' aggregates; in one run's view the matching root spans, joined with their
evaluations for an evaluation facet.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, and_, func, select

from assay.errors import QueryError
from assay.query import Catalog, resolve
from assay.store.records import ExperimentInfo
from assay.store.sql.browse import short_mode
from assay.store.sql.search_compile import QueryCompiler
from assay.store.sql.tables import evaluations, record_aggregates, spans

__all__ = ["narrowed_counts"]

Counts = dict[str, list[tuple[str, int]]]


def narrowed_counts(
    connection: Connection,
    info: ExperimentInfo,
    catalog: Catalog,
    rests: Mapping[str, str],
    *,
    run: int | None = None,
) -> Counts:
    """Facet key (``status``, ``evaluation:<label>``) to its values with their counts
    among the records (``run=None``) or run ``run``'s rows that match ``rests[key]``.

    A key whose rest does not parse or fit the experiment is left out: the caller keeps
    its unfiltered counts (the search bar shows the error).
    """
    by_rest: dict[str, list[str]] = defaultdict(list)
    for key, rest in rests.items():
        by_rest[rest.strip()].append(key)
    runs = {item.run_id: item.run_iteration for item in info.runs}
    found: Counts = {}
    for rest, keys in by_rest.items():
        try:
            resolved = resolve(rest, catalog)
        except QueryError:
            continue
        if resolved.node is None:
            continue  # nothing narrows: the caller's unfiltered counts are these
        compiler = QueryCompiler(
            dialect=connection.dialect.name, experiment_id=info.id, runs=runs, query_text=rest
        )
        if run is None:
            if resolved.multi_run:
                matches = compiler.records(resolved.node).subquery("matches")
                records: Any = select(matches.c.record_id)
            else:
                records = select(spans.c.record_id).where(
                    spans.c.experiment_id == info.id,
                    spans.c.parent_id.is_(None),
                    compiler.rows(resolved.node),
                )
            found.update(_record_counts(connection, info.id, keys, records))
        elif not resolved.multi_run:
            condition = compiler.rows(resolved.node)
            found.update(_row_counts(connection, info.id, keys, run, condition))
    for key, items in found.items():
        found[key] = sorted(items, key=lambda item: (-item[1], item[0]))
    return found


def _record_counts(
    connection: Connection, experiment_id: str, keys: list[str], records: Any
) -> Counts:
    table = record_aggregates
    found: Counts = {key: [] for key in keys}
    for row in connection.execute(
        select(table.c.facet, table.c.mode, func.count().label("times"))
        .where(
            table.c.experiment_id == experiment_id,
            table.c.facet.in_(keys),
            short_mode(table),
            table.c.record_id.in_(records),
        )
        .group_by(table.c.facet, table.c.mode)
    ):
        found[row.facet].append((str(row.mode), int(row.times)))
    return found


def _row_counts(
    connection: Connection, experiment_id: str, keys: list[str], run: int, condition: Any
) -> Counts:
    roots = and_(
        spans.c.experiment_id == experiment_id,
        spans.c.run_iteration == run,
        spans.c.parent_id.is_(None),
        condition,
    )
    found: Counts = {key: [] for key in keys}
    if "status" in keys:
        for row in connection.execute(
            select(spans.c.status, func.count().label("times"))
            .where(roots)
            .group_by(spans.c.status)
        ):
            found["status"].append((str(row.status), int(row.times)))
    labels = [key.removeprefix("evaluation:") for key in keys if key.startswith("evaluation:")]
    if labels:
        matching = select(spans.c.span_id).where(roots)
        for row in connection.execute(
            select(
                evaluations.c.label,
                evaluations.c.categorical_value,
                evaluations.c.boolean_value,
                func.count().label("times"),
            )
            .where(
                evaluations.c.experiment_id == experiment_id,
                evaluations.c.run_iteration == run,
                evaluations.c.error_type.is_(None),
                evaluations.c.label.in_(labels),
                evaluations.c.span_id.in_(matching),
            )
            .group_by(
                evaluations.c.label, evaluations.c.categorical_value, evaluations.c.boolean_value
            )
        ):
            if row.boolean_value is not None:
                value = "true" if row.boolean_value else "false"
            elif row.categorical_value is not None:
                value = str(row.categorical_value)
            else:
                continue
            found[f"evaluation:{row.label}"].append((value, int(row.times)))
    return found
