"""Per-record aggregates across runs, kept in SQL: what multi-run search selects on.

For each record of an experiment and each facet, one row of ``record_aggregates``:

- ``status``: ``n`` rows (runs) of the record, ``errors`` of them failed, ``mode`` the
  most common status (a tie goes to ``error``, alphabetically first);
- ``duration`` (nanoseconds), ``input_tokens``, ``output_tokens``, ``total_tokens``,
  ``estimated_total_cost`` (nanodollars): ``mean`` over the runs that reported it;
- ``evaluation:<label>``: ``mean`` of score values (booleans count 1/0, so a boolean's
  mean is its share of True), ``mode`` the most common categorical value — ties to the
  alphabetically first, as everywhere in Assay — or, for a boolean label, ``true`` when
  more than half its runs are True (a tie is ``false``), ``errors`` the failed evaluations,
  ``kinds`` which kinds of value its evaluations hold (``KIND_BITS``).

These are the numbers ``record_summaries()`` gives; a test checks they agree. They are
computed by ``INSERT ... SELECT`` statements, one per kind of facet, run by the database.
A refresh runs when a search finds the aggregates older than the rows (``aggregate_state``
keeps the writers' row and evaluation counters they were built from), not while an
experiment writes: the writer's path stays as cheap as a bulk insert, and an experiment
nobody searches never pays for it.

**Incremental.** ``aggregate_state`` also keeps the highest ``spans.pk`` and
``evaluations.pk`` the aggregates include (both keys only grow). A refresh recomputes only
the records of the rows and evaluations past those marks: new records, new runs of old
records, evaluations added later to old rows (a pending metric that found its span) and
replaced ones (a re-posted metric is deleted and inserted again, so its record is past the
mark too). Nothing deletes a row (root span). Each label's metric type and each tag key of
the search catalog (``experiment_facets``) follow from per-label tallies of the records'
``kinds``, updated by the difference between the recomputed records' old and new rows.

The counters keep this exact when writers commit out of key order, as PostgreSQL's
concurrent writers can (a transaction holding key 10 commits after one holding key 11):
the rows past the mark must account for every row the counters added since the last
refresh, else a row landed behind the mark and the refresh rebuilds everything, as it does
the first time and when more than half the records changed.

Each refresh also brings the per-run totals of ``run_aggregates`` up to the same marks
(``run_aggregates.py``), and the counts of records by (runs, passes) and by mode of
``record_tallies`` (``record_tallies.py``): what the summary reads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    Integer,
    Table,
    and_,
    case,
    cast,
    delete,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    union,
    update,
)

from assay.store.sql.bulk import chunks
from assay.store.sql.record_tallies import (
    TallyChange,
    change_record_tallies,
    rebuild_record_tallies,
    tally_records,
)
from assay.store.sql.run_aggregates import (
    rebuild_run_aggregates,
    update_run_aggregates,
)
from assay.store.sql.tables import (
    aggregate_state,
    evaluations,
    experiment_facets,
    experiments,
    record_aggregates,
    runs,
    spans,
)

AGGREGATE_COLUMNS = (
    "experiment_id",
    "facet",
    "record_id",
    "idx",
    "n",
    "errors",
    "mean",
    "mode",
    "kinds",
)
TRACE_FACETS = (
    "duration",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "estimated_total_cost",
)
KIND_BITS = {
    "categorical": 1,
    "score": 2,
    "boolean": 4,
    "json": 8,
    "stored:boolean": 16,
    "stored:categorical": 32,
    "stored:json": 64,
    "stored:score": 128,
}
"""Bits of ``record_aggregates.kinds``: the usable values (no error) of each type among the
record's evaluations of the label, and (``stored:``) the metric types stored with them,
errors included. A label's metric type follows from how many records have each."""
EVALUATION_PREFIX = "evaluation:"
_RECOMPUTE_PARAMETERS = 4000
"""Rows of one recomputed chunk of records, whose span ids are bound parameters: well
under SQLite's 32,766 and PostgreSQL's 65,535."""
_LOCK_CLASS = 0x41535359
"""First key of the PostgreSQL advisory lock that one refresh of an experiment holds."""


