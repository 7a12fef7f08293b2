"""Search in the store: golden queries, and the SQL compiler against the reference evaluator.

A random experiment (nested JSON inputs, tags, errors, NaN, tokens, every metric type) is
stored once per store; hundreds of random queries then select exactly what the plain-Python
evaluator of :mod:`assay.query.evaluate` selects, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay import LLMObs, QueryError, current_row
from assay.query import evaluate, resolve
from assay.store import open_backend
from backends import on_every_backend

WORDS = ["alpha", "beta", "gamma", "delta", "paris", "rome"]


def make_records(rng: random.Random, count: int) -> list[dict[str, Any]]:
    records = []
    for index in range(count):
        records.append(
            {
                "input_data": {
                    "question": f"{rng.choice(WORDS)} {rng.choice(WORDS)} {index}",
                    "level": rng.randint(1, 5),
                    "topics": rng.sample(WORDS, rng.randint(0, 3)),
                    "nested": {"flag": rng.random() < 0.5, "code": rng.choice(["a1", "b2", None])},
                },
                "expected_output": rng.choice([rng.choice(WORDS), rng.randint(0, 9), None]),
                "metadata": {"difficulty": rng.choice(["easy", "hard"]), "weight": rng.random()},
                "tags": [f"team:{rng.choice(['red', 'blue'])}", f"size:{rng.randint(1, 20)}"],
            }
        )
    return records


def task(input_data: Any, config: Any) -> Any:
    row = current_row()
    assert row is not None
    rng = random.Random(f"{input_data['question']}:{row.run_iteration}")
    if rng.random() < 0.1:
        raise ValueError("task failed")
    with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai"):
        if rng.random() < 0.7:
            LLMObs.annotate(metrics={"input_tokens": rng.randint(1, 900), "output_tokens": 10})
    return rng.choice(
        [rng.choice(WORDS), {"answer": rng.choice(WORDS), "score": rng.randint(0, 3)}, rng.random()]
    )


def score(input_data: Any, output_data: Any, expected_output: Any) -> Any:
    if output_data is None:
        return None
    value = random.Random(str(output_data)).random()
    if value > 0.95:
        raise RuntimeError("judge failed")
    return math.nan if value < 0.03 else round(value, 2)


def passed(input_data: Any, output_data: Any, expected_output: Any) -> Any:
    return isinstance(output_data, str) and output_data in ("alpha", "beta", "paris")


def tone(input_data: Any, output_data: Any, expected_output: Any) -> Any:
    if output_data is None:
        return None
    return ["positive", "negative", "neutral"][len(str(output_data)) % 3]


@pytest.fixture
def searched(llmobs: type[LLMObs]) -> Any:
    rng = random.Random(11)
    dataset = llmobs.create_dataset(dataset_name="search", records=make_records(rng, 40))
    experiment = llmobs.experiment("search", task, dataset, [score, passed, tone], runs=3)
    experiment.run(jobs=4)
    backend = open_backend()
    try:
        stored = backend.experiment_rows(experiment.id or "")
    finally:
        backend.close()
    runs = {run.run_iteration: run.run_id for run in experiment.info.runs}
    rows = [
        {
            "record_id": row.record_id,
            "run_iteration": row.run_iteration,
            "run_id": runs[row.run_iteration],
            "input": row.input_data,
            "output": row.output,
            "expected_output": row.expected_output,
            "metadata": row.record_metadata,
            "tags": row.tags,
            "status": row.status,
            "error_type": row.error.type if row.error else None,
            "duration": row.duration_ns,
            "total_tokens": row.rollup.total_tokens if row.rollup else None,
            "input_tokens": row.rollup.input_tokens if row.rollup else None,
            "output_tokens": row.rollup.output_tokens if row.rollup else None,
            "estimated_total_cost": row.rollup.estimated_total_cost if row.rollup else None,
            "evaluations": {e.label: (None if e.error else e.value) for e in row.evaluations},
        }
        for row in stored
    ]
    return experiment, rows


@pytest.fixture
def sql_url(store_url: str, request: pytest.FixtureRequest) -> str:
    """The SQL store the searches read: ``store_url``, or the Assay server's own store."""
    if store_url.startswith("http"):
        return str(request.getfixturevalue("assay_server").backend.url)
    return store_url


def expected(sql_url: str, experiment: Any, rows: list[Any], query: str) -> set[Any]:
    from assay.store.sql.backend import SqlBackend
    from assay.store.sql.search import load_catalog

    backend = SqlBackend(sql_url)
    try:
        backend.refresh_aggregates(experiment.id, only_if_stale=True)
        with backend.engine.connect() as connection:  # type: ignore[attr-defined]
            catalog = load_catalog(connection, experiment.id)
    finally:
        backend.close()
    resolved = resolve(query, catalog)
    if resolved.multi_run:
        return {r["record_id"] for r in evaluate(resolved, rows)}
    return {(r["record_id"], r["run_iteration"]) for r in evaluate(resolved, rows)}


