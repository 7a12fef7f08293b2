"""Running a search: resolve against the experiment's facets, compile, count, fetch a page.

Everything happens in the database: the count and the page are two queries over the
experiment's root spans (row queries), over the set of rows that a row query with
evaluation terms selects from index ranges, or over its per-record aggregates (multi-run
queries); then the page's evaluations or aggregates are read by index. Nothing is filtered
in Python.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, select, true
from sqlalchemy.sql import visitors
from sqlalchemy.sql.selectable import CompoundSelect

from assay.errors import QueryError
from assay.query import Catalog, check_page, describe, resolve
from assay.store.records import JSON, ExperimentInfo, MetricType, SearchPage
from assay.store.sql.bulk import chunks
from assay.store.sql.counters import current_conditions
from assay.store.sql.query_shape import has_evaluation_terms, required_run, without_run
from assay.store.sql.run_aggregates import count_labelled
from assay.store.sql.score_counts import count_by_scores
from assay.store.sql.search_compile import QueryCompiler
from assay.store.sql.side_count import SideCounter, Total, settled
from assay.store.sql.tables import (
    aggregate_state,
    evaluations,
    experiment_facets,
    experiments,
    record_aggregates,
    run_aggregates,
    spans,
)
from assay.store.sql.token_counts import count_by_tokens
from assay.store.sql.values import VALUE_COLUMNS, value_of

ROW_SORTS = {
    "idx": ("idx",),
    "run_iteration": ("run_iteration", "idx"),
    "duration": ("duration_ns",),
    "total_tokens": ("total_tokens",),
    "input_tokens": ("input_tokens",),
    "output_tokens": ("output_tokens",),
    "estimated_total_cost": ("estimated_total_cost",),
    "status": ("status",),
}
_WALK_ROWS = 5_000
"""Rows a page of a row query with evaluation terms may read in page order (see
``_rows_by_set``); a look-up of a row's evaluation costs a few microseconds."""
_PROBE_ROWS = 10_000
"""Matches a probe may count (``_dense``): 0.5 ms of an index range at most."""
_AGGREGATE_NAMES = {
    "duration": "@duration",
    "total_tokens": "@trace.total_tokens",
    "input_tokens": "@trace.input_tokens",
    "output_tokens": "@trace.output_tokens",
    "estimated_total_cost": "@trace.estimated_total_cost",
}


def load_catalog(connection: Connection, experiment_id: str) -> Catalog:
    """The labels (with metric types) and tag keys found at the last aggregate rebuild."""
    rows = connection.execute(
        select(experiment_facets).where(experiment_facets.c.experiment_id == experiment_id)
    ).all()
    labels: dict[str, MetricType] = {
        row.name: row.metric_type for row in rows if row.kind == "evaluation"
    }
    tags = frozenset(row.name for row in rows if row.kind == "tag")
    return Catalog(evaluations=labels, tag_keys=tags)


def _order(
    table: Any, sort: str | None, allowed: dict[str, tuple[str, ...]], query: str
) -> list[Any]:
    if not sort:
        return []
    descending = sort.startswith("-")
    key = sort.lstrip("-+")
    if key not in allowed:
        raise QueryError(
            f"Cannot sort by {key!r}; sort by one of {', '.join(sorted(allowed))} "
            "(prefix '-' for descending)",
            query=query,
        )
    columns = [table.c[name] for name in allowed[key]]
    # Missing values last either way, on SQLite as on PostgreSQL (whose defaults differ).
    return [(column.desc() if descending else column.asc()).nulls_last() for column in columns]


