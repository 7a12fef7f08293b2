"""The ingest lane (``assay.server.lane``), and the ingest writer's housekeeping.

The lane serves the events post and the span intake past FastAPI's routing; everything
it does not serve itself must reach the app as if the lane were not there. The server's
other tests (``test_server_ingest``, ``test_server_api``, ``test_api_keys``) post through
it too; these check who answered, and the cases where it must step aside.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

from assay.server import access, create_app, lane
from assay.server.api.events import accept_events
from assay.server.api.intake import accept_spans
from assay.server.dependencies import get_backend, ingest_writer
from assay.store.sql.backend import SqlBackend
from assay.store.sql.ingest import group
from assay.store.sql.ingest.checkpoint import CheckpointPace
from assay.store.sql.ingest.write import in_transaction
from test_server_ingest import API, call, metric, post_metrics, root_span, setup_experiment


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The posts the lane served itself (by kind), recorded as it hands them on."""
    seen: list[str] = []

    async def events(*args: Any, **kwargs: Any) -> Any:
        seen.append("events")
        return await accept_events(*args, **kwargs)

    async def spans(*args: Any, **kwargs: Any) -> Any:
        seen.append("spans")
        return await accept_spans(*args, **kwargs)

    monkeypatch.setattr(lane, "accept_events", events)
    monkeypatch.setattr(lane, "accept_spans", spans)
    return seen


@pytest.fixture
def client(backend: SqlBackend) -> Iterator[TestClient]:
    with TestClient(create_app(backend=backend)) as test_client:
        yield test_client


def _events_body(experiment_id: str, metrics: list[dict[str, Any]]) -> dict[str, Any]:
    tags = [f"experiment_id:{experiment_id}", "run_iteration:1"]
    return {"data": {"type": "experiments", "attributes": {"metrics": metrics, "tags": tags}}}


def test_the_lane_serves_both_posts_under_every_prefix(
    client: TestClient, backend: SqlBackend, served: list[str]
) -> None:
    experiment_id, records = setup_experiment(client, records=4)
    prefixes = ["/api/unstable/llm-obs/v1", "/api/v2/llm-obs/v1", "/evp_proxy/v2/api/v2/llm-obs/v1"]
    for n, prefix in enumerate(prefixes):
        span_id = str(100 + n)
        body = _events_body(experiment_id, [metric(span_id, "exact", True)])
        answer = call(client, "POST", f"{prefix}/experiments/{experiment_id}/events", body, 202)
        assert answer["data"]["attributes"]["pending"] == 1
        for path in ("/api/v2/llmobs", "/evp_proxy/v2/api/v2/llmobs")[: 1 + n % 2]:
            span = root_span(experiment_id, records[n], 1, span_id)
            events = [{"event_type": "span", "spans": [span]}]
            answer = call(client, "POST", path, events, 202)
    assert served == ["events", "spans", "events", "spans", "spans", "events", "spans"]
    rows = backend.experiment_rows(experiment_id)
    assert sorted(len(row.evaluations) for row in rows) == [1, 1, 1]


