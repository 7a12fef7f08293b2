"""The ``Dataset`` class and the dataset loaders, on a real SQLite file."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assay import dataset as datasets
from assay import loaders
from assay.dataset import Dataset
from assay.errors import DatasetError, DatasetNotFoundError
from assay.store.records import ProjectInfo
from assay.store.sql.backend import SqlBackend

CAPITALS = [
    {"input_data": {"country": "France"}, "expected_output": "Paris", "id": "fr"},
    {
        "input_data": {"country": "Peru"},
        "expected_output": "Lima",
        "id": "pe",
        "tags": ["continent:sa"],
    },
    {"input_data": {"country": "Japan"}, "id": "jp", "metadata": {"difficulty": "easy"}},
]


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[SqlBackend]:
    opened = SqlBackend(f"sqlite:///{tmp_path}/a.db")
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def project(backend: SqlBackend) -> ProjectInfo:
    return backend.ensure_project("geo")


@pytest.fixture
def ds(backend: SqlBackend, project: ProjectInfo) -> Dataset:
    return datasets.create_dataset(backend, project, "capitals", description="d", records=CAPITALS)


def pull(backend: SqlBackend, project: ProjectInfo, **options: Any) -> Dataset:
    return datasets.pull_dataset(backend, project, "capitals", **options)


def contents(dataset: Dataset) -> list[tuple[str, Any, Any]]:
    return [(r["record_id"], r["input_data"], r["expected_output"]) for r in dataset]


# Creating and reading -----------------------------------------------------------------


def test_create_dataset_pushes_the_records_as_version_one(
    ds: Dataset, project: ProjectInfo
) -> None:
    assert (ds.name, ds.description, ds.version, ds.latest_version) == ("capitals", "d", 1, 1)
    assert ds.project == {"name": "geo", "_id": project.id}
    assert ds.filter_tags == []
    assert ds[1] == {
        "record_id": "pe",
        "input_data": {"country": "Peru"},
        "expected_output": "Lima",
        "metadata": {},
        "tags": ["continent:sa"],
        "canonical_id": "pe",
    }
    # A record without expected_output has None, not a missing key.
    assert ds[2]["expected_output"] is None
    assert ds[2]["metadata"] == {"difficulty": "easy"}


def test_sequence_behaviour(ds: Dataset) -> None:
    assert len(ds) == 3
    assert ds[-1]["record_id"] == "jp"
    assert [r["record_id"] for r in ds[0:2]] == ["fr", "pe"]
    assert isinstance(ds[:], list)
    assert [r["record_id"] for r in ds] == ["fr", "pe", "jp"]
    with pytest.raises(IndexError):
        ds[3]
    assert "capitals" in repr(ds)


def test_url_uses_the_server_url(ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSAY_SERVER_URL", "https://assay.example.com/")
    assert ds.url == f"https://assay.example.com/llm/datasets/{ds.id}"


def test_generated_ids_are_uuid_hex(backend: SqlBackend, project: ProjectInfo) -> None:
    made = datasets.create_dataset(backend, project, "gen", records=[{"input_data": "q"}])
    assert len(made[0]["record_id"]) == 32
    int(made[0]["record_id"], 16)


def test_create_dataset_gets_an_existing_one(
    backend: SqlBackend, project: ProjectInfo, ds: Dataset
) -> None:
    again = datasets.create_dataset(
        backend,
        project,
        "capitals",
        description="ignored",
        records=[{"input_data": {"country": "Chad"}}],
    )
    assert again.id == ds.id and again.description == "d"
    assert len(again) == 4 and again.version == 2


def test_create_dataset_without_records_is_version_zero(
    backend: SqlBackend, project: ProjectInfo
) -> None:
    empty = datasets.create_dataset(backend, project, "empty")
    assert (len(empty), empty.version, empty.latest_version) == (0, 0, 0)


def test_pull_unknown_dataset(backend: SqlBackend, project: ProjectInfo, ds: Dataset) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"'capitols'.*'capitals'") as raised:
        datasets.pull_dataset(backend, project, "capitols")
    assert isinstance(raised.value, ValueError)
    other = backend.ensure_project("empty")
    with pytest.raises(ValueError, match="no datasets yet"):
        datasets.pull_dataset(backend, other, "capitals")


# Edits and versions -------------------------------------------------------------------


def test_every_edit_kind_then_pull_returns_each_version(
    backend: SqlBackend, project: ProjectInfo, ds: Dataset
) -> None:
    history = {1: contents(ds)}

    ds.append({"input_data": {"country": "Chad"}, "expected_output": "N'Djamena", "id": "td"})
    ds.push()
    assert (ds.version, ds.latest_version) == (2, 2)
    history[2] = contents(ds)

    ds.update(0, {"expected_output": "Paris, France"})
    ds.push()
    history[3] = contents(ds)

    # Metadata-only and tag-only edits keep the version.
    ds.update(1, {"metadata": {"source": "atlas"}})
    ds.add_tags(2, ["checked:yes"])
    ds.push()
    assert ds.version == 3
    assert ds[1]["metadata"] == {"source": "atlas"}
    assert ds[2]["tags"] == ["checked:yes"]

    ds.delete(1)
    ds.push()
    history[4] = contents(ds)
    assert [r["record_id"] for r in ds] == ["fr", "jp", "td"]

    ds.extend(
        [
            {"input_data": {"country": "Mali"}, "id": "ml"},
            {"input_data": {"country": "Iran"}, "id": "ir"},
        ]
    )
    ds.update(0, {"input_data": {"country": "France "}})
    ds.push()
    history[5] = contents(ds)

    assert ds.latest_version == 5
    for version, expected in history.items():
        pulled = pull(backend, project, version=version)
        assert pulled.version == version and pulled.latest_version == 5
        assert contents(pulled) == expected
    assert contents(pull(backend, project)) == history[5]
    assert history[1] == [
        ("fr", {"country": "France"}, "Paris"),
        ("pe", {"country": "Peru"}, "Lima"),
        ("jp", {"country": "Japan"}, None),
    ]


def test_pull_of_a_missing_version(backend: SqlBackend, project: ProjectInfo, ds: Dataset) -> None:
    with pytest.raises(DatasetError, match="no version 9; its versions are 0 to 1"):
        pull(backend, project, version=9)


def test_push_without_a_new_version(backend: SqlBackend, project: ProjectInfo, ds: Dataset) -> None:
    ds.append({"input_data": {"country": "Chad"}})
    ds.push(create_new_version=False, bulk_upload=True)
    assert ds.version == 1 and len(ds) == 4
    assert len(pull(backend, project, version=1)) == 4


def test_push_with_nothing_to_send_keeps_the_version(ds: Dataset) -> None:
    ds.push()
    assert ds.version == 1 and len(ds) == 3


def test_an_old_version_pushed_becomes_the_latest(
    backend: SqlBackend, project: ProjectInfo, ds: Dataset
) -> None:
    ds.append({"input_data": {"country": "Chad"}})
    ds.push()
    old = pull(backend, project, version=1)
    assert (old.version, old.latest_version, len(old)) == (1, 2, 3)
    old.update(0, {"metadata": {"m": 1}})
    old.push()
    assert (old.version, old.latest_version, len(old)) == (2, 2, 4)


def test_edits_of_unpushed_records_travel_with_the_insert(
    backend: SqlBackend, project: ProjectInfo, ds: Dataset
) -> None:
    ds.append({"input_data": "new", "id": "n", "tags": ["a:1"]})
    ds.update(3, {"expected_output": "out", "metadata": {"m": 1}})
    ds.add_tags(3, ["b:2"])
    ds.remove_tags(3, ["a:1"])
    ds.push()
    pulled = pull(backend, project)
    assert pulled[3] == {
        "record_id": "n",
        "input_data": "new",
        "expected_output": "out",
        "metadata": {"m": 1},
        "tags": ["b:2"],
        "canonical_id": "n",
    }
    assert pulled.version == 2


def test_deleting_an_unpushed_record_sends_nothing(ds: Dataset) -> None:
    ds.append({"input_data": "new"})
    ds.delete(-1)
    ds.push()
    assert ds.version == 1 and len(ds) == 3


def test_tag_operations_fold_before_push(
    backend: SqlBackend, project: ProjectInfo, ds: Dataset
) -> None:
    ds.add_tags(1, ["a:1", "b:2"])
    ds.remove_tags(1, ["a:1", "continent:sa"])
    assert ds[1]["tags"] == ["b:2"]
    ds.push()
    assert pull(backend, project)[1]["tags"] == ["b:2"]

    # Replace wins, and absorbs the adds and removes made after it.
    ds.add_tags(1, ["x:1"])
    ds.replace_tags(1, ["r:1", "r:2"])
    ds.add_tags(1, ["r:3"])
    ds.remove_tags(1, ["r:1"])
    ds.push()
    assert pull(backend, project)[1]["tags"] == ["r:2", "r:3"]

    ds.update(1, {"tags": ["only:this"]})
    ds.push()
    assert pull(backend, project)[1]["tags"] == ["only:this"]
    assert ds.version == 1


def test_update_can_erase_expected_output_and_metadata(
    backend: SqlBackend, project: ProjectInfo, ds: Dataset
) -> None:
    ds.update(2, {"metadata": None})
    ds.update(0, {"expected_output": None})
    ds.push()
    pulled = pull(backend, project)
    assert pulled[0]["expected_output"] is None and pulled[2]["metadata"] == {}
    assert pulled.version == 2


def test_update_accepts_a_whole_record(
    backend: SqlBackend, project: ProjectInfo, ds: Dataset
) -> None:
    ds.update(0, {**ds[0], "input_data": {"country": "FR"}})
    ds.push()
    assert pull(backend, project)[0]["input_data"] == {"country": "FR"}


def test_dedup_on_push(backend: SqlBackend, project: ProjectInfo, ds: Dataset) -> None:
    ds.append(
        {"input_data": {"country": "France"}, "expected_output": "Paris", "metadata": {"copy": 1}}
    )
    ds.push()
    assert len(ds) == 3 and ds.version == 1
    ds.append({"input_data": {"country": "France"}, "expected_output": "Paris"})
    ds.push(deduplicate=False)
    assert len(ds) == 4 and ds.version == 2


def test_has_unpushed_changes(ds: Dataset) -> None:
    assert not ds.has_unpushed_changes
    ds.add_tags(0, ["a:1"])
    assert ds.has_unpushed_changes
    ds.push()
    assert not ds.has_unpushed_changes


def test_a_failed_push_keeps_the_edits(
    backend: SqlBackend, project: ProjectInfo, ds: Dataset
) -> None:
    other = pull(backend, project)
    other.delete(0)
    other.push()
    ds.update(0, {"input_data": "changed"})
    with pytest.raises(DatasetError, match="'fr'"):
        ds.push()
    assert ds.has_unpushed_changes


# Edit errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"input_data": 1, "id": "fr"}, "already has a record with id 'fr'"),
        ({"input_data": 1, "tags": ["nocolon"]}, "'nocolon'.*'key:value'"),
        ({"input_data": 1, "tags": "a:1"}, "must be a list"),
        ({"expected_output": 1}, "no 'input_data'"),
        ({"input_data": None}, "is None"),
        ({"input_data": 1, "input": 2}, "Unknown key 'input'"),
        ({"input_data": 1, "metadata": ["m"]}, "must be a dict"),
        ({"input_data": 1, "id": ""}, "non-empty string"),
    ],
)
def test_append_errors(ds: Dataset, record: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ds.append(record)
    assert len(ds) == 3 and not ds.has_unpushed_changes


def test_extend_checks_every_record_first(ds: Dataset) -> None:
    with pytest.raises(ValueError, match="'x' appears twice"):
        ds.extend([{"input_data": 1, "id": "x"}, {"input_data": 2, "id": "x"}])
    with pytest.raises(ValueError, match="no 'input_data'"):
        ds.extend([{"input_data": 1}, {"expected_output": 2}])
    with pytest.raises(ValueError, match="already has a record with id 'pe'"):
        ds.extend([{"input_data": 1, "id": "new"}, {"input_data": 2, "id": "pe"}])
    assert len(ds) == 3 and not ds.has_unpushed_changes


def test_copying_records_from_another_dataset(
    backend: SqlBackend, project: ProjectInfo, ds: Dataset
) -> None:
    copy = datasets.create_dataset(backend, project, "copy")
    copy.extend(ds[:])
    copy.push()
    assert [r["input_data"] for r in copy] == [r["input_data"] for r in ds]
    assert {r["record_id"] for r in copy}.isdisjoint(r["record_id"] for r in ds)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({}, "at least one of input_data, expected_output, metadata or tags"),
        ({"record_id": "x"}, "at least one of"),
        ({"inputs": 1}, "Unknown key 'inputs'"),
        ({"tags": ["bad"]}, "'bad'"),
        ({"input_data": None}, "cannot be set to None"),
    ],
)
def test_update_errors(ds: Dataset, update: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ds.update(0, update)


def test_tag_edit_errors(ds: Dataset) -> None:
    with pytest.raises(ValueError, match="'bad'"):
        ds.add_tags(0, ["bad"])
    with pytest.raises(ValueError, match="must be a list"):
        ds.replace_tags(0, "a:1")


# Tags filter --------------------------------------------------------------------------


def test_pull_with_tags_filters_and_remembers(
    backend: SqlBackend, project: ProjectInfo, ds: Dataset
) -> None:
    ds.add_tags(0, ["continent:eu"])
    ds.push()
    europe = pull(backend, project, tags=["continent:eu"])
    assert [r["record_id"] for r in europe] == ["fr"]
    assert europe.filter_tags == ["continent:eu"]
    # After a push the object still holds the filtered view, at the new version.
    europe.append({"input_data": {"country": "Spain"}, "tags": ["continent:eu"]})
    europe.append({"input_data": {"country": "Chile"}})
    europe.push()
    assert [r["input_data"]["country"] for r in europe] == ["France", "Spain"]
    assert europe.version == 2
    assert len(pull(backend, project, tags=["continent:eu"], version=1)) == 1
    with pytest.raises(ValueError, match="'continent'"):
        pull(backend, project, tags=["continent"])


# Loaders ------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv(backend: SqlBackend, project: ProjectInfo, tmp_path: Path) -> None:
    path = write(
        tmp_path / "q.csv", "\ufeffkey,question,answer,source\nk1,What?,42,wiki\nk2,Who?,me,book\n"
    )
    made = loaders.create_dataset_from_csv(
        backend,
        project,
        path,
        "qa",
        ["question"],
        expected_output_columns=["answer"],
        metadata_columns=["source"],
        id_column="key",
        description="from csv",
    )
    assert made.version == 1 and made.description == "from csv"
    assert made[0] == {
        "record_id": "k1",
        "input_data": {"question": "What?"},
        "expected_output": {"answer": "42"},
        "metadata": {"source": "wiki"},
        "tags": [],
        "canonical_id": "k1",
    }


def test_csv_expected_output_is_always_a_dict_and_delimiter(
    backend: SqlBackend, project: ProjectInfo, tmp_path: Path
) -> None:
    path = write(tmp_path / "q.tsv", "a\tb\n1\t2\n")
    made = loaders.create_dataset_from_csv(
        backend, project, path, "t", ["a", "b"], csv_delimiter="\t"
    )
    assert made[0]["input_data"] == {"a": "1", "b": "2"}
    assert made[0]["expected_output"] == {}


def test_csv_large_fields(backend: SqlBackend, project: ProjectInfo, tmp_path: Path) -> None:
    big = "x" * 500_000
    path = write(tmp_path / "big.csv", f"doc\n{big}\n")
    made = loaders.create_dataset_from_csv(backend, project, path, "big", ["doc"])
    assert made[0]["input_data"] == {"doc": big}


def test_csv_missing_columns_names_them_and_the_present_ones(
    backend: SqlBackend, project: ProjectInfo, tmp_path: Path
) -> None:
    path = write(tmp_path / "q.csv", "question,answer\nWhat?,42\n")
    with pytest.raises(ValueError, match=r"'answr', 'id' not found.*'question', 'answer'"):
        loaders.create_dataset_from_csv(
            backend,
            project,
            path,
            "qa",
            ["question"],
            expected_output_columns=["answr"],
            id_column="id",
        )
    assert backend.find_dataset(project.id, "qa") is None


def test_csv_without_header(backend: SqlBackend, project: ProjectInfo, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no header row"):
        loaders.create_dataset_from_csv(backend, project, write(tmp_path / "e.csv", ""), "e", ["a"])
    with pytest.raises(ValueError, match="input_data_columns is empty"):
        loaders.create_dataset_from_csv(
            backend, project, write(tmp_path / "f.csv", "a\n1\n"), "f", []
        )


def test_csv_bad_id_names_the_line(
    backend: SqlBackend, project: ProjectInfo, tmp_path: Path
) -> None:
    path = write(tmp_path / "q.csv", "id,q\na,1\na,2\n")
    with pytest.raises(DatasetError, match=r"Line 3 of .*'a' appears twice"):
        loaders.create_dataset_from_csv(backend, project, path, "qa", ["q"], id_column="id")


def test_jsonl(backend: SqlBackend, project: ProjectInfo, tmp_path: Path) -> None:
    lines = [json.dumps(record) for record in CAPITALS]
    made = loaders.create_dataset_from_jsonl(
        backend, project, write(tmp_path / "r.jsonl", "\n".join(lines) + "\n\n"), "j"
    )
    assert contents(made) == [
        ("fr", {"country": "France"}, "Paris"),
        ("pe", {"country": "Peru"}, "Lima"),
        ("jp", {"country": "Japan"}, None),
    ]
    assert made[1]["tags"] == ["continent:sa"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"input_data": 1}\n{"input_data": \n', "Line 2 of .* is not JSON"),
        ('{"input_data": 1}\n\n[1, 2]\n', "Line 3 of .* is a list, not an object"),
        ('{"input_data": 1}\n{"expected_output": 1}\n', "Line 2 of .*no 'input_data'"),
        ('{"input_data": 1, "tags": ["x"]}\n', "Line 1 of .*'x'"),
    ],
)
def test_jsonl_errors_name_the_line(
    backend: SqlBackend, project: ProjectInfo, tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(DatasetError, match=message):
        loaders.create_dataset_from_jsonl(backend, project, write(tmp_path / "r.jsonl", text), "j")
    assert backend.find_dataset(project.id, "j") is None


def test_dataframe(backend: SqlBackend, project: ProjectInfo) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {
            "question": ["What?", "Who?"],
            "n": [1, 2],
            "score": [0.5, float("nan")],
            "answer": ["42", None],
            "when": pd.to_datetime(["2024-01-02", None]),
        }
    )
    made = loaders.create_dataset_from_dataframe(
        backend,
        project,
        frame,
        "df",
        input_data_columns=["question", "n"],
        expected_output_columns=["answer"],
        metadata_columns=["score", "when"],
    )
    assert made[0]["input_data"] == {"question": "What?", "n": 1}
    assert made[0]["metadata"] == {"score": 0.5, "when": "2024-01-02T00:00:00"}
    assert made[1]["expected_output"] == {"answer": None}
    assert made[1]["metadata"] == {"score": None, "when": None}
    with pytest.raises(ValueError, match="'nope' not found in the DataFrame"):
        loaders.create_dataset_from_dataframe(
            backend, project, frame, "df2", input_data_columns=["nope"]
        )


# DataFrame export ---------------------------------------------------------------------


def test_as_dataframe(ds: Dataset) -> None:
    pd = pytest.importorskip("pandas")
    ds.append({"input_data": "plain", "expected_output": {"capital": "x"}, "id": "p"})
    frame = ds.as_dataframe()
    assert isinstance(frame.columns, pd.MultiIndex)
    assert list(frame.columns) == [
        ("input_data", "country"),
        ("input_data", ""),
        ("expected_output", ""),
        ("expected_output", "capital"),
        ("metadata", "difficulty"),
        ("tags", ""),
    ]
    assert len(frame) == 4
    assert frame[("input_data", "country")].tolist()[:3] == ["France", "Peru", "Japan"]
    assert frame[("tags", "")].tolist()[1] == ["continent:sa"]
    assert frame[("expected_output", "capital")].tolist()[3] == "x"


def test_as_dataframe_of_an_empty_dataset(backend: SqlBackend, project: ProjectInfo) -> None:
    pytest.importorskip("pandas")
    frame = datasets.create_dataset(backend, project, "empty").as_dataframe()
    assert list(frame.columns) == [("tags", "")] and len(frame) == 0


def test_as_dataframe_without_pandas(ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'assay\[pandas\]'"):
        ds.as_dataframe()
