"""Versioned datasets in SQL: create, change by delta, and read any past version.

Version V of a dataset is the set of ``dataset_records`` rows with ``version_from <= V``
and ``version_to`` NULL or greater than V; the live rows (``version_to`` NULL) are the
current version. A delta that adds or deletes records, or changes an input or expected
output, makes one new version; metadata and tag edits change the live row in place and
never make a version, as in Datadog's datasets.

Every function takes the engine first; ``SqlBackend`` delegates its dataset methods here.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from assay.errors import DatasetError, DatasetNotFoundError, NotFoundError
from assay.store.records import (
    JSON,
    UNCHANGED,
    DatasetInfo,
    DatasetVersionInfo,
    RecordInsert,
    RecordUpdate,
    StoredRecord,
    TagOperations,
)
from assay.store.sql.bulk import chunks
from assay.store.sql.tables import dataset_records as record_table
from assay.store.sql.tables import dataset_versions as version_table
from assay.store.sql.tables import datasets, projects

_MAX_NAME = 200
_MAX_RECORD_ID = 64


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone-aware columns; they are UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def content_hash(input_data: JSON, expected_output: JSON) -> str:
    """The sha256 of a record's input and expected output as canonical JSON.

    Two records with equal content have equal hashes whatever the key order of their
    dicts, which is what ``deduplicate`` compares.

    Raises ``TypeError`` or ``ValueError`` for a value that is not JSON (NaN included:
    PostgreSQL refuses it, so SQLite must too).
    """
    canonical = json.dumps(
        {"input": input_data, "expected_output": expected_output},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _record_hash(record_id: str, input_data: JSON, expected_output: JSON) -> str:
    try:
        return content_hash(input_data, expected_output)
    except (TypeError, ValueError) as error:
        raise DatasetError(
            f"Record {record_id!r} has an input or expected output that is not JSON ({error}); "
            "use only dicts, lists, strings, finite numbers, booleans and None"
        ) from error


def _check_metadata(record_id: str, metadata: Any) -> dict[str, JSON]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise DatasetError(
            f"Record {record_id!r} has metadata {metadata!r}; metadata must be a dict"
        )
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise DatasetError(
            f"Record {record_id!r} has metadata that is not JSON ({error}); "
            "use only dicts, lists, strings, finite numbers, booleans and None"
        ) from error
    return metadata


def check_tags(tags: Sequence[Any], *, where: str) -> list[str]:
    """The tags as a list, each checked to be a ``"key:value"`` string."""
    if isinstance(tags, str):
        raise DatasetError(f"Tags of {where} must be a list of 'key:value' strings, not {tags!r}")
    for tag in tags:
        if not isinstance(tag, str) or ":" not in tag:
            raise DatasetError(
                f"Tag {tag!r} of {where} is not a 'key:value' string; write it like 'lang:en'"
            )
    return list(tags)


def _check_record_id(record_id: Any) -> str:
    if not isinstance(record_id, str) or not record_id:
        raise DatasetError(f"Record id {record_id!r} must be a non-empty string")
    if len(record_id) > _MAX_RECORD_ID:
        raise DatasetError(
            f"Record id {record_id!r} is longer than {_MAX_RECORD_ID} characters; use a shorter id"
        )
    return record_id


def _name_list(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(one) for one in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


# Datasets ---------------------------------------------------------------------------


def _info(row: Row[Any]) -> DatasetInfo:
    return DatasetInfo(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        description=row.description,
        current_version=row.current_version,
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
    )


def create_dataset(
    engine: Engine, project_id: str, name: str, description: str = ""
) -> DatasetInfo:
    """Create a dataset at version 0, or return the live one with this name unchanged."""
    if not isinstance(name, str) or not name.strip():
        raise DatasetError(f"Dataset name {name!r} is empty; give the dataset a name")
    if len(name) > _MAX_NAME:
        raise DatasetError(
            f"Dataset name {name[:40]!r}... is {len(name)} characters long; use at most {_MAX_NAME}"
        )
    found = find_dataset(engine, project_id, name)
    if found is not None:
        return found
    dataset_id = str(uuid.uuid4())
    now = _now()
    try:
        with engine.begin() as connection:
            project = connection.execute(
                select(projects.c.id).where(projects.c.id == project_id)
            ).first()
            if project is None:
                raise NotFoundError(
                    f"No project with id {project_id!r}; create it first with ensure_project(name)"
                )
            connection.execute(
                insert(datasets).values(
                    id=dataset_id,
                    project_id=project_id,
                    name=name,
                    description=description,
                    current_version=0,
                    created_at=now,
                    updated_at=now,
                    deleted_at=None,
                )
            )
            connection.execute(
                insert(version_table).values(dataset_id=dataset_id, version=0, created_at=now)
            )
    except IntegrityError:
        # Another writer created the same name between our look-up and our insert: the
        # live-name unique index refused ours, and create-or-get means theirs is the answer.
        raced = find_dataset(engine, project_id, name)
        if raced is None:
            raise
        return raced
    return get_dataset(engine, dataset_id)


def find_dataset(engine: Engine, project_id: str, name: str) -> DatasetInfo | None:
    """The live dataset with this name in the project, or None."""
    with engine.connect() as connection:
        row = connection.execute(
            select(datasets).where(
                datasets.c.project_id == project_id,
                datasets.c.name == name,
                datasets.c.deleted_at.is_(None),
            )
        ).first()
    return _info(row) if row is not None else None


def _dataset_row(connection: Connection, dataset_id: str, *, include_deleted: bool) -> Row[Any]:
    row = connection.execute(select(datasets).where(datasets.c.id == dataset_id)).first()
    if row is None:
        raise DatasetNotFoundError(
            f"No dataset with id {dataset_id!r}; list them with list_datasets()"
        )
    if row.deleted_at is not None and not include_deleted:
        raise DatasetNotFoundError(
            f"Dataset {row.name!r} (id {dataset_id!r}) was deleted; "
            "create a new one with create_dataset()"
        )
    return row


def get_dataset(engine: Engine, dataset_id: str) -> DatasetInfo:
    """The live dataset with this id; raises ``DatasetNotFoundError`` if none (or deleted)."""
    with engine.connect() as connection:
        return _info(_dataset_row(connection, dataset_id, include_deleted=False))


def list_datasets(engine: Engine, project_id: str | None = None) -> list[DatasetInfo]:
    """Live datasets, of one project or of all, ordered by name then creation time."""
    query = select(datasets).where(datasets.c.deleted_at.is_(None))
    if project_id is not None:
        query = query.where(datasets.c.project_id == project_id)
    query = query.order_by(datasets.c.name, datasets.c.created_at, datasets.c.id)
    with engine.connect() as connection:
        return [_info(row) for row in connection.execute(query)]


def delete_dataset(engine: Engine, dataset_id: str) -> None:
    """Soft delete: the dataset disappears from look-ups, its rows and versions stay.

    Experiments pinned to it can still read their version. Deleting twice is a no-op.
    """
    with engine.begin() as connection:
        row = _dataset_row(connection, dataset_id, include_deleted=True)
        if row.deleted_at is None:
            connection.execute(
                update(datasets).where(datasets.c.id == dataset_id).values(deleted_at=_now())
            )


# Reading versions -------------------------------------------------------------------


def visible_at(version: int) -> Any:
    """The condition on ``dataset_records`` of the rows that make up ``version``."""
    return and_(
        record_table.c.version_from <= version,
        or_(record_table.c.version_to.is_(None), record_table.c.version_to > version),
    )


def dataset_records(
    engine: Engine, dataset_id: str, *, version: int | None = None, tags: Sequence[str] = ()
) -> list[StoredRecord]:
    """The records of one version (default: the current one), in insertion order.

    ``tags`` keeps only the records that carry every one of these ``"key:value"`` tags.
    Soft-deleted datasets can still be read, so experiments pinned to them stay readable.
    """
    wanted = check_tags(tags, where="the tags filter")
    with engine.connect() as connection:
        dataset = _dataset_row(connection, dataset_id, include_deleted=True)
        current = dataset.current_version
        chosen = current if version is None else version
        if isinstance(chosen, bool) or not isinstance(chosen, int) or not 0 <= chosen <= current:
            raise DatasetError(
                f"Dataset {dataset.name!r} has no version {chosen!r}; "
                f"its versions are 0 to {current}"
            )
        rows = connection.execute(
            select(record_table)
            .where(record_table.c.dataset_id == dataset_id, visible_at(chosen))
            .order_by(record_table.c.position, record_table.c.pk)
        ).all()
    # Tags are filtered here and not in SQL: JSON containment differs between SQLite and
    # PostgreSQL, and the version condition has already narrowed the rows.
    return [
        StoredRecord(
            record_id=row.record_id,
            input_data=row.input,
            expected_output=row.expected_output,
            metadata=row.metadata,
            tags=row.tags,
            canonical_id=row.canonical_id,
        )
        for row in rows
        if all(tag in row.tags for tag in wanted)
    ]


def record_order(connection: Connection, dataset_id: str, version: int) -> list[str]:
    """The ids of one version's records in their order; none for an unknown dataset.

    Takes the caller's connection: HTTP ingestion asks while it holds one, and a second
    checkout per request would let 16 concurrent requests exhaust the pool and wait on
    each other until the pool times out.
    """
    query = (
        select(record_table.c.record_id)
        .where(record_table.c.dataset_id == dataset_id, visible_at(version))
        .order_by(record_table.c.position, record_table.c.pk)
    )
    return list(connection.execute(query).scalars())


def dataset_versions(engine: Engine, dataset_id: str) -> list[DatasetVersionInfo]:
    """Every version of a dataset, oldest first, with its record count."""
    records = record_table.alias("records")
    visible = and_(
        records.c.dataset_id == version_table.c.dataset_id,
        records.c.version_from <= version_table.c.version,
        or_(records.c.version_to.is_(None), records.c.version_to > version_table.c.version),
    )
    query = (
        select(version_table.c.version, version_table.c.created_at, func.count(records.c.pk))
        .select_from(version_table.outerjoin(records, visible))
        .where(version_table.c.dataset_id == dataset_id)
        .group_by(version_table.c.version, version_table.c.created_at)
        .order_by(version_table.c.version)
    )
    with engine.connect() as connection:
        _dataset_row(connection, dataset_id, include_deleted=True)
        rows = connection.execute(query).all()
    return [
        DatasetVersionInfo(
            version=row.version,
            records=int(row[2]),
            created_at=_aware(row.created_at) if row.created_at is not None else None,
        )
        for row in rows
    ]


# Changing records -------------------------------------------------------------------


@dataclass(slots=True)
class _Stored:
    """A record as the delta leaves it; ``original_*`` is what it was before the delta."""

    pk: int
    record_id: str
    position: int
    version_from: int
    canonical_id: str | None
    input: JSON
    expected_output: JSON
    metadata: dict[str, JSON]
    tags: list[str]
    content_hash: str
    original_hash: str = ""
    original_annotations: tuple[dict[str, JSON], list[str]] = ({}, [])

    def row(self, dataset_id: str, version: int) -> dict[str, Any]:
        """The columns of a new ``dataset_records`` row valid from ``version``."""
        return {
            "dataset_id": dataset_id,
            "record_id": self.record_id,
            "position": self.position,
            "version_from": version,
            "version_to": None,
            "input": self.input,
            "expected_output": self.expected_output,
            "metadata": self.metadata,
            "tags": self.tags,
            "content_hash": self.content_hash,
            "canonical_id": self.canonical_id,
        }


@dataclass(slots=True)
class _Plan:
    """What one delta does, worked out before anything is written."""

    deleted: list[tuple[int, int]] = field(default_factory=list)  # (pk, version_from)
    content_changed: list[_Stored] = field(default_factory=list)
    annotations_changed: list[_Stored] = field(default_factory=list)
    inserted: list[_Stored] = field(default_factory=list)  # positions given when written

    @property
    def makes_version(self) -> bool:
        return bool(self.deleted or self.content_changed or self.inserted)

    @property
    def is_empty(self) -> bool:
        return not (self.makes_version or self.annotations_changed)


def _apply_tag_operations(tags: list[str], operations: TagOperations, record_id: str) -> list[str]:
    where = f"record {record_id!r}"
    if operations.replace is not None:
        # The client folds later adds and removes into a pending replace, so a replace
        # here is the final set.
        return list(dict.fromkeys(check_tags(operations.replace, where=where)))
    result = list(tags)
    for tag in check_tags(operations.add, where=where):
        if tag not in result:
            result.append(tag)
    removed = set(check_tags(operations.remove, where=where))
    return [tag for tag in result if tag not in removed]


def _load_updated(connection: Connection, dataset_id: str, ids: list[str]) -> dict[str, _Stored]:
    loaded: dict[str, _Stored] = {}
    for chunk in chunks(ids):
        rows = connection.execute(
            select(record_table).where(
                record_table.c.dataset_id == dataset_id,
                record_table.c.version_to.is_(None),
                record_table.c.record_id.in_(chunk),
            )
        )
        for row in rows:
            loaded[row.record_id] = _Stored(
                pk=row.pk,
                record_id=row.record_id,
                position=row.position,
                version_from=row.version_from,
                canonical_id=row.canonical_id,
                input=row.input,
                expected_output=row.expected_output,
                metadata=row.metadata,
                tags=list(row.tags),
                content_hash=row.content_hash,
                original_hash=row.content_hash,
                original_annotations=(row.metadata, list(row.tags)),
            )
    return loaded


def _plan(
    connection: Connection,
    dataset: Row[Any],
    inserts: Sequence[RecordInsert],
    updates: Sequence[RecordUpdate],
    deletes: Sequence[str],
    deduplicate: bool,
) -> _Plan:
    dataset_id = dataset.id
    # Only the light columns of every live row: enough to check ids and deduplicate.
    live: dict[str, tuple[int, int, str]] = {
        row.record_id: (row.pk, row.version_from, row.content_hash)
        for row in connection.execute(
            select(
                record_table.c.pk,
                record_table.c.record_id,
                record_table.c.version_from,
                record_table.c.content_hash,
            ).where(
                record_table.c.dataset_id == dataset_id,
                record_table.c.version_to.is_(None),
            )
        )
    }
    where = f"in dataset {dataset.name!r} (current version {dataset.current_version})"
    plan = _Plan()

    deleted_ids = list(dict.fromkeys(_check_record_id(record_id) for record_id in deletes))
    missing = [record_id for record_id in deleted_ids if record_id not in live]
    if missing:
        raise DatasetError(
            f"Cannot delete record {_name_list(missing)}: no such record {where}; "
            "pull the dataset again to see its records"
        )
    plan.deleted = [(live[record_id][0], live[record_id][1]) for record_id in deleted_ids]
    deleted = set(deleted_ids)

    # A record both updated and deleted in one delta is deleted: the client drops
    # pending updates of a record it deletes, and so does the store.
    kept_updates = [one for one in updates if _check_record_id(one.record_id) not in deleted]
    missing = list(dict.fromkeys(u.record_id for u in kept_updates if u.record_id not in live))
    if missing:
        raise DatasetError(
            f"Cannot update record {_name_list(missing)}: no such record {where}; "
            "add it with an insert instead"
        )
    working = _load_updated(
        connection, dataset_id, list(dict.fromkeys(u.record_id for u in kept_updates))
    )
    for change in kept_updates:
        stored = working[change.record_id]
        if change.input_data is not UNCHANGED:
            stored.input = change.input_data
        if change.expected_output is not UNCHANGED:
            stored.expected_output = change.expected_output
        if change.metadata is not UNCHANGED:
            stored.metadata = _check_metadata(change.record_id, change.metadata)
        if change.tag_operations is not None:
            stored.tags = _apply_tag_operations(
                stored.tags, change.tag_operations, change.record_id
            )
    for stored in working.values():
        stored.content_hash = _record_hash(stored.record_id, stored.input, stored.expected_output)
        if stored.content_hash != stored.original_hash:
            plan.content_changed.append(stored)
        elif (stored.metadata, stored.tags) != stored.original_annotations:
            plan.annotations_changed.append(stored)

    # Deduplicate against the records as they stand after this delta's deletes and
    # updates, and against earlier inserts of the same delta.
    # A counter, not a set: without deduplicate, several live records may share content.
    hashes = Counter(entry[2] for record_id, entry in live.items() if record_id not in deleted)
    hashes.subtract(stored.original_hash for stored in plan.content_changed)
    hashes.update(stored.content_hash for stored in plan.content_changed)
    new_ids: set[str] = set()
    for record in inserts:
        record_id = _check_record_id(record.record_id)
        if (record_id in live and record_id not in deleted) or record_id in new_ids:
            raise DatasetError(
                f"Cannot insert record {record_id!r}: a record with this id already exists "
                f"{where}; give it another id or update the existing record"
            )
        new_ids.add(record_id)
        digest = _record_hash(record_id, record.input_data, record.expected_output)
        if deduplicate and hashes[digest] > 0:
            continue
        hashes[digest] += 1
        plan.inserted.append(
            _Stored(
                pk=0,
                record_id=record_id,
                position=0,
                version_from=0,
                # Record ids are stable across versions here, so the id is canonical.
                canonical_id=record_id,
                input=record.input_data,
                expected_output=record.expected_output,
                metadata=_check_metadata(record_id, record.metadata),
                tags=check_tags(record.tags, where=f"record {record_id!r}"),
                content_hash=digest,
            )
        )
    return plan


def _rewrite_in_place(connection: Connection, rows: Sequence[_Stored]) -> None:
    if not rows:
        return
    # Bound names differ from the column names: SQLAlchemy reserves those for the SET.
    statement = (
        update(record_table)
        .where(record_table.c.pk == bindparam("row_pk"))
        .values(
            input=bindparam("new_input"),
            expected_output=bindparam("new_expected_output"),
            metadata=bindparam("new_metadata"),
            tags=bindparam("new_tags"),
            content_hash=bindparam("new_content_hash"),
        )
    )
    connection.execute(
        statement,
        [
            {
                "row_pk": row.pk,
                "new_input": row.input,
                "new_expected_output": row.expected_output,
                "new_metadata": row.metadata,
                "new_tags": row.tags,
                "new_content_hash": row.content_hash,
            }
            for row in rows
        ],
    )


def _close(connection: Connection, pks: Sequence[int], version: int) -> None:
    for chunk in chunks(pks):
        connection.execute(
            update(record_table).where(record_table.c.pk.in_(chunk)).values(version_to=version)
        )


def _write(connection: Connection, dataset_id: str, plan: _Plan, target: int) -> None:
    # A row that first appeared in the target version was never seen by any other
    # version, so it is removed or rewritten rather than closed as an empty range.
    _close(connection, [pk for pk, since in plan.deleted if since != target], target)
    for chunk in chunks([pk for pk, since in plan.deleted if since == target]):
        connection.execute(delete(record_table).where(record_table.c.pk.in_(chunk)))

    fresh = [row for row in plan.content_changed if row.version_from == target]
    replaced = [row for row in plan.content_changed if row.version_from != target]
    _rewrite_in_place(connection, fresh + plan.annotations_changed)
    _close(connection, [row.pk for row in replaced], target)

    new_rows = [row.row(dataset_id, target) for row in replaced]
    if plan.inserted:
        last = connection.execute(
            select(func.max(record_table.c.position)).where(record_table.c.dataset_id == dataset_id)
        ).scalar_one()
        first = 0 if last is None else int(last) + 1
        for offset, record in enumerate(plan.inserted):
            record.position = first + offset
            new_rows.append(record.row(dataset_id, target))
    if new_rows:
        connection.execute(insert(record_table), new_rows)


def update_dataset_records(
    engine: Engine,
    dataset_id: str,
    *,
    inserts: Sequence[RecordInsert] = (),
    updates: Sequence[RecordUpdate] = (),
    deletes: Sequence[str] = (),
    deduplicate: bool = True,
    create_new_version: bool = True,
) -> int:
    """Apply one delta in one transaction; returns the current version afterwards.

    Inserts, deletes and input or expected-output changes make one new version when
    ``create_new_version`` (else they change the current version); metadata and tag
    edits change records in place. With ``deduplicate``, an insert whose input and
    expected output equal a live record's is skipped. A delta that changes nothing
    returns the current version and writes nothing.
    """
    with engine.begin() as connection:
        # A no-op write first: it takes the dataset's row lock on PostgreSQL and the
        # write lock on SQLite, so concurrent deltas queue instead of interleaving.
        connection.execute(
            update(datasets)
            .where(datasets.c.id == dataset_id)
            .values(current_version=datasets.c.current_version)
        )
        dataset = _dataset_row(connection, dataset_id, include_deleted=False)
        current: int = dataset.current_version
        plan = _plan(connection, dataset, inserts, updates, deletes, deduplicate)
        if plan.is_empty:
            return current
        now = _now()
        target = current + 1 if plan.makes_version and create_new_version else current
        if target != current:
            connection.execute(
                insert(version_table).values(dataset_id=dataset_id, version=target, created_at=now)
            )
        _write(connection, dataset_id, plan, target)
        connection.execute(
            update(datasets)
            .where(datasets.c.id == dataset_id)
            .values(current_version=target, updated_at=now)
        )
    return target
