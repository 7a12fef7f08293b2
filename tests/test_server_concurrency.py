"""Sixteen clients writing to one server at once, over real HTTP, on SQLite and PostgreSQL.

Issue 5 asks that "16 concurrent clients posting events to one experiment lose and
duplicate nothing". A real uvicorn server on a loopback port serves a fresh store, and
sixteen threads, each with its own httpx client, start every step together (a barrier),
as sixteen ddtrace processes would:

1. create-or-get the same projects and datasets, and append records to the datasets;
2. create experiments: ten writers share one with ``run_count`` 5 (two writers per run,
   each with half of the records); the six others create one each (``run_count`` 2) in
   two other projects, and post its run 1 and a partner's run 2, so that their span
   batches mix two experiments, as from one ddtrace process running two;
3. post task spans (each with an LLM child span) in batches to the span intake and the
   evaluation metrics of each record to the events endpoint, some before and some after
   their spans; re-post a batch of each, as a client retrying a timeout does; then post
   one summary metric per run.

Then everything is read back through the API and compared with what was sent: every
record, span and metric exactly once, and the aggregates computed here by hand from the
sent values. Every response must be a success (no 5xx, no 409 from a lost create-or-get
race), the server may log no error (such as SQLite's "database is locked"), and no request
may hold two pooled connections at once: sixteen such requests would take the whole pool
and wait for each other until it timed out. All of it runs against a server that writes
each post before answering it, and against one with an ingest queue (``--ingest-queue``),
whose reads wait for the posts it answered.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event

from assay.server import create_app
from assay.store.sql.backend import SqlBackend
from assay.store.sql.lookups import list_projects
from live_server import serving

API = "/api/unstable/llm-obs/v1"
PUBLIC = "/api/v2/llm-obs/v1"
WRITERS = 16
SHARED_WRITERS = 10
"""Writers 0..9 share the experiment of project alpha; 10..13 use beta, 14 and 15 gamma."""
SHARED_RUNS = 5
OWN_RUNS = 2
RECORDS_PER_WRITER = 4
SPAN_BATCH = 3
"""Records whose spans a writer buffers before it posts them, as ddtrace's span writer."""
TONES = ("calm", "terse", "warm")
BASE_NS = 1_700_000_000_000_000_000


def project_of(writer: int) -> str:
    return "alpha" if writer < SHARED_WRITERS else "beta" if writer < 14 else "gamma"


@dataclass
class SentRow:
    """One (record, run) a writer posted: its root span and what it carried."""

    record_id: str
    run: int
    span_id: str
    metrics: dict[str, Any]
    """Label to value; ``judge`` is None when it was posted with an error."""
    tokens: int


@dataclass
class Sent:
    """What one experiment was sent, gathered from every writer."""

    rows: list[SentRow] = field(default_factory=list)
    summaries: list[tuple[int, str, float]] = field(default_factory=list)


class Client:
    """One writer's HTTP client; every response's status is kept for the checks."""

    def __init__(self, url: str, statuses: list[tuple[str, int]]) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)
        self.statuses = statuses

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, path, json=body)
        self.statuses.append((f"{method} {path.split('?')[0]}", response.status_code))
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()


