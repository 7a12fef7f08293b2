"""Multi-run search as set operations over per-record aggregates: plans, edge cases.

The semantics are checked against the reference evaluator in ``test_search.py``; here, the
parts that only the SQL side has: which indexes answer the seed's query, labels too long for
the mode index, and records whose rows disagree on their position.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from assay import LLMObs
from assay.query import resolve
from assay.store import open_backend
from assay.store.sql.backend import SqlBackend
from assay.store.sql.search import load_catalog
from assay.store.sql.search_compile import QueryCompiler
from assay.store.sql.tables import MODE_INDEX_LENGTH

SEED_QUERY = (
    "@multi_run_avg.@evaluations.custom.score:>=0.5 "
    "@multi_run_mode.@evaluations.custom.tone:positive"
)
LONG_LABEL = "positive, " + "and then some " * 300  # over PostgreSQL's 2.7 kB index entry


def task(input_data: Any, config: Any) -> Any:
    return input_data["n"]


def score(input_data: Any, output_data: Any, expected_output: Any) -> float:
    return (output_data % 10) / 10


def tone(input_data: Any, output_data: Any, expected_output: Any) -> str:
    if output_data % 7 == 0:
        return LONG_LABEL
    return "positive" if output_data % 3 else "negative"


@pytest.fixture
def experiment(llmobs: type[LLMObs]) -> Any:
    dataset = llmobs.create_dataset(
        dataset_name="sets", records=[{"input_data": {"n": n}} for n in range(60)]
    )
    experiment = llmobs.experiment("sets", task, dataset, [score, tone], runs=2)
    experiment.run(jobs=4)
    return experiment


def _expected(predicate: Any) -> list[int]:
    return [n for n in range(60) if predicate(n)]


def test_the_seed_query_selects_records_and_counts_them(experiment: Any) -> None:
    found = experiment.search(SEED_QUERY, limit=5)
    wanted = _expected(lambda n: n % 10 >= 5 and n % 7 != 0 and n % 3 != 0)
    assert found.total == len(wanted) and found.of == 60
    assert [item["idx"] for item in found.items] == wanted[:5]
    item = found.items[0]
    assert item["runs"] == 2 and item["failed_runs"] == 0
    assert item["aggregates"]["@multi_run_mode.@evaluations.custom.tone"] == "positive"
    rest = experiment.search(SEED_QUERY, limit=50, offset=5)
    assert [item["idx"] for item in rest.items] == wanted[5:]
    assert rest.total == len(wanted)


def test_or_not_and_nesting_are_set_operations(experiment: Any) -> None:
    query = (
        "(@multi_run_avg.@evaluations.custom.score:<0.2 OR "
        "@multi_run_mode.@evaluations.custom.tone:negative) "
        "-@multi_run_avg.@evaluations.custom.score:0"
    )
    found = experiment.search(query, limit=100)
    wanted = _expected(lambda n: (n % 10 < 2 or (n % 3 == 0 and n % 7 != 0)) and n % 10 != 0)
    assert [item["idx"] for item in found.items] == wanted
    assert found.total == len(wanted)


def test_a_label_too_long_for_the_mode_index_is_still_found(experiment: Any) -> None:
    assert len(LONG_LABEL) > MODE_INDEX_LENGTH
    wanted = _expected(lambda n: n % 7 == 0)
    quoted = '"' + LONG_LABEL.replace('"', '\\"') + '"'
    found = experiment.search(f"@multi_run_mode.@evaluations.custom.tone:{quoted}", limit=100)
    assert [item["idx"] for item in found.items] == wanted
    prefix = experiment.search("@multi_run_mode.@evaluations.custom.tone:positive,*", limit=100)
    assert [item["idx"] for item in prefix.items] == wanted


def test_record_level_terms_meet_aggregate_terms(experiment: Any) -> None:
    found = experiment.search(
        "@multi_run_avg.@evaluations.custom.score:>=0.9 @meta.input.n:>30", limit=100
    )
    assert [item["idx"] for item in found.items] == _expected(lambda n: n % 10 == 9 and n > 30)


def _plan(backend: SqlBackend, experiment_id: str, query: str) -> str:
    info = backend.get_experiment(experiment_id)
    with backend.engine.connect() as connection:
        resolved = resolve(query, load_catalog(connection, experiment_id))
        compiler = QueryCompiler(
            dialect="sqlite",
            experiment_id=experiment_id,
            runs={run.run_id: run.run_iteration for run in info.runs},
            query_text=query,
        )
        statement = select(compiler.records(resolved.node).subquery())
        compiled = statement.compile(connection)
        rows = connection.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {compiled}", tuple(compiled.params.values())
        ).all()
    return "\n".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_seed_query_reads_one_index_range_and_probes_the_other(experiment: Any) -> None:
    """The equality leaf is one range of the mode index, in page order; each of its
    records is tested against the average by one look-up of the probe index; an AND of
    ranges alone intersects one covering range per leaf."""
    backend = open_backend()
    assert isinstance(backend, SqlBackend)
    try:
        backend.refresh_aggregates(experiment.id, only_if_stale=True)
        seed = _plan(backend, experiment.id, SEED_QUERY)
        ranges = _plan(
            backend,
            experiment.id,
            "@multi_run_avg.@evaluations.custom.score:>=0.5 @multi_run_avg.@duration:>0",
        )
    finally:
        backend.close()
    assert "COVERING INDEX ix_record_aggregates_mode (experiment_id=? AND facet=? AND mode=?)" in (
        seed
    ), seed
    probe = "ix_record_aggregates_probe (experiment_id=? AND facet=? AND idx=? AND mean>?)"
    assert "COVERING INDEX " + probe in seed, seed
    assert ranges.count("COVERING INDEX ix_record_aggregates_mean") == 2, ranges
    # No table is read whole: the only scan is of the compound's own result.
    for plan in (seed, ranges):
        assert all(line == "SCAN anon_1" for line in plan.splitlines() if "SCAN" in line), plan


def test_records_that_share_a_position_are_told_apart(experiment: Any) -> None:
    """Records outside a dataset's version share one position (``idx``): the look-up that
    tests a record against the other terms of an AND must still find its own row."""
    from sqlalchemy import delete, update

    from assay.store.sql.tables import aggregate_state, spans

    backend = open_backend()
    assert isinstance(backend, SqlBackend)
    try:
        with backend.engine.begin() as connection:
            connection.execute(
                update(spans).where(spans.c.experiment_id == experiment.id).values(idx=0)
            )
            # Derived from the rows: the next search rebuilds them, with every idx 0.
            connection.execute(
                delete(aggregate_state).where(aggregate_state.c.experiment_id == experiment.id)
            )
    finally:
        backend.close()
    found = experiment.search(SEED_QUERY, limit=100)
    wanted = _expected(lambda n: n % 10 >= 5 and n % 7 != 0 and n % 3 != 0)
    assert found.total == len(wanted)
    assert {item["idx"] for item in found.items} == {0}
    assert sorted(item["input"]["n"] for item in found.items) == wanted


def test_reads_of_an_unknown_experiment_are_not_found(backend: SqlBackend) -> None:
    from assay.errors import ExperimentNotFoundError

    with pytest.raises(ExperimentNotFoundError, match="No experiment with id 'nope'"):
        backend.record_aggregates("nope")
    for read in (
        backend.refresh_aggregates,
        backend.experiment_rows,
        backend.count_rows,
        backend.summary_evaluations,
    ):
        with pytest.raises(ExperimentNotFoundError):
            read("nope")
