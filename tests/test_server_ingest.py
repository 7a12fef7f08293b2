"""What the server stores from spans and metrics posted over HTTP, in any order.

ddtrace posts an experiment's evaluation metrics to the events endpoint and its task spans
to the span intake, separately; metrics usually arrive first. These tests post them the
way ddtrace does (and in worse orders), on SQLite and PostgreSQL, and read the result
back with the SDK's own readers.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from assay import EvaluatorResult, LLMObs
from assay.aggregation import summarize_summary_evaluations
from assay.errors import ExperimentNotFoundError
from assay.evaluation import metric_type_of
from assay.experiment import pulled_experiment
from assay.pricing import estimate_cost
from assay.server import create_app
from assay.store.records import EvaluationRecord, RowRecord
from assay.store.sql.backend import SqlBackend
from assay.store.sql.ingest import (
    EventBatch,
    IncomingMetric,
    IncomingSpan,
    IngestError,
    IngestWriter,
    ingest_metrics,
    ingest_spans,
    placeholder_run_id,
)

API = "/api/unstable/llm-obs/v1"
TRACE = "0" * 31 + "1"


@pytest.fixture
def client(backend: SqlBackend) -> Iterator[TestClient]:
    with TestClient(create_app(backend=backend)) as test_client:
        yield test_client


def call(client: TestClient, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    response = client.request(method, path, json=body)
    assert response.status_code == expect, response.text
    return response.json()


def setup_experiment(
    client: TestClient, *, run_count: int = 2, records: int = 2
) -> tuple[str, list[str]]:
    """A project, a dataset of ``records`` records and an experiment: (id, record ids)."""
    project = call(client, "POST", f"{API}/projects", {"data": {"attributes": {"name": "p"}}})
    project_id = project["data"]["id"]
    dataset = call(
        client, "POST", f"{API}/{project_id}/datasets", {"data": {"attributes": {"name": "d"}}}
    )
    dataset_id = dataset["data"]["id"]
    ids = [f"record-{n}" for n in range(records)]
    inserts = [{"id": rid, "input": {"n": n}, "expected_output": n} for n, rid in enumerate(ids)]
    call(
        client,
        "POST",
        f"/api/v2/llm-obs/v1/{project_id}/datasets/{dataset_id}/batch_update",
        {"data": {"attributes": {"insert_records": inserts}}},
    )
    attributes = {
        "name": "e",
        "project_id": project_id,
        "dataset_id": dataset_id,
        "run_count": run_count,
    }
    experiment = call(client, "POST", f"{API}/experiments", {"data": {"attributes": attributes}})
    return experiment["data"]["id"], ids


def root_span(
    experiment_id: str,
    record_id: str,
    run: int,
    span_id: str,
    *,
    trace_id: str = TRACE,
    run_id: str | None = None,
    output: Any = "out",
    metrics: dict[str, Any] | None = None,
    error: dict[str, str] | None = None,
    start_ns: int | None = None,
    duration: int | None = None,
) -> dict[str, Any]:
    tags = [
        f"experiment_id:{experiment_id}",
        f"dataset_record_id:{record_id}",
        f"run_iteration:{run}",
    ]
    if run_id:
        tags.append(f"run_id:{run_id}")
    meta: dict[str, Any] = {
        "span.kind": "experiment",
        "input": {"record": record_id},
        "output": output,
        "expected_output": "expected",
        "metadata": {"source": "test"},
    }
    if error:
        meta["error"] = error
    return {
        "span_id": span_id,
        "trace_id": trace_id,
        "parent_id": "undefined",
        "name": "task",
        "start_ns": start_ns if start_ns is not None else 1_700_000_000_000_000_000 + run,
        "duration": duration if duration is not None else 1_000_000 * (1 + run),
        "status": "error" if error else "ok",
        "meta": meta,
        "metrics": metrics or {},
        "tags": sorted(tags),
    }


def child_span(
    experiment_id: str,
    run: int,
    span_id: str,
    parent_id: str,
    *,
    trace_id: str,
    kind: str = "llm",
    tokens: tuple[int, int] = (100, 20),
) -> dict[str, Any]:
    return {
        "span_id": span_id,
        "trace_id": trace_id,
        "parent_id": parent_id,
        "name": "openai.request",
        "start_ns": 1_700_000_000_000_000_100,
        "duration": 500,
        "status": "ok",
        "meta": {
            "span": {"kind": kind},  # as ddtrace sends it; roots here use "span.kind"
            "model_name": "gpt-4o-mini",
            "model_provider": "openai",
            "input": {"messages": [{"role": "user", "content": "hi"}]},
            "output": {"messages": [{"role": "assistant", "content": "hello"}]},
        },
        "metrics": {"input_tokens": tokens[0], "output_tokens": tokens[1], "time_to_first": 1.5},
        "tags": [f"experiment_id:{experiment_id}", f"run_iteration:{run}"],
    }


def metric(
    span_id: str,
    label: str,
    value: Any,
    *,
    timestamp_ms: int = 1000,
    error: dict[str, str] | None = None,
    summary: bool = False,
) -> dict[str, Any]:
    metric_type = metric_type_of(value)
    return {
        "metric_source": "summary" if summary else "custom",
        "span_id": "" if summary else span_id,
        "trace_id": "" if summary else TRACE,
        "timestamp_ms": timestamp_ms,
        "metric_type": metric_type,
        "label": label,
        f"{metric_type}_value": value,
        "error": error,
        "tags": [],
        **({} if summary else {"status": "ERROR" if error else "OK"}),
    }


def post_metrics(
    client: TestClient,
    experiment_id: str,
    metrics: list[dict[str, Any]],
    *,
    run: int = 1,
    run_id: str | None = None,
    expect: int = 202,
) -> Any:
    tags = [f"experiment_id:{experiment_id}", f"run_iteration:{run}"]
    if run_id:
        tags.append(f"run_id:{run_id}")
    body = {"data": {"type": "experiments", "attributes": {"metrics": metrics, "tags": tags}}}
    return call(client, "POST", f"{API}/experiments/{experiment_id}/events", body, expect)


def post_spans(client: TestClient, *spans: dict[str, Any], expect: int = 202) -> Any:
    events = [{"_dd.stage": "raw", "event_type": "span", "spans": [span]} for span in spans]
    return call(client, "POST", "/api/v2/llmobs", events, expect)


def rows_of(backend: SqlBackend, experiment_id: str) -> list[RowRecord]:
    return backend.experiment_rows(experiment_id, with_spans=True)


# Order ---------------------------------------------------------------------------------


def test_metrics_posted_before_their_span_wait_and_then_join_it(
    client: TestClient, backend: SqlBackend
) -> None:
    experiment_id, records = setup_experiment(client)
    answer = post_metrics(
        client, experiment_id, [metric("11", "exact", True), metric("11", "score", 0.25)]
    )
    assert answer["data"]["attributes"]["pending"] == 2
    assert answer["data"]["attributes"]["evaluations"] == 0
    assert rows_of(backend, experiment_id) == []

    stored = post_spans(client, root_span(experiment_id, records[0], 1, "11"))
    assert stored["meta"] == {"spans": 1, "stored": 1, "duplicates": 0, "ignored": 0, "queued": 0}
    [row] = rows_of(backend, experiment_id)
    assert (row.record_id, row.run_iteration, row.idx) == (records[0], 1, 0)
    assert {e.label: e.value for e in row.evaluations} == {"exact": True, "score": 0.25}
    # Nothing is left waiting: a second span post moves nothing twice.
    post_spans(client, root_span(experiment_id, records[0], 1, "11"))
    assert len(rows_of(backend, experiment_id)[0].evaluations) == 2


def test_metrics_posted_after_their_span_are_stored_at_once(
    client: TestClient, backend: SqlBackend
) -> None:
    experiment_id, records = setup_experiment(client)
    post_spans(client, root_span(experiment_id, records[1], 2, "21"))
    answer = post_metrics(client, experiment_id, [metric("21", "label", "good")], run=2)
    assert answer["data"]["attributes"]["evaluations"] == 1
    assert answer["data"]["attributes"]["pending"] == 0
    [row] = rows_of(backend, experiment_id)
    assert (row.idx, row.run_iteration) == (1, 2)
    assert row.evaluations[0].metric_type == "categorical"
    assert row.evaluations[0].value == "good"


def test_spans_and_metrics_in_one_events_post(client: TestClient, backend: SqlBackend) -> None:
    experiment_id, records = setup_experiment(client)
    body = {
        "data": {
            "type": "experiments",
            "attributes": {
                "scope": "experiments",
                # Metrics first in the body: the spans of the same post are stored first.
                "metrics": [metric("31", "ok", False)],
                "spans": [root_span(experiment_id, records[0], 1, "31")],
                "tags": [f"experiment_id:{experiment_id}", "run_iteration:1"],
            },
        }
    }
    answer = call(client, "POST", f"{API}/experiments/{experiment_id}/events", body, 202)
    assert answer["data"]["attributes"]["spans"] == 1
    assert answer["data"]["attributes"]["evaluations"] == 1
    assert rows_of(backend, experiment_id)[0].evaluations[0].value is False


# Duplicates ----------------------------------------------------------------------------


def test_reposted_spans_and_metrics_are_not_duplicated(
    client: TestClient, backend: SqlBackend
) -> None:
    experiment_id, records = setup_experiment(client)
    metrics = [metric("41", "exact", True), metric("41", "score", 1)]
    post_metrics(client, experiment_id, metrics)
    post_metrics(client, experiment_id, metrics)  # a retry while the span is still missing
    span = root_span(experiment_id, records[0], 1, "41")
    post_spans(client, span, span)  # twice in one post
    again = post_spans(client, span)
    assert again["meta"]["duplicates"] == 1
    repeat = post_metrics(client, experiment_id, metrics)
    assert repeat["data"]["attributes"]["duplicate_metrics"] == 2
    # The same (run, record) under another span id is the same row, posted again.
    post_spans(client, root_span(experiment_id, records[0], 1, "42"))
    [row] = rows_of(backend, experiment_id)
    assert sorted(e.label for e in row.evaluations) == ["exact", "score"]
    assert backend.count_rows(experiment_id) == 1


def test_a_later_post_of_a_metric_replaces_it(client: TestClient, backend: SqlBackend) -> None:
    experiment_id, records = setup_experiment(client)
    post_spans(client, root_span(experiment_id, records[0], 1, "51"))
    post_metrics(client, experiment_id, [metric("51", "score", 0.1, timestamp_ms=1000)])
    answer = post_metrics(client, experiment_id, [metric("51", "score", 0.9, timestamp_ms=2000)])
    assert answer["data"]["attributes"]["updated"] == 1
    post_metrics(client, experiment_id, [metric("51", "score", 0.5, timestamp_ms=1500)])
    [row] = rows_of(backend, experiment_id)
    assert [(e.value, e.timestamp_ms) for e in row.evaluations] == [(0.9, 2000)]
    # Within one post too, the latest timestamp wins.
    post_metrics(
        client,
        experiment_id,
        [metric("52", "x", 3, timestamp_ms=9), metric("52", "x", 2, timestamp_ms=8)],
    )
    post_spans(client, root_span(experiment_id, records[1], 1, "52"))
    second = next(row for row in rows_of(backend, experiment_id) if row.span_id == "52")
    assert [e.value for e in second.evaluations] == [3]


# Summary metrics and runs --------------------------------------------------------------


def test_summary_metrics_belong_to_the_run_of_their_event(
    client: TestClient, backend: SqlBackend
) -> None:
    experiment_id, _ = setup_experiment(client, run_count=3)
    for run in (1, 2, 3):
        summary = metric("", "num_exact", run * 10, summary=True, timestamp_ms=run)
        post_metrics(client, experiment_id, [summary], run=run)
    post_metrics(
        client, experiment_id, [metric("", "num_exact", 20, summary=True, timestamp_ms=2)], run=2
    )
    stored = backend.summary_evaluations(experiment_id)
    assert [(s.run_iteration, s.evaluation.value) for s in stored] == [(1, 10), (2, 20), (3, 30)]
    laid_out = summarize_summary_evaluations(stored, [1, 2, 3])
    assert laid_out["num_exact"]["per_run"] == [10, 20, 30]


def test_runs_take_the_run_ids_the_client_gives(client: TestClient, backend: SqlBackend) -> None:
    experiment_id, records = setup_experiment(client, run_count=2)
    info = backend.get_experiment(experiment_id)
    assert [run.run_id for run in info.runs] == [
        placeholder_run_id(experiment_id, 1),
        placeholder_run_id(experiment_id, 2),
    ]
    first = str(uuid.uuid4())
    post_spans(client, root_span(experiment_id, records[0], 1, "61", run_id=first))
    post_metrics(client, experiment_id, [], run=2, run_id="not-a-uuid")
    runs = backend.get_experiment(experiment_id).runs
    assert [run.run_id for run in runs] == [first, placeholder_run_id(experiment_id, 2)]
    # The first name sticks.
    post_spans(client, root_span(experiment_id, records[1], 1, "62", run_id=str(uuid.uuid4())))
    assert backend.get_experiment(experiment_id).runs[0].run_id == first


@pytest.mark.parametrize("run", ["0", "3", "-1", "two", ""])
def test_a_run_iteration_outside_the_runs_is_refused_and_nothing_is_written(
    client: TestClient, backend: SqlBackend, run: str
) -> None:
    experiment_id, records = setup_experiment(client, run_count=2)
    good = root_span(experiment_id, records[0], 1, "71")
    bad = root_span(experiment_id, records[1], 1, "72")
    bad["tags"] = [t for t in bad["tags"] if not t.startswith("run_iteration:")]
    bad["tags"].append(f"run_iteration:{run}")
    answer = post_spans(client, good, bad, expect=422)
    [error] = answer["errors"]
    assert error["source"] == {"pointer": "/1/spans/0/tags"}
    assert "run_iteration" in error["detail"]
    answer = post_metrics(client, experiment_id, [metric("71", "x", 1)], run=3, expect=422)
    assert answer["errors"][0]["source"] == {"pointer": "/data/attributes/tags"}
    body = {
        "data": {
            "attributes": {
                "spans": [good, bad],
                "metrics": [metric("71", "x", 1)],
                "tags": ["run_iteration:1"],
            }
        }
    }
    answer = call(client, "POST", f"{API}/experiments/{experiment_id}/events", body, 422)
    assert answer["errors"][0]["source"] == {"pointer": "/data/attributes/spans/1/tags"}
    assert backend.count_rows(experiment_id) == 0
    assert backend.experiment_rows(experiment_id) == []


# Child spans ---------------------------------------------------------------------------


@pytest.mark.parametrize(("children_first", "own_tokens"), [(True, 0), (True, 1), (False, 1)])
def test_child_spans_roll_tokens_and_cost_up_onto_the_root(
    client: TestClient, backend: SqlBackend, children_first: bool, own_tokens: int
) -> None:
    experiment_id, records = setup_experiment(client)
    trace = "ab" * 16
    own = {"input_tokens": own_tokens} if own_tokens else {}
    root = root_span(experiment_id, records[1], 2, "81", trace_id=trace, metrics=own)
    children = [
        child_span(experiment_id, 2, "82", "81", trace_id=trace),
        child_span(experiment_id, 2, "83", "82", trace_id=trace, tokens=(50, 10)),
        child_span(experiment_id, 2, "84", "81", trace_id=trace, kind="tool"),
    ]
    if children_first:
        post_spans(client, *children)
        post_spans(client, root)
    else:
        post_spans(client, root)
        post_spans(client, children[0])
        post_spans(client, *children[1:])
    [row] = rows_of(backend, experiment_id)
    assert row.rollup is not None
    assert (row.rollup.input_tokens, row.rollup.output_tokens) == (150 + own_tokens, 30)
    assert row.rollup.total_tokens == 180 + own_tokens
    cost = estimate_cost("gpt-4o-mini", "openai", 100, 20)
    more = estimate_cost("gpt-4o-mini", "openai", 50, 10)
    assert cost is not None and more is not None
    assert row.rollup.estimated_total_cost == cost + more
    assert [span.span_id for span in row.spans] == ["82", "83", "84"]
    assert {span.parent_id for span in row.spans} == {"81", "82"}
    tool = row.spans[2]
    assert tool.kind == "tool"
    assert tool.metadata == {"metrics": {"time_to_first": 1.5}}
    # Re-posting a child neither duplicates it nor counts its tokens twice.
    post_spans(client, children[0])
    [row] = rows_of(backend, experiment_id)
    assert len(row.spans) == 3
    assert row.rollup is not None and row.rollup.input_tokens == 150 + own_tokens


def test_task_errors_are_stored_on_the_row(client: TestClient, backend: SqlBackend) -> None:
    experiment_id, records = setup_experiment(client)
    error = {"type": "builtins.ValueError", "message": "bad input", "stack": "Traceback..."}
    post_spans(client, root_span(experiment_id, records[0], 1, "91", output=None, error=error))
    failed = {"type": "builtins.KeyError", "message": "'x'", "stack": "Traceback..."}
    post_metrics(client, experiment_id, [metric("91", "exact", None, error=failed)])
    [row] = rows_of(backend, experiment_id)
    assert row.error is not None
    assert (row.error.type, row.error.message) == ("builtins.ValueError", "bad input")
    [evaluation] = row.evaluations
    assert evaluation.error is not None and evaluation.error.type == "builtins.KeyError"
    assert evaluation.value is None


# Concurrency ---------------------------------------------------------------------------


def test_concurrent_spans_and_metrics_lose_and_duplicate_nothing(
    client: TestClient, backend: SqlBackend
) -> None:
    experiment_id, records = setup_experiment(client, run_count=2, records=6)
    posts: list[tuple[str, Any]] = []
    for run in (1, 2):
        for n, record_id in enumerate(records):
            span_id = f"{run}{n:03d}"
            posts.append(("span", root_span(experiment_id, record_id, run, span_id)))
            posts.append(("metrics", (run, [metric(span_id, "a", n), metric(span_id, "b", True)])))
    random.Random(7).shuffle(posts)
    posts += posts[:6]  # some retries
    lock = threading.Lock()
    failures: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                if not posts:
                    return
                kind, item = posts.pop()
            try:
                if kind == "span":
                    post_spans(client, item)
                else:
                    post_metrics(client, experiment_id, item[1], run=item[0])
            except AssertionError as error:  # pragma: no cover - reported below
                failures.append(str(error))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    rows = rows_of(backend, experiment_id)
    assert len(rows) == 12
    assert all(sorted(e.label for e in row.evaluations) == ["a", "b"] for row in rows)


# The engine-level functions --------------------------------------------------------------


def test_ingest_functions_take_parsed_spans_and_metrics(
    client: TestClient, backend: SqlBackend
) -> None:
    experiment_id, records = setup_experiment(client)
    early = IncomingMetric(label="m", metric_type="score", value=2, timestamp_ms=5, span_id="7")
    assert ingest_metrics(backend.engine, experiment_id, [early]).pending == 1
    span = IncomingSpan(
        span_id="7",
        trace_id=TRACE,
        name="task",
        start_ns=10,
        duration_ns=20,
        parent_id="undefined",
        tags=(f"dataset_record_id:{records[1]}", "run_iteration:2"),
    )
    result = ingest_spans(backend.engine, experiment_id, [span])
    assert (result.spans, result.evaluations) == (1, 1)
    [row] = backend.experiment_rows(experiment_id)
    assert (row.record_id, row.run_iteration, row.evaluations[0].value) == (records[1], 2, 2)
    orphan = IncomingSpan(span_id="8", trace_id=TRACE, name="task", start_ns=1, duration_ns=1)
    with pytest.raises(IngestError) as caught:
        ingest_spans(backend.engine, experiment_id, [span, orphan])
    assert (caught.value.collection, caught.value.index, caught.value.field) == ("spans", 1, "tags")


def test_sqlite_ingestion_takes_turns_and_needs_no_follow_up(
    client: TestClient, backend: SqlBackend
) -> None:
    """On SQLite a group's transaction holds the write lock from its first look-up, so it
    sees every earlier commit: one transaction, traces rolled up inside it. PostgreSQL's
    writers run in parallel, and a follow-up transaction looks for the other half."""
    from sqlalchemy import event

    experiment_id, records = setup_experiment(client, records=1)
    statements: list[str] = []
    commits: list[int] = []
    event.listen(backend.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    event.listen(backend.engine, "commit", lambda connection: commits.append(1))
    root = IncomingSpan(
        span_id="1",
        trace_id=TRACE,
        name="task",
        start_ns=1,
        duration_ns=5,
        tags=(f"dataset_record_id:{records[0]}", "run_iteration:1"),
    )
    child = IncomingSpan(
        span_id="2",
        trace_id=TRACE,
        name="llm",
        start_ns=2,
        duration_ns=2,
        parent_id="1",
        kind="llm",
        metrics={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
    )
    metric = IncomingMetric(label="m", metric_type="score", value=1, timestamp_ms=5, span_id="1")
    writer = IngestWriter(backend.engine)
    writer.submit({experiment_id: EventBatch(spans=[child, root], metrics=[metric])}).result()
    writer.stop()
    serialized = backend.engine.dialect.name == "sqlite"
    assert (statements[0] == "BEGIN IMMEDIATE") is serialized
    assert len(commits) == (1 if serialized else 2)
    [row] = backend.experiment_rows(experiment_id)
    assert row.rollup is not None and row.rollup.total_tokens == 7
    assert [evaluation.value for evaluation in row.evaluations] == [1]


def test_grouped_requests_fail_alone_and_see_each_other(
    client: TestClient, backend: SqlBackend
) -> None:
    """Jobs queued together share a transaction: a bad one fails alone and writes nothing,
    a metric finds its span in the same group, and a re-post inside the group is a
    duplicate, as when the requests are written one after another."""
    experiment_id, records = setup_experiment(client, records=4)
    writer = IngestWriter(backend.engine)

    def span(n: int, *, run: int = 1) -> IncomingSpan:
        tags = (f"dataset_record_id:{records[n]}", f"run_iteration:{run}")
        return IncomingSpan(
            span_id=str(n + 1), trace_id=TRACE, name="task", start_ns=1, duration_ns=1, tags=tags
        )

    def metric(n: int) -> IncomingMetric:
        return IncomingMetric(
            label="m", metric_type="score", value=n, timestamp_ms=5, span_id=str(n + 1)
        )

    jobs = [
        {experiment_id: EventBatch(metrics=[metric(0), metric(1)])},
        {experiment_id: EventBatch(spans=[span(0), span(1)])},
        {experiment_id: EventBatch(spans=[span(2, run=9)])},  # run_count is 2
        {experiment_id: EventBatch(spans=[span(0)], metrics=[metric(2)])},
        {"no-such-experiment": EventBatch(spans=[span(3)])},
    ]
    # Queued in this order at once (submit does not wait), so mostly one group; from one
    # thread, so that the re-post of span 0 comes after its first post, as the checks say.
    futures = [writer.submit(batches) for batches in jobs]
    writer.stop()
    early = futures[0].result().results[experiment_id]
    assert early.pending + early.evaluations == 2  # which of the two depends on the grouping
    assert futures[1].result().results[experiment_id].spans == 2
    with pytest.raises(IngestError):
        futures[2].result()
    again = futures[3].result().results[experiment_id]
    assert (again.spans, again.duplicate_spans, again.pending) == (0, 1, 1)
    with pytest.raises(ExperimentNotFoundError):
        futures[4].result()
    rows = backend.experiment_rows(experiment_id)
    assert [(row.record_id, [e.value for e in row.evaluations]) for row in rows] == [
        (records[0], [0]),
        (records[1], [1]),
    ]
    # Skipping unknown experiments (the span intake) is per job, too.
    skipped = writer.submit({"no-such-experiment": EventBatch(spans=[span(3)])}, skip_unknown=True)
    assert skipped.result().unknown == ["no-such-experiment"]
    writer.stop()


# The same aggregates as an SDK run ---------------------------------------------------------


def _task(input_data: dict[str, Any], config: dict[str, Any]) -> str:
    # Different answers in different runs: the aggregates have something to average.
    return f"{input_data['n'] % 3}-{random.random() < 0.5}"


def _exact(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    return str(output_data).endswith("True")


def _score(input_data: Any, output_data: Any, expected_output: Any) -> float | int:
    return len(str(output_data)) if input_data["n"] % 2 else random.random()


def _label(input_data: Any, output_data: Any, expected_output: Any) -> Any:
    return None if input_data["n"] == 3 else str(output_data)[:1]


def _judge(input_data: Any, output_data: Any, expected_output: Any) -> EvaluatorResult:
    return EvaluatorResult(
        value={"ok": True}, reasoning="because", assessment="pass", tags={"k": "v"}
    )


def _flaky(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    if input_data["n"] == 1 and str(output_data).endswith("False"):
        raise ValueError("flaky evaluator")
    return bool(input_data["n"] != 2)


def _passes(inputs: Any, outputs: Any, expected_outputs: Any, evaluators_results: Any) -> int:
    return int(evaluators_results["_exact"].count(True))


def _wire_metric(evaluation: EvaluationRecord, span_id: str, trace_id: str) -> dict[str, Any]:
    error = evaluation.error
    wire = {
        "metric_source": "custom",
        "span_id": span_id,
        "trace_id": trace_id,
        "timestamp_ms": evaluation.timestamp_ms,
        "metric_type": evaluation.metric_type,
        "label": evaluation.label,
        f"{evaluation.metric_type}_value": evaluation.value,
        "error": {"type": error.type, "message": error.message, "stack": error.stack}
        if error
        else None,
        "tags": [f"{k}:{v}" for k, v in (evaluation.tags or {}).items()],
        "status": "ERROR" if error else "OK",
    }
    for name in ("reasoning", "assessment"):
        if getattr(evaluation, name) is not None:
            wire[name] = getattr(evaluation, name)
    return wire


def _same(left: Any, right: Any) -> None:
    # Through JSON text, so that a NaN in the same place on both sides compares equal.
    assert json.dumps(left, sort_keys=True, default=str) == json.dumps(
        right, sort_keys=True, default=str
    )


def test_aggregates_equal_those_of_an_sdk_run_of_the_same_data(
    client: TestClient, backend: SqlBackend, llmobs: type[LLMObs]
) -> None:
    random.seed(11)
    records = [{"input_data": {"n": n}, "expected_output": n} for n in range(5)]
    dataset = llmobs.create_dataset(dataset_name="numbers", records=records)
    experiment = llmobs.experiment(
        "sdk-run",
        _task,
        dataset,
        [_exact, _score, _label, _judge, _flaky],
        summary_evaluators=[_passes],
        runs=3,
    )
    experiment.run(jobs=1)
    assert experiment.id is not None
    sdk_info = backend.get_experiment(experiment.id)
    sdk_rows = backend.experiment_rows(sdk_info.id)
    # The data has what aggregation must get right: errors, missing values, all types.
    evaluations = [e for row in sdk_rows for e in row.evaluations]
    assert any(e.error is not None for e in evaluations)
    assert any(e.value is None and e.error is None for e in evaluations)
    assert {e.metric_type for e in evaluations} == {"boolean", "score", "categorical", "json"}

    # The same results, posted over HTTP as ddtrace would: metrics first, spans later.
    project_id = call(
        client, "POST", f"{API}/projects", {"data": {"attributes": {"name": "http"}}}
    )["data"]["id"]
    dataset_id = call(
        client, "POST", f"{API}/{project_id}/datasets", {"data": {"attributes": {"name": "n"}}}
    )["data"]["id"]
    inserts = [
        {"id": record["record_id"], "input": record["input_data"], "expected_output": None}
        for record in dataset
    ]
    call(
        client,
        "POST",
        f"{API}/{project_id}/datasets/{dataset_id}/batch_update",
        {"data": {"attributes": {"insert_records": inserts}}},
    )
    attributes = {"name": "http-run", "project_id": project_id, "dataset_id": dataset_id}
    experiment_id = call(
        client,
        "POST",
        f"{API}/experiments",
        {"data": {"attributes": {**attributes, "run_count": 3}}},
    )["data"]["id"]
    spans = []
    # Run ids are unique in a store, and the SDK's run lives in this one too.
    run_ids = {run.run_iteration: str(uuid.uuid4()) for run in sdk_info.runs}
    for row in sdk_rows:
        run_id = run_ids[row.run_iteration]
        metrics = [_wire_metric(e, row.span_id, row.trace_id) for e in row.evaluations]
        post_metrics(client, experiment_id, metrics, run=row.run_iteration, run_id=run_id)
        error = row.error
        spans.append(
            root_span(
                experiment_id,
                row.record_id,
                row.run_iteration,
                row.span_id,
                trace_id=row.trace_id,
                run_id=run_id,
                output=row.output,
                start_ns=row.start_ns,
                duration=row.duration_ns,
                error={"type": error.type, "message": error.message, "stack": error.stack}
                if error
                else None,
            )
        )
    for item in backend.summary_evaluations(sdk_info.id):
        summary = _wire_metric(item.evaluation, "", "")
        summary["metric_source"] = "summary"
        post_metrics(client, experiment_id, [summary], run=item.run_iteration)
    random.Random(3).shuffle(spans)
    for start in range(0, len(spans), 4):
        post_spans(client, *spans[start : start + 4])

    http_info = backend.get_experiment(experiment_id)
    assert [run.run_id for run in http_info.runs] == [run_ids[n] for n in (1, 2, 3)]
    sdk = pulled_experiment(backend, sdk_info)
    http = pulled_experiment(backend, http_info)
    assert len(backend.experiment_rows(experiment_id)) == len(sdk_rows) == 15
    _same(http.summary(), sdk.summary())
    _same(http.record_summaries(), sdk.record_summaries())
    for run in (1, 2, 3):
        _same(http.summary(run=run), sdk.summary(run=run))
    _same(
        summarize_summary_evaluations(backend.summary_evaluations(experiment_id), [1, 2, 3]),
        summarize_summary_evaluations(backend.summary_evaluations(sdk_info.id), [1, 2, 3]),
    )
    listed = call(client, "GET", f"/api/v2/llm-obs/v1/experiments?filter[id]={experiment_id}")
    _same(listed["data"][0]["attributes"]["aggregate_data"], sdk.summary())


# The migration ------------------------------------------------------------------------------


def _alembic(backend: SqlBackend, action: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from assay.store.sql.engine import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with backend.engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def test_the_migration_goes_both_ways_on_a_store_with_rows(
    backend: SqlBackend, llmobs: type[LLMObs]
) -> None:
    from sqlalchemy import inspect

    dataset = llmobs.create_dataset(dataset_name="kept", records=[{"input_data": {"n": 0}}])
    experiment = llmobs.experiment("kept", _task, dataset, [_exact], runs=2)
    experiment.run()
    assert experiment.id is not None
    before = backend.experiment_rows(experiment.id)

    _alembic(backend, "downgrade", "0002")
    inspector = inspect(backend.engine)
    assert "posted_evaluations" not in inspector.get_table_names()
    assert "uq_spans_span" not in {index["name"] for index in inspector.get_indexes("spans")}
    _alembic(backend, "upgrade", "head")
    inspector = inspect(backend.engine)
    assert "posted_evaluations" in inspector.get_table_names()
    indexes = {index["name"]: index for index in inspector.get_indexes("spans")}
    assert indexes["uq_spans_span"]["unique"]
    assert "ix_spans_child_trace" in indexes
    assert backend.experiment_rows(experiment.id) == before


def test_search_aggregates_see_what_was_ingested(client: TestClient, backend: SqlBackend) -> None:
    experiment_id, records = setup_experiment(client, run_count=2)
    post_metrics(client, experiment_id, [metric("1", "acc", 1.0)])
    post_spans(client, root_span(experiment_id, records[0], 1, "1"))

    def means() -> dict[str, float | None]:
        return {
            item.record_id: item.mean
            for item in backend.record_aggregates(experiment_id)
            if item.facet.endswith("acc")
        }

    assert means() == {records[0]: 1.0}
    post_spans(client, root_span(experiment_id, records[0], 2, "2"))
    post_metrics(client, experiment_id, [metric("2", "acc", 0.0)], run=2)
    assert means() == {records[0]: 0.5}
    # A later post of a metric replaces it, and the aggregates follow.
    post_metrics(client, experiment_id, [metric("2", "acc", 0.5, timestamp_ms=5000)], run=2)
    assert means() == {records[0]: 0.75}
