"""The remote SDK mode: ``HttpBackend`` against a real Assay server over HTTP.

The scenarios of ``test_experiment.py`` and its neighbours run on this backend too
(``@on_every_backend``); here: one seeded experiment run on a local store and on a server
gives identical results, how the SDK chooses the server (``site``, ``ASSAY_URL``), and
what goes wrong over a network — a server that is down, not an Assay server, refusing the
key, busy (503), or losing an answer — each an Assay error naming the server and the fix.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from assay import EvaluatorResult, LLMObs, current_row
from assay.cli import app as cli_app
from assay.errors import (
    ConfigurationError,
    DatasetNotFoundError,
    ExperimentError,
    ExperimentNotFoundError,
    StoreError,
)
from assay.resume import this_runner
from assay.server import create_app
from assay.store import open_backend
from assay.store.http import HttpBackend
from assay.store.records import ErrorInfo, EvaluationRecord, ExperimentSpec, RowRecord, RunInfo
from assay.store.sql.backend import SqlBackend
from live_server import free_port, serving

V2 = "/api/v2/llm-obs/v1"


# A seeded experiment with everything a row can hold --------------------------------------


RECORDS = [
    {
        "id": f"r{n:02d}",
        "input_data": {"n": n, "words": ["alpha", "beta"][: n % 3]},
        "expected_output": n * 2 if n % 4 else None,
        "metadata": {"level": n % 3},
        "tags": [f"team:{'red' if n % 2 else 'blue'}"],
    }
    for n in range(12)
]


def seeded_task(input_data: dict[str, Any], config: dict[str, Any]) -> Any:
    row = current_row()
    assert row is not None
    rng = random.Random(f"{input_data['n']}-{row.run_iteration}")
    if rng.random() < 0.15:
        raise ValueError(f"flaky on {input_data['n']}")
    with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai", name="answer"):
        LLMObs.annotate(
            input_data=f"double {input_data['n']}",
            metrics={"input_tokens": 100 + input_data["n"], "output_tokens": 10},
        )
    with LLMObs.tool(name="lookup"):
        pass
    LLMObs.annotate(metadata={"attempt": row.run_iteration})
    answer = input_data["n"] * 2 + (1 if rng.random() < 0.3 else 0)
    return {"answer": answer, "nan": math.nan} if input_data["n"] == 5 else answer


def exact(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    return output_data == expected_output


def closeness(input_data: Any, output_data: Any, expected_output: Any) -> Any:
    if not isinstance(output_data, int) or expected_output is None:
        return math.nan
    return 1 / (1 + abs(output_data - expected_output))


def parity(input_data: Any, output_data: Any, expected_output: Any) -> Any:
    if output_data is None:
        return None
    if input_data["n"] == 7:
        raise RuntimeError("the judge failed")
    return EvaluatorResult(
        value="even" if str(output_data).endswith(("0", "2", "4", "6", "8")) else "odd",
        reasoning="last digit",
        assessment="pass",
        tags={"kind": "digit"},
    )


def shape(input_data: Any, output_data: Any, expected_output: Any) -> dict[str, Any]:
    return {"type": type(output_data).__name__, "n": input_data["n"]}


def exact_count(inputs: Any, outputs: Any, expected_outputs: Any, evaluators_results: Any) -> int:
    return sum(1 for value in evaluators_results["exact"] if value)


def run_seeded() -> Any:
    dataset = LLMObs.create_dataset(dataset_name="seeded", records=RECORDS)
    experiment = LLMObs.experiment(
        "seeded",
        seeded_task,
        dataset,
        [exact, closeness, parity, shape],
        summary_evaluators=[exact_count],
        config={"model": "m"},
        tags={"team": "evals"},
        runs=3,
    )
    experiment.run(jobs=4)
    return experiment


def stable(row: RowRecord) -> dict[str, Any]:
    """A row without what differs between two runs of the same script (ids, times)."""
    found = asdict(row)
    for key in ("experiment_id", "span_id", "trace_id", "start_ns", "duration_ns"):
        found.pop(key)
    for evaluation in found["evaluations"]:
        evaluation.pop("timestamp_ms")
    # On SQLite a batch's evaluations are inserted grouped by which of their columns are
    # NULL, so a row reads them back in an order that depends on its batch: compare by label.
    found["evaluations"].sort(key=lambda evaluation: evaluation["label"])
    for span in found["spans"]:
        for key in ("span_id", "parent_id", "trace_id", "start_ns", "duration_ns"):
            span.pop(key)
    if found["error"] is not None:
        found["error"].pop("stack")
    return found


def results(experiment: Any) -> dict[str, Any]:
    backend = open_backend()
    try:
        experiment_id = experiment.id
        info = backend.get_experiment(experiment_id)
        return {
            # The error names the failures in the order they happened: not deterministic.
            "status": (info.status, sorted((info.error or "").split("; "))),
            "setup": (info.run_count, info.config, info.tags, info.dataset_version),
            "names": (info.task_name, info.evaluator_names, info.summary_evaluator_names),
            "summary": experiment.summary(),
            "records": experiment.record_summaries(),
            "run2": experiment.summary(run=2),
            "rows": [stable(row) for row in backend.experiment_rows(experiment_id)],
            "with_spans": [
                stable(row) for row in backend.experiment_rows(experiment_id, with_spans=True)
            ],
            "summaries": [
                (item.run_iteration, item.evaluation.label, item.evaluation.value)
                for item in backend.summary_evaluations(experiment_id)
            ],
            "aggregates": [
                item
                for item in backend.record_aggregates(experiment_id)
                if item.facet != "duration"
            ],
            "count": backend.count_rows(experiment_id),
            "search": [
                (page.total, page.of, page.multi_run, page.description, page.items)
                for page in (
                    experiment.search("@evaluations.custom.exact:false", limit=100),
                    experiment.search("@multi_run_avg.@evaluations.custom.closeness:>0.4"),
                    experiment.search("team:red @status:error", run=2, sort="-total_tokens"),
                )
            ],
        }
    finally:
        backend.close()


def without_ids(found: dict[str, Any]) -> dict[str, Any]:
    # Search pages name rows by span id and durations: keep what both stores agree on.
    for *_, items in found["search"]:
        for item in items:
            item.pop("span_id", None)
            item.pop("duration", None)
            item.get("aggregates", {}).pop("@multi_run_avg.@duration", None)
    return found


def first_difference(local: Any, remote: Any, where: str = "") -> str:
    """Where two results first differ, for a readable failure."""
    if isinstance(local, dict) and isinstance(remote, dict) and local.keys() == remote.keys():
        for key in local:
            if local[key] != remote[key]:
                return first_difference(local[key], remote[key], f"{where}.{key}")
    if isinstance(local, list) and isinstance(remote, list) and len(local) == len(remote):
        for index, (one, other) in enumerate(zip(local, remote, strict=True)):
            if one != other:
                return first_difference(one, other, f"{where}[{index}]")
    return f"at {where or 'the top'}: local {local!r}, remote {remote!r}"


def test_the_same_experiment_gives_the_same_results_locally_and_on_a_server(
    assay_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSAY_DATABASE_URL", f"sqlite:///{tmp_path}/local.db")
    LLMObs.enable(project_name="parity")
    local = without_ids(results(run_seeded()))
    LLMObs.disable()

    monkeypatch.setenv("ASSAY_URL", assay_server.url)
    LLMObs.enable(project_name="parity", site=assay_server.url)
    remote_experiment = run_seeded()
    remote = without_ids(results(remote_experiment))

    assert local["count"] == remote["count"] == 36
    assert any(row["error"] for row in local["rows"]), "the seed makes some rows fail"
    for key in local:
        assert remote[key] == local[key], f"{key}: {first_difference(local[key], remote[key])}"
    # What the server holds is what the SDK read back.
    stored = assay_server.backend.experiment_rows(remote_experiment.id, with_spans=True)
    assert [stable(row) for row in stored] == remote["with_spans"]


# Choosing the server -----------------------------------------------------------------------


def test_site_sends_results_to_the_server_and_says_so(
    assay_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    LLMObs.enable(site=assay_server.url + "/", project_name="remote")
    notice = capsys.readouterr().err.strip()
    assert notice == f"assay: results go to the Assay server at {assay_server.url} (site)"
    dataset = LLMObs.create_dataset(dataset_name="d", records=[{"input_data": 1}])
    experiment = LLMObs.experiment("e", lambda input_data, config: input_data, dataset, [exact])
    experiment.run()
    assert experiment.url == f"{assay_server.url}/llm/experiments/{experiment.id}"
    assert dataset.url == f"{assay_server.url}/llm/datasets/{dataset.id}"
    stored = assay_server.backend.get_experiment(experiment.id)
    assert stored.status == "completed" and stored.runner == this_runner()
    assert stored.evaluator_names == ("exact",)


def test_assay_url_chooses_the_server_for_the_sdk_and_the_cli(
    assay_server: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ASSAY_URL", assay_server.url)
    LLMObs.enable(site="datadoghq.com", project_name="remote")
    assert capsys.readouterr().err.strip().endswith(f"{assay_server.url} (ASSAY_URL)")
    dataset = LLMObs.create_dataset(dataset_name="d", records=[{"input_data": 2}])
    LLMObs.experiment("from-env", lambda input_data, config: 4, dataset, [exact]).run()
    LLMObs.disable()

    listed = CliRunner().invoke(cli_app, ["experiments", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [item["name"] for item in json.loads(listed.stdout)] == ["from-env"]
    records = CliRunner().invoke(cli_app, ["records", "from-env", "--json"])
    assert json.loads(records.stdout)["total"] == 1
    missing = CliRunner().invoke(cli_app, ["show", "nothing-like-it"])
    assert missing.exit_code == 1
    assert f"on the Assay server at {assay_server.url}" in missing.stderr


def test_an_assay_url_that_is_not_a_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSAY_URL", "assay.internal:8000")
    with pytest.raises(ConfigurationError, match=r"'assay\.internal:8000' is not the URL of an"):
        LLMObs.enable(project_name="p")
    shown = CliRunner().invoke(cli_app, ["experiments", "list"])
    assert shown.exit_code == 1 and "write it as http://host:port" in shown.stderr


# Errors in Assay's terms -------------------------------------------------------------------


def test_a_server_that_is_down_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    backend = HttpBackend(url, retries=1, backoff=0.01)
    with pytest.raises(StoreError, match=rf"is `assay serve` running at {url}\?"):
        backend.ensure_project("p")
    backend.close()
    LLMObs.enable(site=url, project_name="p")
    with pytest.raises(StoreError, match="Cannot reach the Assay server"):
        LLMObs.create_dataset(dataset_name="d", records=[])


def test_unknown_ids_are_the_stores_not_found_errors(assay_server: Any) -> None:
    backend = HttpBackend(assay_server.url)
    try:
        with pytest.raises(ExperimentNotFoundError, match="No experiment with id 'nope'") as error:
            backend.get_experiment("nope")
        assert assay_server.url in str(error.value)
        with pytest.raises(ExperimentNotFoundError, match="'zzz'"):
            backend.resolve_experiment("zzz")
        with pytest.raises(DatasetNotFoundError, match="No dataset with id"):
            backend.get_dataset("nope")
        with pytest.raises(DatasetNotFoundError):
            backend.dataset_records("a/b")
        assert backend.find_dataset("no-such-project", "d") is None
        assert backend.find_project("nobody") is None
        # As the local store answers: an unknown experiment is not one with no rows yet.
        for read in (backend.experiment_rows, backend.count_rows, backend.summary_evaluations):
            with pytest.raises(ExperimentNotFoundError, match="No experiment with id 'nope'"):
                read("nope")
    finally:
        backend.close()


def _web_server(status: int, body: bytes) -> Any:
    """An ASGI app that answers every request with ``status`` and an HTML ``body``."""

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"text/html")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return answer


@pytest.mark.parametrize(
    ("status", "message"),
    [(404, "not an Assay server, or one too old"), (200, "but no JSON .* not an Assay server")],
)
def test_a_server_that_is_not_assay_is_named_as_such(status: int, message: str) -> None:
    with serving(_web_server(status, b"<html>hello</html>")) as url:
        backend = HttpBackend(url)
        with pytest.raises(StoreError, match=message):
            backend.get_experiment("x")
        backend.close()


@pytest.fixture
def keyed_server(tmp_path: Path) -> Iterator[tuple[str, SqlBackend]]:
    store = SqlBackend(f"sqlite:///{tmp_path}/keyed.db")
    try:
        with serving(create_app(backend=store, require_auth=True)) as url:
            yield url, store
    finally:
        store.close()


def test_a_missing_or_wrong_key_says_how_to_make_one(
    keyed_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, store = keyed_server
    for key, problem in (("", "no API key was sent"), ("assay_wrong", "not valid there")):
        backend = HttpBackend(url, api_key=key)
        with pytest.raises(ConfigurationError, match="assay keys create") as error:
            backend.ensure_project("p")
        assert problem in str(error.value) and url in str(error.value)
        backend.close()
    _, key = store.create_api_key("ci")
    LLMObs.enable(site=url, api_key=key, project_name="keyed")
    LLMObs.create_dataset(dataset_name="d", records=[{"input_data": 1}])
    assert store.find_project("keyed") is not None
    monkeypatch.setenv("ASSAY_URL", url)
    monkeypatch.setenv("ASSAY_API_KEY", key)
    LLMObs.enable(project_name="from-env")
    assert len(LLMObs.pull_dataset("d", project_name="keyed")) == 1


def test_a_key_limited_to_a_project_sees_only_that_project(keyed_server: Any) -> None:
    url, store = keyed_server
    _, everything = store.create_api_key("admin")
    _, limited_key = store.create_api_key("mine", projects=["mine"])
    admin = HttpBackend(url, api_key=everything)
    limited = HttpBackend(url, api_key=limited_key)
    try:
        made = {}
        for name in ("mine", "theirs"):
            project = admin.ensure_project(name)
            dataset = admin.create_dataset(project.id, f"{name}-data")
            spec = ExperimentSpec(project.id, dataset.id, 0, f"{name}-experiment", run_count=1)
            made[name] = admin.create_experiment(spec, [RunInfo("run-" + name, 1)])
        assert [info.name for info in limited.list_experiments()] == ["mine-experiment"]
        assert [info.name for info in limited.list_datasets()] == ["mine-data"]
        assert limited.get_experiment(made["mine"].id).name == "mine-experiment"
        with pytest.raises(ExperimentNotFoundError):
            limited.get_experiment(made["theirs"].id)
        with pytest.raises(ExperimentNotFoundError):
            limited.resolve_experiment("theirs-experiment")
        with pytest.raises(ExperimentNotFoundError):
            limited.experiment_rows(made["theirs"].id)
        with pytest.raises(ConfigurationError, match="may use only the projects 'mine'"):
            limited.ensure_project("other")
    finally:
        admin.close()
        limited.close()


# Retries, lost answers and batches --------------------------------------------------------


@dataclass
class Seen:
    """A request as the proxy saw it."""

    method: str
    path: str
    headers: dict[str, str]
    size: int = 0
    """Bytes of its body, as sent (compressed or not)."""


@dataclass
class Flaky:
    """The real app behind a proxy that can answer 503, or lose an answer after the app
    wrote, for requests whose path ends with ``suffix``; it records every request."""

    app: Any
    suffix: str = ""
    unavailable: int = 0
    """How many matching requests get a 503 before one reaches the app."""
    lose: int = 0
    """How many matching answers are held back until the client gave up."""
    requests: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode(): value.decode() for key, value in scope["headers"]}
        # Recorded before it is answered: the client may look as soon as it has the answer.
        seen = Seen(scope["method"], scope["path"], headers)
        self.requests.append(seen)

        async def measuring() -> Any:
            message = await receive()
            seen.size += len(message.get("body", b""))
            return message

        matching = bool(self.suffix) and scope["path"].endswith(self.suffix)
        if matching and self.unavailable > 0:
            self.unavailable -= 1
            body = json.dumps({"errors": [{"status": "503", "detail": "busy"}]}).encode()
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        if matching and self.lose > 0:
            self.lose -= 1
            held: list[Any] = []

            async def holding(message: Any) -> None:
                held.append(message)

            await self.app(scope, measuring, holding)
            await asyncio.sleep(1.6)  # the client's read timeout passes: the answer is lost
            for message in held:
                await send(message)
            return
        await self.app(scope, measuring, send)


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[tuple[str, Flaky, SqlBackend]]:
    store = SqlBackend(f"sqlite:///{tmp_path}/flaky.db")
    proxy = Flaky(create_app(backend=store))
    try:
        with serving(proxy) as url:
            yield url, proxy, store
    finally:
        store.close()


def _experiment(backend: HttpBackend, runs: int = 1) -> str:
    project = backend.ensure_project("p")
    dataset = backend.create_dataset(project.id, "d")
    spec = ExperimentSpec(project.id, dataset.id, 0, "e", run_count=runs)
    made = [RunInfo(uuid.uuid4().hex, n) for n in range(1, runs + 1)]
    return backend.create_experiment(spec, made).id


def _rows(experiment_id: str, count: int, *, size: int = 10) -> list[RowRecord]:
    return [
        RowRecord(
            experiment_id=experiment_id,
            run_iteration=1,
            record_id=f"r{n}",
            idx=n,
            span_id=str(1000 + n),
            trace_id=f"{n:032x}",
            span_name="task",
            start_ns=n,
            duration_ns=1,
            input_data={"text": "x" * size},
            output=n,
            expected_output=None,
            record_metadata={},
            tags=[],
            error=ErrorInfo("builtins.ValueError", "bad", "stack") if n == 3 else None,
            retries=0,
            evaluations=[EvaluationRecord("score", "score", n / 2, 1)],
        )
        for n in range(count)
    ]


def test_rows_go_in_batches_gzip_compressed(flaky: Any) -> None:
    url, proxy, store = flaky
    backend = HttpBackend(url, batch_rows=7)
    try:
        experiment_id = _experiment(backend)
        proxy.requests.clear()
        backend.write_rows(_rows(experiment_id, 30, size=3000))
        by_count = [seen.headers for seen in proxy.requests if seen.path.endswith("/rows")]
        backend.batch_rows, backend.batch_bytes = 500, 10_000
        other_id = _experiment(backend)
        proxy.requests.clear()
        backend.write_rows(_rows(other_id, 10, size=3000))
        by_size = [seen.size for seen in proxy.requests if seen.path.endswith("/rows")]
    finally:
        backend.close()
    # 7 rows of 3 KB each are over 16 KiB, so gzip-compressed; the last 2 are sent as they are.
    assert [headers.get("content-encoding") for headers in by_count] == [*["gzip"] * 4, None]
    # Rows of about 3.4 KB, at most 10,000 bytes of them a request: 2, 2, 2, 2, 2.
    assert len(by_size) == 5 and all(size < 10_000 for size in by_size)
    assert [row.output for row in store.experiment_rows(experiment_id)] == list(range(30))
    assert store.count_rows(other_id) == 10


def test_keys_go_in_both_headers(flaky: Any) -> None:
    url, proxy, _ = flaky
    backend = HttpBackend(url, api_key="assay_abc", app_key="app-123")
    try:
        backend.find_project("p")
    finally:
        backend.close()
    headers = proxy.requests[-1].headers
    assert headers["dd-api-key"] == "assay_abc"
    assert headers["authorization"] == "Bearer assay_abc"
    assert headers["dd-application-key"] == "app-123"


def test_503_is_retried_with_backoff_then_reported(flaky: Any) -> None:
    url, proxy, store = flaky
    backend = HttpBackend(url, retries=2, backoff=0.01)
    try:
        experiment_id = _experiment(backend)
        proxy.suffix, proxy.unavailable = "/rows", 2
        backend.write_rows(_rows(experiment_id, 3))
        assert store.count_rows(experiment_id) == 3
        proxy.suffix, proxy.unavailable = "/summary_evaluations", 3
        evaluation = EvaluationRecord("total", "score", 3, 1)
        with pytest.raises(StoreError, match=r"answered .* with 503 \(busy\) 3 times"):
            backend.write_summary_evaluations(experiment_id, 1, [evaluation])
    finally:
        backend.close()


def test_a_lost_answer_to_a_row_batch_writes_it_once(flaky: Any) -> None:
    url, proxy, store = flaky
    backend = HttpBackend(url, timeout=0.8, backoff=0.01)
    try:
        experiment_id = _experiment(backend)
        proxy.suffix, proxy.lose = "/rows", 1
        backend.write_rows(_rows(experiment_id, 5))  # retried; the 409 means "written"
        assert store.count_rows(experiment_id) == 5
        rows_posted = [seen for seen in proxy.requests if seen.path.endswith("/rows")]
        assert len(rows_posted) == 2  # the batch whose answer was lost, then again
        # A delta to a dataset is not repeated: it could make two versions.
        proxy.suffix, proxy.lose = "/changes", 1
        dataset_id = store.list_datasets()[0].id
        with pytest.raises(StoreError, match="did not answer POST"):
            backend.update_dataset_records(dataset_id, deletes=[])
    finally:
        backend.close()


def test_what_the_server_refuses_is_named(assay_server: Any) -> None:
    backend = HttpBackend(assay_server.url)
    try:
        experiment_id = _experiment(backend, runs=2)
        (row,) = _rows(experiment_id, 1)
        row.run_iteration = 3
        with pytest.raises(ExperimentError, match=r"run_iteration 3 is not a run .* \[1, 2\]"):
            backend.write_rows([row])
    finally:
        backend.close()
    path = f"{assay_server.url}{V2}/sdk/experiments/{experiment_id}/rows"
    row.run_iteration = 1
    document = {"data": [{"type": "experiment_rows", "attributes": _row_json(row)}]}
    document["data"][0]["attributes"]["evaluations"][0]["value"] = "high"
    refused = httpx.post(path, json=document)
    assert refused.status_code == 422
    assert "a score evaluation's value must be a number" in refused.json()["errors"][0]["detail"]
    document["data"][0]["attributes"]["colour"] = "red"
    unknown = httpx.post(path, json=document)
    assert unknown.status_code == 422 and "colour" in unknown.text
    broken = httpx.post(
        path,
        content=gzip.compress(b"{}")[:-4],
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert broken.status_code == 400 and "gzip" in broken.json()["errors"][0]["detail"]


def _row_json(row: RowRecord) -> dict[str, Any]:
    from assay.store.http import encoding

    return encoding.row_json(row)
