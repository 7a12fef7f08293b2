"""`assay serve` killed (SIGKILL) while clients post results: nothing it answered is lost.

The server answers an ingest post only once its rows are committed (``ingest.group``).
So after a kill, every post that got its 202 is in the store, whole; a post that did not
is in the store whole or not at all (one transaction); and the clients' retries, sent to
a new server over the same store, complete the experiment without a duplicate.

With ``--ingest-queue`` the server answers a post once it is in the journal: after the
kill, every answered post is written or in the journal (never both), and the next server
writes what the journal holds before it serves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from assay.store.sql.backend import SqlBackend
from assay.store.sql.ingest.journal import open_journal
from assay.store.sql.tables import evaluations, ingest_journal, posted_evaluations, spans
from live_server import free_port
from test_server_concurrency import API, PUBLIC, TONES, wire_metric

RECORDS = 60
RUNS = 2
PER_POST = 3
CLIENTS = 4
KILL_AFTER = 24
"""Answered posts before the kill: about a third of them (there are 80)."""


def values_of(index: int, run: int) -> dict[str, Any]:
    return {
        "exact": (index + run) % 2 == 0,
        "score": ((index * 7 + run) % 10) / 10,
        "tone": TONES[(index + run) % 3],
    }


@dataclass
class Post:
    """One request as a client sends it, and what it should leave in the store."""

    path: str
    body: bytes
    span_ids: list[str]
    """The spans of a span intake post; empty for an events post."""
    metrics: list[tuple[str, str]]
    """The (span id, label) of an events post's metrics; empty for a span intake post."""


