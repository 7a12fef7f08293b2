"""Every endpoint of the server, in-process, on SQLite and PostgreSQL: shapes and errors.

The shapes are those ddtrace 4.16 sends and reads (section 2 of the protocol notes); every
error is one JSON:API error naming the field, and no request makes a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from assay.server import create_app
from assay.server.dependencies import get_backend
from assay.store.sql.backend import SqlBackend

V2 = "/api/v2/llm-obs/v1"
UNSTABLE = "/api/unstable/llm-obs/v1"
PREFIXES = [V2, UNSTABLE, f"/evp_proxy/v2{V2}", f"/evp_proxy/v2{UNSTABLE}"]
MEDIA_TYPE = "application/vnd.api+json"


@pytest.fixture
def client(backend: SqlBackend) -> Iterator[TestClient]:
    with TestClient(create_app(backend=backend)) as test_client:
        yield test_client


def call(
    client: TestClient,
    method: str,
    path: str,
    body: Any = None,
    expect: int = 200,
    **options: Any,
) -> Any:
    response = client.request(method, path, json=body, **options)
    assert response.status_code == expect, response.text
    assert response.headers["content-type"] == MEDIA_TYPE
    return response.json()


def error_of(answer: Any) -> dict[str, Any]:
    """The one error of an error document, checked to have the one shape."""
    [error] = answer["errors"]
    assert set(error) == {"status", "title", "detail", "source"}
    assert isinstance(error["detail"], str) and error["detail"]
    assert set(error["source"]) in ({"pointer"}, {"parameter"})
    return error


def body(attributes: dict[str, Any], kind: str = "x") -> dict[str, Any]:
    return {"data": {"type": kind, "attributes": attributes}}


def make_project(client: TestClient, name: str = "proj") -> str:
    return str(call(client, "POST", f"{UNSTABLE}/projects", body({"name": name}))["data"]["id"])


def make_dataset(client: TestClient, project_id: str, name: str = "ds") -> str:
    answer = call(client, "POST", f"{UNSTABLE}/{project_id}/datasets", body({"name": name}))
    return str(answer["data"]["id"])


RECORDS = [
    {"id": f"r{n}", "input": {"q": n}, "expected_output": f"a{n}", "tags": [f"lang:{lang}"]}
    for n, lang in enumerate(["en", "fr", "en", "de", "en"])
]


def make_records(client: TestClient, project_id: str, dataset_id: str) -> int:
    answer = call(
        client,
        "POST",
        f"{V2}/{project_id}/datasets/{dataset_id}/batch_update",
        {
            "data": {
                "type": "datasets",
                "id": dataset_id,
                "attributes": {
                    "insert_records": RECORDS,
                    "update_records": [],
                    "delete_records": [],
                    "deduplicate": True,
                    "create_new_version": True,
                },
            }
        },
    )
    return int(answer["data"][0]["attributes"]["version"])


def make_experiment(
    client: TestClient, project_id: str, dataset_id: str, **attributes: Any
) -> dict[str, Any]:
    wanted = {"name": "exp", "project_id": project_id, "dataset_id": dataset_id, **attributes}
    answer = call(client, "POST", f"{UNSTABLE}/experiments", body(wanted, "experiments"))
    data: dict[str, Any] = answer["data"]
    return data


@pytest.fixture
def world(client: TestClient) -> dict[str, str]:
    """A project with a dataset of five records and a 3-run experiment on it."""
    project_id = make_project(client)
    dataset_id = make_dataset(client, project_id)
    make_records(client, project_id, dataset_id)
    experiment = make_experiment(client, project_id, dataset_id, run_count=3)
    return {"project": project_id, "dataset": dataset_id, "experiment": experiment["id"]}


# Projects ------------------------------------------------------------------------------


def test_projects_are_created_once_and_listed(client: TestClient) -> None:
    first = call(client, "POST", f"{UNSTABLE}/projects", body({"name": "a", "description": ""}))
    assert first["data"]["type"] == "projects"
    assert first["data"]["attributes"] == {"name": "a", "description": ""}
    again = call(client, "POST", f"{V2}/projects", body({"name": "a"}))
    assert again["data"]["id"] == first["data"]["id"]
    make_project(client, "b")
    make_project(client, "c")
    names = [p["attributes"]["name"] for p in call(client, "GET", f"{V2}/projects")["data"]]
    assert names == ["a", "b", "c"]
    found = call(client, "GET", f"{V2}/projects?filter[name]=b")["data"]
    assert [p["attributes"]["name"] for p in found] == ["b"]
    by_id = call(client, "GET", f"{V2}/projects?filter[id]={first['data']['id']}")["data"]
    assert [p["id"] for p in by_id] == [first["data"]["id"]]
    one = call(client, "GET", f"{V2}/projects/{first['data']['id']}")
    assert one["data"]["attributes"]["name"] == "a"
    page = call(client, "GET", f"{V2}/projects?page[limit]=2")
    assert len(page["data"]) == 2
    rest = call(client, "GET", f"{V2}/projects?page[limit]=2&page[cursor]={page['meta']['after']}")
    assert [p["attributes"]["name"] for p in rest["data"]] == ["c"]
    assert "meta" not in rest
    error = error_of(call(client, "GET", f"{V2}/projects/nope", expect=404))
    assert error["source"] == {"parameter": "project_id"}


@pytest.mark.parametrize(
    ("sent", "pointer"),
    [
        ({"data": {"attributes": {"name": 5}}}, "/data/attributes/name"),
        ({"data": {"attributes": {"name": ""}}}, "/data/attributes/name"),
        ({"data": {"attributes": {"name": "x" * 201}}}, "/data/attributes/name"),
        ({"data": {"attributes": {"name": "a\u0000b"}}}, "/data/attributes/name"),
        ({"data": {"attributes": {}}}, "/data/attributes/name"),
        ({"data": {}}, "/data/attributes"),
        ({"data": []}, "/data"),
        ([], ""),
        ({}, "/data"),
    ],
)
def test_a_malformed_project_names_the_field(client: TestClient, sent: Any, pointer: str) -> None:
    error = error_of(call(client, "POST", f"{V2}/projects", sent, expect=422))
    assert error["status"] == "422"
    assert error["source"] == {"pointer": pointer}


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/projects?filter[name]=a%00b", "filter[name]"),
        ("/experiments?filter[experiment]=%00", "filter[experiment]"),
        ("/projects/a%00b", "path"),
    ],
)
def test_a_nul_in_a_parameter_is_a_400(client: TestClient, path: str, parameter: str) -> None:
    # PostgreSQL cannot even compare such a text: it is refused before any query.
    answer = call(client, "GET", f"{V2}{path}", expect=400)
    assert error_of(answer)["source"] == {"parameter": parameter}


def test_malformed_json_is_a_400(client: TestClient) -> None:
    for content in (b"{not json", b"", b'{"data": '):
        response = client.post(
            f"{V2}/projects", content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code in (400, 422), response.text
        assert response.headers["content-type"] == MEDIA_TYPE
        error = error_of(response.json())
        assert error["source"] == {"pointer": ""} or error["source"]["pointer"] == ""


# Datasets ------------------------------------------------------------------------------


def test_datasets_are_created_once_found_by_name_and_listed(client: TestClient) -> None:
    project_id = make_project(client)
    created = call(
        client,
        "POST",
        f"{UNSTABLE}/{project_id}/datasets",
        body({"name": "capitals", "description": "cities"}, "datasets"),
    )
    attributes = created["data"]["attributes"]
    assert created["data"]["type"] == "datasets"
    assert attributes["current_version"] == 0
    assert (attributes["name"], attributes["description"]) == ("capitals", "cities")
    assert attributes["project_id"] == project_id
    again = call(client, "POST", f"{V2}/{project_id}/datasets", body({"name": "capitals"}))
    assert again["data"]["id"] == created["data"]["id"]
    make_dataset(client, project_id, "other")
    found = call(client, "GET", f"{V2}/{project_id}/datasets?filter[name]=capitals")["data"]
    assert [d["id"] for d in found] == [created["data"]["id"]]
    assert call(client, "GET", f"{V2}/{project_id}/datasets?filter[name]=none")["data"] == []
    listed = call(client, "GET", f"{V2}/{project_id}/datasets")["data"]
    assert [d["attributes"]["name"] for d in listed] == ["capitals", "other"]
    one = call(client, "GET", f"{V2}/{project_id}/datasets/{created['data']['id']}")
    assert one["data"]["attributes"]["name"] == "capitals"


def test_datasets_of_an_unknown_project_are_404(client: TestClient) -> None:
    answer = call(client, "POST", f"{V2}/nope/datasets", body({"name": "d"}), expect=404)
    assert error_of(answer)["source"] == {"parameter": "project_id"}
    answer = call(client, "GET", f"{V2}/nope/datasets", expect=404)
    assert error_of(answer)["source"] == {"parameter": "project_id"}
    project_id = make_project(client)
    other = make_project(client, "other")
    dataset_id = make_dataset(client, project_id)
    answer = call(client, "GET", f"{V2}/{other}/datasets/{dataset_id}/records", expect=404)
    assert error_of(answer)["source"] == {"parameter": "dataset_id"}
    answer = call(client, "GET", f"{V2}/{project_id}/datasets/nope/records", expect=404)
    assert error_of(answer)["source"] == {"parameter": "dataset_id"}


def test_records_by_version_tag_and_page(client: TestClient) -> None:
    project_id = make_project(client)
    dataset_id = make_dataset(client, project_id)
    assert make_records(client, project_id, dataset_id) == 1
    records = f"{V2}/{project_id}/datasets/{dataset_id}/records"
    first = call(client, "GET", f"{records}?page[limit]=2")
    assert [r["id"] for r in first["data"]] == ["r0", "r1"]
    record = first["data"][0]
    assert record["type"] == "dataset_records"
    assert record["attributes"]["input"] == {"q": 0}
    assert record["attributes"]["expected_output"] == "a0"
    assert record["attributes"]["tags"] == ["lang:en"]
    assert record["attributes"]["metadata"] == {}
    # A new version meanwhile does not change the pages of a listing already started.
    update = {
        "update_records": [{"id": "r1", "input": {"q": "changed"}, "expected_output": ""}],
        "delete_records": ["r4"],
    }
    changed = call(
        client,
        "POST",
        f"{V2}/{project_id}/datasets/{dataset_id}/batch_update",
        body(update, "datasets"),
    )
    assert [(r["id"], r["attributes"]["version"]) for r in changed["data"]] == [("r1", 2)]
    second = call(client, "GET", f"{records}?page[limit]=2&page[cursor]={first['meta']['after']}")
    third = call(client, "GET", f"{records}?page[limit]=2&page[cursor]={second['meta']['after']}")
    assert [r["id"] for r in second["data"] + third["data"]] == ["r2", "r3", "r4"]
    assert "meta" not in third
    current = call(client, "GET", records)["data"]
    assert [r["id"] for r in current] == ["r0", "r1", "r2", "r3"]
    assert current[1]["attributes"]["input"] == {"q": "changed"}
    assert current[1]["attributes"]["expected_output"] is None  # "" erases it
    old = call(client, "GET", f"{records}?filter[version]=1")["data"]
    assert old[1]["attributes"]["input"] == {"q": 1}
    tagged = call(client, "GET", f"{records}?filter[tags]=lang:en&filter[version]=1")["data"]
    assert [r["id"] for r in tagged] == ["r0", "r2", "r4"]
    versions = call(client, "GET", f"{V2}/{project_id}/datasets/{dataset_id}/versions")["data"]
    assert [(v["attributes"]["version"], v["attributes"]["records"]) for v in versions] == [
        (0, 0),
        (1, 5),
        (2, 4),
    ]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("filter[version]=9", "filter[version]"),
        ("filter[version]=-1", "filter[version]"),
        ("filter[version]=one", "filter[version]"),
        ("filter[tags]=nocolon", "filter[tags]"),
        ("page[limit]=0", "page[limit]"),
        ("page[limit]=many", "page[limit]"),
        ("page[cursor]=garbage", "page[cursor]"),
        ("page[cursor]=eyJvZmZzZXQiOi0xLCJ2ZXJzaW9uIjoxfQ", "page[cursor]"),
        ("page[cursor]=eyJvZmZzZXQiOjF9", "page[cursor]"),
    ],
)
def test_bad_record_parameters_are_400s_naming_the_parameter(
    client: TestClient, query: str, parameter: str
) -> None:
    project_id = make_project(client)
    dataset_id = make_dataset(client, project_id)
    make_records(client, project_id, dataset_id)
    answer = call(
        client, "GET", f"{V2}/{project_id}/datasets/{dataset_id}/records?{query}", expect=400
    )
    assert error_of(answer)["source"] == {"parameter": parameter}


def test_record_changes_through_the_public_record_routes(client: TestClient) -> None:
    project_id = make_project(client)
    dataset_id = make_dataset(client, project_id)
    base = f"{V2}/{project_id}/datasets/{dataset_id}/records"
    appended = call(
        client,
        "POST",
        base,
        body({"records": [{"input": "x", "expected_output": "X"}, {"id": "k", "input": "y"}]}),
    )
    ids = [record["id"] for record in appended["data"]]
    assert ids[1] == "k" and len(ids[0]) == 32
    call(client, "PATCH", base, body({"records": [{"id": "k", "metadata": {"m": 1}}]}))
    call(client, "POST", f"{base}/delete", body({"record_ids": [ids[0]]}))
    [record] = call(client, "GET", base)["data"]
    assert (record["id"], record["attributes"]["metadata"]) == ("k", {"m": 1})
    answer = call(client, "POST", f"{base}/delete", body({"record_ids": ["missing"]}), expect=422)
    assert "missing" in error_of(answer)["detail"]
    answer = call(
        client,
        "PATCH",
        base,
        body({"records": [{"id": "k", "tag_operations": {"add": ["bad"]}}]}),
        expect=422,
    )
    assert "key:value" in error_of(answer)["detail"]


def test_batch_update_tag_operations_and_refusals(client: TestClient) -> None:
    project_id = make_project(client)
    dataset_id = make_dataset(client, project_id)
    make_records(client, project_id, dataset_id)
    path = f"{V2}/{project_id}/datasets/{dataset_id}/batch_update"
    operations = {"id": "r0", "tag_operations": {"add": ["team:a"], "remove": ["lang:en"]}}
    answer = call(client, "POST", path, body({"update_records": [operations]}))
    # Tags only: no new version (ddtrace reads the version from data[0]).
    assert answer["data"][0]["attributes"]["version"] == 1
    [record] = call(
        client, "GET", f"{V2}/{project_id}/datasets/{dataset_id}/records?page[limit]=1"
    )["data"]
    assert record["attributes"]["tags"] == ["team:a"]
    duplicate = call(client, "POST", path, body({"insert_records": [RECORDS[0]]}), expect=422)
    assert "r0" in error_of(duplicate)["detail"]
    wrong = call(
        client, "POST", path, body({"insert_records": [{"id": 5, "input": 1}]}), expect=422
    )
    assert error_of(wrong)["source"] == {"pointer": "/data/attributes/insert_records/0/id"}
    wrong = call(client, "POST", path, body({"deduplicate": "yes"}), expect=422)
    assert error_of(wrong)["source"] == {"pointer": "/data/attributes/deduplicate"}


def csv_upload(
    client: TestClient, dataset_id: str, text: str, *, expect: int = 200, deduplicate: str = "True"
) -> Any:
    response = client.post(
        f"{UNSTABLE}/datasets/{dataset_id}/records/upload?deduplicate={deduplicate}",
        files={"file": ("tmpabc.csv", text.encode(), "text/csv")},
    )
    assert response.status_code == expect, response.text
    assert response.headers["content-type"] == MEDIA_TYPE
    return response.json()


def test_csv_upload_inserts_new_records_and_updates_known_ones(client: TestClient) -> None:
    project_id = make_project(client)
    dataset_id = make_dataset(client, project_id)
    text = (
        "input,expected_output,metadata,id\r\n"
        '"{""q"": 1}","""one""","{""level"": 1}",a\r\n'
        '"{""q"": 2}","""two""","{}",b\r\n'
    )
    answer = csv_upload(client, dataset_id, text)
    assert answer["data"]["attributes"]["current_version"] == 1
    assert answer["data"]["attributes"]["inserted"] == 2
    again = text.replace('"""two"""', '"""TWO"""') + '"""plain""",,,c\r\n'
    answer = csv_upload(client, dataset_id, again, deduplicate="False")
    assert (answer["data"]["attributes"]["inserted"], answer["data"]["attributes"]["updated"]) == (
        1,
        2,
    )
    records = call(client, "GET", f"{V2}/{project_id}/datasets/{dataset_id}/records")["data"]
    assert [(r["id"], r["attributes"]["expected_output"]) for r in records] == [
        ("a", "one"),
        ("b", "TWO"),
        ("c", None),
    ]
    assert records[0]["attributes"]["metadata"] == {"level": 1}


def test_bad_csv_uploads_are_refused(client: TestClient) -> None:
    project_id = make_project(client)
    dataset_id = make_dataset(client, project_id)
    answer = csv_upload(client, dataset_id, "question,answer\r\nx,y\r\n", expect=422)
    assert error_of(answer)["source"] == {"pointer": "/file"}
    answer = csv_upload(client, dataset_id, 'input,metadata\r\n1,"[1]"\r\n', expect=422)
    assert "metadata" in error_of(answer)["detail"]
    response = client.post(f"{UNSTABLE}/datasets/{dataset_id}/records/upload")
    assert response.status_code == 422
    assert error_of(response.json())["source"] == {"pointer": "/file"}
    answer = csv_upload(client, "nope", "input\r\n1\r\n", expect=404)
    assert error_of(answer)["source"] == {"parameter": "dataset_id"}


def test_datasets_are_soft_deleted(client: TestClient) -> None:
    project_id = make_project(client)
    first = make_dataset(client, project_id, "first")
    second = make_dataset(client, project_id, "second")
    wanted = {"type": "soft", "dataset_ids": [first, "nope"]}
    answer = call(client, "POST", f"{UNSTABLE}/datasets/delete", body(wanted), expect=404)
    assert error_of(answer)["source"] == {"pointer": "/data/attributes/dataset_ids/1"}
    call(client, "GET", f"{V2}/{project_id}/datasets/{first}")  # nothing was deleted
    call(
        client,
        "POST",
        f"{UNSTABLE}/datasets/delete",
        body({"type": "soft", "dataset_ids": [first]}),
    )
    call(client, "GET", f"{V2}/{project_id}/datasets/{first}", expect=404)
    call(
        client, "POST", f"{V2}/{project_id}/datasets/delete", body({"dataset_ids": [second, first]})
    )
    assert call(client, "GET", f"{V2}/{project_id}/datasets")["data"] == []
    # The name is free again.
    assert make_dataset(client, project_id, "first") != first


# Experiments ---------------------------------------------------------------------------


def test_experiments_are_created_with_run_count(client: TestClient, world: dict[str, str]) -> None:
    seed_body = {
        "data": {
            "type": "experiments",
            "attributes": {
                "project_id": world["project"],
                "dataset_id": world["dataset"],
                "name": "example-experiment",
                "description": "",
                "run_count": 5,
                "metadata": {"team": ""},
                "config": {"model": "gpt-4o-mini", "temperature": 0.3, "personality": "helpful"},
            },
        }
    }
    created = call(client, "POST", f"{V2}/experiments", seed_body)["data"]
    attributes = created["attributes"]
    assert created["type"] == "experiments"
    assert attributes["run_count"] == 5
    assert [run["run_iteration"] for run in attributes["runs"]] == [1, 2, 3, 4, 5]
    assert attributes["name"] == attributes["experiment"] == "example-experiment"
    assert attributes["dataset_version"] == 1
    assert attributes["status"] == "created"
    assert attributes["metadata"] == {"tags": ["team:"]}
    assert attributes["config"]["temperature"] == 0.3
    default = make_experiment(client, world["project"], world["dataset"], run_count=None)
    assert default["attributes"]["run_count"] == 1
    tagged = make_experiment(
        client, world["project"], world["dataset"], metadata={"tags": ["git.commit.sha:abc"]}
    )
    assert tagged["attributes"]["metadata"]["tags"] == ["git.commit.sha:abc"]


@pytest.mark.parametrize("run_count", [0, -1, "5", 5.5, True, 10_001, [5]])
def test_a_bad_run_count_is_a_422(
    client: TestClient, world: dict[str, str], run_count: Any
) -> None:
    wanted = {
        "name": "bad",
        "project_id": world["project"],
        "dataset_id": world["dataset"],
        "run_count": run_count,
    }
    answer = call(client, "POST", f"{UNSTABLE}/experiments", body(wanted), expect=422)
    assert error_of(answer)["source"] == {"pointer": "/data/attributes/run_count"}


@pytest.mark.parametrize(
    ("change", "status", "pointer"),
    [
        ({"dataset_id": "nope"}, 404, "/data/attributes/dataset_id"),
        ({"project_id": "nope"}, 404, "/data/attributes/project_id"),
        ({"parent_experiment_id": "nope"}, 404, "/data/attributes/parent_experiment_id"),
        ({"dataset_version": 7}, 422, "/data/attributes/dataset_version"),
        ({"name": None}, 422, "/data/attributes/name"),
        ({"config": [1]}, 422, "/data/attributes/config"),
        ({"metadata": {"tags": "a:b"}}, 422, "/data/attributes/metadata/tags"),
        ({"ensure_unique": "yes"}, 422, "/data/attributes/ensure_unique"),
    ],
)
def test_bad_experiments_name_the_field(
    client: TestClient, world: dict[str, str], change: dict[str, Any], status: int, pointer: str
) -> None:
    wanted = {"name": "x", "project_id": world["project"], "dataset_id": world["dataset"]}
    answer = call(client, "POST", f"{V2}/experiments", body({**wanted, **change}), expect=status)
    assert error_of(answer)["source"] == {"pointer": pointer}


def test_experiment_status_is_patched(client: TestClient, world: dict[str, str]) -> None:
    path = f"{UNSTABLE}/experiments/{world['experiment']}"
    running = call(client, "PATCH", path, body({"status": "running"}, "experiments"))
    assert running["data"]["attributes"]["status"] == "running"
    failed = call(client, "PATCH", path, body({"status": "failed", "error": "ValueError: x"}))
    assert (failed["data"]["attributes"]["status"], failed["data"]["attributes"]["error"]) == (
        "failed",
        "ValueError: x",
    )
    unchanged = call(client, "PATCH", path, body({}))
    assert unchanged["data"]["attributes"]["status"] == "failed"
    answer = call(client, "PATCH", path, body({"status": "done"}), expect=422)
    assert error_of(answer)["source"] == {"pointer": "/data/attributes/status"}
    answer = call(client, "PATCH", f"{UNSTABLE}/experiments/nope", body({}), expect=404)
    assert error_of(answer)["source"] == {"parameter": "experiment_id"}


def test_experiments_are_listed_filtered_and_paged(
    client: TestClient, world: dict[str, str]
) -> None:
    first = world["experiment"]
    tagged = make_experiment(
        client,
        world["project"],
        world["dataset"],
        name="ci",
        metadata={"tags": ["git.commit.sha:abc"]},
        parent_experiment_id=first,
    )["id"]
    other_project = make_project(client, "other")
    other_dataset = make_dataset(client, other_project)
    elsewhere = make_experiment(client, other_project, other_dataset, name="ci")["id"]

    def ids(query: str = "") -> list[str]:
        answer = call(client, "GET", f"{V2}/experiments?{query}")
        return [item["id"] for item in answer["data"]]

    assert ids() == [elsewhere, tagged, first]
    assert ids(f"filter[id]={first}") == [first]
    assert ids("filter[experiment]=ci") == [elsewhere, tagged]
    assert ids(f"filter[project_id]={world['project']}") == [tagged, first]
    assert ids(f"filter[dataset_id]={other_dataset}") == [elsewhere]
    assert ids(f"filter[parent_experiment_id]={first}") == [tagged]
    assert ids('filter[metadata]={"tags":["git.commit.sha:abc"]}') == [tagged]
    assert ids("filter[is_deleted]=true") == []
    [item] = call(client, "GET", f"{V2}/experiments?filter[id]={first}")["data"]
    assert item["attributes"]["aggregate_data"] == {}
    assert item["attributes"]["metadata"] == {"tags": []}
    page = call(client, "GET", f"{V2}/experiments?page[limit]=2")
    assert [item["id"] for item in page["data"]] == [elsewhere, tagged]
    rest = call(
        client, "GET", f"{V2}/experiments?page[limit]=2&page[cursor]={page['meta']['after']}"
    )
    assert [item["id"] for item in rest["data"]] == [first]
    one = call(client, "GET", f"{V2}/experiments/{tagged}")["data"]
    assert one["attributes"]["parent_experiment_id"] == first
    assert one["attributes"]["aggregate_data"] == {}


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("filter[metadata]=not-json", "filter[metadata]"),
        ("filter[metadata]=[1]", "filter[metadata]"),
        ('filter[metadata]={"tags":"x"}', "filter[metadata]"),
        ("page[limit]=5001", "page[limit]"),
        ("page[cursor]=eyJvZmZzZXQiOjB9", "page[cursor]"),
        ("page[cursor]=eyJjcmVhdGVkX2F0IjoieCIsImlkIjoieSJ9", "page[cursor]"),
        ("filter[is_deleted]=maybe", "filter[is_deleted]"),
    ],
)
def test_bad_experiment_list_parameters_are_400s(
    client: TestClient, query: str, parameter: str
) -> None:
    answer = call(client, "GET", f"{V2}/experiments?{query}", expect=400)
    assert error_of(answer)["source"] == {"parameter": parameter}


# Events --------------------------------------------------------------------------------


def span(experiment_id: str, record_id: str, run: int, span_id: str) -> dict[str, Any]:
    return {
        "span_id": span_id,
        "trace_id": "f" * 32,
        "parent_id": "undefined",
        "name": "task",
        "start_ns": 1_000 + run,
        "duration": 2_000,
        "status": "ok",
        "meta": {
            "span.kind": "experiment",
            "input": {"q": record_id},
            "output": "answer",
            "expected_output": "answer",
            "metadata": {},
        },
        "metrics": {},
        "tags": [
            f"experiment_id:{experiment_id}",
            f"dataset_record_id:{record_id}",
            f"run_iteration:{run}",
        ],
    }


def metrics_body(metrics: list[dict[str, Any]], tags: list[str]) -> dict[str, Any]:
    return {
        "data": {
            "type": "experiments",
            "attributes": {"scope": "experiments", "metrics": metrics, "tags": tags},
        }
    }


def score(span_id: str, value: Any, label: str = "acc") -> dict[str, Any]:
    return {
        "metric_source": "custom",
        "span_id": span_id,
        "trace_id": "f" * 32,
        "timestamp_ms": 1,
        "metric_type": "score",
        "label": label,
        "score_value": value,
        "error": None,
        "tags": ["judge:yes"],
        "status": "OK",
        "reasoning": "why",
    }


def test_events_are_posted_and_read_back(client: TestClient, world: dict[str, str]) -> None:
    experiment_id = world["experiment"]
    events = f"{UNSTABLE}/experiments/{experiment_id}/events"
    tags = [f"experiment_id:{experiment_id}", "run_iteration:2"]
    answer = call(client, "POST", events, metrics_body([score("5", 0.5)], tags), expect=202)
    assert answer["data"]["type"] == "experiment_events"
    assert answer["data"]["attributes"]["pending"] == 1
    call(client, "POST", "/api/v2/llmobs", [{"spans": [span(experiment_id, "r2", 2, "5")]}], 202)
    summary = {**score("", 3), "metric_source": "summary", "label": "count"}
    summary.pop("status")
    call(client, "POST", events, metrics_body([summary], tags), expect=202)

    read = call(client, "GET", f"{events}?include[eval_metrics]=true")["data"]
    assert (read["id"], read["type"]) == (experiment_id, "experiment_events")
    [row] = read["attributes"]["spans"]
    assert row["span_id"] == "5"
    assert "dataset_record_id:r2" in row["tags"]
    assert row["meta"]["input"] == {"q": "r2"}
    assert row["meta"]["error"] == {}
    [evaluation] = row["eval_metrics"]
    assert evaluation["label"] == "acc"
    assert (evaluation["metric_type"], evaluation["score_value"]) == ("score", 0.5)
    assert (evaluation["status"], evaluation["reasoning"]) == ("OK", "why")
    assert evaluation["tags"] == ["judge:yes"]
    [count] = read["attributes"]["summary_metrics"]
    assert (count["label"], count["score_value"], count["run_iteration"]) == ("count", 3, 2)
    plain = call(client, "GET", events)["data"]["attributes"]["spans"][0]
    assert "eval_metrics" not in plain
    assert call(client, "GET", f"{events}?filter[run_iteration]=1")["data"]["attributes"] == {
        "spans": [],
        "summary_metrics": [],
    }
    by_name = call(
        client,
        "GET",
        f"{UNSTABLE}/experiments/events?filter[project_name]=proj"
        "&filter[experiment_name]=exp&include[eval_metrics]=true",
    )["data"]
    assert by_name["id"] == experiment_id


@pytest.mark.parametrize(
    ("metric", "pointer"),
    [
        ({"score_value": "high"}, "/data/attributes/metrics/0/score_value"),
        ({"score_value": True}, "/data/attributes/metrics/0/score_value"),
        ({"metric_type": "number"}, "/data/attributes/metrics/0/metric_type"),
        ({"label": None}, "/data/attributes/metrics/0/label"),
        ({"timestamp_ms": -1}, "/data/attributes/metrics/0/timestamp_ms"),
        ({"timestamp_ms": 2**64}, "/data/attributes/metrics/0/timestamp_ms"),
        ({"span_id": ""}, "/data/attributes/metrics/0/span_id"),
        ({"span_id": "1" * 33}, "/data/attributes/metrics/0/span_id"),
        ({"tags": [1]}, "/data/attributes/metrics/0/tags/0"),
        ({"error": "boom"}, "/data/attributes/metrics/0/error"),
        ({"assessment": "x" * 17}, "/data/attributes/metrics/0/assessment"),
    ],
)
def test_bad_metrics_name_the_field_and_write_nothing(
    client: TestClient,
    backend: SqlBackend,
    world: dict[str, str],
    metric: dict[str, Any],
    pointer: str,
) -> None:
    experiment_id = world["experiment"]
    bad = {**score("9", 1.0), **metric}
    answer = call(
        client,
        "POST",
        f"{V2}/experiments/{experiment_id}/events",
        metrics_body([bad], ["run_iteration:1"]),
        expect=422,
    )
    assert error_of(answer)["source"] == {"pointer": pointer}
    call(client, "POST", "/api/v2/llmobs", [{"spans": [span(experiment_id, "r0", 1, "9")]}], 202)
    assert backend.experiment_rows(experiment_id)[0].evaluations == []


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"span_id": 5}, "/0/spans/0/span_id"),
        ({"start_ns": "now"}, "/0/spans/0/start_ns"),
        ({"duration": -5}, "/0/spans/0/duration"),
        ({"tags": ["run_iteration:1"]}, "/0/spans/0/tags"),
        ({"meta": {"metadata": [1]}}, "/0/spans/0/meta/metadata"),
        ({"meta": {"error": {"message": 5}}}, "/0/spans/0/meta/error/message"),
    ],
)
def test_bad_spans_name_the_field(
    client: TestClient, world: dict[str, str], change: dict[str, Any], pointer: str
) -> None:
    experiment_id = world["experiment"]
    bad = span(experiment_id, "r0", 1, "77")
    if change.get("tags"):
        change = {"tags": [f"experiment_id:{experiment_id}", *change["tags"]]}
    bad.update(change)
    answer = call(client, "POST", "/api/v2/llmobs", [{"spans": [bad]}], expect=422)
    assert error_of(answer)["source"] == {"pointer": pointer}


def test_events_of_unknown_experiments(client: TestClient, world: dict[str, str]) -> None:
    answer = call(client, "POST", f"{V2}/experiments/nope/events", metrics_body([], []), expect=404)
    assert error_of(answer)["source"] == {"parameter": "experiment_id"}
    answer = call(client, "GET", f"{V2}/experiments/nope/events", expect=404)
    assert error_of(answer)["source"] == {"parameter": "experiment_id"}
    answer = call(
        client,
        "GET",
        f"{V2}/experiments/events?filter[project_name]=proj&filter[experiment_name]=none",
        expect=404,
    )
    assert error_of(answer)["source"] == {"parameter": "filter[experiment_name]"}
    answer = call(client, "GET", f"{V2}/experiments/events?filter[project_name]=proj", expect=400)
    assert error_of(answer)["source"] == {"parameter": "filter[experiment_name]"}
    # The span intake keeps what it can: spans of no or unknown experiments are ignored.
    lost = span("nope", "r0", 1, "1")
    plain = {**span(world["experiment"], "r0", 1, "2"), "tags": ["ml_app:x"]}
    answer = call(client, "POST", "/api/v2/llmobs", [{"spans": [lost, plain]}], 202)
    assert answer["meta"] == {"spans": 2, "stored": 0, "duplicates": 0, "ignored": 2, "queued": 0}


def test_span_intake_behind_the_agent_proxy_and_eval_metric_intake(
    client: TestClient, backend: SqlBackend, world: dict[str, str]
) -> None:
    experiment_id = world["experiment"]
    events = [
        {
            "_dd.stage": "raw",
            "_dd.tracer_version": "4.16.0",
            "event_type": "span",
            "_dd.scope": "experiments",
            "spans": [span(experiment_id, "r1", 3, "31")],
        }
    ]
    answer = call(client, "POST", "/evp_proxy/v2/api/v2/llmobs", events, 202)
    assert answer["meta"]["stored"] == 1
    assert [row.run_iteration for row in backend.experiment_rows(experiment_id)] == [3]
    answer = call(client, "POST", "/api/v2/llmobs", {"spans": []}, expect=422)
    assert error_of(answer)["source"] == {"pointer": ""}
    metrics = {"data": {"type": "evaluation_metric", "attributes": {"metrics": [{}, {}]}}}
    answer = call(client, "POST", "/api/intake/llm-obs/v2/eval-metric", metrics, 202)
    assert answer["meta"] == {"metrics": 2, "ignored": 2}


# Assay's own reads -----------------------------------------------------------------------


def test_summary_and_record_summaries(client: TestClient, world: dict[str, str]) -> None:
    experiment_id = world["experiment"]
    events = f"{V2}/experiments/{experiment_id}/events"
    spans = []
    for run in (1, 2, 3):
        for n in range(2):
            span_id = f"{run}{n}"
            spans.append(span(experiment_id, f"r{n}", run, span_id))
            value = 1.0 if n == 0 else run / 10
            call(
                client,
                "POST",
                events,
                metrics_body([score(span_id, value)], [f"run_iteration:{run}"]),
                202,
            )
    call(client, "POST", "/api/v2/llmobs", [{"spans": spans}], 202)
    summary = call(client, "GET", f"{V2}/experiments/{experiment_id}/summary")["data"]
    assert summary["type"] == "experiment_summaries"
    attributes = summary["attributes"]
    assert (attributes["rows"], attributes["records"], attributes["run_iterations"]) == (
        6,
        2,
        [1, 2, 3],
    )
    acc = attributes["evaluations"]["acc"]
    assert acc["metric_type"] == "score"
    assert acc["value"] == pytest.approx((1.0 + 0.2) / 2)
    assert acc["per_run"] == pytest.approx([0.55, 0.6, 0.65])
    assert attributes["trace_metrics"]["duration"]["rows"] == 6
    one = call(client, "GET", f"{V2}/experiments/{experiment_id}/summary?filter[run_iteration]=2")
    assert one["data"]["attributes"]["evaluations"]["acc"]["value"] == pytest.approx(0.6)
    records = call(client, "GET", f"{V2}/experiments/{experiment_id}/record_summaries")["data"]
    assert [(r["id"], r["attributes"]["idx"]) for r in records] == [("r0", 0), ("r1", 1)]
    assert records[1]["attributes"]["evaluations"]["acc"]["value"] == pytest.approx(0.2)
    paged = call(client, "GET", f"{V2}/experiments/{experiment_id}/record_summaries?page[limit]=1")
    assert "after" in paged["meta"]
    answer = call(
        client,
        "GET",
        f"{V2}/experiments/{experiment_id}/summary?filter[run_iteration]=4",
        expect=400,
    )
    assert error_of(answer)["source"] == {"parameter": "filter[run_iteration]"}
    answer = call(client, "GET", f"{V2}/experiments/nope/record_summaries", expect=404)
    assert error_of(answer)["source"] == {"parameter": "experiment_id"}


# Prefixes, limits and the error boundary ---------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_prefix_serves_the_api(client: TestClient, prefix: str) -> None:
    project = call(client, "POST", f"{prefix}/projects", body({"name": "same"}))
    assert call(client, "GET", f"{prefix}/projects/{project['data']['id']}")["data"]["id"]
    assert call(client, "GET", f"{prefix}/experiments")["data"] == []


def test_unknown_routes_methods_and_unsupported_features(client: TestClient) -> None:
    error = error_of(call(client, "GET", f"{V2}/nothing/here/at/all", expect=404))
    assert "/nothing/here" in error["detail"]
    error_of(call(client, "DELETE", f"{V2}/projects", expect=405))
    answer = call(client, "POST", f"{UNSTABLE}/evaluators/judge/infer", body({}), expect=501)
    assert "Remote evaluators" in error_of(answer)["detail"]
    error_of(call(client, "POST", f"{V2}/experiments/delete", body({}), expect=501))


def test_bodies_over_the_limit_are_refused(backend: SqlBackend) -> None:
    with TestClient(create_app(backend=backend, max_body_bytes=100)) as small:
        answer = call(small, "POST", f"{V2}/projects", body({"name": "x" * 150}), expect=413)
        assert error_of(answer)["status"] == "413"
        call(small, "POST", f"{V2}/projects", body({"name": "fits"}))


class BrokenStore:
    """A store that fails as no store should: the server must still answer in shape."""

    engine = None

    def ensure_project(self, name: str, description: str = "") -> None:
        raise RuntimeError("disk on fire\nsecond line")


def test_an_unexpected_error_is_a_logged_json_api_500(
    backend: SqlBackend, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(backend=backend)
    app.dependency_overrides[get_backend] = BrokenStore
    with TestClient(app) as broken, caplog.at_level(logging.ERROR, logger="assay.server"):
        answer = call(broken, "POST", f"{V2}/projects", body({"name": "x"}), expect=500)
    assert "RuntimeError" in error_of(answer)["detail"]
    [line] = [r.getMessage() for r in caplog.records if r.name == "assay.server"]
    assert line == f"POST {V2}/projects failed: RuntimeError: disk on fire"


def test_a_dependency_override_swaps_the_store(backend: SqlBackend, tmp_path: Any) -> None:
    other = SqlBackend(f"sqlite:///{tmp_path}/other.db")
    try:
        app = create_app(backend=backend)
        app.dependency_overrides[get_backend] = lambda: other
        with TestClient(app) as swapped:
            make_project(swapped, "elsewhere")
        assert other.find_project("elsewhere") is not None
        assert backend.find_project("elsewhere") is None
    finally:
        other.close()


def test_the_openapi_document_lists_the_v2_routes_once(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert f"{V2}/experiments" in paths
    assert "/api/v2/llmobs" in paths
    assert not any(path.startswith(("/evp_proxy", UNSTABLE)) for path in paths)


def test_the_app_opens_its_own_store(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/own.db"
    with TestClient(create_app(database_url=url)) as own:
        make_project(own, "mine")
    reopened = SqlBackend(url)
    try:
        assert reopened.find_project("mine") is not None
    finally:
        reopened.close()


def test_records_search_endpoint_matches_the_sdk(client: TestClient, llmobs: Any) -> None:
    dataset = llmobs.create_dataset(
        dataset_name="searchable", records=[{"input_data": n} for n in range(6)]
    )

    def task(input_data: Any, config: Any) -> Any:
        return input_data * 2

    def big(input_data: Any, output_data: Any, expected_output: Any) -> bool:
        return bool(output_data >= 6)

    experiment = llmobs.experiment("searchable", task, dataset, [big], runs=2)
    experiment.run()
    path = f"{V2}/experiments/{experiment.id}/records"
    rows = call(client, "GET", path, params={"filter[query]": "@evaluations.custom.big:true"})
    assert rows["meta"]["total"] == 6 and rows["meta"]["of"] == 12
    assert {item["type"] for item in rows["data"]} == {"search_rows"}
    records = call(
        client,
        "GET",
        path,
        params={"filter[query]": "@multi_run_avg.@evaluations.custom.big:>=0.5", "page[limit]": 2},
    )
    assert records["meta"]["total"] == 3 and records["meta"]["multi_run"] is True
    assert [item["id"] for item in records["data"]] == [
        item["record_id"]
        for item in experiment.search("@multi_run_avg.@evaluations.custom.big:>=0.5", limit=2).items
    ]
    one_run = call(client, "GET", path, params={"filter[run_iteration]": 2})
    assert one_run["meta"]["total"] == 6
    error = error_of(
        call(
            client, "GET", path, params={"filter[query]": "@evaluations.custom.bg:true"}, expect=400
        )
    )
    assert error["source"] == {"parameter": "filter[query]"}
    assert "did you mean '@evaluations.custom.big'" in error["detail"]