def evaluation_facet(label: str) -> str:
    """The ``record_aggregates.facet`` of an evaluation label."""
    return f"{EVALUATION_PREFIX}{label}"


def _binary(column: Any, dialect: str) -> Any:
    # Ties go to the alphabetically first value by code point, as in Python; PostgreSQL's
    # default collation may follow the locale instead.
    return column.collate("C") if dialect == "postgresql" else column


@dataclass(frozen=True)
class _Seen:
    """The experiment as one statement saw it: the writers' counters, the highest keys,
    and how many roots and evaluations lie past the last refresh's marks."""

    rows: int
    evaluations: int
    row_mark: int
    evaluation_mark: int
    new_rows: int
    new_evaluations: int


def refresh_record_aggregates(connection: Connection, experiment_id: str) -> None:
    """Bring the experiment's per-record aggregates up to date with its stored rows.

    Recomputes the records changed since the last refresh, or every record when there is
    no usable last refresh (see the module docstring). Call it in a transaction.
    """
    dialect = connection.dialect.name
    _lock(connection, experiment_id)
    state = connection.execute(
        select(aggregate_state).where(aggregate_state.c.experiment_id == experiment_id)
    ).first()
    if state is None or state.row_mark is None or state.evaluation_mark is None:
        _rebuild(connection, experiment_id, dialect)
        return
    seen = _look(connection, experiment_id, state.row_mark, state.evaluation_mark, dialect)
    if (seen.rows - state.rows, seen.evaluations - state.evaluations) != (
        seen.new_rows,
        seen.new_evaluations,
    ):
        # A row or evaluation was written behind the mark (or one past it was replaced
        # before this refresh): which records it changed is unknown.
        _rebuild(connection, experiment_id, dialect)
        return
    changed = _changed_records(connection, experiment_id, state, seen, dialect)
    if len(changed) * 2 > state.records:
        _rebuild(connection, experiment_id, dialect)
        return
    records = int(state.records)
    tallies: dict[str, Counter[str]] = {}
    counts = TallyChange()
    upto = (seen.row_mark, seen.evaluation_mark)
    facets = _evaluation_facets(connection, experiment_id, state, seen, dialect)
    for chunk in chunks(changed, _chunk_size(connection, experiment_id)):
        records += _recompute(
            connection,
            experiment_id,
            chunk,
            dialect,
            tallies,
            upto=upto,
            counts=counts,
            facets=facets,
        )
    _apply_tallies(connection, experiment_id, tallies)
    change_record_tallies(connection, experiment_id, counts.tally)
    _add_tag_keys(connection, experiment_id, dialect, after=(state.row_mark, seen.row_mark))
    update_run_aggregates(
        connection,
        experiment_id,
        after=(int(state.row_mark), int(state.evaluation_mark)),
        upto=upto,
        counted=counts.values,
    )
    _save_state(connection, experiment_id, seen, records)


def reopen_rows(connection: Connection, experiment_id: str, first_pk: int) -> None:
    """Make the next refresh recompute the records of the rows from ``first_pk`` on.

    For a writer that changes rows already stored, which neither moves the counters nor
    adds a key past the mark: the HTTP intake rolls a trace's tokens and cost up onto its
    root when the children come. The mark goes back to just before ``first_pk``, and the
    refresh's count of rows goes back by the roots that puts past the mark, so that the
    aggregates read as stale and the counts still add up (see ``refresh_record_aggregates``).
    """
    _lock(connection, experiment_id)
    state = connection.execute(
        select(aggregate_state.c.row_mark).where(aggregate_state.c.experiment_id == experiment_id)
    ).first()
    if state is None or state.row_mark is None or state.row_mark < first_pk:
        return  # no refresh has read these rows yet: the next one will
    reopened = (
        select(func.count())
        .select_from(spans)
        .where(
            spans.c.experiment_id == experiment_id,
            spans.c.pk >= first_pk,
            spans.c.pk <= state.row_mark,
            spans.c.parent_id.is_(None),
        )
        .scalar_subquery()
    )
    connection.execute(
        update(aggregate_state)
        .where(aggregate_state.c.experiment_id == experiment_id)
        .values(row_mark=first_pk - 1, rows=aggregate_state.c.rows - reopened)
    )


