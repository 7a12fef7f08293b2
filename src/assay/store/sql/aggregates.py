"""Per-record aggregates across runs, rebuilt in SQL: what multi-run search selects on.

For each record of an experiment and each facet, one row of ``record_aggregates``:

- ``status``: ``n`` rows (runs) of the record, ``errors`` of them failed, ``mode`` the
  most common status (a tie goes to ``error``, alphabetically first);
- ``duration`` (nanoseconds), ``input_tokens``, ``output_tokens``, ``total_tokens``,
  ``estimated_total_cost`` (nanodollars): ``mean`` over the runs that reported it;
- ``evaluation:<label>``: ``mean`` of score values (booleans count 1/0, so a boolean's
  mean is its share of True), ``mode`` the most common categorical value — ties to the
  alphabetically first, as everywhere in Assay — or, for a boolean label, ``true`` when
  more than half its runs are True (a tie is ``false``), ``errors`` the failed evaluations.

These are the numbers ``record_summaries()`` gives; a test checks they agree. The rebuild
is one ``INSERT ... SELECT`` per kind of facet, run by the database over the experiment's
rows, so it costs one pass over the rows; queries then read one row per record. It runs
when a search finds the aggregates older than the rows (``aggregate_state`` keeps the
writers' row and evaluation counters they were built from), not while an experiment
writes: the writer's path stays as cheap as a bulk insert, and an experiment nobody
searches never pays for it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    and_,
    case,
    cast,
    delete,
    false,
    func,
    insert,
    literal,
    select,
    true,
    update,
)

from assay.store.sql.tables import (
    aggregate_state,
    evaluations,
    experiment_facets,
    experiments,
    record_aggregates,
    spans,
)

AGGREGATE_COLUMNS = ("experiment_id", "facet", "record_id", "idx", "n", "errors", "mean", "mode")
TRACE_FACETS = (
    "duration",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "estimated_total_cost",
)


def evaluation_facet(label: str) -> str:
    """The ``record_aggregates.facet`` of an evaluation label."""
    return f"evaluation:{label}"


def _binary(column: Any, dialect: str) -> Any:
    # Ties go to the alphabetically first value by code point, as in Python; PostgreSQL's
    # default collation may follow the locale instead.
    return column.collate("C") if dialect == "postgresql" else column


def count_written(connection: Connection, experiment_id: str, rows: int, evaluations: int) -> None:
    """Add what a writer stored to the experiment's counters (in the writer's transaction)."""
    connection.execute(
        update(experiments)
        .where(experiments.c.id == experiment_id)
        .values(
            row_count=experiments.c.row_count + rows,
            evaluation_count=experiments.c.evaluation_count + evaluations,
        )
    )


def _counts(connection: Connection, experiment_id: str) -> tuple[int, int]:
    found = connection.execute(
        select(experiments.c.row_count, experiments.c.evaluation_count).where(
            experiments.c.id == experiment_id
        )
    ).first()
    return (int(found.row_count), int(found.evaluation_count)) if found else (0, 0)


def aggregates_are_fresh(connection: Connection, experiment_id: str) -> bool:
    """Whether the aggregates were built from every row and evaluation now stored.

    Two primary-key lookups: the writers' counters against the counts the last rebuild saw.
    """
    state = connection.execute(
        select(aggregate_state.c.rows, aggregate_state.c.evaluations).where(
            aggregate_state.c.experiment_id == experiment_id
        )
    ).first()
    return state is not None and (state.rows, state.evaluations) == _counts(
        connection, experiment_id
    )


def refresh_record_aggregates(connection: Connection, experiment_id: str) -> None:
    """Rebuild the experiment's per-record aggregates from its stored rows (one pass)."""
    dialect = connection.dialect.name
    connection.execute(
        delete(record_aggregates).where(record_aggregates.c.experiment_id == experiment_id)
    )
    roots = and_(spans.c.experiment_id == experiment_id, spans.c.parent_id.is_(None))
    errors = func.sum(case((spans.c.status == "error", 1), else_=0))
    count = func.count()
    # status: also the list of the experiment's records, with their index.
    connection.execute(
        insert(record_aggregates).from_select(
            list(AGGREGATE_COLUMNS),
            select(
                literal(experiment_id),
                literal("status"),
                spans.c.record_id,
                func.min(spans.c.idx),
                count,
                errors,
                literal(None, Float),
                case((errors * 2 >= count, "error"), else_="ok"),
            )
            .where(roots)
            .group_by(spans.c.record_id),
        )
    )
    for facet in TRACE_FACETS:
        column = spans.c.duration_ns if facet == "duration" else spans.c[facet]
        connection.execute(
            insert(record_aggregates).from_select(
                list(AGGREGATE_COLUMNS),
                select(
                    literal(experiment_id),
                    literal(facet),
                    spans.c.record_id,
                    func.min(spans.c.idx),
                    func.count(column),
                    literal(0),
                    func.avg(cast(column, Float)),
                    literal(None, record_aggregates.c.mode.type),
                )
                .where(roots, column.is_not(None))
                .group_by(spans.c.record_id),
            )
        )
    _insert_evaluation_aggregates(connection, experiment_id, dialect)
    _refresh_facets(connection, experiment_id, dialect)
    rows, evaluated = _counts(connection, experiment_id)
    records = connection.execute(
        select(func.count())
        .select_from(record_aggregates)
        .where(
            record_aggregates.c.experiment_id == experiment_id,
            record_aggregates.c.facet == "status",
        )
    ).scalar_one()
    connection.execute(
        delete(aggregate_state).where(aggregate_state.c.experiment_id == experiment_id)
    )
    connection.execute(
        insert(aggregate_state).values(
            experiment_id=experiment_id, rows=rows, evaluations=evaluated, records=records
        )
    )


