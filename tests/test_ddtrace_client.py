"""The real client: ddtrace 4.16, unmodified, runs the seed's example against the server.

The server listens on a random loopback port (uvicorn in a thread, over SQLite or
PostgreSQL); the seed's script runs in a subprocess with ``DD_LLMOBS_OVERRIDE_ORIGIN``
pointing at it, exactly as printed in the seed but for ``runs=5``. The server must then
hold the dataset, one experiment with five runs, every row, evaluation and summary
evaluation, with the aggregates Assay's own SDK computes for the same script.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from assay import LLMObs
from assay.aggregation import summarize_summary_evaluations
from assay.experiment import pulled_experiment
from assay.pricing import estimate_cost
from assay.server import create_app
from assay.server.dependencies import ingest_writer
from assay.store.records import TraceRollup
from assay.store.sql.backend import SqlBackend
from assay.store.sql.tables import posted_evaluations
from live_server import free_port, serving

pytest.importorskip("ddtrace", reason="ddtrace is a test dependency: pip install 'assay[dev]'")

# The seed's example script (reference/seed-advanced-experiment-runs.txt), unmodified but
# for `runs=5` in LLMObs.experiment(...). It needs no LLMObs.flush(): ddtrace flushes the
# span writer after every run and when the process exits. (A backslash at the end of a
# line joins it to the next in the string: two lines of the seed are longer than ours.)
# The seed's script as Datadog publishes it, with runs=5: examples/capitals.py (kept for
# Assay's SDK) with its two import lines given back to ddtrace.
_EXAMPLE = (Path(__file__).parent.parent / "examples" / "capitals.py").read_text()
SEED_SCRIPT = _EXAMPLE[_EXAMPLE.index("from assay import LLMObs") :].replace(
    "from assay import", "from ddtrace.llmobs import"
)

# What a ddtrace user runs afterwards: pull the experiment back and list experiments.
PULL_SCRIPT = """\
import json, sys
from ddtrace.llmobs import LLMObs

LLMObs.enable(project_name="<YOUR_PROJECT>")
pulled = LLMObs.pull_experiment(sys.argv[1])
listed = LLMObs.list_experiments(experiment_name="capital-cities-test")
rows = pulled.result["rows"]
print(json.dumps({
    "rows": len(rows),
    "records": sorted({row["record_id"] for row in rows}),
    "labels": sorted({label for row in rows for label in row["evaluations"]}),
    "summary": sorted(pulled.result["summary_evaluations"]),
    "listed": [(item["id"], item["run_count"], item["status"]) for item in listed],
    "aggregate": listed[0]["aggregate_data"]["exact_match"]["value"],
}))
"""


# A task that calls a model and a tool: child spans whose tokens and cost roll up.
TRACED_SCRIPT = """\
from ddtrace.llmobs import LLMObs

LLMObs.enable(project_name="tokens")
dataset = LLMObs.create_dataset(
    dataset_name="questions",
    records=[
        {"input_data": {"q": "a"}, "expected_output": "A"},
        {"input_data": {"q": "b"}, "expected_output": "B"},
    ],
)


def task(input_data, config):
    with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai", name="answer") as span:
        LLMObs.annotate(
            span,
            input_data=[{"role": "user", "content": input_data["q"]}],
            output_data=[{"role": "assistant", "content": input_data["q"].upper()}],
            metrics={"input_tokens": 100, "output_tokens": 20, "total_tokens": 120},
        )
    with LLMObs.tool(name="lookup"):
        pass
    if input_data["q"] == "b":
        raise ValueError("no answer for b")
    return input_data["q"].upper()


def exact(input_data, output_data, expected_output):
    return output_data == expected_output


experiment = LLMObs.experiment(
    name="traced", task=task, dataset=dataset, evaluators=[exact], runs=2
)
experiment.run(jobs=2)
"""


# Datasets as a ddtrace user handles them: from a CSV file (the bulk upload), pushed
# changes (a new version), pulls of a past version and by tag.
DATASETS_SCRIPT = """\
import json
from ddtrace.llmobs import LLMObs

LLMObs.enable(project_name="datasets")
with open("questions.csv", "w") as f:
    f.write("question,answer,level\\n2+2?,4,easy\\nCapital of France?,Paris,hard\\n")