def found(experiment: Any, query: str) -> set[Any]:
    page = experiment.search(query, limit=100_000)
    assert page.total == len(page.items)
    if page.multi_run:
        return {item["record_id"] for item in page.items}
    return {(item["record_id"], item["run_iteration"]) for item in page.items}


LEAVES = [
    "@evaluations.custom.score:>0.5",
    "@evaluations.custom.score:[0.2 TO 0.6]",
    "@evaluations.custom.score:<=0.3",
    "@evaluations.custom.score:*",
    "@evaluations.custom.passed:true",
    "@evaluations.custom.passed:false",
    "@evaluations.custom.tone:positive",
    "@evaluations.custom.tone:neg*",
    "@evaluation.tone.value:(neutral OR positive)",
    "@trace.total_tokens:>400",
    "@trace.input_tokens:[100 TO 600]",
    "@trace.estimated_total_cost:>0",
    "@trace.total_tokens:*",
    "@duration:>1ms",
    "@duration:<1s",
    "@status:error",
    "@status:ok",
    "@meta.error.type:builtins.ValueError",
    "@meta.error.type:*",
    "@meta.input.level:>=3",
    "@meta.input.level:2",
    "@meta.input.topics:paris",
    "@meta.input.topics:r*",
    "@meta.input.nested.flag:true",
    "@meta.input.nested.code:a1",
    "@meta.input.nested.code:*",
    "@meta.input.question:*alpha*",
    "@meta.output:paris",
    "@meta.output.answer:beta",
    "@meta.output.score:>=2",
    "@meta.output:>0.5",
    "@meta.expected_output:rome",
    "@meta.expected_output:>4",
    "@meta.metadata.difficulty:hard",
    "@meta.metadata.weight:>0.5",
    "team:red",
    "size:>10",
    "size:[3 TO 7]",
    "team:b*",
    "team:*",
    "run_iteration:2",
    "run_iteration:>=2",
    "paris",
    '"alpha beta"',
    "gam*",
    "ROME",
]
MULTI_LEAVES = [
    "@multi_run_avg.@evaluations.custom.score:>0.5",
    "@multi_run_avg.@evaluations.custom.passed:>=0.5",
    "@multi_run_mode.@evaluations.custom.passed:true",
    "@multi_run_mode.@evaluations.custom.tone:positive",
    "@multi_run_mode.@evaluations.custom.tone:*tral",
    "@multi_run_avg.@trace.total_tokens:>300",
    "@multi_run_avg.@duration:>1ms",
    "@multi_run_mode.@status:error",
    "@multi_run_avg.@evaluations.custom.score:*",
    "team:blue",
    "size:<8",
    "@meta.input.level:>=3",
    "@meta.metadata.difficulty:easy",
    "alpha",
]


def random_query(rng: random.Random, leaves: list[str], depth: int = 0) -> str:
    shape = rng.random()
    if depth >= 2 or shape < 0.4:
        leaf = rng.choice(leaves)
        return f"-{leaf}" if rng.random() < 0.2 else leaf
    left = random_query(rng, leaves, depth + 1)
    right = random_query(rng, leaves, depth + 1)
    if shape < 0.7:
        return f"{left} {right}"
    if shape < 0.9:
        return f"({left} OR {right})"
    return f"NOT ({left} {right})"


@on_every_backend
def test_every_facet_alone_matches_the_reference(searched: Any, sql_url: str) -> None:
    experiment, rows = searched
    for query in LEAVES + MULTI_LEAVES[:9] + [""]:
        assert found(experiment, query) == expected(sql_url, experiment, rows, query), query
        negated = f"-{query}" if query else ""
        if negated and not query.startswith(("@multi_run", "paris", '"', "gam", "ROME", "alpha")):
            wanted = expected(sql_url, experiment, rows, negated)
            assert found(experiment, negated) == wanted, negated


def test_random_queries_match_the_reference(searched: Any, sql_url: str) -> None:
    experiment, rows = searched
    rng = random.Random(5)
    for _ in range(150):
        query = random_query(rng, LEAVES)
        assert found(experiment, query) == expected(sql_url, experiment, rows, query), query
    for _ in range(100):
        query = random_query(rng, MULTI_LEAVES)
        if not any(term.startswith("@multi_run") for term in query.replace("(", " ").split()):
            continue
        assert found(experiment, query) == expected(sql_url, experiment, rows, query), query


