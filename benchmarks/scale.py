"""PostgreSQL at scale: a 1,000,000-row experiment, its ingestion, summary and searches.

Workload (issue 8): 200,000 records x 5 runs x 3 evaluators (a score, a categorical label
and a boolean) = 1,000,000 rows and 3,000,000 evaluations in PostgreSQL. Rows stream into
the store through the SDK's own writer (``ResultWriter``: one thread, one transaction per
batch of 2,000 rows, as ``experiment.run`` writes them). Then, medians of ``--repeat``:

- the summary of the experiment from its per-record aggregates (the experiments list's
  figures, and the web UI's summary fragment where that module exists);
- the seed's multi-run query, a page of 50 records with the total;
- a row-level query, a page of 50 rows with the total;
- an incremental refresh of the aggregates after the last 1,000 rows were written.

Targets: each query at most 200 ms median, the summary at most 500 ms.

    python benchmarks/scale.py [--records 200000] [--runs 5] [--repeat 7]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/assay_scale]

The database is created when missing and kept: a later run with the same sizes finds the
completed experiment and times the queries again without building it (minutes) again.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The sibling benchmark's queries and rows, so that the two measure the same experiment.
from query import MULTI_RUN, ROW_LEVEL, synthetic_experiment, synthetic_rows

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/assay_scale"
ADMIN_DATABASE = "test"
"""A database that exists on the server, to connect to while creating the benchmark's."""
TAIL = 1000
"""Rows the incremental refresh is timed on: the last ones written."""