LLMObs.create_dataset_from_csv(
    "questions.csv",
    "from-csv",
    input_data_columns=["question"],
    expected_output_columns=["answer"],
    metadata_columns=["level"],
)
from_csv = LLMObs.pull_dataset("from-csv")
capitals = LLMObs.create_dataset(
    dataset_name="capitals",
    records=[
        {"input_data": {"q": "China"}, "expected_output": "Beijing"},
        {"input_data": {"q": "South Africa"}, "expected_output": "Pretoria"},
    ],
)
capitals.append({"input_data": {"q": "Peru"}, "expected_output": "Lima", "tags": ["region:sa"]})
capitals.update(0, {"expected_output": "Beijing!"})
capitals.push()
latest = LLMObs.pull_dataset("capitals")
first = LLMObs.pull_dataset("capitals", version=1)
tagged = LLMObs.pull_dataset("capitals", tags=["region:sa"])
print(json.dumps({
    "csv": [[r["input_data"], r["expected_output"], r["metadata"]] for r in from_csv],
    "versions": [capitals.version, latest.version],
    "latest": [r["expected_output"] for r in latest],
    "first": [r["expected_output"] for r in first],
    "tagged": [r["expected_output"] for r in tagged],
}))
"""


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Recorder:
    """An ASGI wrapper that keeps every request the client made (the wire, for asserts)."""

    app: Any
    requests: list[Recorded] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        statuses: list[int] = []

        async def recording_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            await send(message)

        await self.app(scope, recording_receive, recording_send)
        self.requests.append(
            Recorded(
                scope["method"],
                scope["path"],
                scope["query_string"].decode(),
                b"".join(chunks),
                statuses[0] if statuses else 0,
            )
        )


@dataclass
class Running:
    url: str
    backend: SqlBackend
    recorder: Recorder


@pytest.fixture
def server(store_url: str, request: pytest.FixtureRequest) -> Iterator[Running]:
    """A server on ``store_url``; with the ingest queue when the test asks for it
    (``indirect`` parametrization), as ``assay serve`` runs by default."""
    backend = SqlBackend(store_url)
    queue = bool(getattr(request, "param", False))
    recorder = Recorder(create_app(backend=backend, ingest_queue=queue))
    try:
        with serving(recorder) as url:
            yield Running(url, backend, recorder)
    finally:
        backend.close()


def ddtrace_env(url: str, home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "DD_LLMOBS_OVERRIDE_ORIGIN": url,
        "DD_API_KEY": "dummy-api-key",
        "DD_APP_KEY": "dummy-app-key",
        "DD_LLMOBS_ENABLED": "1",
        "DD_LLMOBS_AGENTLESS_ENABLED": "1",
        # Hermetic: no APM traces to a local agent, no telemetry to datadoghq.com.
        "DD_APM_TRACING_ENABLED": "false",
        "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
        "DD_REMOTE_CONFIGURATION_ENABLED": "false",
    }


def run_python(script: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        cwd=script.parent,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def sdk_run(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[SqlBackend, str]:
    """The same script with Assay's SDK (its drop-in imports), on a store of its own."""
    url = f"sqlite:///{tmp_path}/sdk.db"
    script = tmp_path / "sdk_script.py"
    script.write_text(source.replace("from ddtrace.llmobs import", "from assay import"))
    monkeypatch.setenv("ASSAY_DATABASE_URL", url)
    try:
        namespace = runpy.run_path(str(script), run_name="__main__")
    finally:
        LLMObs.disable()
    experiment_id = namespace["experiment"].id
    assert isinstance(experiment_id, str)
    return SqlBackend(url), experiment_id


def without_record_ids(summaries: list[Any]) -> list[Any]:
    # The two runs made their datasets separately: same records, other ids.
    return [{k: v for k, v in item.items() if k != "record_id"} for item in summaries]


