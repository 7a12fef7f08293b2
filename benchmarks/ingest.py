"""Ingestion over HTTP against the SDK writing the same rows straight to the store.

Workload (issue 5): 2,000 records x 5 runs x 3 evaluators = 30,000 evaluation metrics.
Over HTTP, 8 concurrent clients post them to one `assay serve` process (a subprocess, on a
loopback port) as ddtrace 4.16 does: it posts the pending metrics of a run once it holds
at least `jobs` of them (with jobs=16 and 3 evaluators, every 6 records), then flushes its
span writer, so each batch of 6 records is one events post of 18 metrics followed by one
span intake post of their 6 task spans (the metrics arrive first and wait for their
spans). Each client posts with `http.client` on one kept-alive connection, as ddtrace's
writers do. Directly, the SDK's writer (`ResultWriter` into `SqlBackend.write_rows`,
batches of up to 2,000 rows) writes the same rows, spans and evaluations in the same run.

Two servers are measured on the same store, posted to in turn: one with the ingest queue,
as ``assay serve`` runs by default (answers once the post is in the journal, writes posts
a few hundred at a time), and one with ``--no-ingest-queue``, which writes each post
before answering it. Two post sizes: 6 records (what ddtrace
sends; the target is judged on it) and 1,000 records (a client that batches, as Assay's
remote SDK does). Prints the evaluation metrics per second of each, their ratio to the
direct rate (target: at least 25%), and the server's CPU time per request, which depends
less on what else the machine runs than the rates do. Request bodies are encoded before
the clock starts, so the clients' own JSON work does not count against the server. The
queued server's result is checked through its API, which waits for the posts it
answered.

    python benchmarks/ingest.py [--records 2000] [--runs 5] [--clients 8]
        [--records-per-post 6 1000] [--repeat 3] [--database-url URL] [--baseline DIR]
        [--fsync-delay MS]

``--fsync-delay MS`` runs the servers under ``strace``, each fsync MS milliseconds slower, as
on a slow disk (Linux, with ``strace`` installed).

``--baseline DIR`` also serves another checkout of Assay (DIR holds its ``src``) on a
store of its own, with that version's defaults, and posts the same work to it in turn, in
every repeat: on a machine whose speed drifts, only such side-by-side numbers compare two
versions. It is compared with this version's default, the queued server.

Without `--database-url` the store is a SQLite file in a temporary folder; with a
PostgreSQL URL (`postgresql+psycopg://postgres@127.0.0.1:5432/bench`) the benchmark's
project, dataset and experiments are left in that database.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx

API = "/api/unstable/llm-obs/v1"
TRACER_VERSION = "4.16.0"
TARGET = 0.25
JUDGED_POST = 6
"""ddtrace 4.16 posts an experiment's pending metrics once it holds ``jobs`` of them: with
jobs=16 and three evaluators, every 6 records. The target is judged on these posts."""
LARGE_POST = 1000
"""A client that batches (Assay's own SDK sends up to 2,000 rows a request): the upper
bound of what the server can take, reported beside the judged number."""
LABELS = (("exact_match", "boolean"), ("length", "score"), ("label", "categorical"))


def record_input(index: int) -> dict[str, Any]:
    return {"question": f"question number {index}"}


def evaluations_of(index: int, run: int) -> list[tuple[str, Any, Any]]:
    """(label, metric type, value) of the three evaluators, for one row."""
    output = f"QUESTION NUMBER {index}"
    values = (index % 3 != run % 3, float(len(output)), "long" if index % 2 else "short")
    return [(label, kind, value) for (label, kind), value in zip(LABELS, values, strict=True)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# The direct path ---------------------------------------------------------------------------


def direct_rows(
    experiment_id: str, record_ids: list[str], runs: int, run_ids: dict[int, str]
) -> list[Any]:
    from assay.store.records import EvaluationRecord, RowRecord

    now_ms = int(time.time() * 1000)
    rows = []
    for run in range(1, runs + 1):
        for index, record_id in enumerate(record_ids):
            rows.append(
                RowRecord(
                    experiment_id=experiment_id,
                    run_iteration=run,
                    record_id=record_id,
                    idx=index,
                    span_id=str(uuid.uuid4().int >> 65),
                    trace_id=uuid.uuid4().hex,
                    span_name="task",
                    start_ns=time.time_ns(),
                    duration_ns=1_000_000,
                    input_data=record_input(index),
                    output=f"QUESTION NUMBER {index}",
                    expected_output=f"QUESTION NUMBER {index}",
                    record_metadata={"n": index},
                    tags=[f"run_id:{run_ids[run]}", f"run_iteration:{run}"],
                    error=None,
                    retries=0,
                    evaluations=[
                        EvaluationRecord(label, kind, value, timestamp_ms=now_ms)
                        for label, kind, value in evaluations_of(index, run)
                    ],
                )
            )
    return rows


def direct(backend: Any, dataset: Any, runs: int, n: int) -> tuple[float, str]:
    """The SDK's own writer, as `Experiment.run` uses it; returns (seconds, experiment id)."""
    from assay.execution.writer import ResultWriter
    from assay.store.records import ExperimentSpec, RunInfo

    run_ids = {run: str(uuid.uuid4()) for run in range(1, runs + 1)}
    spec = ExperimentSpec(
        project_id=dataset.project_id,
        dataset_id=dataset.id,
        dataset_version=dataset.current_version,
        name=f"direct-{n}",
        run_count=runs,
    )
    runs_info = [RunInfo(run_id, run) for run, run_id in run_ids.items()]
    experiment = backend.create_experiment(spec, runs=runs_info)
    record_ids = [record.record_id for record in backend.dataset_records(dataset.id)]
    rows = direct_rows(experiment.id, record_ids, runs, run_ids)
    started = time.perf_counter()
    writer = ResultWriter(backend, experiment.id)
    for row in rows:
        writer.put(row)
    writer.close()
    return time.perf_counter() - started, experiment.id


# The HTTP path -----------------------------------------------------------------------------


def posts(
    experiment_id: str, record_ids: list[str], runs: int, per_post: int
) -> list[tuple[bytes, bytes]]:
    """(events body, span intake body) for each batch of ``per_post`` records of each run."""
    bodies = []
    for run in range(1, runs + 1):
        run_id = str(uuid.uuid4())
        tags = [f"experiment_id:{experiment_id}", f"run_id:{run_id}", f"run_iteration:{run}"]
        for start in range(0, len(record_ids), per_post):
            metrics, events = [], []
            for index in range(start, min(start + per_post, len(record_ids))):
                span_id, trace_id = str(uuid.uuid4().int >> 65), uuid.uuid4().hex
                start_ns = time.time_ns()
                for label, kind, value in evaluations_of(index, run):
                    metrics.append(
                        {
                            "metric_source": "custom",
                            "span_id": span_id,
                            "trace_id": trace_id,
                            "timestamp_ms": start_ns // 1_000_000,
                            "metric_type": kind,
                            "label": label,
                            f"{kind}_value": value,
                            "error": None,
                            "tags": [],
                            "experiment_id": experiment_id,
                            "status": "OK",
                        }
                    )
                span = {
                    "span_id": span_id,
                    "trace_id": trace_id,
                    "parent_id": "undefined",
                    "name": "task",
                    "start_ns": start_ns,
                    "duration": 1_000_000,
                    "status": "ok",
                    "meta": {
                        "span.kind": "experiment",
                        "input": record_input(index),
                        "output": f"QUESTION NUMBER {index}",
                        "expected_output": f"QUESTION NUMBER {index}",
                        "metadata": {"n": index},
                    },
                    "metrics": {},
                    "tags": sorted([*tags, f"dataset_record_id:{record_ids[index]}"]),
                }
                events.append(
                    {
                        "_dd.stage": "raw",
                        "_dd.tracer_version": TRACER_VERSION,
                        "event_type": "span",
                        "_dd.scope": "experiments",
                        "spans": [span],
                    }
                )
            attributes = {"scope": "experiments", "metrics": metrics, "tags": tags}
            body = {"data": {"type": "experiments", "attributes": attributes}}
            bodies.append((json.dumps(body).encode(), json.dumps(events).encode()))
    return bodies


def over_http(
    url: str, dataset: Any, runs: int, clients: int, per_post: int, n: int
) -> tuple[float, str]:
    """``clients`` threads post one experiment's batches; returns (seconds, experiment id)."""
    with httpx.Client(base_url=url, timeout=120) as client:
        attributes = {
            "name": f"http-{n}",
            "project_id": dataset.project_id,
            "dataset_id": dataset.id,
            "run_count": runs,
            "ensure_unique": True,
        }
        response = client.post(f"{API}/experiments", json={"data": {"attributes": attributes}})
        response.raise_for_status()
        experiment_id: str = response.json()["data"]["id"]
        path = f"/api/v2/llm-obs/v1/{dataset.project_id}/datasets/{dataset.id}/records"
        record_ids: list[str] = []
        cursor: str | None = None
        while True:  # the records in their order, as ddtrace pulls the dataset
            params = {"page[limit]": "5000", **({"page[cursor]": cursor} if cursor else {})}
            page = client.get(path, params=params).json()
            record_ids += [item["id"] for item in page["data"]]
            cursor = (page.get("meta") or {}).get("after")
            if not cursor:
                break
    work = posts(experiment_id, record_ids, runs, per_post)
    shares = [work[k::clients] for k in range(clients)]
    failures: list[str] = []
    start = threading.Barrier(clients + 1)
    headers = {"Content-Type": "application/json"}
    address = urlsplit(url)

    def client_thread(share: list[tuple[bytes, bytes]]) -> None:
        # http.client on one kept-alive connection, as ddtrace's writers post: httpx's
        # own Python work per request was as much as the server's, on the same cores.
        http = HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=120)
        start.wait()
        try:
            for events_body, spans_body in share:
                for path, body in (
                    (f"{API}/experiments/{experiment_id}/events", events_body),
                    ("/api/v2/llmobs", spans_body),
                ):
                    http.request("POST", path, body=body, headers=headers)
                    response = http.getresponse()
                    text = response.read()
                    if response.status >= 300:
                        failures.append(f"{path}: {response.status} {text[:200]!r}")
        finally:
            http.close()

    threads = [threading.Thread(target=client_thread, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} post(s) failed, first: {failures[0]}")
    return elapsed, experiment_id


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(process: subprocess.Popen[bytes]) -> int:
    """The server's own process: ``strace``'s child when it runs under ``strace``."""
    if not (isinstance(process.args, list) and process.args[0] == "strace"):
        return process.pid
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    return int(children[0]) if children else process.pid


def start_server(
    database_url: str,
    folder: Path,
    *,
    source: Path | None = None,
    fsync_delay: float = 0.0,
    queue: bool = False,
) -> tuple[subprocess.Popen[bytes], str]:
    """`assay serve` in a subprocess: one server process, as users run it, with the ingest
    queue or without it (``--no-ingest-queue``); of the Assay whose ``src`` folder is
    ``source``, when given, with that version's own default; under ``strace`` making each
    fsync ``fsync_delay`` ms slower, when that is given."""
    port = free_port()
    command = [sys.executable, "-m", "assay", "serve", "--port", str(port)]
    command += ["--database-url", database_url]
    if source is None:
        command.append("--ingest-queue" if queue else "--no-ingest-queue")
    if fsync_delay:
        # Only the two calls stop the process (seccomp-bpf), so the rest runs at speed.
        delay = f"inject=fsync,fdatasync:delay_exit={round(fsync_delay * 1000)}"
        traced = ["strace", "-f", "--seccomp-bpf", "-o", os.devnull]
        command = [*traced, "-e", "trace=fsync,fdatasync", "-e", delay, *command]
    environment = dict(os.environ)
    if source is not None:
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(source), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    name = "baseline" if source is not None else "queued" if queue else "serve"
    with open(folder / f"{name}.log", "wb") as log:  # the server logs a line per request
        process = subprocess.Popen(command, stdout=log, stderr=log, env=environment)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            # The folder goes with the benchmark: the log's end is the message.
            tail = (folder / f"{name}.log").read_text(errors="replace").strip()[-2000:]
            raise SystemExit(f"assay serve ({name}) exited:\n{tail}")
        try:
            if httpx.get(f"{url}/api/v2/llm-obs/v1/projects", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("assay serve did not start within 60 s")


def seed_over_http(url: str, inserts: list[Any]) -> Any:
    """The benchmark's project, dataset and these records, made through a server's API (for
    a baseline server, whose store this version of Assay may not read)."""
    with httpx.Client(base_url=url, timeout=120) as client:

        def post(path: str, attributes: dict[str, Any]) -> Any:
            response = client.post(path, json={"data": {"attributes": attributes}})
            response.raise_for_status()
            return response.json()["data"]

        project = post(f"{API}/projects", {"name": f"ingest-benchmark-{uuid.uuid4().hex[:8]}"})
        dataset = post(f"{API}/{project['id']}/datasets", {"name": "ingest"})
        records = [
            {
                "id": insert.record_id,
                "input": insert.input_data,
                "expected_output": insert.expected_output,
                "metadata": insert.metadata,
            }
            for insert in inserts
        ]
        path = f"/api/v2/llm-obs/v1/{project['id']}/datasets/{dataset['id']}/batch_update"
        post(path, {"insert_records": records})
    return SimpleNamespace(project_id=project["id"], id=dataset["id"])


def check_over_http(url: str, experiment_id: str, rows: int, metrics: int) -> None:
    """``check``, through the server's API."""
    path = f"{API}/experiments/{experiment_id}/events"
    events = httpx.get(
        f"{url}{path}", params={"include[eval_metrics]": "true"}, timeout=120
    ).json()["data"]["attributes"]["spans"]
    found = (len(events), sum(len(span["eval_metrics"]) for span in events))
    if found != (rows, metrics):
        raise SystemExit(f"experiment {experiment_id}: stored {found}, expected {(rows, metrics)}")


def check(backend: Any, experiment_id: str, rows: int, metrics: int) -> None:
    """Every row and metric is stored, none is left waiting for its span."""
    stored = backend.experiment_rows(experiment_id)
    found = (len(stored), sum(len(row.evaluations) for row in stored))
    if found != (rows, metrics):
        raise SystemExit(f"experiment {experiment_id}: stored {found}, expected {(rows, metrics)}")


@dataclass
class Measured:
    """Seconds of each repeat, and the server's CPU seconds over the HTTP repeats."""

    seconds: list[float] = field(default_factory=list)
    server_cpu: float = 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--records-per-post",
        type=int,
        nargs="+",
        default=[JUDGED_POST, LARGE_POST],
        help=f"records per events post and per span intake post; the first is judged "
        f"(default: {JUDGED_POST}, as ddtrace with jobs=16 posts, then {LARGE_POST})",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", help="a PostgreSQL database to use (default SQLite)")
    parser.add_argument(
        "--fsync-delay",
        type=float,
        default=0.0,
        metavar="MS",
        help="run the servers under strace, each fsync MS milliseconds slower: a slow disk",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="another checkout of Assay (with DIR/src/assay), served beside this one on a "
        "SQLite store of its own and posted the same work in turn",
    )
    arguments = parser.parse_args()
    sizes: list[int] = arguments.records_per_post
    baseline: Path | None = arguments.baseline
    fsync_delay: float = arguments.fsync_delay
    if fsync_delay and shutil.which("strace") is None:
        parser.error("--fsync-delay runs the servers under strace: install strace")
    if baseline is not None:
        if arguments.database_url:
            parser.error("--baseline compares on SQLite: leave out --database-url")
        if not (baseline / "src" / "assay").is_dir():
            parser.error(f"{baseline} holds no src/assay: give the root of an Assay checkout")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        os.environ["ASSAY_HOME"] = name
        os.environ["ASSAY_PROGRESS"] = "0"
        from assay.store.records import RecordInsert
        from assay.store.sql.backend import SqlBackend

        database_url = arguments.database_url or f"sqlite:///{folder / 'ingest.db'}"
        backend = SqlBackend(database_url)
        project = backend.ensure_project(f"ingest-benchmark-{uuid.uuid4().hex[:8]}")
        dataset = backend.create_dataset(project.id, "ingest")
        inserts = [
            RecordInsert(
                record_id=f"record-{index}",
                input_data=record_input(index),
                expected_output=f"QUESTION NUMBER {index}",
                metadata={"n": index},
            )
            for index in range(arguments.records)
        ]
        backend.update_dataset_records(dataset.id, inserts=inserts)
        dataset = backend.get_dataset(dataset.id)
        servers = {
            "this": start_server(database_url, folder, fsync_delay=fsync_delay),
            "queued": start_server(database_url, folder, fsync_delay=fsync_delay, queue=True),
        }
        datasets = {"this": dataset, "queued": dataset}
        rows = arguments.records * arguments.runs
        metrics = rows * len(LABELS)
        direct_times: list[float] = []
        http = {
            (side, size): Measured() for side in ("this", "queued", "baseline") for size in sizes
        }
        n = 0
        try:
            if baseline is not None:
                servers["baseline"] = start_server(
                    f"sqlite:///{folder / 'baseline.db'}",
                    folder,
                    source=baseline / "src",
                    fsync_delay=fsync_delay,
                )
                datasets["baseline"] = seed_over_http(servers["baseline"][1], inserts)
            # Interleaved so that machine noise hits every side alike.
            for repeat in range(arguments.repeat):
                seconds, experiment_id = direct(backend, dataset, arguments.runs, n)
                check(backend, experiment_id, rows, metrics)
                direct_times.append(seconds)
                for size in sizes:
                    sides = sorted(servers, reverse=repeat % 2 == 1)
                    for side in sides:
                        n += 1
                        server, url = servers[side]
                        cpu = cpu_seconds(server_pid(server))
                        seconds, experiment_id = over_http(
                            url, datasets[side], arguments.runs, arguments.clients, size, n
                        )
                        http[side, size].server_cpu += cpu_seconds(server_pid(server)) - cpu
                        if side == "this":
                            check(backend, experiment_id, rows, metrics)
                        else:
                            # Over HTTP: a read waits for the posts a queue answered.
                            check_over_http(url, experiment_id, rows, metrics)
                        http[side, size].seconds.append(seconds)
        finally:
            for server, _ in servers.values():
                os.kill(server_pid(server), signal.SIGTERM)
                server.wait(timeout=30)
            backend.close()
    direct_rate = metrics / statistics.median(direct_times)
    print(
        f"workload: {arguments.records} records x {arguments.runs} runs x {len(LABELS)} "
        f"evaluators = {metrics} metrics on {backend.engine.dialect.name}; over HTTP "
        f"{arguments.clients} clients; {arguments.repeat} repeats, medians"
    )
    print(
        f"direct (SDK writer -> store):   {direct_rate:9,.0f} metrics/s "
        f"({rows / statistics.median(direct_times):,.0f} rows/s)  "
        f"{[round(t, 2) for t in direct_times]} s"
    )
    ratios = {}
    for (side, size), measured in http.items():
        if not measured.seconds:
            continue  # no baseline
        median = statistics.median(measured.seconds)
        requests = 2 * arguments.runs * -(-arguments.records // size) * arguments.repeat
        ratios[side, size] = metrics / median / direct_rate
        label = {"this": "no queue,", "queued": "queued,"}.get(side, "baseline,")
        print(
            f"{label:10} {size:>5} records/post: {metrics / median:9,.0f} metrics/s "
            f"({rows / median:,.0f} rows/s)  {[round(t, 2) for t in measured.seconds]} s  "
            f"{ratios[side, size]:6.1%} of direct; server CPU "
            f"{1000 * measured.server_cpu / requests:.2f} ms/request"
        )
    for size in sizes if baseline is not None else ():
        print(
            f"this version (with the queue) against the baseline, {size}-record posts: "
            f"{ratios['queued', size] / ratios['baseline', size]:.2f} times the rate"
        )
    judged = sizes[0]
    print(
        f"target: HTTP >= {TARGET:.0%} of the direct rate, judged on {judged}-record posts"
        f"{' (what ddtrace sends)' if judged == JUDGED_POST else ''}:"
    )
    for side, how in (("queued", "with the ingest queue"), ("this", "--no-ingest-queue")):
        verdict = "OK" if ratios[side, judged] >= TARGET else "MISSED"
        print(f"  {how:25} {ratios[side, judged]:6.1%} -> {verdict}")
    sys.exit(0)


if __name__ == "__main__":
    main()
