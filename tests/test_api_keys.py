"""API keys: `assay keys`, the key check of the server, and what a project-limited key sees.

On SQLite and PostgreSQL, in-process (FastAPI's TestClient) and over real HTTP (uvicorn on
a random loopback port, `assay serve` in a subprocess, and ddtrace sending its keys).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import insert, inspect, select
from typer.testing import CliRunner, Result

from assay.cli import app as cli_app
from assay.errors import ApiKeyError, ApiKeyNotFoundError
from assay.server import auth, create_app
from assay.server.auth import is_loopback
from assay.server.dependencies import ingest_writer
from assay.store.records import ExperimentFilter
from assay.store.sql.backend import SqlBackend
from assay.store.sql.tables import api_keys, projects
from live_server import free_port, serving
from test_server_api import (
    MEDIA_TYPE,
    PREFIXES,
    UNSTABLE,
    V2,
    body,
    call,
    make_dataset,
    make_experiment,
    make_project,
    make_records,
)

NOW = datetime(2026, 5, 4, tzinfo=UTC)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli_app, list(args))


def refusal(response: httpx.Response, *fragments: str) -> dict[str, Any]:
    """The one 401 error of a refused request, in the JSON:API error shape."""
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == MEDIA_TYPE
    assert response.headers["www-authenticate"].startswith("Bearer")
    [error] = response.json()["errors"]
    assert set(error) == {"status", "title", "detail", "source"}
    assert error["status"] == "401" and error["title"] == "Unauthorized"
    assert "assay keys create NAME" in error["detail"]
    for fragment in fragments:
        assert fragment in error["detail"]
    source: dict[str, Any] = error["source"]
    assert set(source) == {"header"}
    return error


def keyed(app: FastAPI, key: str | None = None, **headers: str) -> TestClient:
    if key is not None:
        headers["DD-API-KEY"] = key
    return TestClient(app, headers=headers)


# The store ---------------------------------------------------------------------------------


def test_a_key_is_stored_as_its_hash_and_shown_once(backend: SqlBackend) -> None:
    info, key = backend.create_api_key("ci")
    assert key.startswith("assay_") and len(key) >= 40
    assert info.prefix == key[:12] and info.projects is None and not info.revoked
    with backend.engine.connect() as connection:
        [row] = connection.execute(select(api_keys)).mappings().all()
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert not any(key in str(value) for value in row.values())
    assert backend.find_api_key(key) == info
    assert backend.find_api_key(key + "x") is None
    assert backend.find_api_key("dummy-api-key") is None
    other_info, other = backend.create_api_key("other", projects=["b", "a", "b"])
    assert other != key and other_info.projects == ("b", "a")


def test_live_names_are_unique_and_revoking_keeps_the_row(backend: SqlBackend) -> None:
    first, _ = backend.create_api_key("ci")
    with pytest.raises(ApiKeyError, match="'ci' already exists"):
        backend.create_api_key("ci")
    with pytest.raises(ApiKeyError, match="1 to 200 characters"):
        backend.create_api_key("  ")
    with pytest.raises(ApiKeyError, match="projects is empty"):
        backend.create_api_key("none", projects=[])
    revoked, now = backend.revoke_api_key("ci")
    assert now and revoked.id == first.id and revoked.revoked_at is not None
    second, _ = backend.create_api_key("ci")  # the name is free again
    assert backend.revoke_api_key(first.id[:6]) == (revoked, False)
    assert [key.id for key in backend.list_api_keys()] == [first.id, second.id]
    with pytest.raises(ApiKeyNotFoundError, match="No API key named 'nope'"):
        backend.revoke_api_key("nope")


@pytest.mark.empty_database
def test_a_store_of_the_previous_schema_gains_the_key_table(store_url: str) -> None:
    from alembic import command

    from assay.store.sql.engine import _alembic_config, open_engine

    engine = open_engine(store_url)
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
        connection.execute(
            insert(projects).values(id="p1", name="old", description="", created_at=NOW)
        )
        assert not inspect(connection).has_table("api_keys")
    engine.dispose()
    backend = SqlBackend(store_url)  # migrates to the newest schema
    try:
        assert backend.find_project("old") is not None
        _, key = backend.create_api_key("after-upgrade", projects=["old"])
        assert backend.find_api_key(key) is not None
    finally:
        backend.close()


# The CLI ----------------------------------------------------------------------------------


def test_keys_create_list_and_revoke(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    created = invoke("keys", "create", "ci", "--project", "team-a", "--database-url", store_url)
    assert created.exit_code == 0, created.output
    [key] = created.stdout.splitlines()  # the key alone: KEY=$(assay keys create ci)
    assert key.startswith("assay_")
    assert "not shown again" in created.stderr
    assert "no project named 'team-a' exists yet" in created.stderr

    backend = SqlBackend(store_url)
    try:
        with backend.engine.connect() as connection:
            stored = [dict(row) for row in connection.execute(select(api_keys)).mappings()]
        [info] = backend.list_api_keys()
    finally:
        backend.close()
    assert stored[0]["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in json.dumps(stored, default=str)

    listed = invoke("keys", "list", "--database-url", store_url)
    assert listed.exit_code == 0, listed.output
    for text in ("ci", info.id[:8], f"{key[:12]}…", "team-a", "never"):
        assert text in listed.stdout
    assert key not in listed.stdout

    revoked = invoke("keys", "revoke", "ci", "--database-url", store_url)
    assert revoked.exit_code == 0 and revoked.stdout.startswith("Revoked API key 'ci'")
    again = invoke("keys", "revoke", info.id, "--database-url", store_url)
    assert again.exit_code == 0 and "was already revoked" in again.stdout

    as_json = json.loads(invoke("keys", "list", "--json", "--database-url", store_url).stdout)
    assert [(k["name"], k["projects"], k["revoked"]) for k in as_json] == [("ci", ["team-a"], True)]
    assert as_json[0]["id"] == info.id and as_json[0]["last_used_at"] is None
    assert "key_hash" not in as_json[0]


def test_keys_commands_fail_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/keys.db"
    assert invoke("keys", "create", "ci", "--database-url", url).exit_code == 0
    for args, fragment in (
        (("create", "ci"), "already exists"),
        (("revoke", "nope"), "No API key named 'nope'"),
        (("create", "x", "--project", " "), "cannot be empty"),
    ):
        result = invoke("keys", *args, "--database-url", url)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("error: ") and fragment in result.stderr
        assert result.stderr.count("\n") == 1 and result.stdout == ""
    empty = invoke("keys", "list", "--database-url", f"sqlite:///{tmp_path}/none.db")
    assert "No API keys in" in empty.stdout


def test_serve_requires_keys_beyond_loopback_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    served: list[FastAPI] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: served.append(app))
    url = f"sqlite:///{tmp_path}/served.db"
    wide = invoke("serve", "--host", "0.0.0.0", "--database-url", url)
    assert wide.exit_code == 0, wide.output
    assert "every request needs an API key (0.0.0.0 is reachable beyond" in wide.stderr
    assert "warning: no API key exists yet" in wide.stderr
    invoke("keys", "create", "ci", "--database-url", url)
    forced = invoke("serve", "--require-auth", "--database-url", url)
    assert "every request needs an API key (--require-auth); this store has 1" in forced.stderr
    assert "warning" not in forced.stderr
    local = invoke("serve", "--host", "localhost", "--database-url", url)
    assert local.stderr.count("\n") == 1  # the serving line only: keys are optional
    for app in served:
        app.state.backend.close()  # the app's lifespan, which would close it, never ran
    assert [app.state.authenticator.required for app in served] == [True, True, False]
    # The ingest queue is on unless turned off.
    assert all(ingest_writer(app.state.backend).queue for app in served)
    invoke("serve", "--no-ingest-queue", "--database-url", url)
    assert not ingest_writer(served[-1].state.backend).queue
    served[-1].state.backend.close()


# Required keys, in-process ---------------------------------------------------------------


@pytest.fixture
def secured(backend: SqlBackend) -> FastAPI:
    return create_app(backend=backend, require_auth=True)


def test_a_required_key_is_asked_for_on_every_api_route(secured: FastAPI) -> None:
    with keyed(secured) as client:
        for prefix in PREFIXES:
            refusal(client.get(f"{prefix}/projects"), "DD-API-KEY", "Authorization: Bearer")
        refusal(client.post("/api/v2/llmobs", json=[]))
        refusal(client.post("/evp_proxy/v2/api/v2/llmobs", json=[]))
        refusal(client.post("/api/intake/llm-obs/v2/eval-metric", json={}))
        refusal(client.post(f"{V2}/projects/delete", json={}))  # a 501 route too
        refusal(client.get(f"{V2}/experiments/x/summary"))
        # The OpenAPI document and its page stay public, and say how to authenticate.
        document = client.get("/openapi.json").json()
        assert set(document["components"]["securitySchemes"]) == {"DD-API-KEY", "Bearer"}
        assert client.get("/docs").status_code == 200
        assert client.get("/nowhere").status_code == 404


def test_a_key_is_accepted_in_either_header(secured: FastAPI, backend: SqlBackend) -> None:
    _, key = backend.create_api_key("ci")
    with keyed(secured, key, **{"DD-APPLICATION-KEY": "anything"}) as client:
        make_project(client, "via-dd-api-key")
    with keyed(secured, authorization=f"Bearer {key}") as client:
        names = [p["attributes"]["name"] for p in call(client, "GET", f"{V2}/projects")["data"]]
    assert names == ["via-dd-api-key"]
    with keyed(secured, **{"dd-api-key": "dummy", "Authorization": f"bearer {key}"}) as client:
        call(client, "GET", f"{V2}/projects")  # a live key in either header is enough


def test_a_wrong_or_misplaced_key_is_refused(secured: FastAPI, backend: SqlBackend) -> None:
    _, key = backend.create_api_key("ci")
    with keyed(secured) as client:
        wrong = client.get(f"{V2}/projects", headers={"DD-API-KEY": key[:-2] + "xx"})
        refusal(wrong, f"{key[:12]}... in DD-API-KEY is not a key of this server")
        assert key not in wrong.text
        placeholder = client.get(f"{V2}/projects", headers={"DD-API-KEY": "dummy-api-key"})
        refusal(placeholder, "DD-API-KEY holds no Assay key")
        misplaced = client.get(
            f"{V2}/projects", headers={"DD-API-KEY": "unused", "DD-APPLICATION-KEY": key}
        )
        refusal(misplaced, "DD-APPLICATION-KEY holds an Assay key: send it as DD-API-KEY")
        basic = client.get(f"{V2}/projects", headers={"Authorization": f"Basic {key}"})
        refusal(basic, "requires an API key")


def test_a_revoked_key_is_refused_even_where_keys_are_optional(backend: SqlBackend) -> None:
    info, key = backend.create_api_key("ci")
    backend.revoke_api_key("ci")
    for required in (True, False):
        with keyed(create_app(backend=backend, require_auth=required), key) as client:
            error = refusal(client.get(f"{V2}/projects"), "API key 'ci'", "was revoked on")
            assert error["source"] == {"header": "DD-API-KEY"}
        assert info.prefix in error["detail"]


def test_last_use_is_recorded_at_most_once_a_minute(
    secured: FastAPI, backend: SqlBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = backend.create_api_key("ci")

    def last_used() -> Any:
        [info] = backend.list_api_keys()
        return info.last_used_at

    with keyed(secured, key) as client:
        call(client, "GET", f"{V2}/projects")
        first = last_used()
        assert first is not None
        call(client, "GET", f"{V2}/projects")
        assert last_used() == first
        monkeypatch.setattr(auth, "USE_INTERVAL", timedelta(0))
        time.sleep(0.01)
        call(client, "GET", f"{V2}/projects")
        assert last_used() > first


# Optional keys ---------------------------------------------------------------------------


def test_loopback_without_require_auth_stays_open(backend: SqlBackend) -> None:
    info, key = backend.create_api_key("ci")
    app = create_app(backend=backend)
    for headers in (
        {},
        {"DD-API-KEY": "unused", "DD-APPLICATION-KEY": "unused"},  # ddtrace's placeholders
        {"DD-API-KEY": "assay_not-a-key-of-this-store"},
        {"Authorization": "Bearer something"},
        {"DD-API-KEY": key},
    ):
        with keyed(app, **headers) as client:
            call(client, "GET", f"{V2}/projects")
    # The client in the same process reached no network address: keys are optional.
    assert app.state.authenticator.required is None
    [used] = backend.list_api_keys()
    assert used.id == info.id and used.last_used_at is not None  # a known key is noted


def test_by_default_a_key_is_required_on_non_loopback_addresses(backend: SqlBackend) -> None:
    app = create_app(backend=backend)
    with TestClient(app, base_url="http://10.1.2.3") as client:
        refusal(client.get(f"{V2}/projects"))
    for local in ("http://127.0.0.1:8000", "http://[::1]:8000", "http://testserver"):
        with TestClient(app, base_url=local) as client:
            call(client, "GET", f"{V2}/projects")


def test_what_counts_as_loopback() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2", "::ffff:127.0.0.1"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.com", "192.168.1.2"):
        assert not is_loopback(host), host


# Keys limited to projects --------------------------------------------------------------


@pytest.fixture
def teams(secured: FastAPI, backend: SqlBackend) -> dict[str, str]:
    """Two projects, each with a dataset of five records and a 2-run experiment, made with
    a key for every project; and a key limited to team-a."""
    _, admin = backend.create_api_key("admin")
    _, limited = backend.create_api_key("team-a-ci", projects=["team-a"])
    made = {"admin": admin, "limited": limited}
    with keyed(secured, admin) as client:
        for team in ("a", "b"):
            project_id = make_project(client, f"team-{team}")
            dataset_id = make_dataset(client, project_id, f"ds-{team}")
            make_records(client, project_id, dataset_id)
            experiment = make_experiment(
                client, project_id, dataset_id, name=f"exp-{team}", run_count=2
            )
            made |= {f"project_{team}": project_id, f"dataset_{team}": dataset_id}
            made[f"experiment_{team}"] = experiment["id"]
    return made


def hidden(
    client: TestClient, path: str, ids: list[str], params: dict[str, str] | None = None
) -> None:
    """GET ``path``: a 404 worded exactly as for ids (and names) that do not exist."""

    def missing(text: str) -> str:
        for hidden_id in ids:
            text = text.replace(hidden_id, "nope")
        return text

    answer = call(client, "GET", path, expect=404, params=params)
    absent = call(
        client,
        "GET",
        missing(path),
        expect=404,
        params={key: missing(value) for key, value in (params or {}).items()},
    )
    [error], [expected] = answer["errors"], absent["errors"]
    assert {**error, "detail": missing(error["detail"])} == expected


def test_a_limited_key_sees_only_its_projects(secured: FastAPI, teams: dict[str, str]) -> None:
    team_b = [teams["project_b"], teams["dataset_b"], teams["experiment_b"], "team-b", "exp-b"]
    project_b, dataset_b, experiment_b = (
        teams["project_b"],
        teams["dataset_b"],
        teams["experiment_b"],
    )
    with keyed(secured, teams["limited"]) as client:
        projects = call(client, "GET", f"{V2}/projects")["data"]
        assert [p["attributes"]["name"] for p in projects] == ["team-a"]
        listed = call(client, "GET", f"{V2}/projects", params={"filter[name]": "team-b"})
        assert listed["data"] == []
        experiments = call(client, "GET", f"{V2}/experiments")["data"]
        assert [e["attributes"]["name"] for e in experiments] == ["exp-a"]
        by_project = call(
            client, "GET", f"{V2}/experiments", params={"filter[project_id]": project_b}
        )
        assert by_project["data"] == []
        call(client, "GET", f"{V2}/experiments/{teams['experiment_a']}/summary")

        # Reads of team-b: 404, worded as for ids that do not exist.
        for path in (
            f"/projects/{project_b}",
            f"/{project_b}/datasets",
            f"/{project_b}/datasets/{dataset_b}",
            f"/{teams['project_a']}/datasets/{dataset_b}",
            f"/{project_b}/datasets/{dataset_b}/records",
            f"/{project_b}/datasets/{dataset_b}/versions",
            f"/experiments/{experiment_b}",
            f"/experiments/{experiment_b}/summary",
            f"/experiments/{experiment_b}/record_summaries",
            f"/experiments/{experiment_b}/records",
            f"/experiments/{experiment_b}/events",
        ):
            hidden(client, V2 + path, team_b)
        by_name = {"filter[project_name]": "team-b", "filter[experiment_name]": "exp-b"}
        hidden(client, f"{V2}/experiments/events", team_b, params=by_name)


def test_a_limited_key_cannot_write_to_other_projects(
    secured: FastAPI, backend: SqlBackend, teams: dict[str, str]
) -> None:
    project_a, project_b = teams["project_a"], teams["project_b"]
    dataset_a, dataset_b = teams["dataset_a"], teams["dataset_b"]
    experiment_b = teams["experiment_b"]
    with keyed(secured, teams["limited"]) as client:
        refused = call(client, "POST", f"{V2}/projects", body({"name": "team-b"}), expect=403)
        [error] = refused["errors"]
        assert "may use only the projects 'team-a', not 'team-b'" in error["detail"]
        assert error["source"] == {"pointer": "/data/attributes/name"}
        assert make_project(client, "team-a") == project_a  # its own: create-or-get

        for method, path, sent in (
            ("POST", f"/{project_b}/datasets", body({"name": "sneaky"})),
            ("POST", f"/{project_b}/datasets/{dataset_b}/records", body({"records": []})),
            ("POST", f"/{project_b}/datasets/delete", body({"dataset_ids": [dataset_b]})),
            ("POST", "/datasets/delete", body({"dataset_ids": [dataset_a, dataset_b]})),
            ("PATCH", f"/experiments/{experiment_b}", body({"status": "failed"})),
            ("POST", f"/experiments/{experiment_b}/events", body({"metrics": []})),
            (
                "POST",
                "/experiments",
                body({"name": "x", "project_id": project_b, "dataset_id": dataset_b}),
            ),
            (
                "POST",
                "/experiments",
                body({"name": "x", "project_id": project_a, "dataset_id": dataset_b}),
            ),
            (
                "POST",
                "/experiments",
                body(
                    {
                        "name": "x",
                        "project_id": project_a,
                        "dataset_id": dataset_a,
                        "parent_experiment_id": experiment_b,
                    }
                ),
            ),
        ):
            call(client, method, V2 + path, sent, expect=404)
        upload = client.post(
            f"{V2}/datasets/{dataset_b}/records/upload",
            files={"file": ("r.csv", b"input,id\n1,x\n", "text/csv")},
        )
        assert upload.status_code == 404
        span = {
            "span_id": "1",
            "trace_id": "t1",
            "parent_id": "undefined",
            "name": "task",
            "start_ns": 1,
            "duration": 1,
            "status": "ok",
            "meta": {"span": {"kind": "experiment"}, "input": 0, "output": 0},
            "tags": [f"experiment_id:{experiment_b}", "dataset_record_id:r0", "run_iteration:1"],
        }
        answer = client.post("/api/v2/llmobs", json=[{"event_type": "span", "spans": [span]}])
        assert answer.status_code == 202
        assert answer.json()["meta"] == {
            "spans": 1,
            "stored": 0,
            "duplicates": 0,
            "ignored": 1,
            "queued": 0,
        }

    # Nothing of team-b changed.
    assert [info.name for info in backend.list_datasets(project_b)] == ["ds-b"]
    assert backend.get_dataset(dataset_b).current_version == 1
    assert backend.get_experiment(experiment_b).status == "created"
    assert backend.count_rows(experiment_b) == 0
    assert backend.list_datasets(project_a)[0].id == dataset_a  # not deleted either


def test_a_key_for_a_project_to_come_may_create_it(secured: FastAPI, backend: SqlBackend) -> None:
    _, key = backend.create_api_key("newcomer", projects=["team-c"])
    with keyed(secured, key) as client:
        assert call(client, "GET", f"{V2}/projects")["data"] == []
        project_id = make_project(client, "team-c")
        dataset_id = make_dataset(client, project_id)
        make_records(client, project_id, dataset_id)
        [seen] = call(client, "GET", f"{UNSTABLE}/projects")["data"]
        assert seen["id"] == project_id


def test_a_key_for_every_project_sees_every_project(
    secured: FastAPI, teams: dict[str, str]
) -> None:
    with keyed(secured, teams["admin"]) as client:
        names = [p["attributes"]["name"] for p in call(client, "GET", f"{V2}/projects")["data"]]
        assert names == ["team-a", "team-b"]
        assert len(call(client, "GET", f"{V2}/experiments")["data"]) == 2


# Over real HTTP --------------------------------------------------------------------------


@pytest.fixture
def live(secured: FastAPI) -> Iterator[str]:
    with serving(secured) as url:
        yield url


def test_keys_over_real_http(live: str, backend: SqlBackend) -> None:
    _, admin = backend.create_api_key("admin")
    _, limited = backend.create_api_key("limited", projects=["mine"])
    projects = f"{live}{V2}/projects"
    refusal(httpx.get(projects))
    refusal(httpx.get(projects, headers={"DD-API-KEY": "unused"}), "holds no Assay key")
    for name, key in (("mine", admin), ("theirs", admin)):
        answer = httpx.post(
            projects, json=body({"name": name}), headers={"Authorization": f"Bearer {key}"}
        )
        assert answer.status_code == 200, answer.text
    seen = httpx.get(projects, headers={"DD-API-KEY": limited, "DD-APPLICATION-KEY": "x"})
    assert seen.status_code == 200
    assert [p["attributes"]["name"] for p in seen.json()["data"]] == ["mine"]
    backend.revoke_api_key("limited")
    refusal(httpx.get(projects, headers={"DD-API-KEY": limited}), "was revoked")


KEYED_DDTRACE_SCRIPT = """\
from ddtrace.llmobs import LLMObs