@pytest.mark.parametrize("server", [False, True], ids=["no-queue", "queued"], indirect=True)
def test_ddtrace_runs_the_seed_example_against_the_server(
    server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "seed.py"
    script.write_text(SEED_SCRIPT)
    env = ddtrace_env(server.url, tmp_path)
    output = run_python(script, env)
    assert "View experiment:" in output

    backend = server.backend
    # Read straight from the store, which sees a queued post once it is written.
    ingest_writer(backend).flush().result(timeout=60)
    # The dataset, in the project the script names.
    project = backend.find_project("capitals-project")
    assert project is not None
    dataset = backend.find_dataset(project.id, "capitals-of-the-world")
    assert dataset is not None and dataset.description == "Questions about world capitals"
    records = backend.dataset_records(dataset.id)
    assert [r.expected_output for r in records] == ["Beijing", "Pretoria"]
    assert [r.metadata for r in records] == [{"difficulty": "easy"}, {"difficulty": "medium"}]

    # One experiment, five runs named by the client, completed.
    [info] = backend.list_experiments()
    assert (info.name, info.run_count, info.status, info.error) == (
        "capital-cities-test",
        5,
        "completed",
        None,
    )
    assert info.project_name == "<YOUR_PROJECT>"
    assert info.config == {"model_name": "gpt-4", "version": "1.0"}
    assert (info.dataset_id, info.dataset_version) == (dataset.id, dataset.current_version)
    assert [run.run_iteration for run in info.runs] == [1, 2, 3, 4, 5]
    assert len({uuid.UUID(run.run_id) for run in info.runs}) == 5

    # Every row (2 records x 5 runs), each with its three evaluations.
    rows = backend.experiment_rows(info.id)
    assert len(rows) == 10
    assert sorted((row.run_iteration, row.idx) for row in rows) == [
        (run, idx) for run in range(1, 6) for idx in (0, 1)
    ]
    by_record = {record.record_id: n for n, record in enumerate(records)}
    for row in rows:
        assert by_record[row.record_id] == row.idx
        assert row.output == ("Beijing" if row.idx == 0 else "Unknown")
        assert row.input_data == records[row.idx].input_data
        assert row.expected_output == records[row.idx].expected_output
        assert row.error is None and row.span_name == "task"
        values = {e.label: e.value for e in row.evaluations}
        assert values["exact_match"] is (row.idx == 0)
        assert values["fake_llm_as_a_judge"] == "excellent"
        judge = next(e for e in row.evaluations if e.label == "fake_llm_as_a_judge")
        assert (judge.reasoning, judge.assessment) == ("the model explains itself", "pass")
        assert judge.tags == {"task": "judge_llm_call"}
        assert len(row.evaluations) == 3
    summaries = backend.summary_evaluations(info.id)
    assert [(s.run_iteration, s.evaluation.label, s.evaluation.value) for s in summaries] == [
        (run, "num_exact_matches", 1) for run in range(1, 6)
    ]
    with backend.engine.connect() as connection:
        waiting = connection.execute(
            select(func.count())
            .select_from(posted_evaluations)
            .where(posted_evaluations.c.pending.is_(True))
        ).scalar_one()
    assert waiting == 0

    # What went over the wire: the paths and bodies ddtrace 4.16 sends.
    wire = server.recorder.requests
    assert all(request.status < 300 for request in wire), [
        (r.method, r.path, r.status) for r in wire if r.status >= 300
    ]
    [create] = [r for r in wire if r.method == "POST" and r.path.endswith("/experiments")]
    assert create.path == "/api/unstable/llm-obs/v1/experiments"
    assert create.json()["data"]["attributes"]["run_count"] == 5
    statuses = [
        r.json()["data"]["attributes"]["status"]
        for r in wire
        if r.method == "PATCH" and r.path.endswith(info.id)
    ]
    assert statuses == ["running", "completed"]
    intake = [r for r in wire if r.path == "/api/v2/llmobs"]
    sent_spans = [span for r in intake for event in r.json() for span in event["spans"]]
    assert len({span["span_id"] for span in sent_spans}) == 10
    events = [r for r in wire if r.path.endswith(f"/experiments/{info.id}/events")]
    metrics = [m for r in events for m in r.json()["data"]["attributes"]["metrics"]]
    assert len(metrics) == 10 * 3 + 5
    assert {r.path.split("/")[2] for r in wire if "llm-obs" in r.path} == {"unstable", "v2"}

    # The aggregates are those Assay's SDK computes for the same script.
    sdk_backend, sdk_id = sdk_run(SEED_SCRIPT, tmp_path, monkeypatch)
    try:
        sdk = pulled_experiment(sdk_backend, sdk_backend.get_experiment(sdk_id))
        served = pulled_experiment(backend, info)
        assert served.summary() == sdk.summary()
        for run in range(1, 6):
            assert served.summary(run=run) == sdk.summary(run=run)
        assert without_record_ids(served.record_summaries()) == without_record_ids(
            sdk.record_summaries()
        )
        iterations = [1, 2, 3, 4, 5]
        assert summarize_summary_evaluations(summaries, iterations) == (
            summarize_summary_evaluations(sdk_backend.summary_evaluations(sdk_id), iterations)
        )
        sdk_trace = sdk.trace_metrics()
        served_trace = served.trace_metrics()
        assert served_trace["duration"]["rows"] == sdk_trace["duration"]["rows"] == 10
        assert served_trace["total_tokens"] == sdk_trace["total_tokens"]
    finally:
        sdk_backend.close()

    # And ddtrace reads it back: pull_experiment and list_experiments.
    pull = tmp_path / "pull.py"
    pull.write_text(PULL_SCRIPT)
    pulled = json.loads(run_python(pull, env, info.id).strip().splitlines()[-1])
    assert pulled["rows"] == 10
    assert pulled["records"] == sorted(by_record)
    assert pulled["labels"] == ["exact_match", "fake_llm_as_a_judge", "overlap"]
    assert pulled["summary"] == ["num_exact_matches"]
    assert pulled["listed"] == [[info.id, 5, "completed"]]
    assert pulled["aggregate"] == 0.5


def test_ddtrace_child_spans_roll_up_tokens_and_cost_onto_their_rows(
    server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "traced.py"
    script.write_text(TRACED_SCRIPT)
    run_python(script, ddtrace_env(server.url, tmp_path))
    backend = server.backend
    [info] = backend.list_experiments()
    assert (info.status, info.error) == ("failed", "builtins.ValueError: no answer for b")
    rows = backend.experiment_rows(info.id, with_spans=True)
    assert len(rows) == 4
    cost = estimate_cost("gpt-4o-mini", "openai", 100, 20)
    assert cost is not None
    for row in rows:
        assert [(span.kind, span.name) for span in row.spans] == [
            ("llm", "answer"),
            ("tool", "lookup"),
        ]
        assert all(span.parent_id == row.span_id for span in row.spans)
        llm = row.spans[0]
        assert (llm.model_name, llm.model_provider, llm.total_tokens) == (
            "gpt-4o-mini",
            "openai",
            120,
        )
        assert row.rollup == TraceRollup(100, 20, 120, cost)
        failed = row.input_data == {"q": "b"}
        assert (row.error is not None) is failed
        if row.error is not None:
            assert (row.error.type, row.error.message) == ("builtins.ValueError", "no answer for b")
            assert "Traceback" in row.error.stack

    sdk_backend, sdk_id = sdk_run(TRACED_SCRIPT, tmp_path, monkeypatch)
    try:
        sdk = pulled_experiment(sdk_backend, sdk_backend.get_experiment(sdk_id))
        served = pulled_experiment(backend, info)
        assert served.summary() == sdk.summary()
        for name in ("input_tokens", "output_tokens", "total_tokens", "estimated_total_cost"):
            assert served.trace_metrics()[name] == sdk.trace_metrics()[name]
    finally:
        sdk_backend.close()


def test_ddtrace_datasets_round_trip(server: Running, tmp_path: Path) -> None:
    script = tmp_path / "datasets.py"
    script.write_text(DATASETS_SCRIPT)
    output = run_python(script, ddtrace_env(server.url, tmp_path))
    seen = json.loads(output.strip().splitlines()[-1])
    assert seen == {
        "csv": [
            [{"question": "2+2?"}, {"answer": "4"}, {"level": "easy"}],
            [{"question": "Capital of France?"}, {"answer": "Paris"}, {"level": "hard"}],
        ],
        "versions": [2, 2],
        "latest": ["Beijing!", "Pretoria", "Lima"],
        "first": ["Beijing", "Pretoria"],
        "tagged": ["Lima"],
    }
    uploads = [r for r in server.recorder.requests if r.path.endswith("/records/upload")]
    assert [(r.method, r.query, r.status) for r in uploads] == [("POST", "deduplicate=True", 200)]


def test_assay_serve_starts_serves_and_logs_one_line_per_request(tmp_path: Path) -> None:
    port = free_port()
    url = f"sqlite:///{tmp_path}/served.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "assay", "serve", "--port", str(port), "--database-url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "ASSAY_HOME": str(tmp_path)},
    )
    try:
        import httpx

        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/api/unstable/llm-obs/v1/projects",
                    json={"data": {"type": "projects", "attributes": {"name": "cli"}}},
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "assay serve did not start"
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/vnd.api+json"
        missing = httpx.get(f"http://127.0.0.1:{port}/api/v2/llm-obs/v1/experiments/nope")
        assert missing.status_code == 404
        # A span post of no experiment: answered, and summed up rather than logged alone.
        span = {"span_id": "1", "trace_id": "1", "name": "llm", "start_ns": 1, "duration": 1}
        ignored = httpx.post(f"http://127.0.0.1:{port}/api/v2/llmobs", json=[{"spans": [span]}])
        assert ignored.status_code == 202, ignored.text
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    lines = output.strip().splitlines()
    assert (
        lines[0] == f"assay: serving the store at {tmp_path}/served.db on http://127.0.0.1:{port}"
    )
    assert any('"POST /api/unstable/llm-obs/v1/projects HTTP/1.1" 200' in line for line in lines)
    assert any('/experiments/nope HTTP/1.1" 404' in line for line in lines)
    assert not any("/llmobs" in line for line in lines)
    summary = re.compile(r".* INFO ingest: 1 post in \d+\.\d s \(1 span, 0 metrics\)")
    assert any(summary.fullmatch(line) for line in lines)
    assert not any(line.startswith("Traceback") for line in lines)


def test_assay_serve_reports_a_bad_store_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "assay", "serve", "--database-url", "nonsense://"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ASSAY_HOME": str(tmp_path)},
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: ")
