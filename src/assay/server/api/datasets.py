"""Datasets: create-or-get, find by name, records by version and tag, changes, deletes.

A dataset lives in a project (``/{project_id}/datasets/...``), except for the two routes
ddtrace calls without one: the CSV upload and the soft delete (``/datasets/...``).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile

from assay.errors import DatasetError, DatasetNotFoundError, NotFoundError
from assay.server.auth import Access, Caller
from assay.server.dependencies import Store
from assay.server.jsonapi import (
    JsonApiResponse,
    bad_parameter,
    decode_cursor,
    document,
    invalid,
    not_found,
    page_of,
    resource,
    slice_page,
)
from assay.server.wire import (
    AppendRecordsBody,
    BatchUpdateBody,
    DatasetBody,
    DeleteDatasetsBody,
    DeleteRecordsBody,
    InsertRecord,
    UpdateRecord,
    UpdateRecordsBody,
)
from assay.store.records import (
    UNCHANGED,
    DatasetInfo,
    RecordInsert,
    RecordUpdate,
    StoredRecord,
    TagOperations,
)
from assay.store.sql.backend import SqlBackend
from assay.store.sql.lookups import get_project

router = APIRouter(tags=["datasets"])

_CSV_FIELD_LIMIT = 10 * 1024 * 1024
"""As ddtrace reads CSV files: a cell may hold a large JSON document."""


def dataset_resource(info: DatasetInfo) -> dict[str, Any]:
    return resource(
        "datasets",
        info.id,
        {
            "name": info.name,
            "description": info.description,
            "project_id": info.project_id,
            "current_version": info.current_version,
            "dataset_type": "user",
            "created_at": info.created_at,
            "updated_at": info.updated_at,
        },
    )


def record_resource(record: StoredRecord, *, dataset_id: str, version: int) -> dict[str, Any]:
    return resource(
        "dataset_records",
        record.record_id,
        {
            "dataset_id": dataset_id,
            "version": version,
            "input": record.input_data,
            "expected_output": record.expected_output,
            "metadata": record.metadata,
            "tags": record.tags,
            "canonical_id": record.canonical_id,
        },
    )


def _check_project(store: SqlBackend, project_id: str, caller: Access) -> None:
    if not caller.sees(project_id) or get_project(store.engine, project_id) is None:
        raise not_found(f"No project with id {project_id!r}", parameter="project_id")


def _dataset(
    store: SqlBackend, dataset_id: str, caller: Access, project_id: str | None = None
) -> DatasetInfo:
    caller.check_dataset(store, dataset_id, parameter="dataset_id")
    try:
        info = store.get_dataset(dataset_id)
    except DatasetNotFoundError as error:
        raise not_found(str(error), parameter="dataset_id") from error
    if project_id is not None and info.project_id != project_id:
        _check_project(store, project_id, caller)  # an unknown project is named as such
        raise not_found(
            f"Dataset {dataset_id!r} is not in project {project_id!r}", parameter="dataset_id"
        )
    return info


def _erased(value: Any) -> Any:
    # ddtrace sends "" for an expected output set to None ("erase it").
    return None if value == "" else value


def _insert(record: InsertRecord) -> RecordInsert:
    return RecordInsert(
        record_id=record.id or uuid.uuid4().hex,
        input_data=record.input,
        expected_output=_erased(record.expected_output),
        metadata=record.metadata or {},
        tags=list(record.tags or []),
    )


def _update(record: UpdateRecord) -> RecordUpdate:
    operations = record.tag_operations
    return RecordUpdate(
        record_id=record.id,
        input_data=UNCHANGED if record.input is None else record.input,
        expected_output=(
            UNCHANGED if record.expected_output is None else _erased(record.expected_output)
        ),
        metadata=UNCHANGED if record.metadata is None else record.metadata,
        tag_operations=None
        if operations is None
        else TagOperations(
            add=tuple(operations.add or ()),
            remove=tuple(operations.remove or ()),
            replace=tuple(operations.set) if operations.set is not None else None,
        ),
    )


def _changed(ids: list[str], *, dataset_id: str, version: int) -> JsonApiResponse:
    """The records a change touched, as ddtrace reads them (version from ``data[0]``)."""
    return document(
        [
            resource(
                "dataset_records",
                record_id,
                {"dataset_id": dataset_id, "version": version, "canonical_id": record_id},
            )
            for record_id in dict.fromkeys(ids)
        ]
    )


# Datasets ----------------------------------------------------------------------------------


@router.post("/{project_id}/datasets", summary="Create a dataset, or get the one with this name")
def create_dataset(
    project_id: str, body: DatasetBody, store: Store, caller: Caller
) -> JsonApiResponse:
    attributes = body.data.attributes
    if not caller.sees(project_id):
        raise not_found(f"No project with id {project_id!r}", parameter="project_id")
    try:
        info = store.create_dataset(project_id, attributes.name, attributes.description or "")
    except NotFoundError as error:
        raise not_found(str(error), parameter="project_id") from error
    except DatasetError as error:
        raise invalid(str(error), pointer="/data/attributes/name") from error
    return document(dataset_resource(info))


@router.get("/{project_id}/datasets", summary="List a project's datasets, or find one by name")
def list_datasets(
    project_id: str,
    store: Store,
    caller: Caller,
    name: Annotated[str | None, Query(alias="filter[name]")] = None,
    limit: Annotated[int, Query(alias="page[limit]", ge=1, le=5000)] = 100,
    cursor: Annotated[str | None, Query(alias="page[cursor]")] = None,
) -> JsonApiResponse:
    _check_project(store, project_id, caller)
    if name is not None:
        found = store.find_dataset(project_id, name)
        infos = [found] if found is not None else []
    else:
        infos = store.list_datasets(project_id)
    page, after = page_of(infos, cursor=cursor, limit=limit)
    return document(
        [dataset_resource(info) for info in page], meta={"after": after} if after else None
    )


@router.get("/{project_id}/datasets/{dataset_id}", summary="Get a dataset")
def get_dataset(project_id: str, dataset_id: str, store: Store, caller: Caller) -> JsonApiResponse:
    return document(dataset_resource(_dataset(store, dataset_id, caller, project_id)))


@router.get("/{project_id}/datasets/{dataset_id}/versions", summary="A dataset's versions")
def dataset_versions(
    project_id: str, dataset_id: str, store: Store, caller: Caller
) -> JsonApiResponse:
    _dataset(store, dataset_id, caller, project_id)
    return document(
        [
            resource(
                "dataset_versions",
                str(version.version),
                {
                    "dataset_id": dataset_id,
                    "version": version.version,
                    "records": version.records,
                    "created_at": version.created_at,
                },
            )
            for version in store.dataset_versions(dataset_id)
        ]
    )


def _delete(
    store: SqlBackend, ids: list[str], *, caller: Access, project_id: str | None
) -> JsonApiResponse:
    # Every id is checked before any is deleted: a bad id deletes nothing.
    for index, dataset_id in enumerate(ids):
        pointer = f"/data/attributes/dataset_ids/{index}"
        caller.check_dataset(store, dataset_id, pointer=pointer)
        try:
            store.dataset_versions(dataset_id)  # finds deleted ones too: a no-op then
        except DatasetNotFoundError as error:
            raise not_found(str(error), pointer=pointer) from error
        if project_id is not None and not _in_project(store, dataset_id, project_id):
            detail = f"Dataset {dataset_id!r} is not in project {project_id!r}"
            raise not_found(detail, pointer=pointer)
    for dataset_id in ids:
        store.delete_dataset(dataset_id)
    return document([resource("datasets", dataset_id, {"deleted": True}) for dataset_id in ids])


def _in_project(store: SqlBackend, dataset_id: str, project_id: str) -> bool:
    try:
        return store.get_dataset(dataset_id).project_id == project_id
    except DatasetNotFoundError:
        return True  # already deleted: deleting again is a no-op


@router.post("/datasets/delete", summary="Soft-delete datasets")
def delete_datasets(body: DeleteDatasetsBody, store: Store, caller: Caller) -> JsonApiResponse:
    return _delete(store, body.data.attributes.dataset_ids, caller=caller, project_id=None)


@router.post("/{project_id}/datasets/delete", summary="Soft-delete datasets of a project")
def delete_project_datasets(
    project_id: str, body: DeleteDatasetsBody, store: Store, caller: Caller
) -> JsonApiResponse:
    _check_project(store, project_id, caller)
    ids = body.data.attributes.dataset_ids
    return _delete(store, ids, caller=caller, project_id=project_id)


# Records -----------------------------------------------------------------------------------


@router.get(
    "/{project_id}/datasets/{dataset_id}/records",
    summary="A dataset's records, of one version (default: current), filtered by tags",
)
def list_records(
    project_id: str,
    dataset_id: str,
    store: Store,
    caller: Caller,
    version: Annotated[int | None, Query(alias="filter[version]", ge=0)] = None,
    tags: Annotated[list[str], Query(alias="filter[tags]")] = [],  # noqa: B006 - FastAPI copies it
    limit: Annotated[int, Query(alias="page[limit]", ge=1, le=5000)] = 1000,
    cursor: Annotated[str | None, Query(alias="page[cursor]")] = None,
) -> JsonApiResponse:
    info = _dataset(store, dataset_id, caller, project_id)
    state = decode_cursor(cursor, fields={"offset": int, "version": int})
    # A cursor keeps reading the version its first page read, whatever is pushed meanwhile.
    chosen = (
        state["version"] if state else (version if version is not None else info.current_version)
    )
    if version is not None and version != chosen:
        raise bad_parameter(
            f"filter[version] {version} differs from the version {chosen} of page[cursor]",
            parameter="filter[version]",
        )
    if chosen > info.current_version:
        raise bad_parameter(
            f"Dataset {info.name!r} has no version {chosen}; its versions are 0 to "
            f"{info.current_version}",
            parameter="filter[version]",
        )
    try:
        records = store.dataset_records(dataset_id, version=chosen, tags=tags)
    except DatasetError as error:
        raise bad_parameter(str(error), parameter="filter[tags]") from error
    page, after = slice_page(
        records, offset=state["offset"] if state else 0, limit=limit, state={"version": chosen}
    )
    return document(
        [record_resource(record, dataset_id=dataset_id, version=chosen) for record in page],
        meta={"after": after} if after else None,
    )


@router.post(
    "/{project_id}/datasets/{dataset_id}/batch_update",
    summary="Insert, update and delete records in one change (what Dataset.push sends)",
)
def batch_update(
    project_id: str, dataset_id: str, body: BatchUpdateBody, store: Store, caller: Caller
) -> JsonApiResponse:
    _dataset(store, dataset_id, caller, project_id)
    attributes = body.data.attributes
    inserts = [_insert(record) for record in attributes.insert_records or []]
    updates = [_update(record) for record in attributes.update_records or []]
    version = store.update_dataset_records(
        dataset_id,
        inserts=inserts,
        updates=updates,
        deletes=attributes.delete_records or [],
        deduplicate=attributes.deduplicate,
        create_new_version=attributes.create_new_version,
    )
    ids = [record.record_id for record in inserts] + [record.record_id for record in updates]
    return _changed(ids, dataset_id=dataset_id, version=version)


@router.post("/{project_id}/datasets/{dataset_id}/records", summary="Append records")
def append_records(
    project_id: str, dataset_id: str, body: AppendRecordsBody, store: Store, caller: Caller
) -> JsonApiResponse:
    _dataset(store, dataset_id, caller, project_id)
    inserts = [_insert(record) for record in body.data.attributes.records]
    version = store.update_dataset_records(
        dataset_id, inserts=inserts, deduplicate=body.data.attributes.deduplicate
    )
    return _changed([r.record_id for r in inserts], dataset_id=dataset_id, version=version)


@router.patch("/{project_id}/datasets/{dataset_id}/records", summary="Update records")
def update_records(
    project_id: str, dataset_id: str, body: UpdateRecordsBody, store: Store, caller: Caller
) -> JsonApiResponse:
    _dataset(store, dataset_id, caller, project_id)
    updates = [_update(record) for record in body.data.attributes.records]
    version = store.update_dataset_records(dataset_id, updates=updates)
    return _changed([r.record_id for r in updates], dataset_id=dataset_id, version=version)


@router.post("/{project_id}/datasets/{dataset_id}/records/delete", summary="Delete records")
def delete_records(
    project_id: str, dataset_id: str, body: DeleteRecordsBody, store: Store, caller: Caller
) -> JsonApiResponse:
    _dataset(store, dataset_id, caller, project_id)
    version = store.update_dataset_records(dataset_id, deletes=body.data.attributes.record_ids)
    return document(resource("datasets", dataset_id, {"current_version": version}))


@router.post(
    "/datasets/{dataset_id}/records/upload",
    summary="Upload records as a CSV file (columns input, expected_output, metadata, id)",
)
def upload_records(
    dataset_id: str,
    store: Store,
    caller: Caller,
    file: Annotated[UploadFile, File(description="CSV; each cell of the first three is JSON")],
    deduplicate: Annotated[bool, Query()] = True,
) -> JsonApiResponse:
    _dataset(store, dataset_id, caller)
    rows = _read_csv(file)
    existing = {record.record_id for record in store.dataset_records(dataset_id)}
    # ddtrace uploads the whole dataset: records it already has are updates, not inserts.
    inserts = [row for row in rows if row.record_id not in existing]
    updates = [
        RecordUpdate(
            record_id=row.record_id,
            input_data=row.input_data,
            expected_output=row.expected_output,
            metadata=row.metadata,
        )
        for row in rows
        if row.record_id in existing
    ]
    version = store.update_dataset_records(
        dataset_id, inserts=inserts, updates=updates, deduplicate=deduplicate
    )
    return document(
        resource(
            "datasets",
            dataset_id,
            {"current_version": version, "inserted": len(inserts), "updated": len(updates)},
        )
    )


def _cell(text: str | None) -> Any:
    # ddtrace JSON-encodes every cell; a hand-made CSV may hold plain text.
    if text is None or text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _read_csv(file: UploadFile) -> list[RecordInsert]:
    try:
        text = file.file.read().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise invalid(f"The CSV file is not UTF-8 text: {error}", pointer="/file") from error
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "input" not in reader.fieldnames:
        raise invalid(
            f"The CSV header {reader.fieldnames!r} has no 'input' column; ddtrace writes "
            "input,expected_output,metadata,id",
            pointer="/file",
        )
    records = []
    try:
        for number, row in enumerate(reader, start=2):
            metadata = _cell(row.get("metadata"))
            if metadata is not None and not isinstance(metadata, dict):
                raise invalid(
                    f"Line {number} of the CSV file: metadata {metadata!r} is not a JSON object",
                    pointer="/file",
                )
            tags = _cell(row.get("tags"))
            records.append(
                RecordInsert(
                    record_id=row.get("id") or uuid.uuid4().hex,
                    input_data=_cell(row.get("input")),
                    expected_output=_erased(_cell(row.get("expected_output"))),
                    metadata=metadata or {},
                    tags=tags if isinstance(tags, list) else [],
                )
            )
    except csv.Error as error:
        raise invalid(f"The CSV file cannot be read: {error}", pointer="/file") from error
    return records
