"""Per-run totals of an experiment's rows and evaluations, kept beside the per-record
aggregates: what the summary reads for each run instead of grouping every evaluation.

For each run and facet, one row of ``run_aggregates`` with ``value`` NULL (the totals) and,
for an evaluation label's categorical values, one row per value with its count:

- ``status``: ``n`` rows, ``errors`` of them failed;
- a trace metric (``aggregates.TRACE_FACETS``): ``n`` rows that reported it, ``total`` their
  sum (as stored: nanoseconds, nanodollars);
- ``evaluation:<label>``: ``n`` usable values (categorical values plus numbers, as
  ``record_aggregates.n`` counts them), ``errors``, ``numbers`` (scores, and booleans as
  1/0), ``booleans`` and ``trues`` among the numbers, and the numbers' ``total``,
  ``low`` and ``high``.

The counts of rows by token count (``run_token_counts``, ``token_counts.py``) and of
scores by bucket (``run_score_counts``, ``score_counts.py``) are kept with them, to the
same marks, and rebuilt with them.

**Kept exact by adding only.** Rows are never deleted and an evaluation is only ever
deleted to be replaced, so a refresh adds the rows and evaluations past the last marks
(``aggregate_state``) to the totals: sums, counts, least and greatest all grow by addition.
Two things would break that, and send the refresh to recompute every run instead:

- rows reopened (``aggregates.reopen_rows``: tokens and cost rolled onto an old root), seen
  as ``aggregate_state``'s marks differing from those ``run_aggregate_state`` was built to;
- an evaluation the totals include that was deleted (a replaced metric), seen as the
  recomputed records' ``record_aggregates`` counting fewer new values and errors than the
  new evaluations bring. Record aggregates are computed from the rows and evaluations up
  to the marks the refresh saves, so before and after they count exactly those.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    Table,
    and_,
    bindparam,
    case,
    cast,
    delete,
    false,
    func,
    insert,
    select,
    true,
    tuple_,
)

from assay.query.ast import Comparison
from assay.query.facets import EvaluationFacet
from assay.store.sql.counters import CURRENT
from assay.store.sql.score_counts import add_score_counts, rebuild_score_counts
from assay.store.sql.tables import (
    evaluations,
    run_aggregate_state,
    run_aggregates,
    spans,
)
from assay.store.sql.token_counts import add_token_counts, rebuild_token_counts

__all__ = [
    "RunTotals",
    "count_labelled",
    "read_run_aggregates",
    "rebuild_run_aggregates",
    "update_run_aggregates",
]

Marks = tuple[int, int]
"""(highest ``spans.pk``, highest ``evaluations.pk``) included."""
_TRACE_COLUMNS = {
    "duration": "duration_ns",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "total_tokens": "total_tokens",
    "estimated_total_cost": "estimated_total_cost",
}
_EVALUATION_PREFIX = "evaluation:"


@dataclass
class RunTotals:
    """One ``run_aggregates`` row's figures (see the module docstring)."""

    n: int = 0
    errors: int = 0
    numbers: int = 0
    booleans: int = 0
    trues: int = 0
    total: float | None = None
    low: float | None = None
    high: float | None = None

    def add(self, other: RunTotals) -> None:
        self.n += other.n
        self.errors += other.errors
        self.numbers += other.numbers
        self.booleans += other.booleans
        self.trues += other.trues
        self.total = _plus(self.total, other.total)
        self.low = _least(self.low, other.low, min)
        self.high = _least(self.high, other.high, max)