def _lock(connection: Connection, experiment_id: str) -> None:
    """One refresh of an experiment at a time; the next one then finds little to do."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            select(
                func.pg_advisory_xact_lock(
                    cast(literal(_LOCK_CLASS), Integer), func.hashtext(experiment_id)
                )
            )
        )
    else:
        # SQLite: any write takes the database's one write lock, held until the commit,
        # and the reads after it see the database as it is under that lock.
        connection.execute(
            update(aggregate_state)
            .where(aggregate_state.c.experiment_id == experiment_id)
            .values(rows=aggregate_state.c.rows)
        )


def _past(table: Table, experiment_id: str, mark: int, dialect: str) -> Any:
    """The experiment's rows of ``table`` past ``mark``, found by the primary key."""
    owner: Any = table.c.experiment_id
    if dialect == "sqlite" and mark:
        # `|| ''` keeps SQLite from walking the experiment's range of an index on
        # experiment_id (all its rows) instead of the primary key's short tail.
        owner = owner + ""
    return and_(owner == experiment_id, table.c.pk > mark)


def _look(
    connection: Connection, experiment_id: str, row_mark: int, evaluation_mark: int, dialect: str
) -> _Seen:
    """Everything the refresh decides on, from one statement: one snapshot of the store.

    With both marks 0 (a rebuild), the rows past them are not counted: nothing needs it.
    """
    past_rows = _past(spans, experiment_id, row_mark, dialect)
    past_evaluations = _past(evaluations, experiment_id, evaluation_mark, dialect)
    counted = bool(row_mark or evaluation_mark)
    found = connection.execute(
        select(
            experiments.c.row_count,
            experiments.c.evaluation_count,
            select(func.coalesce(func.max(spans.c.pk), row_mark))
            .where(past_rows)
            .scalar_subquery(),
            select(func.coalesce(func.max(evaluations.c.pk), evaluation_mark))
            .where(past_evaluations)
            .scalar_subquery(),
            select(func.count())
            .select_from(spans)
            .where(past_rows, spans.c.parent_id.is_(None))
            .scalar_subquery()
            if counted
            else literal(0),
            select(func.count()).select_from(evaluations).where(past_evaluations).scalar_subquery()
            if counted
            else literal(0),
        ).where(experiments.c.id == experiment_id)
    ).one()
    return _Seen(*(int(value) for value in found))


def _changed_records(
    connection: Connection, experiment_id: str, state: Any, seen: _Seen, dialect: str
) -> list[str]:
    """Records of the spans and evaluations between the last refresh's marks and these."""
    found = union(
        select(spans.c.record_id).where(
            _past(spans, experiment_id, state.row_mark, dialect), spans.c.pk <= seen.row_mark
        ),
        select(evaluations.c.record_id).where(
            _past(evaluations, experiment_id, state.evaluation_mark, dialect),
            evaluations.c.pk <= seen.evaluation_mark,
        ),
    )
    return sorted(connection.execute(found).scalars())


def _evaluation_facets(
    connection: Connection, experiment_id: str, state: Any, seen: _Seen, dialect: str
) -> list[str]:
    """Every evaluation facet the changed records may have, before or after the refresh:
    the labels of the catalog (every label some record has) and of the new evaluations.
    Named in full, they let a statement on a few records' aggregates find them by the
    primary key (see ``_tally``)."""
    known = select(experiment_facets.c.name).where(
        experiment_facets.c.experiment_id == experiment_id,
        experiment_facets.c.kind == "evaluation",
    )
    new = select(evaluations.c.label).where(
        _past(evaluations, experiment_id, state.evaluation_mark, dialect),
        evaluations.c.pk <= seen.evaluation_mark,
    )
    labels = set(connection.execute(union(known, new)).scalars())
    return sorted(evaluation_facet(label) for label in labels)


