"""How many records of an experiment have each (runs, passes) and each mode, per label:
what pass@k and the mode of record modes read, kept beside the per-record aggregates.

For each evaluation facet, ``record_tallies`` counts its ``record_aggregates`` rows
(``records``) by their (``n``, ``round(mean x n)``) — for a boolean label each record's
usable runs and passing runs — and, in rows of their own, by their ``mode``. Both are kept
for every label whatever its type, since a label's type may change as values come; the
keys are few (``n`` is at most the number of runs).

Counts of records are integers, so a refresh keeps them exact by adding the difference
between the recomputed records' old and new aggregates (``tally_records`` before and
after), as it does for the labels' kinds of value (``aggregates._tally``). A rebuild
counts them again from every record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Float, and_, case, cast, delete, func, insert, or_, select

from assay.store.sql.tables import record_aggregates, record_tallies

__all__ = [
    "Tally",
    "TallyChange",
    "change_record_tallies",
    "read_record_tallies",
    "rebuild_record_tallies",
    "tally_records",
]

Tally = Counter[tuple[str, int | None, int | None, str | None]]
"""Records by (facet, runs, passes, None) and by (facet, None, None, mode)."""
_PREFIX = "evaluation:"


@dataclass
class TallyChange:
    """What a refresh changed: the tallies, and the values and errors the evaluation
    aggregates count (``n + errors``, for ``run_aggregates.update_run_aggregates``)."""

    tally: Tally = field(default_factory=Counter)
    values: int = 0

    def add(self, before: tuple[Tally, int], after: tuple[Tally, int]) -> None:
        self.tally.update(after[0])
        self.tally.subtract(before[0])
        self.values += after[1] - before[1]


def tally_records(
    connection: Connection,
    experiment_id: str,
    records: Sequence[str] | None,
    facets: Sequence[str],
) -> tuple[Tally, int]:
    """The tallies of these records' evaluation aggregates (``None``: of every record), and
    the values and errors they count. ``facets``: the experiment's evaluation facets, when
    ``records`` are given.

    One statement, which reads ``mode``: no index covers it then, and the database finds
    the records' rows by the primary key (experiment, facet, record) rather than walking
    every record's rows along a covering index (SQLite, lacking statistics, would).
    """
    table = record_aggregates
    conditions: list[Any] = [table.c.experiment_id == experiment_id]
    if records is None:
        conditions.append(table.c.facet.startswith(_PREFIX))
    else:
        conditions += [table.c.facet.in_(list(facets)), table.c.record_id.in_(list(records))]
    found: Tally = Counter()
    counted = 0
    # Passes only where they can be: a mean in [0, 1], as a boolean label's share is. A
    # score label's other means would make keys without end (and overflow the column).
    passes = case(
        (table.c.mean.between(0, 1), cast(func.round(table.c.mean * table.c.n), Float)),
        else_=None,
    )
    for row in connection.execute(
        select(
            table.c.facet,
            table.c.n,
            passes.label("passes"),
            table.c.mode,
            func.count().label("times"),
            func.sum(table.c.errors).label("errors"),
        )
        .where(*conditions)
        .group_by(table.c.facet, table.c.n, passes, table.c.mode)
    ):
        facet, times = str(row.facet), int(row.times)
        counted += int(row.n) * times + int(row.errors or 0)
        if row.passes is not None:
            found[(facet, int(row.n), int(row.passes), None)] += times
        if row.mode is not None:
            found[(facet, None, None, str(row.mode))] += times
    return found, counted


def _order(item: tuple[tuple[str, int | None, int | None, str | None], int]) -> Any:
    facet, runs, passes, mode = item[0]
    return (facet, runs or 0, passes or 0, mode or "")


def _insert(connection: Connection, experiment_id: str, tally: Tally) -> None:
    rows = [
        {
            "experiment_id": experiment_id,
            "facet": facet,
            "runs": runs,
            "passes": passes,
            "mode": mode,
            "records": times,
        }
        for (facet, runs, passes, mode), times in sorted(tally.items(), key=_order)
        if times > 0
    ]
    if rows:
        connection.execute(insert(record_tallies), rows)


def rebuild_record_tallies(connection: Connection, experiment_id: str) -> None:
    """Count every record's aggregates again (after a rebuild of them)."""
    table = record_tallies
    connection.execute(delete(table).where(table.c.experiment_id == experiment_id))
    _insert(connection, experiment_id, tally_records(connection, experiment_id, None, ())[0])


def change_record_tallies(connection: Connection, experiment_id: str, change: Tally) -> None:
    """Add ``change`` (new tallies less old ones of the recomputed records): only the keys
    it touches are read and written again."""
    keys = [key for key, times in change.items() if times]
    if not keys:
        return
    table = record_tallies
    facets = sorted({key[0] for key in keys})
    touched = and_(
        table.c.experiment_id == experiment_id,
        table.c.facet.in_(facets),
        or_(
            and_(table.c.mode.is_(None), table.c.runs.is_not(None)),
            table.c.mode.in_(sorted({key[3] for key in keys if key[3] is not None})),
        ),
    )
    merged: Tally = Counter()
    for row in connection.execute(select(table).where(touched)):
        merged[(str(row.facet), row.runs, row.passes, row.mode)] += int(row.records)
    merged.update(change)
    connection.execute(delete(table).where(touched))
    _insert(connection, experiment_id, merged)


def read_record_tallies(
    connection: Connection, experiment_id: str, facets: Sequence[str]
) -> tuple[dict[str, Counter[tuple[int, int]]], dict[str, Counter[str]]]:
    """Per facet: records by (runs, passes), and records by mode."""
    passes: dict[str, Counter[tuple[int, int]]] = {}
    modes: dict[str, Counter[str]] = {}
    if not facets:
        return passes, modes
    table = record_tallies
    for row in connection.execute(
        select(table).where(table.c.experiment_id == experiment_id, table.c.facet.in_(list(facets)))
    ):
        if row.mode is not None:
            modes.setdefault(str(row.facet), Counter())[str(row.mode)] += int(row.records)
        elif row.runs is not None:
            key = (int(row.runs), int(row.passes))
            passes.setdefault(str(row.facet), Counter())[key] += int(row.records)
    return passes, modes
