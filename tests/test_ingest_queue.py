"""A server with an ingest queue (``--ingest-queue``): posts answered from the journal.

Such a server answers ddtrace's two posts once they are in the store's journal, and
writes them later, many at once. These tests check, on SQLite and PostgreSQL, that what it
stores is what a server that writes each post before answering stores; that its own API
reads every post it answered; that nothing is in the journal and written at once, or in
neither; and that what a stopped server left in the journal is written at the next start.
A killed server is tested in ``test_server_kill.py``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from assay.server import create_app
from assay.server.dependencies import ingest_writer
from assay.server.lane import decode
from assay.store.sql.backend import SqlBackend
from assay.store.sql.ingest import EventBatch, IncomingSpan, IngestWriter, JournalEntry
from assay.store.sql.ingest import journal as ingest_journal
from assay.store.sql.tables import ingest_journal as journal_table
from assay.store.sql.tables import posted_evaluations
from test_server_ingest import (
    API,
    call,
    child_span,
    metric,
    post_metrics,
    post_spans,
    root_span,
    setup_experiment,
)


@pytest.fixture
def queued(backend: SqlBackend) -> Iterator[TestClient]:
    with TestClient(create_app(backend=backend, ingest_queue=True)) as test_client:
        yield test_client


def journal_of(backend: SqlBackend) -> Engine:
    """The store's journal: a file beside a SQLite store, a table of a PostgreSQL one."""
    engine = ingest_journal.open_journal(backend.engine, create=True)
    assert engine is not None
    return engine


def journaled(backend: SqlBackend) -> int:
    with journal_of(backend).connect() as connection:
        return int(connection.execute(select(func.count()).select_from(journal_table)).scalar())


def scenario(client: TestClient, experiment_id: str, records: list[str]) -> None:
    """Posts in the orders ddtrace sends them, and in worse ones."""
    first, second, third = records[:3]
    # Metrics before their span (ddtrace's usual order), then the span.
    post_metrics(client, experiment_id, [metric("11", "exact", True), metric("11", "score", 0.4)])
    post_spans(client, root_span(experiment_id, first, 1, "11", metrics={"total_tokens": 7}))
    # The span before its metrics.
    post_spans(client, root_span(experiment_id, second, 1, "12"))
    post_metrics(client, experiment_id, [metric("12", "exact", False), metric("12", "tone", "ok")])
    # A re-posted span and metric, a later metric replacing one, an earlier one that does not.
    post_spans(client, root_span(experiment_id, second, 1, "12"))
    post_metrics(client, experiment_id, [metric("12", "exact", False)])
    post_metrics(client, experiment_id, [metric("11", "score", 0.9, timestamp_ms=2000)])
    post_metrics(client, experiment_id, [metric("11", "score", 0.1, timestamp_ms=1500)])
    # A child whose tokens roll up onto its root, which comes after it; a task error.
    trace = "f" * 32
    post_spans(client, child_span(experiment_id, 2, "31", "21", trace_id=trace))
    error = {"type": "ValueError", "message": "bad", "stack": "..."}
    post_spans(client, root_span(experiment_id, third, 2, "21", trace_id=trace, error=error))
    post_metrics(client, experiment_id, [metric("21", "exact", True)], run=2, run_id=None)
    # Summary metrics of both runs; spans of an experiment nobody has.
    for run in (1, 2):
        summary = metric("", "num_exact", run * 10, summary=True, timestamp_ms=run)
        post_metrics(client, experiment_id, [summary], run=run)
    post_spans(client, root_span("no-such-experiment", first, 1, "99"))
    # A metric whose span never comes: it stays pending.
    post_metrics(client, experiment_id, [metric("77", "exact", True)])


def stored(backend: SqlBackend, experiment_id: str) -> dict[str, Any]:
    """What the experiment holds, without the ids a server makes up."""
    rows = {
        (row.run_iteration, row.record_id): (
            row.span_id,
            row.status,
            row.rollup,
            row.error.type if row.error else None,
            sorted((e.label, json.dumps(e.value), e.timestamp_ms) for e in row.evaluations),
        )
        for row in backend.experiment_rows(experiment_id, with_spans=True)
    }
    summaries = sorted(
        (s.run_iteration, s.evaluation.label, s.evaluation.value)
        for s in backend.summary_evaluations(experiment_id)
    )
    return {"rows": rows, "summaries": summaries, "count": backend.count_rows(experiment_id)}