LLMObs.enable(project_name="keyed")
dataset = LLMObs.create_dataset(
    dataset_name="echo", records=[{"input_data": "a", "expected_output": "a"}]
)


def task(input_data, config):
    return input_data


def exact(input_data, output_data, expected_output):
    return output_data == expected_output


experiment = LLMObs.experiment(name="keyed", task=task, dataset=dataset, evaluators=[exact], runs=2)
experiment.run(jobs=1)
"""


def test_ddtrace_sends_a_limited_key_where_keys_are_required(
    live: str, backend: SqlBackend, tmp_path: Path
) -> None:
    pytest.importorskip("ddtrace", reason="ddtrace is a test dependency")
    from test_ddtrace_client import ddtrace_env, run_python

    _, key = backend.create_api_key("ddtrace", projects=["keyed"])
    script = tmp_path / "keyed.py"
    script.write_text(KEYED_DDTRACE_SCRIPT)
    env = {**ddtrace_env(live, tmp_path), "DD_API_KEY": key}
    run_python(script, env)
    [info] = backend.list_experiments(ExperimentFilter(name="keyed"))
    assert (info.project_name, info.run_count) == ("keyed", 2)
    experiment_id = info.id
    deadline = time.monotonic() + 30
    while backend.count_rows(experiment_id) < 2:  # spans came through the intake, keyed too
        assert time.monotonic() < deadline, "the spans never arrived"
        time.sleep(0.2)
    summary = backend.experiment_rows(experiment_id)
    assert all(row.evaluations[0].value is True for row in summary)
    [used] = backend.list_api_keys()
    assert used.last_used_at is not None


def test_assay_serve_require_auth_over_http(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/served.db"
    env = {**os.environ, "ASSAY_HOME": str(tmp_path)}
    created = subprocess.run(
        [sys.executable, "-m", "assay", "keys", "create", "ci", "--database-url", url],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    key = created.stdout.strip()
    port = free_port()
    command = [sys.executable, "-m", "assay", "serve", "--port", str(port), "--require-auth"]
    process = subprocess.Popen(
        [*command, "--database-url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    projects = f"http://127.0.0.1:{port}{V2}/projects"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                anonymous = httpx.get(projects)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "assay serve did not start"
                time.sleep(0.1)
        refusal(anonymous)
        keyed_answer = httpx.get(projects, headers={"DD-API-KEY": key})
        assert keyed_answer.status_code == 200 and keyed_answer.json() == {"data": []}
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    lines = output.strip().splitlines()
    assert lines[1] == (
        "assay: every request needs an API key (--require-auth); this store has 1 live key(s), "
        "see `assay keys list`"
    )
    assert any(f'"GET {V2}/projects HTTP/1.1" 401' in line for line in lines)
    assert any(f'"GET {V2}/projects HTTP/1.1" 200' in line for line in lines)
