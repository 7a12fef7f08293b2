"""The SQL dataset store: versions, deltas, deduplication and soft deletes.

Every test runs on a real SQLite file and, when it is reachable, on a fresh PostgreSQL
database created for the test and dropped after it.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select

from assay.errors import DatasetError, DatasetNotFoundError, NotFoundError
from assay.store.records import RecordInsert, RecordUpdate, StoredRecord, TagOperations
from assay.store.sql import datasets as store
from assay.store.sql.backend import SqlBackend
from assay.store.sql.tables import dataset_records
from backends import on_every_backend


@pytest.fixture
def project_id(backend: SqlBackend) -> str:
    return backend.ensure_project("p").id


@pytest.fixture
def dataset_id(backend: SqlBackend, project_id: str) -> str:
    return backend.create_dataset(project_id, "capitals", "world capitals").id


def insert(record_id: str, input_data: Any, expected: Any = None, **extra: Any) -> RecordInsert:
    return RecordInsert(
        record_id=record_id, input_data=input_data, expected_output=expected, **extra
    )


def ids(records: list[StoredRecord]) -> list[str]:
    return [record.record_id for record in records]


# Datasets -----------------------------------------------------------------------------


@on_every_backend
def test_new_dataset_starts_at_version_zero(backend: SqlBackend, project_id: str) -> None:
    info = backend.create_dataset(project_id, "capitals", "world capitals")
    assert (info.name, info.description, info.current_version) == ("capitals", "world capitals", 0)
    assert info.created_at.tzinfo is not None
    versions = backend.dataset_versions(info.id)
    assert [(v.version, v.records) for v in versions] == [(0, 0)]
    assert backend.dataset_records(info.id) == []


@on_every_backend
def test_create_is_create_or_get(backend: SqlBackend, project_id: str) -> None:
    first = backend.create_dataset(project_id, "capitals", "first")
    backend.update_dataset_records(first.id, inserts=[insert("a", {"q": 1})])
    again = backend.create_dataset(project_id, "capitals", "second description")
    assert again.id == first.id
    assert again.description == "first"
    assert again.current_version == 1


@on_every_backend
def test_same_name_in_two_projects_is_two_datasets(backend: SqlBackend, project_id: str) -> None:
    other = backend.ensure_project("other").id
    assert backend.create_dataset(project_id, "d").id != backend.create_dataset(other, "d").id
    assert [info.name for info in backend.list_datasets(other)] == ["d"]
    assert len(backend.list_datasets()) == 2


@on_every_backend
def test_create_in_unknown_project_names_it(backend: SqlBackend) -> None:
    with pytest.raises(NotFoundError, match="'nope'"):
        backend.create_dataset("nope", "d")


@on_every_backend
def test_create_with_empty_name_fails(backend: SqlBackend, project_id: str) -> None:
    with pytest.raises(DatasetError, match="empty"):
        backend.create_dataset(project_id, "  ")


@on_every_backend
def test_find_get_and_list(backend: SqlBackend, project_id: str) -> None:
    assert backend.find_dataset(project_id, "b") is None
    b = backend.create_dataset(project_id, "b")
    a = backend.create_dataset(project_id, "a")
    assert backend.find_dataset(project_id, "b") == b
    assert backend.get_dataset(a.id) == a
    assert [info.name for info in backend.list_datasets(project_id)] == ["a", "b"]
    with pytest.raises(DatasetNotFoundError, match="'missing-id'"):
        backend.get_dataset("missing-id")


@on_every_backend
def test_soft_delete_hides_the_dataset_but_keeps_its_versions(
    backend: SqlBackend, project_id: str, dataset_id: str
) -> None:
    backend.update_dataset_records(dataset_id, inserts=[insert("a", {"q": 1})])
    backend.delete_dataset(dataset_id)
    backend.delete_dataset(dataset_id)  # twice is fine
    assert backend.find_dataset(project_id, "capitals") is None
    assert backend.list_datasets(project_id) == []
    with pytest.raises(DatasetNotFoundError, match="deleted"):
        backend.get_dataset(dataset_id)
    with pytest.raises(DatasetNotFoundError):
        backend.update_dataset_records(dataset_id, inserts=[insert("b", {"q": 2})])
    # Experiments pinned to it can still read it.
    assert ids(backend.dataset_records(dataset_id, version=1)) == ["a"]
    # The name is free again.
    fresh = backend.create_dataset(project_id, "capitals")
    assert fresh.id != dataset_id and fresh.current_version == 0
    with pytest.raises(DatasetNotFoundError, match="'unknown'"):
        backend.delete_dataset("unknown")


# Deltas and versions ------------------------------------------------------------------


@on_every_backend
def test_inserts_make_one_version_in_insertion_order(backend: SqlBackend, dataset_id: str) -> None:
    version = backend.update_dataset_records(
        dataset_id,
        inserts=[
            insert("z", {"q": "z"}, "Z", metadata={"m": 1}, tags=["lang:en"]),
            insert("a", {"q": "a"}),
        ],
    )
    assert version == 1
    assert backend.update_dataset_records(dataset_id, inserts=[insert("m", {"q": "m"})]) == 2
    records = backend.dataset_records(dataset_id)
    assert ids(records) == ["z", "a", "m"]
    assert records[0] == StoredRecord("z", {"q": "z"}, "Z", {"m": 1}, ["lang:en"], "z")
    assert records[1].expected_output is None and records[1].metadata == {}
    assert backend.get_dataset(dataset_id).current_version == 2


@on_every_backend
def test_every_past_version_stays_readable(backend: SqlBackend, dataset_id: str) -> None:
    backend.update_dataset_records(dataset_id, inserts=[insert("a", 1, "x"), insert("b", 2)])
    backend.update_dataset_records(dataset_id, updates=[RecordUpdate("a", input_data=10)])
    backend.update_dataset_records(dataset_id, deletes=["b"])
    backend.update_dataset_records(dataset_id, updates=[RecordUpdate("a", expected_output="y")])
    backend.update_dataset_records(dataset_id, inserts=[insert("c", 3)])

    def state(version: int) -> list[tuple[str, object, object]]:
        return [
            (r.record_id, r.input_data, r.expected_output)
            for r in backend.dataset_records(dataset_id, version=version)
        ]

    assert state(0) == []
    assert state(1) == [("a", 1, "x"), ("b", 2, None)]
    assert state(2) == [("a", 10, "x"), ("b", 2, None)]
    assert state(3) == [("a", 10, "x")]
    assert state(4) == [("a", 10, "y")]
    assert state(5) == [("a", 10, "y"), ("c", 3, None)]
    assert state(5) == [
        (r.record_id, r.input_data, r.expected_output) for r in backend.dataset_records(dataset_id)
    ]
    assert [(v.version, v.records) for v in backend.dataset_versions(dataset_id)] == [
        (0, 0),
        (1, 2),
        (2, 2),
        (3, 1),
        (4, 1),
        (5, 2),
    ]


def test_changed_record_keeps_its_position(backend: SqlBackend, dataset_id: str) -> None:
    backend.update_dataset_records(dataset_id, inserts=[insert(i, i) for i in "abc"])
    backend.update_dataset_records(dataset_id, updates=[RecordUpdate("a", input_data="A")])
    assert ids(backend.dataset_records(dataset_id)) == ["a", "b", "c"]
    with backend.engine.connect() as connection:
        rows = connection.execute(
            select(
                dataset_records.c.record_id,
                dataset_records.c.version_from,
                dataset_records.c.version_to,
            )
            .where(dataset_records.c.record_id == "a")
            .order_by(dataset_records.c.pk)
        ).all()
    assert [tuple(row) for row in rows] == [("a", 1, 2), ("a", 2, None)]


@on_every_backend
def test_metadata_and_tag_edits_keep_the_version(backend: SqlBackend, dataset_id: str) -> None:
    backend.update_dataset_records(dataset_id, inserts=[insert("a", 1, tags=["k:1"])])
    version = backend.update_dataset_records(
        dataset_id,
        updates=[
            RecordUpdate("a", metadata={"source": "wiki"}),
            RecordUpdate("a", tag_operations=TagOperations(add=("lang:en",))),
        ],
    )
    assert version == 1
    [record] = backend.dataset_records(dataset_id)
    assert record.metadata == {"source": "wiki"} and record.tags == ["k:1", "lang:en"]
    assert len(backend.dataset_versions(dataset_id)) == 2


@on_every_backend
def test_tag_operations(backend: SqlBackend, dataset_id: str) -> None:
    backend.update_dataset_records(dataset_id, inserts=[insert("a", 1, tags=["a:1", "b:2"])])

    def apply(operations: TagOperations) -> list[str]:
        backend.update_dataset_records(
            dataset_id, updates=[RecordUpdate("a", tag_operations=operations)]
        )
        return backend.dataset_records(dataset_id)[0].tags

    assert apply(TagOperations(add=("c:3", "a:1"), remove=("b:2",))) == ["a:1", "c:3"]
    assert apply(TagOperations(add=("x:1",), remove=("a:1",), replace=("r:1", "r:1"))) == ["r:1"]
    assert apply(TagOperations(replace=())) == []
    assert backend.get_dataset(dataset_id).current_version == 1


@on_every_backend
def test_a_delta_with_content_and_metadata_changes_makes_one_version(
    backend: SqlBackend, dataset_id: str
) -> None:
    backend.update_dataset_records(dataset_id, inserts=[insert("a", 1), insert("b", 2)])
    version = backend.update_dataset_records(
        dataset_id,
        inserts=[insert("c", 3)],
        updates=[RecordUpdate("a", input_data=11), RecordUpdate("b", metadata={"m": 1})],
        deletes=[],
    )
    assert version == 2
    assert [
        (r.record_id, r.input_data, r.metadata) for r in backend.dataset_records(dataset_id)
    ] == [
        ("a", 11, {}),
        ("b", 2, {"m": 1}),
        ("c", 3, {}),
    ]


@on_every_backend
def test_without_create_new_version_changes_belong_to_the_current_version(
    backend: SqlBackend, dataset_id: str
) -> None:
    assert (
        backend.update_dataset_records(
            dataset_id, inserts=[insert("a", 1)], create_new_version=False
        )
        == 0
    )
    assert backend.update_dataset_records(dataset_id, inserts=[insert("b", 2)]) == 1
    version = backend.update_dataset_records(
        dataset_id,
        inserts=[insert("c", 3)],
        updates=[RecordUpdate("a", input_data=10)],
        deletes=["b"],
        create_new_version=False,
    )
    assert version == 1
    assert [(r.record_id, r.input_data) for r in backend.dataset_records(dataset_id)] == [
        ("a", 10),
        ("c", 3),
    ]
    # Version 0 is untouched; only version 1 changed.
    assert [
        (r.record_id, r.input_data) for r in backend.dataset_records(dataset_id, version=0)
    ] == [("a", 1)]
    assert [(v.version, v.records) for v in backend.dataset_versions(dataset_id)] == [
        (0, 1),
        (1, 2),
    ]


@on_every_backend
def test_a_delta_that_changes_nothing_returns_the_current_version(
    backend: SqlBackend, dataset_id: str
) -> None:
    backend.update_dataset_records(dataset_id, inserts=[insert("a", {"q": 1}, metadata={"m": 1})])
    before = backend.get_dataset(dataset_id)
    assert backend.update_dataset_records(dataset_id) == 1
    assert (
        backend.update_dataset_records(
            dataset_id,
            updates=[RecordUpdate("a", input_data={"q": 1}, metadata={"m": 1})],
            inserts=[insert("dup", {"q": 1})],
        )
        == 1
    )
    assert backend.get_dataset(dataset_id).updated_at == before.updated_at
    assert len(backend.dataset_versions(dataset_id)) == 2


@on_every_backend
def test_deduplicate_skips_inserts_equal_to_a_live_record(
    backend: SqlBackend, dataset_id: str
) -> None:
    backend.update_dataset_records(dataset_id, inserts=[insert("a", {"x": 1, "y": 2}, "out")])
    # Same content with its keys in another order, twice in one delta, and once new.
    version = backend.update_dataset_records(
        dataset_id,
        inserts=[
            insert("b", {"y": 2, "x": 1}, "out"),
            insert("c", {"x": 1}, "out"),
            insert("d", {"x": 1}, "out"),
        ],
    )
    assert version == 2
    assert ids(backend.dataset_records(dataset_id)) == ["a", "c"]
    backend.update_dataset_records(
        dataset_id, inserts=[insert("e", {"x": 1}, "out")], deduplicate=False
    )
    assert ids(backend.dataset_records(dataset_id)) == ["a", "c", "e"]
    # Metadata and tags are not content: they do not make a record new.
    backend.update_dataset_records(
        dataset_id, inserts=[insert("f", {"x": 1}, "out", metadata={"m": 1})]
    )
    assert ids(backend.dataset_records(dataset_id)) == ["a", "c", "e"]


@on_every_backend
def test_deduplicate_compares_with_the_records_after_the_delta(
    backend: SqlBackend, dataset_id: str
) -> None:
    backend.update_dataset_records(dataset_id, inserts=[insert("a", 1), insert("b", 2)])
    backend.update_dataset_records(
        dataset_id,
        deletes=["a"],
        updates=[RecordUpdate("b", input_data=20)],
        inserts=[insert("a2", 1), insert("b2", 2), insert("b3", 20)],
    )
    assert [(r.record_id, r.input_data) for r in backend.dataset_records(dataset_id)] == [
        ("b", 20),
        ("a2", 1),
        ("b2", 2),
    ]


def test_content_hash_is_canonical() -> None:
    assert store.content_hash({"a": 1, "b": [1, 2]}, None) == store.content_hash(
        {"b": [1, 2], "a": 1}, None
    )
    assert store.content_hash({"a": 1}, None) != store.content_hash({"a": 1}, "")
    assert len(store.content_hash("x", "y")) == 64


@on_every_backend
def test_update_and_delete_of_the_same_record_deletes_it(
    backend: SqlBackend, dataset_id: str
) -> None:
    backend.update_dataset_records(dataset_id, inserts=[insert("a", 1), insert("b", 2)])
    backend.update_dataset_records(
        dataset_id, updates=[RecordUpdate("a", input_data=5)], deletes=["a"]
    )
    assert ids(backend.dataset_records(dataset_id)) == ["b"]


@on_every_backend
def test_erasing_expected_output_and_metadata(backend: SqlBackend, dataset_id: str) -> None:
    backend.update_dataset_records(dataset_id, inserts=[insert("a", 1, "x", metadata={"m": 1})])
    backend.update_dataset_records(
        dataset_id, updates=[RecordUpdate("a", expected_output=None, metadata={})]
    )
    [record] = backend.dataset_records(dataset_id)
    assert record.expected_output is None and record.metadata == {}


@on_every_backend
def test_a_deleted_id_can_be_inserted_again(backend: SqlBackend, dataset_id: str) -> None:
    backend.update_dataset_records(dataset_id, inserts=[insert("a", 1), insert("b", 2)])
    backend.update_dataset_records(dataset_id, deletes=["a"])
    backend.update_dataset_records(dataset_id, inserts=[insert("a", 3)])
    assert [(r.record_id, r.input_data) for r in backend.dataset_records(dataset_id)] == [
        ("b", 2),
        ("a", 3),
    ]
    assert ids(backend.dataset_records(dataset_id, version=1)) == ["a", "b"]


# Errors -------------------------------------------------------------------------------


@on_every_backend
def test_deleting_an_unknown_record_names_it(backend: SqlBackend, dataset_id: str) -> None:
    with pytest.raises(DatasetError, match="'ghost'"):
        backend.update_dataset_records(dataset_id, deletes=["ghost"])


@on_every_backend
def test_updating_an_unknown_record_names_it(backend: SqlBackend, dataset_id: str) -> None:
    with pytest.raises(DatasetError, match="'ghost'"):
        backend.update_dataset_records(dataset_id, updates=[RecordUpdate("ghost", input_data=1)])


@on_every_backend
def test_inserting_an_existing_id_fails(backend: SqlBackend, dataset_id: str) -> None:
    backend.update_dataset_records(dataset_id, inserts=[insert("a", 1)])
    with pytest.raises(DatasetError, match=r"'a'.*already exists"):
        backend.update_dataset_records(dataset_id, inserts=[insert("a", 2)])
    with pytest.raises(DatasetError, match=r"'b'.*already exists"):
        backend.update_dataset_records(dataset_id, inserts=[insert("b", 2), insert("b", 3)])


@pytest.mark.parametrize(
    "bad",
    [
        insert("a", 1, tags=["no-colon"]),
        insert("a", float("nan")),
        insert("a", 1, metadata={"m": object()}),
        insert("", 1),
        insert("x" * 65, 1),
    ],
)
@on_every_backend
def test_bad_inserts_are_refused(backend: SqlBackend, dataset_id: str, bad: RecordInsert) -> None:
    with pytest.raises(DatasetError):
        backend.update_dataset_records(dataset_id, inserts=[bad])


@on_every_backend
def test_a_failing_delta_writes_nothing(backend: SqlBackend, dataset_id: str) -> None:
    backend.update_dataset_records(dataset_id, inserts=[insert("a", 1)])
    with pytest.raises(DatasetError, match="'ghost'"):
        backend.update_dataset_records(
            dataset_id,
            inserts=[insert("b", 2)],
            updates=[RecordUpdate("a", input_data=5, metadata={"m": 1})],
            deletes=["ghost"],
        )
    assert [
        (r.record_id, r.input_data, r.metadata) for r in backend.dataset_records(dataset_id)
    ] == [("a", 1, {})]
    assert backend.get_dataset(dataset_id).current_version == 1


@on_every_backend
def test_a_missing_version_names_the_range(backend: SqlBackend, dataset_id: str) -> None:
    backend.update_dataset_records(dataset_id, inserts=[insert("a", 1)])
    with pytest.raises(DatasetError, match="no version 7; its versions are 0 to 1"):
        backend.dataset_records(dataset_id, version=7)
    with pytest.raises(DatasetError, match="no version -1"):
        backend.dataset_records(dataset_id, version=-1)


@on_every_backend
def test_records_of_an_unknown_dataset(backend: SqlBackend) -> None:
    with pytest.raises(DatasetNotFoundError, match="'nope'"):
        backend.dataset_records("nope")
    with pytest.raises(DatasetNotFoundError, match="'nope'"):
        backend.update_dataset_records("nope", inserts=[insert("a", 1)])


# Tags filter --------------------------------------------------------------------------


@on_every_backend
def test_tags_filter_keeps_records_with_all_tags(backend: SqlBackend, dataset_id: str) -> None:
    backend.update_dataset_records(
        dataset_id,
        inserts=[
            insert("a", 1, tags=["lang:en", "split:test"]),
            insert("b", 2, tags=["lang:en"]),
            insert("c", 3, tags=["lang:fr", "split:test"]),
        ],
    )
    assert ids(backend.dataset_records(dataset_id, tags=["lang:en"])) == ["a", "b"]
    assert ids(backend.dataset_records(dataset_id, tags=["lang:en", "split:test"])) == ["a"]
    assert ids(backend.dataset_records(dataset_id, tags=[])) == ["a", "b", "c"]
    with pytest.raises(DatasetError, match="'lang'"):
        backend.dataset_records(dataset_id, tags=["lang"])


# Concurrency --------------------------------------------------------------------------


@on_every_backend
def test_concurrent_deltas_each_make_their_own_version(
    backend: SqlBackend, dataset_id: str
) -> None:
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for number in range(5):
                backend.update_dataset_records(
                    dataset_id, inserts=[insert(f"{name}-{number}", [name, number])]
                )
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert backend.get_dataset(dataset_id).current_version == 20
    versions = backend.dataset_versions(dataset_id)
    assert [(v.version, v.records) for v in versions] == [(n, n) for n in range(21)]