def test_a_body_that_does_not_validate_gets_fastapis_answer(
    client: TestClient, served: list[str]
) -> None:
    experiment_id, _ = setup_experiment(client)
    path = f"{API}/experiments/{experiment_id}/events"
    wrong = _events_body(experiment_id, [{**metric("1", "exact", True), "timestamp_ms": "soon"}])
    answer = call(client, "POST", path, wrong, 422)
    assert answer["errors"][0]["source"]["pointer"] == "/data/attributes/metrics/0/timestamp_ms"
    response = client.post(path, content=b'{"data": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert "not valid JSON" in response.json()["errors"][0]["detail"]
    spans = client.post("/api/v2/llmobs", json=[{"spans": [{"span_id": "1"}]}])
    assert spans.status_code == 422
    assert spans.json()["errors"][0]["source"]["pointer"].startswith("/0/spans/0/")
    assert served == []


def test_the_lane_steps_aside_for_other_content_and_overridden_stores(
    client: TestClient, backend: SqlBackend, served: list[str]
) -> None:
    experiment_id, _ = setup_experiment(client)
    path = f"{API}/experiments/{experiment_id}/events"
    body = _events_body(experiment_id, [metric("1", "exact", True)])
    text = client.post(path, content=json.dumps(body), headers={"Content-Type": "text/plain"})
    assert text.status_code == 422, text.text  # FastAPI reads no JSON out of text/plain
    app = client.app
    app.dependency_overrides[get_backend] = lambda: backend  # type: ignore[attr-defined]
    try:
        answer = call(client, "POST", path, body, 202)
    finally:
        app.dependency_overrides.clear()  # type: ignore[attr-defined]
    assert answer["data"]["attributes"]["pending"] == 1
    assert served == []


def test_the_lanes_errors_are_the_routes(client: TestClient, served: list[str]) -> None:
    experiment_id, records = setup_experiment(client, run_count=2)
    unknown = post_metrics(client, "no-such-experiment", [metric("1", "x", 1.0)], expect=404)
    assert unknown["errors"][0]["source"] == {"parameter": "experiment_id"}
    span = root_span(experiment_id, records[0], 3, "7")
    refused = call(client, "POST", "/api/v2/llmobs", [{"spans": [span]}], 422)
    assert refused["errors"][0]["source"]["pointer"] == "/0/spans/0/tags"
    assert "run_iteration" in refused["errors"][0]["detail"]
    assert served == ["events", "spans"]


def test_the_lanes_answer_is_the_one_the_route_sends(
    client: TestClient, backend: SqlBackend, served: list[str]
) -> None:
    experiment_id, records = setup_experiment(client)
    path = f"{API}/experiments/{experiment_id}/events"
    spans = [{"spans": [root_span(experiment_id, records[0], 1, "1")]}]
    answers = [
        (client.post(path, json=_events_body(experiment_id, [metric("1", "x", 1.0)])),),
        (client.post("/api/v2/llmobs", json=spans),),
    ]
    app = client.app
    app.dependency_overrides[get_backend] = lambda: backend  # type: ignore[attr-defined]
    try:  # the same posts again, answered by the routes
        answers[0] += (
            client.post(path, json=_events_body(experiment_id, [metric("1", "x", 1.0)])),
        )
        answers[1] += (client.post("/api/v2/llmobs", json=spans),)
    finally:
        app.dependency_overrides.clear()  # type: ignore[attr-defined]
    assert served == ["events", "spans"]
    for lane_answer, route_answer in answers:
        assert lane_answer.status_code == route_answer.status_code == 202
        for header in ("content-type", "content-length"):
            assert lane_answer.headers[header] == route_answer.headers[header]
        assert lane_answer.headers["content-type"] == "application/vnd.api+json"
        assert lane_answer.json().keys() == route_answer.json().keys()


def _raw_post(
    app: Any, path: str, parts: list[bytes], headers: list[Any], *, whole: bool = True
) -> list[Any]:
    """Post ``parts`` as one body's chunks straight to the ASGI app (or, not ``whole``,
    disconnect after them); the messages sent back."""
    sent: list[Any] = []
    messages = [
        {"type": "http.request", "body": part, "more_body": not whole or n < len(parts) - 1}
        for n, part in enumerate(parts)
    ]

    async def receive() -> Any:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    return sent


def test_the_lane_refuses_bodies_over_the_limit(backend: SqlBackend, served: list[str]) -> None:
    with TestClient(create_app(backend=backend)) as client:
        experiment_id, records = setup_experiment(client)
    small = create_app(backend=backend, max_body_bytes=300)
    spans = [
        {"spans": [root_span(experiment_id, record, 1, str(n))]} for n, record in enumerate(records)
    ]
    body = json.dumps(spans).encode()
    assert len(body) > 300
    # Sent in chunks without a length: the lane reads up to the limit, and answers.
    chunked = _raw_post(small, "/api/v2/llmobs", [body[:200], body[200:]], [])
    assert chunked[0]["status"] == 413
    assert "larger than 300 bytes" in json.loads(chunked[1]["body"])["errors"][0]["detail"]
    # With its length: refused before a byte is read, as every route's body is.
    length = [(b"content-length", str(len(body)).encode())]
    declared = _raw_post(small, "/api/v2/llmobs", [body], length)
    assert declared[0]["status"] == 413
    assert served == []
    assert backend.experiment_rows(experiment_id) == []


def test_the_access_log_has_a_line_a_request_and_sums_up_ingest_posts(
    backend: SqlBackend, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(backend=backend, access_log=True)
    with caplog.at_level(logging.INFO, logger="assay.server.access"), TestClient(app) as client:
        experiment_id, records = setup_experiment(client)
        post_metrics(client, experiment_id, [metric("1", "x", 1.0), metric("1", "y", 2.0)])
        span = root_span(experiment_id, records[0], 1, "1")
        call(client, "POST", "/api/v2/llmobs", [{"spans": [span]}], 202)
        post_metrics(client, "nope", [metric("1", "x", 1.0)], expect=404)
        call(client, "GET", f"{API}/experiments/{experiment_id}")
    lines = [record.getMessage() for record in caplog.records if record.name.endswith(".access")]
    assert f'testclient:50000 - "GET {API}/experiments/{experiment_id} HTTP/1.1" 200' in lines
    assert f'testclient:50000 - "POST {API}/experiments/nope/events HTTP/1.1" 404' in lines
    assert f'testclient:50000 - "POST {API}/projects HTTP/1.1" 200' in lines
    # The two posts answered 202 have no line of their own: the summary counts them.
    assert not any("llmobs" in line or f"{experiment_id}/events" in line for line in lines)
    assert re.fullmatch(r"ingest: 2 posts in \d+\.\d s \(1 span, 2 metrics\)", lines[-1])


def test_the_ingest_summary_comes_once_a_while(caplog: pytest.LogCaptureFixture) -> None:
    queued = [3]

    async def posts() -> None:
        log = access.AccessLog(queued=lambda: queued[0], interval=0.05)
        log.ingested(spans=6, metrics=0)
        log.ingested(spans=0, metrics=1_200)
        await asyncio.sleep(0.2)  # the summary, once
        queued[0] = 0
        log.ingested(spans=1, metrics=1)
        log.summarize()  # as at shutdown
        log.summarize()  # nothing since: no line

    with caplog.at_level(logging.INFO, logger="assay.server.access"):
        asyncio.run(posts())
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert re.fullmatch(
        r"ingest: 2 posts in 0\.\d s \(6 spans, 1,200 metrics\); 3 queued, not written yet",
        lines[0],
    )
    assert re.fullmatch(r"ingest: 1 post in 0\.0 s \(1 span, 1 metric\)", lines[1])


def test_the_lane_checks_api_keys_as_every_route_does(backend: SqlBackend) -> None:
    _, key = backend.create_api_key("ci")
    with TestClient(create_app(backend=backend, require_auth=True)) as client:
        headers = {"DD-API-KEY": key}
        project = client.post(
            f"{API}/projects", json={"data": {"attributes": {"name": "p"}}}, headers=headers
        )
        assert project.status_code == 200, project.text
        path = "/api/v2/llmobs"
        missing = client.post(path, json=[])
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == 'Bearer realm="assay"'
        assert "DD-API-KEY" in missing.json()["errors"][0]["detail"]
        wrong = client.post(path, json=[], headers={"DD-API-KEY": "assay_not_a_key"})
        assert wrong.status_code == 401
        for given in (headers, {"Authorization": f"Bearer {key}"}):
            assert client.post(path, json=[], headers=given).status_code == 202


def test_a_client_that_leaves_mid_body_is_answered_nothing(backend: SqlBackend) -> None:
    app = create_app(backend=backend)
    assert _raw_post(app, "/api/v2/llmobs", [b'[{"spans": '], [], whole=False) == []


def test_an_answered_group_is_in_the_database_file_itself(tmp_path: Path) -> None:
    """The writer checkpoints after answering: the log does not carry the group."""
    backend = SqlBackend(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        with TestClient(create_app(backend=backend)) as client:
            experiment_id, records = setup_experiment(client)
            spans = [
                root_span(experiment_id, record, 1, str(10 + n)) for n, record in enumerate(records)
            ]
            call(client, "POST", "/api/v2/llmobs", [{"spans": spans}], 202)
            ingest_writer(backend).stop()  # the checkpoint follows the answer
            shutil.copy(tmp_path / "store.db", tmp_path / "copy.db")  # without its log
        with sqlite3.connect(tmp_path / "copy.db") as copy:
            (count,) = copy.execute(
                "SELECT count(*) FROM spans WHERE experiment_id = ?", (experiment_id,)
            ).fetchone()
        assert count == len(records)
    finally:
        backend.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_checkpoints_space_out_when_they_are_slow() -> None:
    """A checkpoint waits twice its predecessor's duration after it; a quick one waits
    for nothing."""
    clock = FakeClock()
    pace = CheckpointPace(clock)
    runs: list[float] = []

    def checkpoint(taking: float) -> None:
        runs.append(clock.now)
        clock.now += taking

    assert pace.run(lambda: checkpoint(10.0))  # the first is always due: ends at 10
    clock.now = 29.0
    assert not pace.run(lambda: checkpoint(0.0)) and pace.due_in() == 1.0
    clock.now = 30.0
    assert pace.due_in() == 0.0 and pace.run(lambda: checkpoint(0.0))
    clock.now = 30.0  # took nothing: the next one is due at once
    assert pace.run(lambda: checkpoint(1.0))
    assert not pace.run(lambda: checkpoint(0.0))
    assert pace.run(lambda: checkpoint(0.0), due=True)
    assert runs == [0.0, 30.0, 30.0, 31.0]


def test_a_put_off_checkpoint_is_done_when_the_writer_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints that take 1,000 s (as the clock sees them) put off the next ones; the
    writer still checkpoints before it stops."""
    clock = FakeClock()
    real = group.checkpoint_wal

    def slow_checkpoint(engine: Any) -> None:
        real(engine)
        clock.now += 1000.0

    monkeypatch.setattr(group, "checkpoint_wal", slow_checkpoint)
    backend = SqlBackend(f"sqlite:///{tmp_path / 'store.db'}")

    def in_the_file() -> int:
        shutil.copy(tmp_path / "store.db", tmp_path / "copy.db")  # without its log
        with sqlite3.connect(tmp_path / "copy.db") as copy:
            (count,) = copy.execute("SELECT count(*) FROM spans").fetchone()
        return int(count)

    try:
        with TestClient(create_app(backend=backend)) as client:
            experiment_id, records = setup_experiment(client)
            writer = ingest_writer(backend)
            writer._pace = CheckpointPace(clock)
            for n, record in enumerate(records):
                span = root_span(experiment_id, record, 1, str(30 + n))
                call(client, "POST", "/api/v2/llmobs", [{"spans": [span]}], 202)
            assert in_the_file() == 1  # the first post's checkpoint put off the others
            writer.stop()
            assert in_the_file() == len(records)
    finally:
        backend.close()


def test_a_failed_checkpoint_is_logged_and_the_writer_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint is housekeeping: its failure (SQLite's, faked here) stops no request."""
    backend = SqlBackend(f"sqlite:///{tmp_path / 'store.db'}")
    original = Connection.exec_driver_sql

    def failing(self: Connection, statement: str, *args: Any, **kwargs: Any) -> Any:
        if "wal_checkpoint" in statement:
            raise OperationalError(statement, None, sqlite3.OperationalError("disk I/O error"))
        return original(self, statement, *args, **kwargs)

    monkeypatch.setattr(Connection, "exec_driver_sql", failing)
    try:
        with TestClient(create_app(backend=backend)) as client:
            experiment_id, records = setup_experiment(client)
            for n, record in enumerate(records):
                span = root_span(experiment_id, record, 1, str(20 + n))
                call(client, "POST", "/api/v2/llmobs", [{"spans": [span]}], 202)
        assert len(backend.experiment_rows(experiment_id)) == len(records)
        assert "could not checkpoint" in caplog.text
    finally:
        backend.close()


def test_a_fault_of_the_writer_fails_its_group_and_not_the_next(
    backend: SqlBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the writer (injected) answers its own requests with a 500 and leaves the
    writer thread running: the requests after it are stored, none waits for ever."""
    faults = [RuntimeError("injected")]
    commit = group.Memory.commit

    def faulty(self: group.Memory) -> None:
        if faults:
            raise faults.pop()
        commit(self)

    monkeypatch.setattr(group.Memory, "commit", faulty)
    with TestClient(create_app(backend=backend), raise_server_exceptions=False) as client:
        experiment_id, records = setup_experiment(client)
        spans = [root_span(experiment_id, rid, 1, str(30 + n)) for n, rid in enumerate(records)]
        failed = client.post("/api/v2/llmobs", json=[{"spans": spans[:1]}])
        assert failed.status_code == 500, failed.text
        assert "RuntimeError" in failed.json()["errors"][0]["detail"]
        call(client, "POST", "/api/v2/llmobs", [{"spans": spans[1:]}], 202)
    assert len(backend.experiment_rows(experiment_id)) == len(records)


def test_postgresql_ingestion_plans_each_look_up_for_its_own_values(
    backend: SqlBackend,
) -> None:
    """On PostgreSQL an ingest transaction forbids generic plans (made while the tables
    were nearly empty, they scan the experiment); for that transaction only."""
    if backend.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's plan cache; SQLite has none")
    engine = create_engine(
        backend.engine.url.render_as_string(hide_password=False), poolclass=StaticPool
    )
    try:
        inside: list[str] = []
        in_transaction(
            engine,
            lambda connection: inside.append(
                connection.exec_driver_sql("SHOW plan_cache_mode").scalar_one()
            ),
        )
        with engine.connect() as connection:  # the same connection, back in the pool
            after = connection.exec_driver_sql("SHOW plan_cache_mode").scalar_one()
        assert inside == ["force_custom_plan"]
        assert after == "auto"
    finally:
        engine.dispose()