@on_every_backend
def test_pages_counts_sorting_and_runs(searched: Any) -> None:
    experiment, _ = searched
    everything = experiment.search("", limit=1000)
    assert everything.total == everything.of == 120 and len(everything.items) == 120
    page = experiment.search("", limit=7, offset=14)
    assert [item["span_id"] for item in page.items] == [
        item["span_id"] for item in everything.items[14:21]
    ]
    assert page.total == 120
    # The last, short page and a page past the end count everything too.
    last = experiment.search("", limit=50, offset=100)
    assert (last.total, len(last.items)) == (120, 20)
    beyond = experiment.search("", limit=50, offset=500)
    assert (beyond.total, beyond.items) == (120, [])
    run2 = experiment.search("@status:ok", run=2, limit=1000)
    assert {item["run_iteration"] for item in run2.items} == {2}
    assert run2.of == 40
    slowest = experiment.search("", sort="-duration", limit=5)
    durations = [item["duration"] for item in slowest.items]
    assert durations == sorted(durations, reverse=True)
    records = experiment.search(
        "@multi_run_avg.@evaluations.custom.score:*",
        sort="-@multi_run_avg.@evaluations.custom.score",
        limit=1000,
    )
    means = [
        item["aggregates"]["@multi_run_avg.@evaluations.custom.score"] for item in records.items
    ]
    assert means == sorted(means, reverse=True)
    assert records.of == 40 and records.multi_run


EVALUATION_QUERIES = [
    "@evaluations.custom.score:>0.5",
    "-@evaluations.custom.passed:true",
    "@evaluations.custom.tone:positive @trace.total_tokens:>400",
    "@evaluations.custom.passed:false OR @trace.total_tokens:<300",
    "NOT (@evaluations.custom.score:<=0.3 OR @evaluations.custom.tone:neg*)",
    "@evaluation.tone.value:(neutral OR positive) -@status:error",
]


TOKEN_QUERIES = [
    "@trace.total_tokens:>1000",
    "@trace.total_tokens:[200 TO 900] -@status:error",
    "@trace.total_tokens:<300 OR @evaluations.custom.score:>0.9",
]


@on_every_backend
@pytest.mark.parametrize("walk_rows", [0, 1_000_000], ids=["sorted-set", "read-in-order"])
def test_evaluation_queries_in_one_run_page_by_either_path(
    searched: Any, sql_url: str, walk_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row queries with evaluation terms are sets of index ranges (narrowed to the run the
    query names, a NOT's complement included); their pages are read in order where matches
    are dense and sorted from the set where sparse. Both give the reference's rows, in page
    order, with the same count."""
    pages_match_the_reference(searched, sql_url, walk_rows, monkeypatch, EVALUATION_QUERIES)


@on_every_backend
@pytest.mark.parametrize("walk_rows", [0, 1_000_000], ids=["sorted-set", "read-in-order"])
def test_token_queries_count_first_and_page_by_either_path(
    searched: Any, sql_url: str, walk_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row query on total tokens is counted first (one range of the token index); its
    page walks the rows in page order where matches are dense and sorts the matches the
    token index finds where they are sparse."""
    pages_match_the_reference(searched, sql_url, walk_rows, monkeypatch, TOKEN_QUERIES)


def pages_match_the_reference(
    searched: Any,
    sql_url: str,
    walk_rows: int,
    monkeypatch: pytest.MonkeyPatch,
    queries: list[str],
) -> None:
    from assay.store.sql import search

    monkeypatch.setattr(search, "_WALK_ROWS", walk_rows)
    experiment, rows = searched
    for query in queries:
        for scoped, run in ((f"run_iteration:2 {query}", None), (query, 3), (query, None)):
            wanted = expected(sql_url, experiment, rows, scoped)
            if run is not None:
                wanted = {key for key in wanted if key[1] == run}
            everything = experiment.search(scoped, run=run, limit=1000)
            got = [(item["record_id"], item["run_iteration"]) for item in everything.items]
            assert set(got) == wanted and everything.total == len(wanted), (scoped, run)
            order = [(item["run_iteration"], item["idx"]) for item in everything.items]
            assert order == sorted(order), (scoped, run)  # page order
            pages = [experiment.search(scoped, run=run, limit=4, offset=n) for n in (0, 4, 8)]
            assert [page.total for page in pages] == [len(wanted)] * 3
            paged = [(i["record_id"], i["run_iteration"]) for p in pages for i in p.items]
            assert paged == got[:12], (scoped, run)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("@evaluations.custom.scor:>1", "did you mean '@evaluations.custom.score'"),
        ("@evaluations.custom.tone:>1", "categorical"),
        (
            "@multi_run_avg.@trace.total_tokens:>1000 @trace.estimated_total_cost:>0.01",
            "Cannot combine",
        ),
        ("(unclosed", "position"),
    ],
)
@on_every_backend
def test_bad_queries_are_query_errors(searched: Any, query: str, message: str) -> None:
    experiment, _ = searched
    with pytest.raises(QueryError, match=message):
        experiment.search(query)