def test_a_queue_stores_what_writing_each_post_stores(
    backend: SqlBackend, queued: TestClient
) -> None:
    with TestClient(create_app(backend=backend)) as direct:
        direct_id, records = setup_experiment(direct, run_count=2, records=3)
        scenario(direct, direct_id, records)
    info = backend.get_experiment(direct_id)
    attributes = {
        "name": "queued",
        "project_id": info.project_id,
        "dataset_id": info.dataset_id,
        "run_count": 2,
    }
    answer = call(queued, "POST", f"{API}/experiments", {"data": {"attributes": attributes}})
    queued_id = answer["data"]["id"]
    scenario(queued, queued_id, records)
    ingest_writer(backend).flush().result(timeout=60)
    assert journaled(backend) == 0
    expected = stored(backend, direct_id)
    assert expected["rows"][1, records[0]][4] == [
        ("exact", "true", 1000),
        ("score", "0.9", 2000),
    ]
    assert stored(backend, queued_id) == expected
    # The metric whose span never came waits, as it does when written at once.
    pending = call(queued, "GET", f"{API}/experiments/{queued_id}")
    assert pending["data"]["id"] == queued_id


def test_the_answer_counts_what_the_post_brought(backend: SqlBackend, queued: TestClient) -> None:
    experiment_id, records = setup_experiment(queued)
    writer = ingest_writer(backend)
    with writer_paused(writer):
        answer = post_metrics(queued, experiment_id, [metric("1", "a", 1), metric("1", "b", 2)])
        assert answer["data"]["attributes"]["queued"] == 2
        assert answer["data"]["attributes"]["evaluations"] == 0
        spans = post_spans(
            queued,
            root_span(experiment_id, records[0], 1, "1"),
            root_span("no-such-experiment", records[0], 1, "2"),
        )
        assert spans["meta"] == {
            "spans": 2,
            "stored": 0,
            "duplicates": 0,
            "ignored": 1,
            "queued": 1,
        }
        assert journaled(backend) == 2
        assert backend.experiment_rows(experiment_id) == []
    # Bad input is refused before it is journaled, as without a queue.
    post_metrics(queued, experiment_id, [metric("1", "a", 1)], run=9, expect=422)
    call(queued, "POST", f"{API}/experiments/nope/events", {"data": {"attributes": {}}}, 404)


@contextmanager
def writer_paused(writer: IngestWriter) -> Iterator[None]:
    """Holds a writer's queued posts unwritten (as if more posts kept coming), so that a
    test can look at them in the journal; writes them at the end."""
    saved = (writer.apply_at, writer.linger)
    writer.apply_at, writer.linger = 10**9, 3600.0
    try:
        yield
    finally:
        writer.apply_at, writer.linger = saved
        writer.flush().result(timeout=60)


def test_every_other_request_waits_for_the_posts_answered_before_it(
    backend: SqlBackend, queued: TestClient
) -> None:
    experiment_id, records = setup_experiment(queued)
    with writer_paused(ingest_writer(backend)):
        post_metrics(queued, experiment_id, [metric("5", "score", 0.5)])
        post_spans(queued, root_span(experiment_id, records[0], 1, "5"))
        assert journaled(backend) == 2
        # A read through the API sees both: it waits until they are written.
        events = call(
            queued,
            "GET",
            f"{API}/experiments/{experiment_id}/events",
            None,
        )["data"]["attributes"]["spans"]
        assert [span["span_id"] for span in events] == ["5"]
        assert journaled(backend) == 0
        # So does a change (here: a new project), which comes after them.
        post_metrics(queued, experiment_id, [metric("5", "other", 1)])
        assert journaled(backend) == 1
        call(queued, "POST", f"{API}/projects", {"data": {"attributes": {"name": "later"}}})
        assert journaled(backend) == 0


def test_posts_left_in_the_journal_are_written_at_the_next_start(backend: SqlBackend) -> None:
    with TestClient(create_app(backend=backend)) as client:
        experiment_id, records = setup_experiment(client)
    events = {
        "data": {
            "type": "experiments",
            "attributes": {
                "metrics": [metric("7", "score", 0.7)],
                "tags": [f"experiment_id:{experiment_id}", "run_iteration:1"],
            },
        }
    }
    spans = [{"event_type": "span", "spans": [root_span(experiment_id, records[0], 1, "7")]}]
    # What a killed server leaves: posts in the journal, nothing written.
    with journal_of(backend).begin() as connection:
        ingest_journal.append(
            connection,
            [
                JournalEntry("events", experiment_id, json.dumps(events).encode()),
                JournalEntry("spans", "", json.dumps(spans).encode()),
                JournalEntry("events", "gone", json.dumps(events).encode()),
                JournalEntry("spans", "", b"{not json"),
            ],
        )
    with TestClient(create_app(backend=backend)) as client:
        [row] = backend.experiment_rows(experiment_id)
        assert [(e.label, e.value) for e in row.evaluations] == [("score", 0.7)]
        # The post no store can read again stays, with why; the one of a gone experiment
        # is dropped, as the span intake drops spans of unknown experiments.
        with journal_of(backend).connect() as connection:
            [(kind, error)] = connection.execute(
                select(journal_table.c.kind, journal_table.c.error)
            ).all()
        assert kind == "spans"
        assert error is not None and "ValidationError" in error
        # Written again by a later start (here: the same post, already stored), no duplicate.
        call(client, "GET", f"{API}/experiments/{experiment_id}")
    with journal_of(backend).begin() as connection:
        ingest_journal.append(connection, [JournalEntry("spans", "", json.dumps(spans).encode())])
    with TestClient(create_app(backend=backend, ingest_queue=True)):
        assert len(backend.experiment_rows(experiment_id)) == 1
        assert journaled(backend) == 1  # only the unreadable one