def search(
    connection: Connection,
    info: ExperimentInfo,
    query: str,
    *,
    run: int | None = None,
    limit: int = 50,
    offset: int = 0,
    sort: str | None = None,
    counter: SideCounter | None = None,
) -> SearchPage:
    """One page of the rows (or records) of an experiment that match ``query``; a row
    query's total is counted beside its page where ``counter`` is given."""
    check_page(query, limit, offset)
    catalog = load_catalog(connection, info.id)
    resolved = resolve(query, catalog)
    runs = {item.run_id: item.run_iteration for item in info.runs}
    if run is not None and run not in runs.values():
        raise QueryError(
            f"Experiment {info.name!r} has no run {run}; its runs are 1..{len(runs)}",
            query=query,
        )
    compiler = QueryCompiler(
        dialect=connection.dialect.name, experiment_id=info.id, runs=runs, query_text=query
    )
    description = describe(resolved)
    if resolved.multi_run:
        if run is not None:
            raise QueryError(
                "A multi-run query selects records by their aggregate over every run; "
                "drop run= (or drop the @multi_run_ terms to search one run's rows)",
                query=query,
            )
        return _search_records(
            connection, info, compiler, resolved, limit, offset, sort, description
        )
    return _search_rows(
        connection, info, compiler, resolved, run, limit, offset, sort, description, counter
    )


def _search_rows(
    connection: Connection,
    info: ExperimentInfo,
    compiler: QueryCompiler,
    resolved: Any,
    run: int | None,
    limit: int,
    offset: int,
    sort: str | None,
    description: str,
    counter: SideCounter | None,
) -> SearchPage:
    node = resolved.node
    # The run every match is in (``run=`` or the query's own ``run_iteration:N``) bounds
    # the index ranges, once: the query compiles without it, since SQLite would test it
    # again on every entry it reads (40% of a count over a run's token range).
    within = run if run is not None or node is None else required_run(node)
    scope = [spans.c.experiment_id == info.id, spans.c.parent_id.is_(None)]
    if within is not None:
        scope.append(spans.c.run_iteration == within)
    rest = node if node is None or within is None else without_run(node, within)
    order = [*_order(spans, sort, ROW_SORTS, resolved.text), spans.c.run_iteration, spans.c.idx]
    if node is None:
        everything = None
    elif run is None:
        everything = connection.execute(
            select(experiments.c.row_count).where(experiments.c.id == info.id)
        ).scalar_one()
    else:
        everything = rows_in_run(connection, info.id, run)
    read = _rows_read(info, run, within, everything or 0)
    total: Total
    if node is not None and has_evaluation_terms(node):
        matching, total = _rows_by_set(
            connection, compiler, node, rest, scope, order, within, read, limit, offset, counter
        )
    else:
        condition = compiler.rows(rest) if rest is not None else true()
        # A condition on one token column is counted from the runs' counts by value.
        counted = None if rest is None else count_by_tokens(connection, info.id, condition, within)
        if _reads_tokens(condition):
            matching, total = _rows_counted_first(
                connection, condition, scope, order, read, limit, offset, sort, counter, counted
            )
        elif counted is not None:
            matching, total = _page(connection, scope, condition, order, limit, offset), counted
        else:
            # The page and the count are two queries: the root-span index gives rows in
            # page order (the page stops after `limit`) and holds the trace metrics (the
            # count reads no row), where one windowed query would have to find and sort
            # every match first. Ids and sort keys only: the sort does not carry inputs and
            # outputs around.
            matching = _page(connection, scope, condition, order, limit, offset)
            if len(matching) < limit and (matching or offset == 0):
                total = offset + len(matching)  # the page ends before the limit: the last
            else:
                total = _count(
                    connection,
                    select(func.count()).select_from(spans).where(*scope, condition),
                    counter,
                )
    items = row_items(connection, info.id, matching)
    total = settled(total)
    if everything is None:
        everything = total
    return SearchPage(
        total=total, items=items, multi_run=False, description=description, of=int(everything)
    )


def _count(connection: Connection, statement: Any, counter: SideCounter | None) -> Total:
    if counter is None:
        return int(connection.execute(statement).scalar_one())
    return counter.count(connection, statement)