def _plus(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else a + b


def _least(a: float | None, b: float | None, pick: Any) -> float | None:
    return b if a is None else a if b is None else float(pick(a, b))


_Key = tuple[int, str, str | None]
"""(run, facet, categorical value or None for the totals)."""


def _between(
    connection: Connection, table: Table, experiment_id: str, after: Marks | None, upto: Marks
) -> Any:
    """The experiment's rows of ``table`` with keys in ``(after, upto]``."""
    owner: Any = table.c.experiment_id
    conditions = [table.c.pk <= (upto[0] if table is spans else upto[1])]
    if after is not None:
        conditions.append(table.c.pk > (after[0] if table is spans else after[1]))
        if connection.dialect.name == "sqlite":
            # `|| ''` keeps SQLite from walking the experiment's range of an index on
            # experiment_id (all its rows) instead of the primary key's short tail.
            owner = owner + ""
    return and_(owner == experiment_id, *conditions)


def _contributions(
    connection: Connection, experiment_id: str, after: Marks | None, upto: Marks
) -> dict[_Key, RunTotals]:
    """The totals of the rows and evaluations with keys in ``(after, upto]`` (all up to
    ``upto`` when ``after`` is None), by run, facet and categorical value."""
    found: dict[_Key, RunTotals] = {}
    columns = [spans.c[column] for column in _TRACE_COLUMNS.values()]
    for row in connection.execute(
        select(
            spans.c.run_iteration,
            func.count(),
            func.count(case((spans.c.status == "error", 1), else_=None)),
            *(func.count(column) for column in columns),
            *(func.sum(cast(column, Float)) for column in columns),
        )
        .where(_between(connection, spans, experiment_id, after, upto), spans.c.parent_id.is_(None))
        .group_by(spans.c.run_iteration)
    ):
        run = int(row[0])
        found[(run, "status", None)] = RunTotals(n=int(row[1]), errors=int(row[2]))
        for index, facet in enumerate(_TRACE_COLUMNS):
            count = int(row[3 + index])
            total = row[3 + len(columns) + index]
            found[(run, facet, None)] = RunTotals(
                n=count, total=float(total) if count and total is not None else None
            )
    ok = evaluations.c.error_type.is_(None)
    # PostgreSQL does not cast booleans to numbers: spell True/False out as 1.0/0.0.
    boolean_number = case(
        (evaluations.c.boolean_value == true(), 1.0),
        (evaluations.c.boolean_value == false(), 0.0),
        else_=None,
    )
    number = func.coalesce(cast(evaluations.c.score_value, Float), boolean_number)
    usable_number = case((ok, number), else_=None)
    a_boolean = and_(ok, evaluations.c.score_value.is_(None))
    value = evaluations.c.categorical_value
    for row in connection.execute(
        select(
            evaluations.c.run_iteration,
            evaluations.c.label,
            value,
            func.count(case((and_(ok, value.is_not(None)), 1), else_=None)).label("labelled"),
            func.count(case((ok, None), else_=1)).label("errors"),
            func.count(usable_number).label("numbers"),
            func.count(case((a_boolean, boolean_number), else_=None)).label("booleans"),
            func.count(
                case((and_(a_boolean, evaluations.c.boolean_value == true()), 1), else_=None)
            ).label("trues"),
            func.sum(usable_number).label("total"),
            func.min(usable_number).label("low"),
            func.max(usable_number).label("high"),
        )
        .where(_between(connection, evaluations, experiment_id, after, upto))
        .group_by(evaluations.c.run_iteration, evaluations.c.label, value)
    ):
        facet = f"{_EVALUATION_PREFIX}{row.label}"
        numbers = int(row.numbers)
        totals = found.setdefault((int(row.run_iteration), facet, None), RunTotals())
        totals.add(
            RunTotals(
                n=int(row.labelled) + numbers,
                errors=int(row.errors),
                numbers=numbers,
                booleans=int(row.booleans),
                trues=int(row.trues),
                total=float(row.total) if numbers else None,
                low=float(row.low) if numbers else None,
                high=float(row.high) if numbers else None,
            )
        )
        if row.categorical_value is not None and row.labelled:
            key = (int(row.run_iteration), facet, str(row.categorical_value))
            found.setdefault(key, RunTotals()).add(RunTotals(n=int(row.labelled)))
    return found


def _insert(connection: Connection, experiment_id: str, rows: dict[_Key, RunTotals]) -> None:
    if rows:
        connection.execute(
            insert(run_aggregates),
            [
                {
                    "experiment_id": experiment_id,
                    "run_iteration": run,
                    "facet": facet,
                    "value": value,
                    **{item.name: getattr(totals, item.name) for item in fields(RunTotals)},
                }
                for (run, facet, value), totals in sorted(
                    rows.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or "")
                )
            ],
        )


def _save_marks(connection: Connection, experiment_id: str, upto: Marks) -> None:
    connection.execute(
        delete(run_aggregate_state).where(run_aggregate_state.c.experiment_id == experiment_id)
    )
    connection.execute(
        insert(run_aggregate_state).values(
            experiment_id=experiment_id, row_mark=upto[0], evaluation_mark=upto[1]
        )
    )


def rebuild_run_aggregates(connection: Connection, experiment_id: str, *, upto: Marks) -> None:
    """Every run's totals from the rows and evaluations with keys up to ``upto``."""
    connection.execute(
        delete(run_aggregates).where(run_aggregates.c.experiment_id == experiment_id)
    )
    _insert(connection, experiment_id, _contributions(connection, experiment_id, None, upto))
    rebuild_token_counts(
        connection, experiment_id, _between(connection, spans, experiment_id, None, upto)
    )
    rebuild_score_counts(
        connection, experiment_id, _between(connection, evaluations, experiment_id, None, upto)
    )
    _save_marks(connection, experiment_id, upto)