def start_server(
    store_url: str, home: Path, *, queue: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "assay", "serve", "--port", str(port)]
    command += ["--database-url", store_url, "--ingest-queue" if queue else "--no-ingest-queue"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ASSAY_HOME": str(home)},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, "assay serve exited"
        try:
            httpx.get(f"{url}{PUBLIC}/projects", timeout=1)
            return process, url
        except httpx.TransportError:
            assert time.monotonic() < deadline, "assay serve did not start"
            time.sleep(0.1)


def set_up(url: str) -> tuple[str, list[str]]:
    """A project, a dataset of RECORDS records and an experiment of RUNS runs."""
    with httpx.Client(base_url=url, timeout=60) as client:

        def call(method: str, path: str, body: Any = None) -> Any:
            response = client.request(method, path, json=body)
            assert response.is_success, f"{method} {path}: {response.text}"
            return response.json()

        body = {"data": {"type": "projects", "attributes": {"name": "killed"}}}
        project_id = call("POST", f"{API}/projects", body)["data"]["id"]
        body = {"data": {"type": "datasets", "attributes": {"name": "questions"}}}
        dataset_id = call("POST", f"{API}/{project_id}/datasets", body)["data"]["id"]
        records = [{"input": {"k": k}, "expected_output": k} for k in range(RECORDS)]
        body = {"data": {"type": "datasets", "attributes": {"insert_records": records}}}
        call("POST", f"{PUBLIC}/{project_id}/datasets/{dataset_id}/batch_update", body)
        attributes = {
            "name": "killed-mid-run",
            "project_id": project_id,
            "dataset_id": dataset_id,
            "run_count": RUNS,
        }
        body = {"data": {"type": "experiments", "attributes": attributes}}
        experiment_id = call("POST", f"{API}/experiments", body)["data"]["id"]
        path = f"{PUBLIC}/{project_id}/datasets/{dataset_id}/records?page[limit]=5000"
        record_ids = [item["id"] for item in call("GET", path)["data"]]
    assert len(record_ids) == RECORDS
    return experiment_id, record_ids


def the_posts(experiment_id: str, record_ids: list[str]) -> list[Post]:
    """As ddtrace posts: the metrics of a few records, then their spans."""
    posts = []
    for run in range(1, RUNS + 1):
        tags = [f"experiment_id:{experiment_id}", f"run_iteration:{run}"]
        for start in range(0, RECORDS, PER_POST):
            metrics, events, keys, span_ids = [], [], [], []
            for index in range(start, start + PER_POST):
                span_id = str(run * 10**6 + index)
                trace_id = f"{run:016x}{index:016x}"
                span_ids.append(span_id)
                for label, value in values_of(index, run).items():
                    metrics.append(wire_metric(label, value, span_id=span_id, trace_id=trace_id))
                    keys.append((span_id, label))
                span = {
                    "span_id": span_id,
                    "trace_id": trace_id,
                    "parent_id": "undefined",
                    "name": "task",
                    "start_ns": 1_700_000_000_000_000_000 + index,
                    "duration": 1_000_000,
                    "status": "ok",
                    "meta": {"span.kind": "experiment", "input": {"k": index}, "output": index},
                    "metrics": {},
                    "tags": sorted([*tags, f"dataset_record_id:{record_ids[index]}"]),
                }
                events.append({"_dd.scope": "experiments", "spans": [span]})
            attributes = {"scope": "experiments", "metrics": metrics, "tags": tags}
            body = json.dumps({"data": {"type": "experiments", "attributes": attributes}})
            posts.append(Post(f"{API}/experiments/{experiment_id}/events", body.encode(), [], keys))
            posts.append(Post("/api/v2/llmobs", json.dumps(events).encode(), span_ids, []))
    return posts


def post_until_killed(
    url: str, posts: list[Post], process: subprocess.Popen[bytes]
) -> tuple[set[int], set[int]]:
    """CLIENTS threads post their share in order; the one that gets the KILL_AFTER-th
    answer kills the server. Returns the posts answered 202 and those that failed."""
    port = int(url.rsplit(":", 1)[1])
    answered: set[int] = set()
    failed: set[int] = set()
    refused: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def client(share: list[int]) -> None:
        http = HTTPConnection("127.0.0.1", port, timeout=60)
        start.wait()
        try:
            for n in share:
                post = posts[n]
                try:
                    http.request("POST", post.path, post.body, {"Content-Type": "application/json"})
                    response = http.getresponse()
                    response.read()
                except (OSError, HTTPException):  # the kill
                    with lock:
                        failed.update(share[share.index(n) :])
                    return
                with lock:
                    if response.status != 202:
                        refused.append(f"{post.path}: {response.status}")
                        return
                    answered.add(n)
                    if len(answered) == KILL_AFTER:
                        process.send_signal(signal.SIGKILL)
        finally:
            http.close()

    # Each client keeps a batch's two posts in order, metrics first, as ddtrace does.
    pairs = [[n, n + 1] for n in range(0, len(posts), 2)]
    shares = [[n for pair in pairs[k::CLIENTS] for n in pair] for k in range(CLIENTS)]
    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    process.wait(timeout=30)
    assert not refused, refused
    return answered, failed


def stored(store_url: str, experiment_id: str) -> tuple[set[str], set[tuple[str, str]]]:
    """The spans, and the (span, label) of the metrics, the store holds."""
    backend = SqlBackend(store_url)
    try:
        with backend.engine.connect() as connection:
            span_ids = set(
                connection.execute(
                    select(spans.c.span_id).where(spans.c.experiment_id == experiment_id)
                ).scalars()
            )
            ledger = connection.execute(
                select(
                    posted_evaluations.c.span_id,
                    posted_evaluations.c.label,
                    posted_evaluations.c.pending,
                ).where(posted_evaluations.c.experiment_id == experiment_id)
            ).all()
            evaluated = {
                (span_id, label)
                for span_id, label in connection.execute(
                    select(evaluations.c.span_id, evaluations.c.label).where(
                        evaluations.c.experiment_id == experiment_id
                    )
                )
            }
    finally:
        backend.close()
    # A metric is an evaluation once its span is stored, and waits (pending) until then:
    # the span's post moves it in the transaction that stores the span.
    for span_id, label, pending in ledger:
        assert ((span_id, label) in evaluated) != pending, f"{span_id}/{label}: a half move"
        assert pending == (span_id not in span_ids), f"{span_id}/{label}: pending={pending}"
    return span_ids, {(span_id, label) for span_id, label, _ in ledger}


def journaled(store_url: str) -> list[bytes]:
    """The bodies of the posts waiting in the journal (beside a SQLite store, in a
    PostgreSQL one)."""
    backend = SqlBackend(store_url)
    try:
        engine = open_journal(backend.engine, create=False)
        if engine is None:
            return []
        with engine.connect() as connection:
            found = connection.execute(select(ingest_journal.c.body)).scalars()
            return [bytes(body) for body in found]
    finally:
        backend.close()


def check_whole(
    store_url: str,
    experiment_id: str,
    posts: list[Post],
    answered: set[int],
    *,
    or_journaled: bool = False,
) -> None:
    """Every answered post is stored whole (or, ``or_journaled``, waits in the journal,
    and then is not stored); every other one whole, not at all, or in the journal."""
    span_ids, metrics = stored(store_url, experiment_id)
    waiting = journaled(store_url) if or_journaled else []
    for n, post in enumerate(posts):
        items = set(post.span_ids) & span_ids if post.span_ids else set(post.metrics) & metrics
        whole = len(post.span_ids or post.metrics)
        if post.body in waiting:
            # Journaled, answered or not (the kill may come before the answer), and
            # written by the next server. Beside a SQLite store, the journal row goes
            # after the write: written whole, or not at all.
            assert len(items) in (0, whole), f"post {n} is stored in part: {len(items)}/{whole}"
            continue
        if n in answered:
            assert len(items) == whole, f"post {n} was answered, and {len(items)}/{whole} kept"
        else:
            assert len(items) in (0, whole), f"post {n} is stored in part: {len(items)}/{whole}"


@pytest.mark.slow
@pytest.mark.parametrize("queue", [False, True], ids=["answered-after-writing", "queued"])
def test_a_killed_server_loses_no_answered_post(
    store_url: str, tmp_path: Path, queue: bool
) -> None:
    process, url = start_server(store_url, tmp_path, queue=queue)
    try:
        experiment_id, record_ids = set_up(url)
        posts = the_posts(experiment_id, record_ids)
        answered, failed = post_until_killed(url, posts, process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    assert len(answered) >= KILL_AFTER
    assert failed, "every post was answered before the kill: the test proves nothing"

    # Every answered post is stored whole (or, with a queue, waits in the journal); every
    # other one whole or not at all.
    check_whole(store_url, experiment_id, posts, answered, or_journaled=queue)
    if queue:
        assert journaled(store_url), "the kill left nothing in the journal: nothing is tested"

    # A new server writes what the journal holds before it serves.
    process, url = start_server(store_url, tmp_path, queue=queue)
    if queue:
        assert not journaled(store_url)
        check_whole(store_url, experiment_id, posts, answered)

    # The clients retry what they are unsure of (here: all of it) on the new server.
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            for post in posts:
                response = client.post(
                    post.path, content=post.body, headers={"Content-Type": "application/json"}
                )
                assert response.status_code == 202, response.text
    finally:
        process.terminate()
        process.wait(timeout=30)

    span_ids, metrics = stored(store_url, experiment_id)
    assert len(span_ids) == RECORDS * RUNS
    assert len(metrics) == RECORDS * RUNS * 3
    backend = SqlBackend(store_url)
    try:
        rows = backend.experiment_rows(experiment_id)
        assert sorted((row.run_iteration, row.idx) for row in rows) == [
            (run, index) for run in range(1, RUNS + 1) for index in range(RECORDS)
        ]
        for row in rows:
            got = {evaluation.label: evaluation.value for evaluation in row.evaluations}
            assert got == values_of(row.idx, row.run_iteration)
    finally:
        backend.close()
