"""The OpenAPI document: committed, served, fuzzed, and every kind of bad input it allows.

``docs/openapi.json`` is what the app serves at ``/openapi.json``. Schemathesis generates
requests for every operation of it, valid and invalid, against the app in-process on a
fresh copy of a seeded SQLite store: no answer is a server error, and every answer is one
the document describes (status, content type, body schema). The run is bounded and
derandomized, so it is the same run every time.

Then, operation by operation of the same document: malformed JSON, a wrong type, an
unknown id, a body over the limit and a cursor the server did not make each get a 4xx
JSON:API error that names the field, and leave every row of the store as it was.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from assay.server import create_app
from assay.server.dependencies import get_backend
from assay.server.jsonapi import ErrorDocument, encode_cursor
from assay.server.openapi import COMMAND, openapi_text
from assay.store.sql.backend import SqlBackend
from assay.store.sql.tables import metadata

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "docs" / "openapi.json"
V2 = "/api/v2/llm-obs/v1"
MEDIA_TYPE = "application/vnd.api+json"
MAX_EXAMPLES = 16
"""Generated requests per operation, valid and invalid: bounded, for a fast suite."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
"""Not ``negative_data_rejection``: FastAPI reads a scalar query parameter sent twice as its
last value, where the check wants a refusal."""


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every (method, path, operation) of the document, but routes Assay answers with 501."""
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if "not supported" not in operation.get("tags", [])
    ]


DOCUMENT: dict[str, Any] = json.loads(COMMITTED.read_text(encoding="utf-8"))
OPERATIONS = operations(DOCUMENT)


def label(method: str, path: str) -> str:
    return f"{method} {path.removeprefix(V2)}"


def path_names(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


def json_body(operation: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of the operation's body, or None when it takes no JSON body."""
    content = operation.get("requestBody", {}).get("content", {})
    found: dict[str, Any] | None = content.get("application/json", {}).get("schema")
    return found


def snapshot(backend: SqlBackend) -> dict[str, list[str]]:
    """Every row of every table: what a refused request must leave as it was."""
    with backend.engine.connect() as connection:
        return {
            table.name: sorted(repr(tuple(row)) for row in connection.execute(select(table)))
            for table in metadata.sorted_tables
        }


# The committed document ---------------------------------------------------------------------


def test_the_committed_document_is_the_one_the_app_serves(tmp_path: Path) -> None:
    expected = openapi_text()
    assert COMMITTED.read_text(encoding="utf-8") == expected, (
        f"docs/openapi.json is not the document the app serves; regenerate it with `{COMMAND}`"
    )
    backend = SqlBackend(f"sqlite:///{tmp_path}/served.db")
    try:
        with TestClient(create_app(backend=backend)) as client:
            served = client.get("/openapi.json")
    finally:
        backend.close()
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    assert openapi_text(served.json()) == expected


def test_the_document_describes_every_answer_in_the_json_api_shape() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's own 422 shape is never sent
    for method, path, operation in OPERATIONS:
        answers = operation["responses"]
        assert {"4XX", "5XX"} <= set(answers), f"{label(method, path)} documents no errors"
        for status, answer in answers.items():
            assert list(answer.get("content", {MEDIA_TYPE: None})) == [MEDIA_TYPE], (
                f"{label(method, path)} answers {status} as {list(answer['content'])}"
            )
        error = answers["4XX"]["content"][MEDIA_TYPE]["schema"]
        assert error == {"$ref": "#/components/schemas/ErrorDocument"}


# Seeded stores ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeededStore:
    """A SQLite file holding a project, a dataset of three records and a two-run experiment
    with its six rows and their scores; tests work on copies of it."""

    path: Path
    ids: dict[str, str]
    """The path parameters that name them: project_id, dataset_id, experiment_id."""

    def copy(self, directory: Path) -> SqlBackend:
        target = directory / "store.db"
        shutil.copyfile(self.path, target)
        return SqlBackend(f"sqlite:///{target}")


def document_body(kind: str, attributes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"data": {"type": kind, "attributes": attributes, **extra}}