def _counting(matches: Any) -> Any:
    return select(func.count()).select_from(matches.subquery())


def _dense(
    connection: Connection,
    matches: Any,
    read: float,
    limit: int,
    offset: int,
    counter: SideCounter | None,
    *,
    probe: bool = True,
) -> tuple[bool, Total]:
    """Whether a walk in page order finds the page within ``_WALK_ROWS`` rows (matches are
    dense: at least ``enough`` of them), and how many ``matches`` (a select of span ids)
    there are. ``read``: the rows such a walk steps through at most.

    A probe counts up to ``enough`` matches (1,000 for a first page of 100,000 rows):
    fewer, and its count is the total; as many, and the full count runs beside the page
    (``counter``). Without ``probe`` (where finding the first matches costs as much as
    finding them all), or for a page too deep to probe, the count comes first."""
    needed = (offset + limit) * read / _WALK_ROWS if _WALK_ROWS else math.inf
    if probe and needed <= _PROBE_ROWS:
        enough = max(1, math.ceil(needed))
        found = select(func.count()).select_from(matches.limit(enough).subquery())
        first = int(connection.execute(found).scalar_one())
        if first < enough:
            return False, first  # sparse, and counted: the full count is never built
        return True, _count(connection, _counting(matches), counter)
    total = int(connection.execute(_counting(matches)).scalar_one())
    return _walk_finds(total, read, limit, offset), total


def _walk_finds(total: int, read: float, limit: int, offset: int) -> bool:
    """Whether ``total`` matches among ``read`` rows are dense enough for a walk in page
    order to find the page within ``_WALK_ROWS`` rows."""
    return total > 0 and (offset + limit) * read / total <= _WALK_ROWS


# The rows of one run as the per-run totals count them, when those cover every row stored
# (``current_conditions``). Else no row, and the run's index range is counted.
_RUN_ROWS = select(func.sum(run_aggregates.c.n)).where(
    run_aggregates.c.experiment_id == bindparam("experiment_id"),
    run_aggregates.c.run_iteration == bindparam("run"),
    run_aggregates.c.facet == "status",
    run_aggregates.c.value.is_(None),
    *current_conditions(run_aggregates.c.experiment_id),
)


def rows_in_run(connection: Connection, experiment_id: str, run: int) -> int:
    """How many rows run ``run`` of the experiment holds: one look-up where the per-run
    totals are up to date, else a count of the run's range of the root-span index (100,000
    entries took 6 ms, on every page of a run's view)."""
    counted = connection.execute(_RUN_ROWS, {"experiment_id": experiment_id, "run": run})
    found = counted.scalar_one()
    if found is not None:
        return int(found)
    return int(
        connection.execute(
            select(func.count())
            .select_from(spans)
            .where(
                spans.c.experiment_id == experiment_id,
                spans.c.parent_id.is_(None),
                spans.c.run_iteration == run,
            )
        ).scalar_one()
    )


def _page(
    connection: Connection,
    scope: list[Any],
    condition: Any,
    order: list[Any],
    limit: int,
    offset: int,
) -> list[str]:
    return list(
        connection.execute(
            select(spans.c.span_id)
            .where(*scope, condition)
            .order_by(*order)
            .limit(limit)
            .offset(offset)
        ).scalars()
    )


def _reads_tokens(condition: Any) -> bool:
    return any(element is spans.c.total_tokens for element in visitors.iterate(condition))


def _rows_read(info: ExperimentInfo, run: int | None, within: int | None, rows: int) -> float:
    """How many rows a page read in page order steps through, at most: those of one run
    where the query names the run."""
    return rows / len(info.runs) if run is None and within is not None else rows