def values_of(index: int, run: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The metrics of record ``index`` in run ``run``; every fifth judge fails."""
    metrics: dict[str, Any] = {
        "accuracy": ((index * 7 + run * 3) % 11) / 10,
        "exact": (index + run) % 3 != 0,
        "tone": TONES[(index + 2 * run) % 3],
        "judge": None if (index + run) % 5 == 0 else float(index % 4),
    }
    error = None
    if metrics["judge"] is None:
        error = {"type": "TimeoutError", "message": "judge timed out", "stack": ""}
    return metrics, error


def wire_metric(
    label: str, value: Any, *, span_id: str, trace_id: str, error: Any = None
) -> dict[str, Any]:
    kind = {bool: "boolean", float: "score", str: "categorical"}.get(type(value), "categorical")
    return {
        "metric_source": "custom",
        "span_id": span_id,
        "trace_id": trace_id,
        "timestamp_ms": 1_700_000_000_000,
        "metric_type": kind,
        "label": label,
        f"{kind}_value": value,
        "error": error,
        "tags": [],
        "status": "ERROR" if error else "OK",
    }


def summary_metric(label: str, value: float) -> dict[str, Any]:
    return {
        "metric_source": "summary",
        "span_id": "",
        "trace_id": "",
        "timestamp_ms": 1_700_000_000_000,
        "metric_type": "score",
        "label": label,
        "score_value": value,
        "error": None,
        "tags": [],
    }


@dataclass
class Experiment:
    id: str
    project_id: str
    run_ids: dict[int, str]


class Writer:
    """Posts rows as ddtrace does: the metrics of each record as it is done, its spans in
    batches, and summary metrics at the end of a run."""

    def __init__(self, number: int, client: Client) -> None:
        self.number = number
        self.client = client
        self.sent: list[tuple[str, SentRow]] = []
        self.summaries: list[tuple[str, int, str, float]] = []
        self.buffer: list[dict[str, Any]] = []
        self.sequence = 0
        self.first_batch: list[dict[str, Any]] | None = None
        self.first_events: tuple[str, dict[str, Any]] | None = None

    @staticmethod
    def tags(experiment: Experiment, run: int) -> list[str]:
        return [
            f"experiment_id:{experiment.id}",
            f"run_id:{experiment.run_ids[run]}",
            f"run_iteration:{run}",
        ]

    def flush(self) -> None:
        if not self.buffer:
            return
        events = [
            {
                "_dd.stage": "raw",
                "_dd.tracer_version": "4.16.0",
                "event_type": "span",
                "_dd.scope": "experiments",
                "spans": [span],
            }
            for span in self.buffer
        ]
        self.buffer = []
        self.client.call("POST", "/api/v2/llmobs", events)
        if self.first_batch is None:
            self.first_batch = events

    def post_row(self, experiment: Experiment, index: int, record_id: str, run: int) -> None:
        self.sequence += 1
        sequence = self.sequence
        span_id = str((self.number + 1) * 10**9 + sequence)
        trace_id = f"{self.number:08x}{run:08x}{sequence:016x}"
        metrics, error = values_of(index, run)
        tokens = (10 + index, run)
        tags = self.tags(experiment, run)
        self.buffer.append(
            {
                "span_id": span_id,
                "trace_id": trace_id,
                "parent_id": "undefined",
                "name": "task",
                "start_ns": BASE_NS + sequence,
                "duration": 1_000_000 * (1 + index % 5),
                "status": "ok",
                "meta": {
                    "span.kind": "experiment",
                    "input": {"index": index},
                    "output": index * run,
                    "expected_output": index,
                    "metadata": {},
                },
                "metrics": {},
                "tags": sorted([*tags, f"dataset_record_id:{record_id}"]),
            }
        )
        self.buffer.append(
            {
                "span_id": str(int(span_id) + 5 * 10**8),
                "trace_id": trace_id,
                "parent_id": span_id,
                "name": "openai.request",
                "start_ns": BASE_NS + sequence + 1,
                "duration": 500,
                "status": "ok",
                "meta": {"span": {"kind": "llm"}, "model_name": "unpriced-model"},
                "metrics": {"input_tokens": tokens[0], "output_tokens": tokens[1]},
                "tags": tags,
            }
        )
        # Most metrics arrive before their span, as with ddtrace; every third record's
        # spans are flushed first, so that both orders meet.
        if sequence % SPAN_BATCH == 0:
            self.flush()
        wired = [
            wire_metric(
                label,
                value,
                span_id=span_id,
                trace_id=trace_id,
                error=error if label == "judge" else None,
            )
            for label, value in metrics.items()
        ]
        attributes = {"scope": "experiments", "metrics": wired, "tags": tags}
        body = {"data": {"type": "experiments", "attributes": attributes}}
        path = f"{API}/experiments/{experiment.id}/events"
        self.client.call("POST", path, body)
        if self.first_events is None:
            self.first_events = (path, body)
        if len(self.buffer) >= 2 * SPAN_BATCH:
            self.flush()
        self.sent.append((experiment.id, SentRow(record_id, run, span_id, metrics, sum(tokens))))

    def post_summary(self, experiment: Experiment, run: int, records: int) -> None:
        """The run's count of exact rows: over all its records, whoever posted them."""
        value = float(sum(1 for index in range(records) if values_of(index, run)[0]["exact"]))
        attributes = {
            "scope": "experiments",
            "metrics": [summary_metric("exact_count", value)],
            "tags": self.tags(experiment, run),
        }
        body = {"data": {"type": "experiments", "attributes": attributes}}
        self.client.call("POST", f"{API}/experiments/{experiment.id}/events", body)
        self.summaries.append((experiment.id, run, "exact_count", value))

    def retry_first_posts(self) -> None:
        """Send the first span batch and events post again: retried after a timeout."""
        assert self.first_batch is not None and self.first_events is not None
        self.client.call("POST", "/evp_proxy/v2/api/v2/llmobs", self.first_batch)
        self.client.call("POST", *self.first_events)


# The scenario ------------------------------------------------------------------------------


def partner(writer: int) -> int:
    """The writer (of the same project) whose experiment's run 2 ``writer`` posts, and
    who posts run 2 of ``writer``'s: 10 and 11, 12 and 13, 14 and 15."""
    return writer ^ 1


@dataclass
class Outcome:
    projects: dict[int, str] = field(default_factory=dict)
    """Writer to the id its create-or-get returned."""
    datasets: dict[int, str] = field(default_factory=dict)
    records: dict[str, list[str]] = field(default_factory=dict)
    """Project name to the record ids appended to its dataset."""
    experiments: dict[int, Experiment] = field(default_factory=dict)
    """Creating writer to experiment: 0 for the shared one, and 10..15."""
    sent: dict[str, Sent] = field(default_factory=lambda: defaultdict(Sent))
    statuses: list[tuple[str, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def run_writers(url: str) -> Outcome:
    outcome = Outcome()
    barrier = threading.Barrier(WRITERS, timeout=120)
    lock = threading.Lock()
    shared_run_ids = {run: str(uuid.uuid4()) for run in range(1, SHARED_RUNS + 1)}

    def writer(number: int, client: Client) -> None:
        project = project_of(number)

        # 1. Create-or-get the project and its dataset, and append records to it.
        body = {"data": {"type": "projects", "attributes": {"name": project}}}
        project_id = client.call("POST", f"{API}/projects", body)["data"]["id"]
        body = {"data": {"type": "datasets", "attributes": {"name": f"{project}-questions"}}}
        dataset_id = client.call("POST", f"{API}/{project_id}/datasets", body)["data"]["id"]
        ids = [f"w{number:02d}-{k}" for k in range(RECORDS_PER_WRITER)]
        records = [
            {"id": rid, "input": {"writer": number, "k": k}, "expected_output": k}
            for k, rid in enumerate(ids)
        ]
        records_path = f"{PUBLIC}/{project_id}/datasets/{dataset_id}"
        if number % 2:
            body = {"data": {"type": "datasets", "attributes": {"records": records}}}
            client.call("POST", f"{records_path}/records", body)
        else:
            body = {"data": {"type": "datasets", "attributes": {"insert_records": records}}}
            client.call("POST", f"{records_path}/batch_update", body)
        with lock:
            outcome.projects[number] = project_id
            outcome.datasets[number] = dataset_id
            outcome.records.setdefault(project, []).extend(ids)
        barrier.wait()

        # 2. Experiments: one shared by writers 0..9 (created by writer 0), one each for
        # the others. ddtrace asks for the project again before creating one.
        again = client.call("POST", f"{API}/projects", {"data": {"attributes": {"name": project}}})
        assert again["data"]["id"] == project_id
        shared = number < SHARED_WRITERS
        if number == 0 or not shared:
            attributes = {
                "name": "shared" if shared else f"own-{number}",
                "project_id": project_id,
                "dataset_id": dataset_id,
                "run_count": SHARED_RUNS if shared else OWN_RUNS,
                "ensure_unique": True,
                "config": {},
                "metadata": {"tags": [f"writer:{number}"]},
            }
            body = {"data": {"type": "experiments", "attributes": attributes}}
            experiment_id = client.call("POST", f"{API}/experiments", body)["data"]["id"]
            run_ids = shared_run_ids if shared else {run: str(uuid.uuid4()) for run in (1, 2)}
            with lock:
                outcome.experiments[number] = Experiment(experiment_id, project_id, run_ids)
        barrier.wait()
        own = outcome.experiments[0 if shared else number]
        status = {"data": {"type": "experiments", "attributes": {"status": "running"}}}
        client.call("PATCH", f"{API}/experiments/{own.id}", status)
        # The records of the experiments' dataset version, in their order.
        listing = client.call("GET", f"{records_path}/records?page[limit]=5000")
        order = list(enumerate(item["id"] for item in listing["data"]))
        barrier.wait()

        # 3. Spans and metrics, then a summary metric per run.
        work = Writer(number, client)
        if shared:
            # Two writers per run, each with every other record.
            run = number % SHARED_RUNS + 1
            for index, record_id in order[number // SHARED_RUNS :: 2]:
                work.post_row(own, index, record_id, run)
            owned = [(own, run)] if number < SHARED_RUNS else []
        else:
            # Run 1 of its own experiment and run 2 of its partner's, record by record,
            # as one ddtrace process running two experiments: its span batches mix them,
            # and its partner's mix the same two in the other order.
            other = outcome.experiments[partner(number)]
            for index, record_id in order:
                work.post_row(own, index, record_id, 1)
                work.post_row(other, index, record_id, 2)
            owned = [(own, 1), (other, 2)]
        work.flush()
        work.retry_first_posts()
        for experiment, run in owned:
            work.post_summary(experiment, run, len(order))
        with lock:
            for experiment_id, row in work.sent:
                outcome.sent[experiment_id].rows.append(row)
            for experiment_id, run, label, value in work.summaries:
                outcome.sent[experiment_id].summaries.append((run, label, value))
        barrier.wait()
        if number == 0 or not shared:
            status = {"data": {"type": "experiments", "attributes": {"status": "completed"}}}
            client.call("PATCH", f"{API}/experiments/{own.id}", status)

    def guarded(number: int) -> None:
        client = Client(url, outcome.statuses)
        try:
            writer(number, client)
        except BaseException as error:  # reported by the test, after every thread ends
            outcome.failures.append(f"writer {number}: {type(error).__name__}: {error}")
            barrier.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


# Expected aggregates, by hand ----------------------------------------------------------------


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def mode(values: list[str]) -> str:
    """The most frequent value; a tie goes to the one that sorts first (Assay's rule)."""
    counts = Counter(values)
    return min(counts, key=lambda value: (-counts[value], value))


def expected_summary(rows: list[SentRow], runs: list[int]) -> dict[str, Any]:
    by_record: dict[str, list[SentRow]] = defaultdict(list)
    for row in rows:
        by_record[row.record_id].append(row)

    def over_records(label: str, combine: Callable[[list[Any]], Any]) -> list[Any]:
        found = []
        for record_rows in by_record.values():
            values = [row.metrics[label] for row in record_rows]
            values = [value for value in values if value is not None]
            if values:
                found.append(combine(values))
        return found

    def per_run(label: str, combine: Callable[[list[Any]], Any]) -> list[Any]:
        return [combine([r.metrics[label] for r in rows if r.run == run]) for run in runs]

    def share(values: list[bool]) -> float:
        return mean([float(value) for value in values])

    judged = [row.metrics["judge"] for row in rows if row.metrics["judge"] is not None]
    return {
        "rows": len(rows),
        "records": len(by_record),
        "accuracy": (mean(over_records("accuracy", mean)), per_run("accuracy", mean)),
        "exact": (mean(over_records("exact", share)), per_run("exact", share)),
        "tone": (mode(over_records("tone", mode)), per_run("tone", mode)),
        "judge": (mean(over_records("judge", mean)), len(rows) - len(judged)),
        "tokens": sum(row.tokens for row in rows),
    }


# The test ------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def server_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlBackend]:
    url = (
        f"sqlite:///{tmp_path}/assay.db"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    backend = SqlBackend(url)
    try:
        yield backend
    finally:
        backend.close()


@contextmanager
def most_connections_per_request(engine: Engine) -> Iterator[list[int]]:
    """The most pooled connections one thread (one request) held at once.

    A request that takes a second connection while it holds one can hang: sixteen such
    requests at once hold the whole pool and wait for each other until it times out.
    """
    held = threading.local()
    most = [0]

    def checkout(*_: Any) -> None:
        held.count = getattr(held, "count", 0) + 1
        most[0] = max(most[0], held.count)

    def checkin(*_: Any) -> None:
        held.count = getattr(held, "count", 1) - 1

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    try:
        yield most
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "checkin", checkin)


@pytest.mark.parametrize("queue", [False, True], ids=["answered-after-writing", "queued"])
def test_sixteen_concurrent_writers_lose_and_duplicate_nothing(
    server_store: SqlBackend, caplog: pytest.LogCaptureFixture, queue: bool
) -> None:
    caplog.set_level(logging.WARNING)
    with (
        serving(create_app(backend=server_store, ingest_queue=queue)) as url,
        most_connections_per_request(server_store.engine) as most,
    ):
        outcome = run_writers(url)
        assert outcome.failures == []
        assert most == [1]
        statuses = Counter(status for _, status in outcome.statuses)
        assert all(200 <= status < 300 for status in statuses), statuses
        reader = Client(url, [])
        try:
            check_everything(reader, server_store, outcome)
        finally:
            reader.close()

    # Only the server's own complaints: store errors, and any "database is locked".
    problems = [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("assay.server") or "locked" in record.getMessage()
    ]
    assert problems == []


def check_everything(reader: Client, store: SqlBackend, outcome: Outcome) -> None:
    # Create-or-get: one project and one dataset per name, whoever asked first.
    for project in ("alpha", "beta", "gamma"):
        writers = [n for n in range(WRITERS) if project_of(n) == project]
        assert len({outcome.projects[n] for n in writers}) == 1
        assert len({outcome.datasets[n] for n in writers}) == 1
        listed = reader.call("GET", f"{PUBLIC}/projects?filter[name]={project}")["data"]
        assert [item["id"] for item in listed] == [outcome.projects[writers[0]]]
        project_id, dataset_id = outcome.projects[writers[0]], outcome.datasets[writers[0]]
        datasets = reader.call("GET", f"{PUBLIC}/{project_id}/datasets")["data"]
        assert [item["id"] for item in datasets] == [dataset_id]
        # Every append made one version; every record is there once.
        assert datasets[0]["attributes"]["current_version"] == len(writers)
        path = f"{PUBLIC}/{project_id}/datasets/{dataset_id}"
        records = reader.call("GET", f"{path}/records?page[limit]=5000")["data"]
        assert sorted(item["id"] for item in records) == sorted(outcome.records[project])
        versions = reader.call("GET", f"{path}/versions")["data"]
        counts = [item["attributes"]["records"] for item in versions]
        assert counts == [RECORDS_PER_WRITER * n for n in range(len(writers) + 1)]

    assert len(outcome.sent) == 1 + WRITERS - SHARED_WRITERS
    for number, experiment in sorted(outcome.experiments.items()):
        sent = outcome.sent[experiment.id]
        runs = list(range(1, (SHARED_RUNS if number == 0 else OWN_RUNS) + 1))
        if number == 0:
            assert len(sent.rows) == SHARED_WRITERS * RECORDS_PER_WRITER * SHARED_RUNS
        check_experiment(reader, store, experiment, sent, runs)


def check_experiment(
    reader: Client, store: SqlBackend, experiment: Experiment, sent: Sent, runs: list[int]
) -> None:
    path = f"{API}/experiments/{experiment.id}"
    info = reader.call("GET", path)["data"]["attributes"]
    assert info["status"] == "completed"
    assert {run["run_iteration"]: run["run_id"] for run in info["runs"]} == {
        run: experiment.run_ids[run] for run in runs
    }

    # Every span once, with each of its metrics once.
    events = reader.call("GET", f"{path}/events?include[eval_metrics]=true")["data"]
    spans = events["attributes"]["spans"]
    assert sorted(span["span_id"] for span in spans) == sorted(row.span_id for row in sent.rows)
    by_span = {row.span_id: row for row in sent.rows}
    for span in spans:
        row = by_span[span["span_id"]]
        metrics = span["eval_metrics"]
        assert sorted(m["label"] for m in metrics) == sorted(row.metrics)
        values = {m["label"]: m[f"{m['metric_type']}_value"] for m in metrics}
        assert values == row.metrics
        errors = [m["label"] for m in metrics if m["error"]]
        assert errors == (["judge"] if row.metrics["judge"] is None else [])
    summaries = sorted(
        (m["run_iteration"], m["label"], m["score_value"])
        for m in events["attributes"]["summary_metrics"]
    )
    assert summaries == sorted(sent.summaries)
    assert [r for r, _, _ in summaries] == runs

    # Behind the API: one child span under every row, no metric left waiting.
    stored = store.experiment_rows(experiment.id, with_spans=True)
    assert [len(row.spans) for row in stored] == [1] * len(sent.rows)
    assert store.count_rows(experiment.id) == len(sent.rows)

    # The aggregates, against the same numbers worked out from what was sent.
    want = expected_summary(sent.rows, runs)
    summary = reader.call("GET", f"{path}/summary")["data"]["attributes"]
    assert (summary["rows"], summary["records"]) == (want["rows"], want["records"])
    evaluations = summary["evaluations"]
    for label in ("accuracy", "exact"):
        value, per_run = want[label]
        assert evaluations[label]["value"] == pytest.approx(value)
        assert evaluations[label]["per_run"] == pytest.approx(per_run)
        assert (evaluations[label]["errors"], evaluations[label]["missing"]) == (0, 0)
    assert (evaluations["tone"]["value"], evaluations["tone"]["per_run"]) == want["tone"]
    judge_value, judge_errors = want["judge"]
    assert evaluations["judge"]["value"] == pytest.approx(judge_value)
    assert evaluations["judge"]["errors"] == judge_errors > 0
    assert summary["trace_metrics"]["total_tokens"]["total"] == want["tokens"]
    listed = reader.call("GET", f"{PUBLIC}/experiments?filter[id]={experiment.id}")["data"]
    assert listed[0]["attributes"]["aggregate_data"] == evaluations

    # The search's own aggregates count every row, too.
    found = reader.call("GET", f"{path}/records?filter[query]=&page[limit]=1")
    assert found["meta"]["total"] == len(sent.rows)
    passing = reader.call(
        "GET", f"{path}/records?filter[query]=@evaluations.custom.exact:true&page[limit]=1"
    )
    assert passing["meta"]["total"] == sum(1 for row in sent.rows if row.metrics["exact"])


def test_create_or_get_gives_concurrent_callers_one_row(server_store: SqlBackend) -> None:
    """The store's own create-or-get, as the SDK calls it from several processes at once:
    whoever loses the race on the unique name gets the winner's project and dataset."""
    barrier = threading.Barrier(WRITERS, timeout=60)
    found: list[tuple[str, str]] = []
    failures: list[str] = []

    def caller() -> None:
        try:
            barrier.wait()
            project = server_store.ensure_project("raced")
            dataset = server_store.create_dataset(project.id, "raced")
            found.append((project.id, dataset.id))
        except Exception as error:  # reported below
            failures.append(f"{type(error).__name__}: {error}")
            barrier.abort()

    threads = [threading.Thread(target=caller) for _ in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(found) == WRITERS
    assert len(set(found)) == 1
    listed = list_projects(server_store.engine, names=["raced"])
    assert [project.id for project in listed] == [found[0][0]]
    assert [d.id for d in server_store.list_datasets(found[0][0])] == [found[0][1]]