def seed(client: TestClient) -> dict[str, str]:
    def post(path: str, body: Any, expect: int = 200) -> Any:
        answer = client.post(path, json=body)
        assert answer.status_code == expect, answer.text
        return answer.json()

    project_id = post(f"{V2}/projects", document_body("projects", {"name": "fuzz"}))["data"]["id"]
    dataset = document_body("datasets", {"name": "questions"})
    dataset_id = post(f"{V2}/{project_id}/datasets", dataset)["data"]["id"]
    records = [
        {"id": f"r{n}", "input": {"q": n}, "expected_output": str(n), "tags": ["lang:en"]}
        for n in range(3)
    ]
    changes = document_body("datasets", {"insert_records": records}, id=dataset_id)
    post(f"{V2}/{project_id}/datasets/{dataset_id}/batch_update", changes)
    attributes = {"name": "exp", "project_id": project_id, "dataset_id": dataset_id}
    experiment = document_body("experiments", {**attributes, "run_count": 2})
    experiment_id = post(f"{V2}/experiments", experiment)["data"]["id"]
    spans, metrics = [], []
    for run in (1, 2):
        for n in range(3):
            span_id = f"{run}{n}"
            tags = [f"experiment_id:{experiment_id}", f"dataset_record_id:r{n}"]
            spans.append(
                {
                    "span_id": span_id,
                    "trace_id": f"t{span_id}",
                    "parent_id": "undefined",
                    "name": "task",
                    "start_ns": 1_700_000_000_000_000_000,
                    "duration": 1_000_000,
                    "status": "ok",
                    "meta": {"span": {"kind": "experiment"}, "input": {"q": n}, "output": str(n)},
                    "tags": [*tags, f"run_iteration:{run}"],
                }
            )
            metrics.append(
                {
                    "span_id": span_id,
                    "trace_id": f"t{span_id}",
                    "timestamp_ms": 1_700_000_000_000,
                    "metric_type": "score",
                    "label": "accuracy",
                    "score_value": n / 2,
                }
            )
    post("/api/v2/llmobs", [{"event_type": "span", "spans": spans}], 202)
    events = document_body("experiments", {"metrics": metrics})
    post(f"{V2}/experiments/{experiment_id}/events", events, 202)
    return {"project_id": project_id, "dataset_id": dataset_id, "experiment_id": experiment_id}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> SeededStore:
    path = tmp_path_factory.mktemp("seeded") / "seeded.db"
    backend = SqlBackend(f"sqlite:///{path}")
    try:
        with TestClient(create_app(backend=backend)) as client:
            ids = seed(client)
    finally:
        backend.close()
    return SeededStore(path, ids)


@pytest.fixture
def store(seeded: SeededStore, tmp_path: Path) -> Iterator[SqlBackend]:
    """A fresh copy of the seeded store."""
    backend = seeded.copy(tmp_path)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def client(store: SqlBackend) -> Iterator[TestClient]:
    with TestClient(create_app(backend=store)) as test_client:
        yield test_client