def ensure_database(url: str) -> None:
    """Create the URL's database when the server does not have it yet."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database=ADMIN_DATABASE)
    with psycopg.connect(
        admin.render_as_string(hide_password=False), autocommit=True, connect_timeout=5
    ) as connection:
        found = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,)
        ).fetchone()
        if found is None:
            connection.execute(
                sql.SQL("CREATE DATABASE {}").format(sql.Identifier(parsed.database or ""))
            )


def build(backend: Any, records: int, runs: int, name: str) -> str:
    """Store the experiment through the SDK's writer; prints the ingest rate."""
    from assay.execution.writer import ResultWriter

    started = time.perf_counter()
    info, ids, run_infos = synthetic_experiment(
        backend, name, records, runs, project="scale-benchmark"
    )
    print(f"dataset of {records:,} records stored in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    writer = ResultWriter(backend, info.id)
    for row in synthetic_rows(info.id, ids, run_infos):
        writer.put(row)
    writer.close()
    elapsed = time.perf_counter() - started
    total = records * runs
    print(
        f"ingested {total:,} rows and {total * 3:,} evaluations in {elapsed:.1f} s: "
        f"{total / elapsed:,.0f} rows/s ({total * 3 / elapsed:,.0f} evaluations/s), "
        "batches of 2,000 rows, one transaction each"
    )
    backend.set_experiment_status(info.id, "completed")
    return str(info.id)


def vacuum(backend: Any) -> None:
    """What autovacuum does after a bulk load, done now: statistics and visibility maps
    (index-only scans skip the table only for pages marked all-visible)."""
    from sqlalchemy import text

    with backend.engine.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("spans", "evaluations", "record_aggregates", "run_aggregates"):
            connection.execute(text(f"VACUUM (ANALYZE) {table}"))


def forget_tail(backend: Any, experiment_id: str) -> None:
    """Make the aggregates look built before the last ``TAIL`` rows were written, so the
    next refresh recomputes their records, as it would right after they were written."""
    from sqlalchemy import select, update

    from assay.store.sql.tables import aggregate_state, evaluations, experiment_facets, spans

    def mark(table: Any, behind: int) -> Any:
        return (
            select(table.c.pk)
            .where(table.c.experiment_id == experiment_id)
            .order_by(table.c.pk.desc())
            .offset(behind)
            .limit(1)
            .scalar_subquery()
        )

    with backend.engine.begin() as connection:
        connection.execute(
            update(aggregate_state)
            .where(aggregate_state.c.experiment_id == experiment_id)
            .values(
                rows=aggregate_state.c.rows - TAIL,
                evaluations=aggregate_state.c.evaluations - 3 * TAIL,
                row_mark=mark(spans, TAIL),
                evaluation_mark=mark(evaluations, 3 * TAIL),
            )
        )
        try:
            from assay.store.sql.run_aggregates import rebuild_run_aggregates
        except ImportError:  # a store from before per-run aggregates
            return
        # The tail's records' aggregates and the per-run totals as they were before the
        # tail was written (not timed), so that the refresh finds what it would find then.
        from collections import Counter

        from assay.store.sql import aggregates

        marks = connection.execute(
            select(aggregate_state.c.row_mark, aggregate_state.c.evaluation_mark).where(
                aggregate_state.c.experiment_id == experiment_id
            )
        ).one()
        upto = (int(marks[0]), int(marks[1]))
        tail = sorted(
            connection.execute(
                select(spans.c.record_id).where(
                    spans.c.experiment_id == experiment_id,
                    spans.c.pk > upto[0],
                    spans.c.parent_id.is_(None),
                )
            ).scalars()
        )
        tallies: dict[str, Counter[str]] = {}
        counts = aggregates.TallyChange()
        dialect = connection.dialect.name
        size = aggregates._chunk_size(connection, experiment_id)
        facets = [
            aggregates.evaluation_facet(label)
            for label in connection.execute(
                select(experiment_facets.c.name).where(
                    experiment_facets.c.experiment_id == experiment_id,
                    experiment_facets.c.kind == "evaluation",
                )
            ).scalars()
        ]
        for chunk in aggregates._chunks(tail, size):
            aggregates._recompute(
                connection,
                experiment_id,
                chunk,
                dialect,
                tallies,
                upto=upto,
                counts=counts,
                facets=facets,
            )
        aggregates._apply_tallies(connection, experiment_id, tallies)
        aggregates.change_record_tallies(connection, experiment_id, counts.tally)
        rebuild_run_aggregates(connection, experiment_id, upto=upto)


def timed(function: Callable[[], Any], repeat: int, before: Callable[[], Any] | None = None) -> Any:
    times, result = [], None
    for _ in range(repeat):
        if before is not None:
            before()
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def verdict(seconds: float, target: float) -> str:
    return f"target <= {target * 1000:.0f} ms -> {'OK' if seconds <= target else 'MISSED'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    arguments = parser.parse_args()
    os.environ["ASSAY_PROGRESS"] = "0"
    ensure_database(arguments.database_url)

    from assay import LLMObs
    from assay.store.sql.backend import SqlBackend
    from assay.store.sql.browse import experiment_totals

    os.environ["ASSAY_DATABASE_URL"] = arguments.database_url
    LLMObs.enable(project_name="scale-benchmark")
    backend = SqlBackend(arguments.database_url)
    name = f"scale-{arguments.records}x{arguments.runs}"
    found = [
        info
        for info in backend.list_experiments()
        if info.name == name and info.status == "completed"
    ]
    if found:
        experiment_id = found[0].id
        print(f"reusing {arguments.records:,} records x {arguments.runs} runs x 3 evaluators")
    else:
        experiment_id = build(backend, arguments.records, arguments.runs, name)
        vacuum(backend)
    started = time.perf_counter()
    backend.refresh_aggregates(experiment_id, only_if_stale=True)
    elapsed = time.perf_counter() - started
    print(f"aggregates refreshed (if stale) in {elapsed:.2f} s")
    if elapsed > 1:  # rebuilt: new aggregate rows for autovacuum to catch up with
        vacuum(backend)

    if arguments.records * arguments.runs > 2 * TAIL:
        refresh_time, _ = timed(
            lambda: backend.refresh_aggregates(experiment_id, only_if_stale=True),
            arguments.repeat,
            before=lambda: forget_tail(backend, experiment_id),
        )
        print(
            f"incremental refresh after the last {TAIL:,} rows: {refresh_time * 1000:.0f} ms median"
        )
    else:
        print(f"incremental refresh: not timed (fewer than {2 * TAIL:,} rows)")

    totals_time, totals = timed(
        lambda: experiment_totals(backend.engine, [experiment_id]), arguments.repeat
    )
    print(
        f"summary (experiment totals from the aggregates): {totals_time * 1000:.0f} ms median "
        f"({verdict(totals_time, 0.5)}); {totals[experiment_id].records:,} records"
    )
    try:
        from assay.store.sql.summary_figures import summary_figures
    except ImportError:
        pass
    else:
        info = backend.get_experiment(experiment_id)

        def figures() -> Any:
            with backend.engine.connect() as connection:
                return summary_figures(connection, info)

        figures_time, _ = timed(figures, arguments.repeat)
        print(
            f"summary (web UI figures): {figures_time * 1000:.0f} ms median "
            f"({verdict(figures_time, 0.5)})"
        )

    for label, query in (("multi-run", MULTI_RUN), ("row-level", ROW_LEVEL)):
        seconds, page = timed(
            lambda query=query: backend.search(experiment_id, query, limit=50), arguments.repeat
        )
        print(
            f"{label} query: {seconds * 1000:.0f} ms median for a page of {len(page.items)} "
            f"of {page.total:,} (of {page.of:,}) ({verdict(seconds, 0.2)})"
        )
    backend.close()


if __name__ == "__main__":
    main()