def update_run_aggregates(
    connection: Connection, experiment_id: str, *, after: Marks, upto: Marks, counted: int
) -> None:
    """Add the rows and evaluations with keys in ``(after, upto]`` to the runs' totals, or
    recompute every run when adding would not be exact (see the module docstring).

    ``counted``: by how much the refresh changed the records' values and errors in
    ``record_aggregates`` (``record_tallies.TallyChange.values``). With no
    evaluation deleted, that is what the new evaluations bring, no more, no less.
    Only the (run, facet) groups they touch are read and written again: a few rows each.
    """
    built = connection.execute(
        select(run_aggregate_state.c.row_mark, run_aggregate_state.c.evaluation_mark).where(
            run_aggregate_state.c.experiment_id == experiment_id
        )
    ).first()
    added = _contributions(connection, experiment_id, after, upto)
    brought = sum(
        totals.n + totals.errors
        for (_, facet, value), totals in added.items()
        if value is None and facet.startswith(_EVALUATION_PREFIX)
    )
    if built is None or (int(built.row_mark), int(built.evaluation_mark)) != after:
        rebuild_run_aggregates(connection, experiment_id, upto=upto)  # rows reopened
        return
    if brought != counted:
        rebuild_run_aggregates(connection, experiment_id, upto=upto)  # a value deleted
        return
    groups = sorted({(run, facet) for run, facet, _ in added})
    if groups:
        touched = and_(
            run_aggregates.c.experiment_id == experiment_id,
            tuple_(run_aggregates.c.run_iteration, run_aggregates.c.facet).in_(groups),
        )
        merged: dict[_Key, RunTotals] = {}
        for row in connection.execute(select(run_aggregates).where(touched)):
            key = (int(row.run_iteration), str(row.facet), row.value)
            merged.setdefault(key, RunTotals()).add(_totals(row))
        for key, totals in added.items():
            merged.setdefault(key, RunTotals()).add(totals)
        connection.execute(delete(run_aggregates).where(touched))
        _insert(connection, experiment_id, merged)
    add_token_counts(
        connection, experiment_id, _between(connection, spans, experiment_id, after, upto)
    )
    add_score_counts(
        connection, experiment_id, _between(connection, evaluations, experiment_id, after, upto)
    )
    _save_marks(connection, experiment_id, upto)


def _totals(row: Any) -> RunTotals:
    def number(value: Any) -> float | None:
        return float(value) if value is not None else None

    return RunTotals(
        n=int(row.n),
        errors=int(row.errors),
        numbers=int(row.numbers),
        booleans=int(row.booleans),
        trues=int(row.trues),
        total=number(row.total),
        low=number(row.low),
        high=number(row.high),
    )


def read_run_aggregates(
    connection: Connection, experiment_id: str, iterations: Sequence[int]
) -> tuple[dict[tuple[int, str], RunTotals], dict[tuple[int, str], Counter[str]]]:
    """These runs' totals by (run, facet), and their categorical values' counts."""
    totals: dict[tuple[int, str], RunTotals] = {}
    values: dict[tuple[int, str], Counter[str]] = {}
    for row in connection.execute(
        select(run_aggregates).where(
            run_aggregates.c.experiment_id == experiment_id,
            run_aggregates.c.run_iteration.in_(list(iterations)),
        )
    ):
        key = (int(row.run_iteration), str(row.facet))
        if row.value is None:
            totals.setdefault(key, RunTotals()).add(_totals(row))
        else:
            values.setdefault(key, Counter())[str(row.value)] += int(row.n)
    return totals, values


# What a label's equality counts, built once (see ``count_labelled``): a categorical
# value's rows, the True booleans, the False ones.
_OF_LABEL = [
    run_aggregates.c.experiment_id == bindparam("experiment_id"),
    run_aggregates.c.facet == bindparam("facet"),
]
_COUNTED = {
    "categorical": select(func.coalesce(func.sum(run_aggregates.c.n), 0)).where(
        *_OF_LABEL, run_aggregates.c.value == bindparam("value")
    ),
    "true": select(func.coalesce(func.sum(run_aggregates.c.trues), 0)).where(
        *_OF_LABEL, run_aggregates.c.value.is_(None)
    ),
    "false": select(
        func.coalesce(func.sum(run_aggregates.c.booleans - run_aggregates.c.trues), 0)
    ).where(*_OF_LABEL, run_aggregates.c.value.is_(None)),
}


def count_labelled(
    connection: Connection, experiment_id: str, node: Any, run: int | None
) -> int | None:
    """How many rows of the experiment (of run ``run``, if given) have the categorical
    value, or the boolean, that ``node`` (``@evaluations.custom.<label>:<value>``) names,
    read off the runs' totals: their count of each categorical value, and of booleans and
    True ones. None for any other query, or while the totals do not include every row.

    An evaluation stores its value in one typed column only (``values.evaluation_values``),
    so the totals' booleans (those without a score) are the label's boolean values."""
    facet = getattr(node, "attribute", None)
    if not (
        isinstance(node, Comparison)
        and node.operator == "="
        and isinstance(facet, EvaluationFacet)
        and facet.metric_type in ("categorical", "boolean")
    ):
        return None
    if facet.metric_type == "categorical":
        counted = _COUNTED["categorical"]
    elif node.value.boolean is None:
        return None
    else:
        counted = _COUNTED["true" if node.value.boolean else "false"]
    if run is not None:
        counted = counted.where(run_aggregates.c.run_iteration == run)
    found = connection.execute(
        select(counted.scalar_subquery()).where(*CURRENT),  # no row while behind
        {
            "experiment_id": experiment_id,
            "facet": f"{_EVALUATION_PREFIX}{facet.label}",
            "value": node.value.text,
        },
    ).first()
    return None if found is None else int(found[0])