# Schemathesis -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzzed_app() -> Iterator[FastAPI]:
    """One app for the whole run; each test points it at its own store. (Schemathesis keeps
    an app it has started for the rest of the process: one app, not one per test.)"""
    backend = SqlBackend("sqlite://")
    try:
        yield create_app(backend=backend, require_auth=False)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def fuzzed_schema(fuzzed_app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


@pytest.mark.parametrize(
    ("method", "path"),
    [(method, path) for method, path, _ in OPERATIONS],
    ids=[label(method, path) for method, path, _ in OPERATIONS],
)
def test_schemathesis_finds_no_server_error_or_undocumented_answer(
    fuzzed_app: FastAPI,
    fuzzed_schema: Any,
    seeded: SeededStore,
    tmp_path: Path,
    method: str,
    path: str,
) -> None:
    operation = fuzzed_schema.find_operation_by_path(method, path)
    assert operation is not None, (
        f"{method} {path} is in docs/openapi.json but not served; regenerate with `{COMMAND}`"
    )
    # Schemathesis cannot guess a UUID: half the cases name the seeded project, dataset
    # and experiment, so that requests get past the look-up and reach the store.
    known = {name: seeded.ids[name] for name in path_names(path) if name in seeded.ids}
    cases = st.one_of(
        [
            operation.as_strategy(generation_mode=mode, path_parameters=ids)
            for mode in schemathesis.GenerationMode
            for ids in ([None, known] if known else [None])
        ]
    )
    backend = seeded.copy(tmp_path)
    fuzzed_app.dependency_overrides[get_backend] = lambda: backend

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(case=cases)
    def request_is_answered_as_documented(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    try:
        request_is_answered_as_documented()
    finally:
        fuzzed_app.dependency_overrides.clear()
        backend.close()


# Bad input, operation by operation ----------------------------------------------------------

BODY_OPERATIONS = [(m, p, op) for m, p, op in OPERATIONS if json_body(op) is not None]
WRITE_OPERATIONS = [(m, p, op) for m, p, op in OPERATIONS if "requestBody" in op]
ID_OPERATIONS = [
    (m, p, name) for m, p, op in OPERATIONS if "requestBody" not in op for name in path_names(p)
]
CURSOR_OPERATIONS = [
    (m, p)
    for m, p, op in OPERATIONS
    if any(parameter["name"] == "page[cursor]" for parameter in op.get("parameters", []))
]


def refusal(answer: Any, status: int) -> dict[str, Any]:
    """The first error of a refusal, checked to be the one documented error shape."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == MEDIA_TYPE
    ErrorDocument.model_validate(answer.json())
    error: dict[str, Any] = answer.json()["errors"][0]
    assert error["status"] == str(status)
    return error


def wrong_type(operation: dict[str, Any]) -> tuple[Any, str]:
    """A body of the wrong type for the operation, and the pointer its error must name."""
    schema = json_body(operation)
    assert schema is not None
    if schema.get("type") == "array":
        return [5], "/0"
    reference = schema.get("$ref", "")
    component = DOCUMENT["components"]["schemas"].get(reference.rpartition("/")[2], {})
    if "data" in component.get("properties", {}):
        return {"data": 5}, "/data"
    return [], ""  # a free-form object: only its type can be wrong


def content_type(operation: dict[str, Any]) -> str:
    media_type = next(iter(operation["requestBody"]["content"]))
    return f"{media_type}; boundary=assay" if media_type.startswith("multipart/") else media_type


def ids_of(operations: list[tuple[Any, ...]]) -> list[str]:
    return [label(method, path) for method, path, *_ in operations]


@pytest.mark.parametrize(
    ("method", "path"), [(m, p) for m, p, _ in BODY_OPERATIONS], ids=ids_of(BODY_OPERATIONS)
)
def test_malformed_json_is_a_400_that_writes_nothing(
    client: TestClient, store: SqlBackend, seeded: SeededStore, method: str, path: str
) -> None:
    before = snapshot(store)
    answer = client.request(
        method,
        path.format(**seeded.ids),
        content=b'{"data": {"attributes": ',
        headers={"content-type": "application/json"},
    )
    error = refusal(answer, 400)
    assert error["title"] == "Malformed JSON"
    assert error["source"] == {"pointer": ""}
    assert snapshot(store) == before


@pytest.mark.parametrize(
    ("method", "path", "operation"), BODY_OPERATIONS, ids=ids_of(BODY_OPERATIONS)
)
def test_a_wrong_type_is_a_422_naming_the_field_that_writes_nothing(
    client: TestClient,
    store: SqlBackend,
    seeded: SeededStore,
    method: str,
    path: str,
    operation: Any,
) -> None:
    body, where = wrong_type(operation)
    before = snapshot(store)
    answer = client.request(method, path.format(**seeded.ids), json=body)
    assert refusal(answer, 422)["source"] == {"pointer": where}
    assert snapshot(store) == before


@pytest.mark.parametrize(
    ("method", "path", "name"),
    ID_OPERATIONS,
    ids=[f"{label(method, path)}-{name}" for method, path, name in ID_OPERATIONS],
)
def test_an_unknown_id_is_a_404_naming_the_parameter(
    client: TestClient, store: SqlBackend, seeded: SeededStore, method: str, path: str, name: str
) -> None:
    before = snapshot(store)
    answer = client.request(method, path.format(**{**seeded.ids, name: "no-such-id"}))
    error = refusal(answer, 404)
    assert error["source"] == {"parameter": name}
    assert "no-such-id" in error["detail"]
    assert snapshot(store) == before


@pytest.mark.parametrize("sent_as", ["content-length", "chunked"])
@pytest.mark.parametrize(
    ("method", "path", "operation"), WRITE_OPERATIONS, ids=ids_of(WRITE_OPERATIONS)
)
def test_a_body_over_the_limit_is_a_413_that_writes_nothing(
    store: SqlBackend, seeded: SeededStore, method: str, path: str, operation: Any, sent_as: str
) -> None:
    limit = 100
    oversized = json.dumps({"data": {"attributes": {"name": "x" * limit}}}).encode()
    content: Any = oversized
    if sent_as == "chunked":  # no Content-Length: the server counts what it reads
        content = iter([oversized[:50], oversized[50:]])
    before = snapshot(store)
    with TestClient(create_app(backend=store, max_body_bytes=limit)) as small:
        answer = small.request(
            method,
            path.format(**seeded.ids),
            content=content,
            headers={"content-type": content_type(operation)},
        )
    error = refusal(answer, 413)
    assert error["source"] == {"pointer": ""}
    assert f"larger than {limit} bytes" in error["detail"]
    assert snapshot(store) == before


# Not a cursor at all, one with a negative offset, one with no state.
@pytest.mark.parametrize(
    "cursor", ["not-a-cursor", encode_cursor({"offset": -1}), encode_cursor({})]
)
@pytest.mark.parametrize(("method", "path"), CURSOR_OPERATIONS, ids=ids_of(CURSOR_OPERATIONS))
def test_a_cursor_the_server_did_not_make_is_a_400_naming_it(
    client: TestClient, seeded: SeededStore, method: str, path: str, cursor: str
) -> None:
    answer = client.request(method, path.format(**seeded.ids), params={"page[cursor]": cursor})
    error = refusal(answer, 400)
    assert error["source"] == {"parameter": "page[cursor]"}
    assert "meta.after" in error["detail"]