def _chunk_size(connection: Connection, experiment_id: str) -> int:
    count = connection.execute(
        select(func.count()).select_from(runs).where(runs.c.experiment_id == experiment_id)
    ).scalar_one()
    return max(1, _RECOMPUTE_PARAMETERS // max(int(count), 1))


def _save_state(connection: Connection, experiment_id: str, seen: _Seen, records: int) -> None:
    connection.execute(
        delete(aggregate_state).where(aggregate_state.c.experiment_id == experiment_id)
    )
    connection.execute(
        insert(aggregate_state).values(
            experiment_id=experiment_id,
            rows=seen.rows,
            evaluations=seen.evaluations,
            records=records,
            row_mark=seen.row_mark,
            evaluation_mark=seen.evaluation_mark,
        )
    )


def _rebuild(connection: Connection, experiment_id: str, dialect: str) -> None:
    """Every record's aggregates from the experiment's stored rows (one pass)."""
    seen = _look(connection, experiment_id, 0, 0, dialect)
    connection.execute(
        delete(record_aggregates).where(record_aggregates.c.experiment_id == experiment_id)
    )
    _insert_aggregates(
        connection, experiment_id, dialect, (), (), upto=(seen.row_mark, seen.evaluation_mark)
    )
    records, tallies = _tally(connection, experiment_id, None, ())
    rebuild_record_tallies(connection, experiment_id)
    connection.execute(
        delete(experiment_facets).where(experiment_facets.c.experiment_id == experiment_id)
    )
    _apply_tallies(connection, experiment_id, tallies)
    _add_tag_keys(connection, experiment_id, dialect, after=None)
    rebuild_run_aggregates(connection, experiment_id, upto=(seen.row_mark, seen.evaluation_mark))
    _save_state(connection, experiment_id, seen, records)


def _recompute(
    connection: Connection,
    experiment_id: str,
    records: Sequence[str],
    dialect: str,
    tallies: dict[str, Counter[str]],
    *,
    upto: tuple[int, int],
    counts: TallyChange,
    facets: Sequence[str],
) -> int:
    """Recompute these records' aggregates from their rows and evaluations with keys up to
    ``upto``; add the change of each label's tally of kinds to ``tallies``, and of the
    ``record_tallies`` counts to ``counts``, and return the change in the number of
    records."""
    run_iterations = connection.execute(
        select(runs.c.run_iteration).where(runs.c.experiment_id == experiment_id)
    ).scalars()
    # Run and record both: the unique index of rows, (experiment, run, record), then finds
    # each row directly.
    rows_of = (spans.c.run_iteration.in_(list(run_iterations)), spans.c.record_id.in_(records))
    span_ids = connection.execute(
        select(spans.c.span_id).where(
            spans.c.experiment_id == experiment_id, spans.c.parent_id.is_(None), *rows_of
        )
    ).scalars()
    # By span: evaluations are indexed by (experiment, span), not by record.
    evaluations_of = (
        evaluations.c.span_id.in_(list(span_ids)),
        evaluations.c.record_id.in_(records),
    )
    before, old = _tally(connection, experiment_id, records, facets)
    counted = tally_records(connection, experiment_id, records, facets)
    connection.execute(
        delete(record_aggregates).where(
            record_aggregates.c.experiment_id == experiment_id,
            record_aggregates.c.record_id.in_(records),
        )
    )
    _insert_aggregates(connection, experiment_id, dialect, rows_of, evaluations_of, upto=upto)
    after, new = _tally(connection, experiment_id, records, facets)
    counts.add(counted, tally_records(connection, experiment_id, records, facets))
    for label in old.keys() | new.keys():
        change = tallies.setdefault(label, Counter())
        change.update(new.get(label, Counter()))
        change.subtract(old.get(label, Counter()))
    return after - before


def _insert_aggregates(
    connection: Connection,
    experiment_id: str,
    dialect: str,
    rows_of: Iterable[Any],
    evaluations_of: Iterable[Any],
    *,
    upto: tuple[int, int],
) -> None:
    """Insert the aggregates of the records whose rows and evaluations are selected by
    ``rows_of`` and ``evaluations_of`` (conditions; none for every record).

    Only rows and evaluations with keys up to ``upto`` (the marks the refresh saves) count,
    though a writer may have committed more since: the aggregates are then exactly those
    of the marks, which the per-run totals rely on (``run_aggregates_can_grow``).
    """
    roots = and_(
        spans.c.experiment_id == experiment_id,
        spans.c.parent_id.is_(None),
        spans.c.pk <= upto[0],
        *rows_of,
    )
    errors = func.sum(case((spans.c.status == "error", 1), else_=0))
    count = func.count()
    no_kinds = literal(None, Integer)
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
                no_kinds,
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
                    no_kinds,
                )
                .where(roots, column.is_not(None))
                .group_by(spans.c.record_id),
            )
        )
    _insert_evaluation_aggregates(
        connection, experiment_id, dialect, (*evaluations_of, evaluations.c.pk <= upto[1])
    )