@on_every_backend
def test_run_and_sort_mistakes_are_query_errors(searched: Any) -> None:
    experiment, _ = searched
    with pytest.raises(QueryError, match="no run 9"):
        experiment.search("", run=9)
    with pytest.raises(QueryError, match="drop run="):
        experiment.search("@multi_run_avg.@duration:>1", run=1)
    with pytest.raises(QueryError, match="Cannot sort by 'colour'"):
        experiment.search("", sort="colour")


@on_every_backend
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.text(max_size=40))
def test_random_strings_raise_nothing_but_query_errors(searched: Any, text: str) -> None:
    experiment, _ = searched
    with contextlib.suppress(QueryError):
        experiment.search(text, limit=5)


@on_every_backend
def test_sorting_records_by_an_unknown_label_is_an_error(searched: Any) -> None:
    experiment, _ = searched
    with pytest.raises(QueryError, match="Cannot sort records by"):
        experiment.search(
            "@multi_run_avg.@duration:>0", sort="-@multi_run_avg.@evaluations.custom.nope"
        )


def test_a_runs_row_count_is_read_from_its_totals_only_while_they_cover_every_row(
    llmobs: type[LLMObs], store_url: str
) -> None:
    """The "of M" of a run's search: one look-up of the per-run totals while they are up to
    date, a count of the run's rows once rows were added or reopened since their refresh."""
    from sqlalchemy import select

    from assay.store.sql.aggregates import reopen_rows
    from assay.store.sql.backend import SqlBackend
    from assay.store.sql.search import _RUN_ROWS, rows_in_run
    from assay.store.sql.tables import spans

    dataset = llmobs.create_dataset(dataset_name="d", records=[{"input_data": i} for i in range(6)])
    experiment = llmobs.experiment("counted", task, dataset, [passed], runs=2)
    experiment.run(jobs=2)
    assert experiment.id is not None
    page = experiment.search("@status:ok", run=1)  # refreshes the aggregates
    assert page.of == 6
    backend = SqlBackend(store_url)

    def totals() -> int | None:
        with backend.engine.connect() as connection:
            found = connection.execute(_RUN_ROWS, {"experiment_id": experiment.id, "run": 1})
            return found.scalar_one()

    def counted() -> int:
        with backend.engine.connect() as connection:
            return rows_in_run(connection, experiment.id or "", 1)

    try:
        assert totals() == 6 and counted() == 6  # up to date: read off the totals
        with backend.engine.begin() as connection:
            first = connection.execute(
                select(spans.c.pk).where(spans.c.experiment_id == experiment.id).limit(1)
            ).scalar_one()
            reopen_rows(connection, experiment.id, first)
        assert totals() is None and counted() == 6  # reopened: counted
        assert experiment.search("@status:ok", run=1).of == 6  # refreshed again
        assert totals() == 6
        # A row added since the refresh: the totals no longer cover every row.
        row = backend.experiment_rows(experiment.id)[0]
        extra = dataclasses.replace(
            row, run_iteration=1, record_id="extra", span_id="extra-row", idx=99, evaluations=[]
        )
        backend.write_rows([extra])
        assert totals() is None and counted() == 7
    finally:
        backend.close()


def test_a_page_larger_than_an_in_list_holds_every_item_in_order(llmobs: type[LLMObs]) -> None:
    """A page's items are read by their keys ``KEYS_AT_ONCE`` at a time (a page of 70,000
    rows named in one ``IN`` list would exceed PostgreSQL's 65,535 parameters): a page of
    1,200 rows, or of 1,200 records, read in three parts, comes back whole and in page
    order, with every evaluation."""
    import sys
    from pathlib import Path

    from assay.experiment import pulled_experiment
    from assay.store.sql.bulk import KEYS_AT_ONCE

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from query import synthetic_experiment, synthetic_rows

    backend = llmobs._backend
    assert backend is not None
    records = 1_200
    assert records > 2 * KEYS_AT_ONCE
    info, ids, runs = synthetic_experiment(backend, "big-page", records, 1, project="p")
    backend.write_rows(list(synthetic_rows(info.id, ids, runs)))
    experiment = pulled_experiment(backend, backend.get_experiment(info.id))

    rows = experiment.search("", limit=records)
    pages = [experiment.search("", limit=100, offset=n).items for n in range(0, records, 100)]
    assert len(rows.items) == records
    assert rows.items == [item for page in pages for item in page]
    assert [item["idx"] for item in rows.items] == list(range(records))
    assert all(len(item["evaluations"]) == 3 for item in rows.items)

    query = "@multi_run_avg.@evaluations.custom.random_evaluator:*"
    everyone = experiment.search(query, limit=records)
    assert [item["record_id"] for item in everyone.items] == ids
    assert all(item["input"] == {"n": item["idx"]} for item in everyone.items)
    assert all(item["runs"] == 1 and item["aggregates"] for item in everyone.items)