def _rows_counted_first(
    connection: Connection,
    condition: Any,
    scope: list[Any],
    order: list[Any],
    read: float,
    limit: int,
    offset: int,
    sort: str | None,
    counter: SideCounter | None,
    counted: int | None,
) -> tuple[list[str], Total]:
    """The count and page of a row query on total tokens: the count is ``counted`` (from
    the runs' token counts) or else one range of ``ix_spans_root_tokens``; the page, where
    matches are dense, walks the rows in page order as other row queries do, and where
    they are sparse sorts the few matches that the token index finds (``_dense`` tells
    which, and counts). ``read``: the rows a walk in page order steps through at most."""
    matches = select(spans.c.span_id).where(*scope, condition)
    total: Total
    if counted is None:
        dense, total = _dense(connection, matches, read, limit, offset, counter)
    else:
        dense, total = _walk_finds(counted, read, limit, offset), counted
    if not dense and settled(total) <= offset:
        return [], total
    if dense and not sort and connection.dialect.name == "sqlite":
        # SQLite keeps no statistics here: told the token range, it would take the token
        # index and sort every match, where walking the page order stops after the page.
        # A CASE is opaque to its planner, and true exactly where the condition is.
        condition = case((condition, 1), else_=0) == 1
    return _page(connection, scope, condition, order, limit, offset), total


# The two look-ups of a row query's items, built once: building them with their ``IN``
# list and finding them in the compiled cache cost about as much as running them.
_ITEM_ROWS = select(
    spans.c.span_id,
    spans.c.record_id,
    spans.c.idx,
    spans.c.run_iteration,
    spans.c.status,
    spans.c.duration_ns,
    spans.c.input,
    spans.c.output,
    spans.c.expected_output,
    spans.c.metadata,
    spans.c.tags,
    spans.c.error_type,
    spans.c.error_message,
    spans.c.total_tokens,
    spans.c.estimated_total_cost,
).where(
    spans.c.experiment_id == bindparam("experiment_id"),
    spans.c.span_id.in_(bindparam("span_ids", expanding=True)),
)
# The values only: reasoning, metadata and tags stay in the table.
_ITEM_VALUES = select(
    evaluations.c.span_id,
    evaluations.c.label,
    evaluations.c.error_type,
    *(evaluations.c[name] for name in VALUE_COLUMNS),
).where(
    evaluations.c.experiment_id == bindparam("experiment_id"),
    evaluations.c.span_id.in_(bindparam("span_ids", expanding=True)),
)


def row_items(connection: Connection, experiment_id: str, ids: list[str]) -> list[dict[str, JSON]]:
    """The rows (root spans) of these span ids, in this order, with their evaluations'
    values: a row query's items. Result rows are unpacked, not read by column name: the
    names cost 40% of the time of reading a page's evaluations."""
    found: dict[str, dict[str, JSON]] = {}
    values: dict[str, dict[str, JSON]] = defaultdict(dict)
    for chunk in chunks(ids):  # a page as large as the caller asks
        keys = {"experiment_id": experiment_id, "span_ids": chunk}
        for (
            span_id,
            record_id,
            idx,
            run_iteration,
            status,
            duration_ns,
            input_data,
            output,
            expected_output,
            metadata,
            tags,
            error_type,
            error_message,
            total_tokens,
            estimated_total_cost,
        ) in connection.execute(_ITEM_ROWS, keys):
            found[span_id] = {
                "record_id": record_id,
                "idx": idx,
                "run_iteration": run_iteration,
                "span_id": span_id,
                "status": status,
                "duration": duration_ns,
                "input": input_data,
                "output": output,
                "expected_output": expected_output,
                "metadata": metadata,
                "tags": tags,
                "error": (
                    {"type": error_type, "message": error_message}
                    if error_type is not None
                    else None
                ),
                "total_tokens": total_tokens,
                "estimated_total_cost": estimated_total_cost,
            }
        for span_id, label, error_type, *columns in connection.execute(_ITEM_VALUES, keys):
            values[span_id][label] = None if error_type is not None else value_of(*columns)
    items = []
    for span_id in ids:
        item = found.get(span_id)
        if item is not None:
            item["evaluations"] = values.get(span_id, {})
            items.append(item)
    return items