def _insert_evaluation_aggregates(
    connection: Connection, experiment_id: str, dialect: str, evaluations_of: Iterable[Any]
) -> None:
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
    # Counts whose totals over the record's label say which KIND_BITS it has.
    kind_counts = {
        "categorical": func.count(case((and_(ok, value.is_not(None)), 1), else_=None)),
        "score": func.count(case((ok, evaluations.c.score_value), else_=None)),
        "boolean": func.count(case((ok, boolean_number), else_=None)),
        "json": func.count(case((and_(ok, evaluations.c.json_value.is_not(None)), 1), else_=None)),
        **{
            f"stored:{name}": func.count(case((evaluations.c.metric_type == name, 1), else_=None))
            for name in ("boolean", "categorical", "json", "score")
        },
    }
    grouped = (
        select(
            evaluations.c.record_id.label("record_id"),
            evaluations.c.label.label("label"),
            value.label("value"),
            func.count(case((ok, numeric), else_=None)).label("numbers"),
            func.sum(case((ok, numeric), else_=None)).label("total"),
            func.sum(case((ok, 0), else_=1)).label("errors"),
            func.sum(case((ok, boolean_number), else_=None)).label("trues"),
            *(
                counted.label(f"kind_{bit}")
                for bit, counted in zip(KIND_BITS.values(), kind_counts.values(), strict=True)
            ),
        )
        .where(evaluations.c.experiment_id == experiment_id, *evaluations_of)
        .group_by(evaluations.c.record_id, evaluations.c.label, value)
        .subquery("grouped")
    )
    partition = (grouped.c.record_id, grouped.c.label)
    times = grouped.c[f"kind_{KIND_BITS['categorical']}"]
    booleans = grouped.c[f"kind_{KIND_BITS['boolean']}"]
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
                times.desc(),
                _binary(grouped.c.value, dialect),
            ),
        )
        .label("rank"),
        func.sum(times).over(partition_by=partition).label("labelled"),
        func.sum(grouped.c.numbers).over(partition_by=partition).label("numbers"),
        func.sum(grouped.c.total).over(partition_by=partition).label("total"),
        func.sum(grouped.c.errors).over(partition_by=partition).label("errors"),
        func.sum(grouped.c.trues).over(partition_by=partition).label("trues"),
        func.sum(booleans).over(partition_by=partition).label("booleans"),
        *(
            func.sum(grouped.c[f"kind_{bit}"]).over(partition_by=partition).label(f"kind_{bit}")
            for bit in KIND_BITS.values()
        ),
    ).subquery("ranked")
    share = ranked.c.trues / func.nullif(ranked.c.booleans, 0)
    kinds = sum(
        (case((ranked.c[f"kind_{bit}"] > 0, bit), else_=0) for bit in KIND_BITS.values()),
        literal(0),
    )
    index = record_aggregates.alias("record_index")
    connection.execute(
        insert(record_aggregates).from_select(
            list(AGGREGATE_COLUMNS),
            select(
                literal(experiment_id),
                literal(EVALUATION_PREFIX) + ranked.c.label,
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
                kinds,
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


def _tally(
    connection: Connection,
    experiment_id: str,
    records: Sequence[str] | None,
    facets: Sequence[str],
) -> tuple[int, dict[str, Counter[str]]]:
    """How many of these records (or of all) have aggregates, and per evaluation label how
    many have it (``records``) and each of the ``KIND_BITS``.

    ``facets``: with ``records``, the experiment's evaluation facets, named so that the
    database finds the records' rows by the primary key (experiment, facet, record); with
    only a prefix to go by, SQLite (no statistics) walks every record's rows instead.
    """
    conditions = [record_aggregates.c.experiment_id == experiment_id]
    if records is None:
        conditions.append(
            or_(
                record_aggregates.c.facet == "status",
                record_aggregates.c.facet.startswith(EVALUATION_PREFIX),
            )
        )
    else:
        conditions += [
            record_aggregates.c.facet.in_(["status", *facets]),
            record_aggregates.c.record_id.in_(records),
        ]
    found = connection.execute(
        select(record_aggregates.c.facet, record_aggregates.c.kinds, func.count())
        .where(*conditions)
        .group_by(record_aggregates.c.facet, record_aggregates.c.kinds)
    ).all()
    count = 0
    tallies: dict[str, Counter[str]] = {}
    for facet, kinds, times in found:
        if facet == "status":
            count += int(times)
            continue
        tally = tallies.setdefault(facet.removeprefix(EVALUATION_PREFIX), Counter())
        tally["records"] += int(times)
        for name, bit in KIND_BITS.items():
            if int(kinds or 0) & bit:
                tally[name] += int(times)
    return count, tallies


def label_metric_type(tally: Counter[str]) -> str | None:
    """A label's type by :mod:`assay.aggregation`'s rule, from its records' kinds.

    Any categorical value makes it categorical; otherwise numbers make it a score (booleans
    among them count 1/0); only booleans, boolean; only JSON objects, json; no usable
    value, the type stored with it (the last by name, if several).
    """
    if tally["categorical"] or (tally["json"] and (tally["score"] or tally["boolean"])):
        return "categorical"
    for name in ("score", "boolean", "json"):
        if tally[name]:
            return name
    stored = [
        name for name in ("score", "json", "categorical", "boolean") if tally[f"stored:{name}"]
    ]
    return stored[0] if stored else None


def _apply_tallies(
    connection: Connection, experiment_id: str, changes: dict[str, Counter[str]]
) -> None:
    """Add ``changes`` to the labels' stored tallies; each label's metric type follows."""
    if not changes:
        return
    label_of = and_(
        experiment_facets.c.experiment_id == experiment_id,
        experiment_facets.c.kind == "evaluation",
        experiment_facets.c.name.in_(sorted(changes)),
    )
    stored = {
        row.name: Counter(row.record_kinds or {})
        for row in connection.execute(
            select(experiment_facets.c.name, experiment_facets.c.record_kinds).where(label_of)
        )
    }
    connection.execute(delete(experiment_facets).where(label_of))
    rows: list[dict[str, Any]] = []
    for label, change in sorted(changes.items()):
        tally = stored.get(label, Counter())
        tally.update(change)
        if tally["records"] <= 0:
            continue  # no record has the label any more
        rows.append(
            {
                "experiment_id": experiment_id,
                "kind": "evaluation",
                "name": label,
                "metric_type": label_metric_type(tally),
                "record_kinds": {name: count for name, count in sorted(tally.items()) if count},
            }
        )
    if rows:
        connection.execute(insert(experiment_facets), rows)


def _add_tag_keys(
    connection: Connection, experiment_id: str, dialect: str, *, after: tuple[int, int] | None
) -> None:
    """Add the tag keys of the experiment's rows (``after``: of the rows between two marks).

    Rows are never deleted and their tags never change, so keys only ever come.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import JSON as PG_JSON

        tags = func.json_array_elements_text(cast(spans.c.tags, PG_JSON())).table_valued("value")
    else:
        tags = func.json_each(spans.c.tags).table_valued("value")
    conditions: list[Any] = [spans.c.parent_id.is_(None)]
    if after is None:
        conditions.append(spans.c.experiment_id == experiment_id)
    else:
        conditions += [_past(spans, experiment_id, after[0], dialect), spans.c.pk <= after[1]]
    tag_values = connection.execute(
        select(tags.c.value).select_from(spans).join(tags, true()).where(*conditions).distinct()
    ).scalars()
    keys = {str(tag).partition(":")[0] for tag in tag_values if ":" in str(tag)} - {""}
    if not keys:
        return
    known = set(
        connection.execute(
            select(experiment_facets.c.name).where(
                experiment_facets.c.experiment_id == experiment_id,
                experiment_facets.c.kind == "tag",
            )
        ).scalars()
    )
    rows = [
        {"experiment_id": experiment_id, "kind": "tag", "name": key, "metric_type": None}
        for key in sorted(keys - known)
    ]
    if rows:
        connection.execute(insert(experiment_facets), rows)