def _insert_evaluation_aggregates(connection: Connection, experiment_id: str, dialect: str) -> None:
    """One pass: group by (record, label, categorical value), then window over (record, label).

    Each group row carries its value's count and the numeric partial sums; windows over the
    record's label give the totals and rank the values, and the first-ranked row of each
    (record, label) — the mode — carries everything. No self-join, so it stays one scan
    plus one sort, on SQLite and PostgreSQL alike.
    """
    ok = evaluations.c.error_type.is_(None)
    # PostgreSQL does not cast booleans to numbers: spell True/False out as 1.0/0.0.
    boolean_number = case(
        (evaluations.c.boolean_value == true(), 1.0),
        (evaluations.c.boolean_value == false(), 0.0),
        else_=None,
    )
    numeric = func.coalesce(cast(evaluations.c.score_value, Float), boolean_number)
    value = evaluations.c.categorical_value
    grouped = (
        select(
            evaluations.c.record_id.label("record_id"),
            evaluations.c.label.label("label"),
            value.label("value"),
            func.count(case((and_(ok, value.is_not(None)), 1), else_=None)).label("times"),
            func.count(case((ok, numeric), else_=None)).label("numbers"),
            func.sum(case((ok, numeric), else_=None)).label("total"),
            func.sum(case((ok, 0), else_=1)).label("errors"),
            func.sum(case((ok, boolean_number), else_=None)).label("trues"),
            func.count(case((ok, boolean_number), else_=None)).label("booleans"),
        )
        .where(evaluations.c.experiment_id == experiment_id)
        .group_by(evaluations.c.record_id, evaluations.c.label, value)
        .subquery("grouped")
    )
    partition = (grouped.c.record_id, grouped.c.label)
    ranked = select(
        grouped.c.record_id,
        grouped.c.label,
        grouped.c.value,
        func.row_number()
        .over(
            partition_by=partition,
            # The mode: most frequent value first, ties to the first by code point; the
            # no-value group (numbers, errors) last.
            order_by=(
                grouped.c.value.is_(None),
                grouped.c.times.desc(),
                _binary(grouped.c.value, dialect),
            ),
        )
        .label("rank"),
        func.sum(grouped.c.times).over(partition_by=partition).label("labelled"),
        func.sum(grouped.c.numbers).over(partition_by=partition).label("numbers"),
        func.sum(grouped.c.total).over(partition_by=partition).label("total"),
        func.sum(grouped.c.errors).over(partition_by=partition).label("errors"),
        func.sum(grouped.c.trues).over(partition_by=partition).label("trues"),
        func.sum(grouped.c.booleans).over(partition_by=partition).label("booleans"),
    ).subquery("ranked")
    share = ranked.c.trues / func.nullif(ranked.c.booleans, 0)
    index = record_aggregates.alias("record_index")
    connection.execute(
        insert(record_aggregates).from_select(
            list(AGGREGATE_COLUMNS),
            select(
                literal(experiment_id),
                literal("evaluation:") + ranked.c.label,
                ranked.c.record_id,
                func.coalesce(index.c.idx, 0),
                ranked.c.labelled + ranked.c.numbers,
                ranked.c.errors,
                ranked.c.total / func.nullif(cast(ranked.c.numbers, Float), 0),
                case(
                    (ranked.c.value.is_not(None), ranked.c.value),
                    (share > 0.5, "true"),
                    (share.is_not(None), "false"),
                    else_=None,
                ),
            )
            .where(ranked.c.rank == 1)
            .select_from(
                ranked.outerjoin(
                    index,
                    and_(
                        index.c.experiment_id == experiment_id,
                        index.c.facet == "status",
                        index.c.record_id == ranked.c.record_id,
                    ),
                )
            ),
        )
    )