def test_a_post_that_cannot_be_written_stays_in_the_journal_with_its_error(
    backend: SqlBackend,
) -> None:
    with TestClient(create_app(backend=backend)) as client:
        experiment_id, records = setup_experiment(client)
    writer = IngestWriter(backend.engine, queue=True)
    span = IncomingSpan(
        span_id="8",
        trace_id="1" * 32,
        name="task",
        start_ns=1,
        duration_ns=1,
        parent_id="undefined",
        tags=(f"dataset_record_id:{records[0]}", f"experiment_id:{experiment_id}"),
    )
    entry = JournalEntry("spans", "", b"[]")
    answered = writer.submit({experiment_id: EventBatch(spans=[span])}, entry=entry)
    assert answered.result(timeout=60).results[experiment_id].queued == 1
    # The experiment goes before the writer writes the post: the store refuses its span.
    with backend.engine.begin() as connection:
        connection.exec_driver_sql(f"DELETE FROM runs WHERE experiment_id = '{experiment_id}'")
        connection.exec_driver_sql(f"DELETE FROM experiments WHERE id = '{experiment_id}'")
    writer.flush().result(timeout=60)
    writer.stop()
    with journal_of(backend).connect() as connection:
        [error] = connection.execute(select(journal_table.c.error)).scalars().all()
    assert error is not None


