"""A search's total counted beside its page (``assay.store.sql.side_count``), on SQLite and
PostgreSQL: the same totals as counted inline, from many searching threads at once, and
inline where no second connection can see the store."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from assay import LLMObs
from assay.store.sql.backend import SqlBackend
from assay.store.sql.side_count import SideCounter, settled
from assay.store.sql.tables import spans

QUERIES = [
    "run_iteration:1 @trace.total_tokens:>1000",  # by token counts
    "@trace.total_tokens:>1000",
    "run_iteration:2 @evaluations.custom.random_evaluator:>0.5",  # by buckets
    "@evaluations.custom.random_evaluator:>0.5 -@evaluations.custom.exact_match:true",
    "@status:ok",  # the page first, then the count
]


@pytest.fixture
def experiment(llmobs: type[LLMObs]) -> Any:
    """400 records x 2 runs of the benchmarks' synthetic rows."""
    import sys
    from pathlib import Path

    from assay.experiment import pulled_experiment

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from query import synthetic_experiment, synthetic_rows

    backend = llmobs._backend
    assert isinstance(backend, SqlBackend)
    info, ids, runs = synthetic_experiment(backend, "counted", 400, 2, project="p")
    backend.write_rows(list(synthetic_rows(info.id, ids, runs)))
    return pulled_experiment(backend, backend.get_experiment(info.id))


@pytest.mark.parametrize("value_counts", [True, False], ids=["value-counts", "walk"])
def test_totals_beside_the_page_equal_totals_counted_inline(
    llmobs: type[LLMObs], experiment: Any, value_counts: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Token and score queries are counted from the runs' counts by value and by bucket;
    where those are behind (``walk``), from their indexes, beside the page."""
    from assay.store.sql import search

    if not value_counts:
        monkeypatch.setattr(search, "count_by_tokens", lambda *arguments: None)
        monkeypatch.setattr(search, "count_by_scores", lambda *arguments: None)
    backend = llmobs._backend
    assert isinstance(backend, SqlBackend)
    side = SideCounter(threads=2)  # beside, whatever this machine's cores
    inline = SideCounter(threads=1)
    try:
        for query in QUERIES:
            for limit, offset in ((50, 0), (7, 300), (50, 10_000)):
                backend._counter = side
                beside = experiment.search(query, limit=limit, offset=offset)
                backend._counter = inline
                counted = experiment.search(query, limit=limit, offset=offset)
                assert (beside.total, beside.items) == (counted.total, counted.items), query
                assert beside.total > 0, query
    finally:
        side.close()


def test_many_threads_search_at_once_and_each_gets_its_total(
    llmobs: type[LLMObs], experiment: Any
) -> None:
    """More searches at once than counting threads (and than the main pool's connections):
    counts queue on their own engine, never for a connection a waiting search holds."""
    backend = llmobs._backend
    assert isinstance(backend, SqlBackend)
    backend._counter.threads = 2
    wanted = {query: experiment.search(query).total for query in QUERIES}
    with ThreadPoolExecutor(24) as pool:
        found = list(pool.map(lambda n: experiment.search(QUERIES[n % 5]).total, range(240)))
    assert found == [wanted[QUERIES[n % 5]] for n in range(240)]


def test_a_count_runs_in_a_thread_of_its_own_until_the_counter_is_closed(
    llmobs: type[LLMObs], experiment: Any
) -> None:
    backend = llmobs._backend
    assert isinstance(backend, SqlBackend)
    statement = select(func.count()).select_from(spans).where(spans.c.parent_id.is_(None))
    counter = SideCounter(threads=2)
    threads: list[str] = []
    with backend.engine.connect() as connection:
        total = counter.count(connection, statement)
        assert isinstance(total, Future) and settled(total) == 800
        counter._executor.submit(  # type: ignore[union-attr]
            lambda: threads.append(threading.current_thread().name)
        ).result()
        assert threads[0].startswith("assay-count")
        # Shut down by a close() that raced this count's start: counted here instead.
        counter._executor.shutdown()  # type: ignore[union-attr]
        assert counter.count(connection, statement) == 800
        counter.close()
        assert counter.count(connection, statement) == 800  # inline once closed
        assert SideCounter(threads=1).count(connection, statement) == 800


def test_an_in_memory_store_counts_inline() -> None:
    """One connection holds an in-memory SQLite store: another would see an empty one."""
    backend = SqlBackend("sqlite://")
    statement = select(func.count()).select_from(spans)
    counter = SideCounter(threads=2)
    try:
        with backend.engine.connect() as connection:
            assert counter.count(connection, statement) == 0
        assert counter._executor is None
    finally:
        counter.close()
        backend.close()


def test_a_forked_child_counts_on_threads_of_its_own(llmobs: type[LLMObs], experiment: Any) -> None:
    """A child forked after the parent's counts started has the parent's executor but not
    its threads: a count submitted to it would never start. The child makes its own."""
    import multiprocessing

    backend = llmobs._backend
    assert isinstance(backend, SqlBackend)
    if backend.engine.dialect.name != "sqlite":
        pytest.skip("forking a process with open PostgreSQL connections shares their sockets")
    backend._counter.threads = 2
    query = QUERIES[4]
    wanted = experiment.search(query).total  # the parent's threads and engine exist now
    assert backend._counter._executor is not None

    def child(results: Any) -> None:
        results.put(experiment.search(query).total)

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    process = context.Process(target=child, args=(results,), daemon=True)
    process.start()
    process.join(timeout=60)
    if process.exitcode is None:
        process.kill()  # it hangs: the count it waits for was never started
    assert process.exitcode == 0, "the child's search did not finish"
    assert results.get(timeout=5) == wanted
    assert experiment.search(query).total == wanted  # the parent's counts still run