def _rows_by_set(
    connection: Connection,
    compiler: QueryCompiler,
    node: Any,
    rest: Any,
    scope: list[Any],
    order: list[Any],
    within: int | None,
    read: float,
    limit: int,
    offset: int,
    counter: SideCounter | None,
) -> tuple[list[str], Total]:
    """The page and count of a row query with evaluation terms.

    The count is the size of the matching set, built from index ranges
    (``QueryCompiler.row_set``), every one bounded by the run in ``scope``, the complement
    of a NOT's included. The page, where matches are dense enough that reading rows in
    page order finds a page within ``_WALK_ROWS`` rows, is that read, each row's
    evaluations looked up by index (``rest``: the query less the run the scope holds);
    where they are sparse, the rows of the set are sorted instead, which costs in
    proportion to the (few) matches. A set that combines ranges (``INTERSECT``, ``UNION``,
    ``EXCEPT``) is counted first: its first matches cost as much as all of them.
    """
    # One score label's range is counted from the runs' scores by bucket, one label's
    # value from the runs' totals.
    counted = count_by_scores(connection, compiler, rest, within)
    if counted is None:
        counted = count_labelled(connection, compiler.experiment_id, rest, within)
    total: Total
    matches = None  # the set, built only where it is read
    if counted is not None:
        dense, total = _walk_finds(counted, read, limit, offset), counted
    else:
        matches = compiler.row_set(node, scope, within)
        compound = isinstance(matches, CompoundSelect)
        dense, total = _dense(connection, matches, read, limit, offset, counter, probe=not compound)
    if not dense and settled(total) <= offset:
        return [], total
    if dense:
        condition = compiler.rows(rest, probe=True)
    else:
        if matches is None:
            matches = compiler.row_set(node, scope, within)
        nested = matches.subquery()
        condition = spans.c.span_id.in_(select(nested.c.span_id))
    return _page(connection, scope, condition, order, limit, offset), total


def aggregate_names(facet: str, mean: float | None, mode: str | None) -> dict[str, JSON]:
    if facet == "status":
        return {"@multi_run_mode.@status": mode}
    if facet.startswith("evaluation:"):
        name = f"@evaluations.custom.{facet.removeprefix('evaluation:')}"
        found: dict[str, JSON] = {}
        if mean is not None:
            found[f"@multi_run_avg.{name}"] = mean
        if mode is not None:
            found[f"@multi_run_mode.{name}"] = (
                mode == "true" if mode in ("true", "false") and mean is not None else mode
            )
        return found
    return {f"@multi_run_avg.{_AGGREGATE_NAMES.get(facet, facet)}": mean}


def _search_records(
    connection: Connection,
    info: ExperimentInfo,
    compiler: QueryCompiler,
    resolved: Any,
    limit: int,
    offset: int,
    sort: str | None,
    description: str,
) -> SearchPage:
    # One statement: the matching set is built once (the database materialises a CTE
    # read twice), counted, and its first rows in page order are the page.
    matches = compiler.records(resolved.node).cte("matches")
    total = select(func.count()).select_from(matches).scalar_subquery()
    order = _record_order(matches, sort, resolved, info.id) if sort else []
    page = connection.execute(
        select(matches.c.record_id, matches.c.idx, total.label("total"))
        .order_by(*order, matches.c.idx, matches.c.record_id)
        .limit(limit)
        .offset(offset)
    ).all()
    if page:
        total_found = int(page[0].total)
    elif offset == 0 and limit > 0:
        total_found = 0
    else:
        total_found = connection.execute(select(func.count()).select_from(matches)).scalar_one()
    everything = connection.execute(
        select(aggregate_state.c.records).where(aggregate_state.c.experiment_id == info.id)
    ).scalar()
    items = record_items(connection, info, [(row.record_id, row.idx) for row in page])
    return SearchPage(
        total=total_found,
        items=items,
        multi_run=True,
        description=description,
        of=int(everything or 0),
    )