def test_many_clients_through_a_queue_lose_and_duplicate_nothing(
    backend: SqlBackend, queued: TestClient
) -> None:
    runs, per_client, clients = 2, 6, 8
    experiment_id, records = setup_experiment(queued, run_count=runs, records=per_client * clients)
    failures: list[str] = []

    def client_posts(k: int) -> None:
        rng = random.Random(k)
        try:
            for run in (1, 2):
                for n in range(per_client):
                    index = k * per_client + n
                    span_id = f"{run}{index:04d}"
                    metrics = [metric(span_id, "exact", index % 2 == 0), metric(span_id, "n", n)]
                    span = root_span(experiment_id, records[index], run, span_id)
                    metrics_first = rng.random() < 0.7  # ddtrace's usual order
                    if metrics_first:
                        post_metrics(queued, experiment_id, metrics, run=run)
                    post_spans(queued, span)
                    if not metrics_first:
                        post_metrics(queued, experiment_id, metrics, run=run)
        except Exception as error:  # pragma: no cover - reported below
            failures.append(repr(error))

    threads = [threading.Thread(target=client_posts, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    # Read through the API, which waits for the queue.
    events = call(
        queued,
        "GET",
        f"{API}/experiments/{experiment_id}/events?include[eval_metrics]=true",
    )["data"]["attributes"]["spans"]
    assert len(events) == runs * per_client * clients
    assert sorted(len(span["eval_metrics"]) for span in events) == [2] * len(events)
    assert journaled(backend) == 0


def test_posts_of_one_turn_of_the_loop_are_journaled_together(
    backend: SqlBackend, queued: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the event loop's thread journals the posts that came in one turn of the
    loop, in one append; on PostgreSQL the writer thread journals them. Either way each
    post gets its own answer, and a stopped writer journals again at the next post."""
    experiment_id, _ = setup_experiment(queued)
    appended: list[int] = []
    append = ingest_journal.JournalFile.append

    def counting(self: ingest_journal.JournalFile, entries: Any) -> list[int]:
        appended.append(len(entries))
        return append(self, entries)

    monkeypatch.setattr(ingest_journal.JournalFile, "append", counting)
    writer = IngestWriter(backend.engine, queue=True)

    def post(n: int) -> tuple[dict[str, EventBatch], JournalEntry]:
        tags = [f"experiment_id:{experiment_id}", "run_iteration:1"]
        metrics = [metric(str(n), "exact", True), metric(str(n), "score", n / 10)]
        body = {"data": {"type": "experiments", "attributes": {"metrics": metrics, "tags": tags}}}
        entry = JournalEntry("events", experiment_id, json.dumps(body).encode())
        return dict(decode(entry).batches), entry

    async def turn(numbers: range) -> list[Any]:
        posts = [post(n) for n in numbers]
        return await asyncio.gather(*(writer.accept(b, entry=e) for b, e in posts))

    try:
        answers = asyncio.run(turn(range(1, 6)))
        assert [answer.results[experiment_id].queued for answer in answers] == [2] * 5
        sqlite = backend.engine.dialect.name == "sqlite"
        assert appended == ([5] if sqlite else [])
        writer.stop()  # writes them, and closes the journal
        assert journaled(backend) == 0
        answers = asyncio.run(turn(range(6, 8)))
        assert [answer.results[experiment_id].queued for answer in answers] == [2] * 2
        assert appended == ([5, 2] if sqlite else [])
    finally:
        writer.stop()
    with backend.engine.connect() as connection:  # waiting for their spans, all 14
        count = select(func.count()).where(posted_evaluations.c.experiment_id == experiment_id)
        assert connection.execute(count).scalar() == 14
    assert journaled(backend) == 0


def test_a_journal_that_cannot_be_written_answers_503_and_keeps_nothing(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop's append fails (a full disk, say): the posts of that turn get the
    503 that asks ddtrace to retry, as a store error does, and nothing of them is kept."""
    store = SqlBackend(f"sqlite:///{tmp_path / 'assay.db'}")

    def failing(connection: Any, entries: Any) -> list[int]:
        raise sqlite3.OperationalError("database or disk is full")

    try:
        with TestClient(create_app(backend=store, ingest_queue=True)) as client:
            experiment_id, records = setup_experiment(client)
            monkeypatch.setattr(ingest_journal, "_insert", failing)
            refused = post_metrics(client, experiment_id, [metric("1", "x", 1.0)], expect=503)
            assert "retry" in refused["errors"][0]["detail"]
            post_spans(client, root_span(experiment_id, records[0], 1, "1"), expect=503)
            monkeypatch.undo()  # the disk has room again: the retries are stored
            post_metrics(client, experiment_id, [metric("1", "x", 1.0)])
            post_spans(client, root_span(experiment_id, records[0], 1, "1"))
            events = call(
                client,
                "GET",
                f"{API}/experiments/{experiment_id}/events?include[eval_metrics]=true",
            )["data"]["attributes"]["spans"]
        assert [len(span["eval_metrics"]) for span in events] == [1]
        assert journaled(store) == 0
    finally:
        store.close()


def test_the_journal_numbers_its_rows_as_sqlite_does(tmp_path: Any) -> None:
    """A SQLite journal's append is one insert a few hundred rows, whose numbers come from
    the last row's: they must be the numbers the rows got, after deletions too."""
    store = SqlBackend(f"sqlite:///{tmp_path / 'assay.db'}")
    engine = journal_of(store)
    path = ingest_journal.journal_file(store.engine)
    assert path is not None
    file = ingest_journal.JournalFile(path)
    try:
        entries = [JournalEntry("spans", "", b"%d" % n) for n in range(700)]
        seqs = file.append(entries[:10])
        with engine.begin() as connection:  # written: a gap, and the last one gone
            ingest_journal.remove(connection, [seqs[2], seqs[3], seqs[-1]])
        seqs = file.append(entries[10:]) + seqs[:2] + seqs[4:-1]  # 690 rows: three inserts
        with engine.connect() as connection:
            stored = dict(ingest_journal.entries(connection))
        assert sorted(stored) == sorted(seqs)
        kept = entries[10:] + entries[:2] + entries[4:9]
        assert [stored[seq] for seq in seqs] == kept
    finally:
        file.close()
        engine.dispose()
        store.close()


def test_where_the_journal_is(tmp_path: Any) -> None:
    store = SqlBackend(f"sqlite:///{tmp_path / 'assay.db'}")
    memory = SqlBackend("sqlite://")
    try:
        assert ingest_journal.journal_file(store.engine) == tmp_path / "assay.db-ingest"
        assert ingest_journal.open_journal(store.engine, create=False) is None
        beside = ingest_journal.open_journal(store.engine, create=True)
        assert beside is not None and beside is not store.engine
        beside.dispose()
        assert (tmp_path / "assay.db-ingest").exists()
        # An in-memory store has no journal: a queued writer writes each post at once.
        assert ingest_journal.open_journal(memory.engine, create=True) is None
        with TestClient(create_app(backend=memory, ingest_queue=True)) as client:
            experiment_id, _ = setup_experiment(client)
            answer = post_metrics(client, experiment_id, [metric("3", "a", 1)])
            assert answer["data"]["attributes"]["queued"] == 0
            assert answer["data"]["attributes"]["pending"] == 1
    finally:
        store.close()
        memory.close()


def test_postgresql_keeps_the_journal_in_the_store(postgres_url: str) -> None:
    store = SqlBackend(postgres_url)
    try:
        assert ingest_journal.journal_file(store.engine) is None
        assert ingest_journal.open_journal(store.engine, create=False) is store.engine
    finally:
        store.close()
