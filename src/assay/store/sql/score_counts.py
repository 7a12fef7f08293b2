"""How many scores of each label and run fall in each bucket (``run_score_counts``), and
counting a row query on a score label from them.

The total of ``run_iteration:1 @evaluations.custom.x:>0.5`` over 100,000 rows a run was a
walk of 50,000 entries of the score index, about 6 ms. Scores take about as many values as
there are rows, so counts by value (as for tokens, ``token_counts.py``) would be no
shorter. Counts by bucket are: every bucket whose scores all match counts whole, and only
the bucket at each end of the query's range is counted score by score. A bucket is
``floor(score * 1024)``: a power of two, so that both the scaling and a bucket's bounds
(``b / 1024``) are exact in floating point, and a bucket holds exactly the scores between
its bounds. Scores beyond ±2^52 / 1024 (4.4e12) share the two end buckets; PostgreSQL's
NaN, greater than every number there, is in the top one.

The buckets are kept with the per-run totals (``run_aggregates.py``), to the same marks,
and by the same rule: a refresh adds the scores past the last mark, and where an
evaluation the totals include was replaced, it recomputes both. A search uses them only
while they include every row stored (``counters.current_conditions``).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from assay.query.ast import Comparison, Exists, Range
from assay.query.facets import EvaluationFacet, number_operand
from assay.store.sql.counters import CURRENT
from assay.store.sql.tables import evaluations, run_score_counts

__all__ = ["add_score_counts", "count_by_scores", "rebuild_score_counts"]

SCALE = 1024
"""Buckets per unit of score."""
EDGE = 2**52
"""The end buckets: ``-EDGE`` holds every score below ``(1 - EDGE) / SCALE``, ``EDGE``
every score from ``EDGE / SCALE`` on (bucket numbers and bounds stay exact doubles)."""


def bucket_of(score: float) -> int:
    """The bucket a score falls in (NaN in the top one, where PostgreSQL sorts it)."""
    if math.isnan(score):
        return EDGE
    scaled = score * SCALE
    if scaled >= EDGE:
        return EDGE
    if scaled <= -EDGE:
        return -EDGE
    return math.floor(scaled)


def _counted(connection: Connection, rows: Any) -> Counter[tuple[str, int, int]]:
    """The usable scores of the evaluations ``rows`` selects, by label, run and bucket."""
    table = evaluations
    found: Counter[tuple[str, int, int]] = Counter()
    # Streamed: a rebuild reads every score of the experiment, millions in a large one.
    for label, run, score in connection.execute(
        select(table.c.label, table.c.run_iteration, table.c.score_value)
        .where(rows, table.c.score_value.is_not(None), table.c.error_type.is_(None))
        .execution_options(yield_per=10_000)
    ):
        found[(label, int(run), bucket_of(float(score)))] += 1
    return found


def _rows(experiment_id: str, counts: Counter[tuple[str, int, int]]) -> list[dict[str, Any]]:
    return [
        {"experiment_id": experiment_id, "label": label, "run_iteration": run, "bucket": b, "n": n}
        for (label, run, b), n in sorted(counts.items())
    ]


def rebuild_score_counts(connection: Connection, experiment_id: str, rows: Any) -> None:
    """Count the experiment's evaluations ``rows`` (a condition on ``evaluations``: those up
    to the marks) afresh."""
    connection.execute(
        delete(run_score_counts).where(run_score_counts.c.experiment_id == experiment_id)
    )
    found = _rows(experiment_id, _counted(connection, rows))
    if found:
        connection.execute(insert(run_score_counts), found)


def add_score_counts(connection: Connection, experiment_id: str, rows: Any) -> None:
    """Add the experiment's evaluations ``rows`` (those past the last mark) to its counts."""
    found = _rows(experiment_id, _counted(connection, rows))
    if not found:
        return
    upsert: Any = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = upsert(run_score_counts)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=[
                run_score_counts.c.experiment_id,
                run_score_counts.c.label,
                run_score_counts.c.run_iteration,
                run_score_counts.c.bucket,
            ],
            set_={"n": run_score_counts.c.n + statement.excluded.n},
        ),
        found,
    )


def _range(node: Any) -> tuple[float | None, float | None] | None:
    """The (low, high) ends of the scores a leaf selects (None: no end); None if it is no
    range of finite numbers (those leaves are counted score by score). Whether an end is
    included does not matter here: the end buckets are counted with the leaf's own
    condition."""
    facet = node.attribute

    def end(value: Any) -> float:
        number = number_operand(facet, value)
        if number is None or not math.isfinite(number):
            raise ValueError
        return number

    try:
        if isinstance(node, Exists):
            return None, None
        if isinstance(node, Comparison):
            point = end(node.value)
            low = point if node.operator in ("=", ">", ">=") else None
            high = point if node.operator in ("=", "<", "<=") else None
            return low, high
        if isinstance(node, Range):
            return (
                end(node.low) if node.low is not None else None,
                end(node.high) if node.high is not None else None,
            )
    except ValueError:
        return None
    return None


def _within(scores: Any, bucket: int) -> Any:
    """``scores`` (a select of evaluations) narrowed to one bucket's scores."""
    column = evaluations.c.score_value
    if bucket > -EDGE:
        scores = scores.where(column >= bucket / SCALE)
    if bucket < EDGE:
        scores = scores.where(column < (bucket + 1) / SCALE)
    return scores


_WHOLE = select(func.coalesce(func.sum(run_score_counts.c.n), 0)).where(
    run_score_counts.c.experiment_id == bindparam("experiment_id"),
    run_score_counts.c.label == bindparam("label"),
)


def count_by_scores(
    connection: Connection, compiler: Any, node: Any, run: int | None
) -> int | None:
    """How many rows of the search's experiment (of run ``run``, if given) match ``node``,
    one leaf on a score label, counted from the buckets (``compiler``: the search's
    ``QueryCompiler``); None for any other query, or while the buckets do not include
    every row stored.

    The buckets strictly between the range's end buckets count whole; the end buckets'
    scores, and the label's booleans (as 1 or 0), are counted by their indexes."""
    facet = getattr(node, "attribute", None)
    if not isinstance(facet, EvaluationFacet) or facet.metric_type != "score":
        return None
    ends = _range(node)
    if ends is None:
        return None
    low, high = (None if end is None else bucket_of(end) for end in ends)
    scores, booleans = compiler.score_parts(facet, node, run)
    whole = _WHOLE
    if run is not None:
        whole = whole.where(run_score_counts.c.run_iteration == run)
    if low is not None:
        whole = whole.where(run_score_counts.c.bucket > low)
    if high is not None:
        whole = whole.where(run_score_counts.c.bucket < high)
    parts = [whole.scalar_subquery(), _size(booleans)]
    parts += [_size(_within(scores, bucket)) for bucket in {low, high} if bucket is not None]
    found = connection.execute(
        select(*parts).where(*CURRENT),
        {"experiment_id": compiler.experiment_id, "label": facet.label},
    ).first()
    return None if found is None else sum(int(part) for part in found)


def _size(matches: Any) -> Any:
    return select(func.count()).select_from(matches.subquery()).scalar_subquery()