def record_items(
    connection: Connection, info: ExperimentInfo, page: Sequence[tuple[str, int]]
) -> list[dict[str, JSON]]:
    """The records of ``page`` ((record_id, idx) pairs), in this order, with their
    aggregates across runs and their input: a multi-run query's items."""
    ids = [record_id for record_id, _ in page]
    aggregates: dict[str, dict[str, JSON]] = defaultdict(dict)
    records: dict[str, Any] = {}
    statuses: dict[str, Any] = {}
    for chunk in chunks(ids):  # a page as large as the caller asks
        for row in connection.execute(
            select(record_aggregates).where(
                record_aggregates.c.experiment_id == info.id,
                record_aggregates.c.record_id.in_(chunk),
            )
        ):
            if row.facet == "status":
                statuses[row.record_id] = row
            aggregates[row.record_id].update(aggregate_names(row.facet, row.mean, row.mode))
        # A record's input is the same in every run: read it from the first run that has
        # the record (usually run 1 for all), not from each run (decoding the JSON of
        # each run's copy was most of a page's time).
        for run in sorted(item.run_iteration for item in info.runs):
            wanted = [record_id for record_id in chunk if record_id not in records]
            if not wanted:
                break
            for row in connection.execute(
                select(
                    spans.c.record_id,
                    spans.c.input,
                    spans.c.expected_output,
                    spans.c.metadata,
                    spans.c.tags,
                ).where(
                    spans.c.experiment_id == info.id,
                    spans.c.run_iteration == run,
                    spans.c.record_id.in_(wanted),
                    spans.c.parent_id.is_(None),
                )
            ):
                records.setdefault(row.record_id, row)
    items: list[dict[str, JSON]] = []
    for record_id, idx in page:
        stored = records.get(record_id)
        status = statuses.get(record_id)
        items.append(
            {
                "record_id": record_id,
                "idx": idx,
                "runs": status.n if status else 0,
                "failed_runs": status.errors if status else 0,
                "input": stored.input if stored else None,
                "expected_output": stored.expected_output if stored else None,
                "metadata": stored.metadata if stored else None,
                "tags": stored.tags if stored else None,
                "aggregates": aggregates.get(record_id, {}),
            }
        )
    return items


def _record_order(matches: Any, sort: str, resolved: Any, experiment_id: str) -> list[Any]:
    query = resolved.text
    descending = sort.startswith("-")
    key = sort.lstrip("-+")
    if key == "idx":
        return [matches.c.idx.desc() if descending else matches.c.idx]
    for prefix, column in (("@multi_run_avg.", "mean"), ("@multi_run_mode.", "mode")):
        if key.startswith(prefix):
            inner = key.removeprefix(prefix)
            facet = next(
                (name for name, spelled in _AGGREGATE_NAMES.items() if spelled == inner),
                None,
            )
            if inner == "@status":
                facet = "status"
            elif inner.startswith("@evaluations.custom."):
                label = inner.removeprefix("@evaluations.custom.")
                # An unknown label would sort by nothing, silently: say so instead.
                facet = "evaluation:" + label if label in resolved.catalog.evaluations else None
            if facet is not None:
                by = record_aggregates.alias("sort_by")
                value = (
                    select(by.c[column])
                    .where(
                        by.c.experiment_id == experiment_id,
                        by.c.facet == facet,
                        by.c.record_id == matches.c.record_id,
                    )
                    .scalar_subquery()
                )
                return [(value.desc() if descending else value.asc()).nulls_last()]
    raise QueryError(
        f"Cannot sort records by {key!r}; sort by idx or a multi-run facet such as "
        "@multi_run_avg.@evaluations.custom.<label> (prefix '-' for descending)",
        query=query,
    )