def _refresh_facets(connection: Connection, experiment_id: str, dialect: str) -> None:
    """Record the experiment's evaluation labels (with their metric type) and tag keys.

    A label's type follows :mod:`assay.aggregation`: any categorical value makes it
    categorical; otherwise numbers make it a score (booleans among them count 1/0); only
    booleans, boolean; only JSON objects, json; no usable value, the type stored with it.
    """
    connection.execute(
        delete(experiment_facets).where(experiment_facets.c.experiment_id == experiment_id)
    )
    ok = evaluations.c.error_type.is_(None)

    def present(column: Any) -> Any:
        return func.count(case((and_(ok, column.is_not(None)), 1), else_=None))

    labels = connection.execute(
        select(
            evaluations.c.label,
            present(evaluations.c.categorical_value).label("categorical"),
            present(evaluations.c.score_value).label("score"),
            present(evaluations.c.boolean_value).label("boolean"),
            present(evaluations.c.json_value).label("json"),
            func.max(evaluations.c.metric_type).label("stored"),
        )
        .where(evaluations.c.experiment_id == experiment_id)
        .group_by(evaluations.c.label)
    ).all()
    rows: list[dict[str, Any]] = []
    for label in labels:
        if label.categorical or (label.json and (label.score or label.boolean)):
            metric_type = "categorical"
        elif label.score:
            metric_type = "score"
        elif label.boolean:
            metric_type = "boolean"
        elif label.json:
            metric_type = "json"
        else:
            metric_type = label.stored
        rows.append(
            {
                "experiment_id": experiment_id,
                "kind": "evaluation",
                "name": label.label,
                "metric_type": metric_type,
            }
        )
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import JSON

        tags = func.json_array_elements_text(cast(spans.c.tags, JSON())).table_valued("value")
    else:
        tags = func.json_each(spans.c.tags).table_valued("value")
    tag_values = connection.execute(
        select(tags.c.value)
        .select_from(spans)
        .join(tags, true())
        .where(spans.c.experiment_id == experiment_id, spans.c.parent_id.is_(None))
        .distinct()
    ).scalars()
    keys = {str(tag).partition(":")[0] for tag in tag_values if ":" in str(tag)}
    rows += [
        {"experiment_id": experiment_id, "kind": "tag", "name": key, "metric_type": None}
        for key in sorted(keys)
        if key
    ]
    if rows:
        connection.execute(insert(experiment_facets), rows)
