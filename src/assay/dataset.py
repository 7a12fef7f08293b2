"""Datasets: records with inputs and expected outputs, versioned by the store.

``Dataset`` mirrors ``ddtrace.llmobs.Dataset`` (4.16): a sequence of ``DatasetRecord``
dicts, edited locally and sent to the store as one delta by ``push()``. Users get one from
``LLMObs.create_dataset`` / ``LLMObs.pull_dataset`` and friends, which call the functions
at the bottom of this module with the backend that ``LLMObs.enable`` opened.

Example::

    dataset = LLMObs.create_dataset(
        dataset_name="capitals",
        records=[{"input_data": {"country": "France"}, "expected_output": "Paris"}],
    )
    dataset.append({"input_data": {"country": "Peru"}, "expected_output": "Lima"})
    dataset.push()  # version 2
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, overload

from assay import config
from assay.errors import DatasetError, DatasetNotFoundError
from assay.store.backend import Backend
from assay.store.records import (
    JSON,
    DatasetInfo,
    ProjectInfo,
    RecordInsert,
    RecordUpdate,
    StoredRecord,
    TagOperations,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Dataset", "DatasetRecord", "Project"]

_NEW_RECORD_KEYS = ("input_data", "id", "expected_output", "metadata", "tags")
_UPDATE_KEYS = ("input_data", "expected_output", "metadata", "tags")
# Keys of a ``DatasetRecord`` read from another dataset: accepted so that records can be
# copied (``other.extend(ds[:])``), and ignored, since ids are this dataset's own.
_IGNORED_KEYS = ("record_id", "canonical_id")


class Project(TypedDict):
    """The project a dataset belongs to, as ddtrace shapes it."""

    name: str
    _id: str


class DatasetRecord(TypedDict):
    """One record of a dataset, as ``dataset[i]`` returns it."""

    record_id: str
    """Stable id of the record across versions."""
    input_data: JSON
    """What the task receives."""
    expected_output: JSON
    """What the task should produce; None when the record has none."""
    metadata: dict[str, JSON]
    """Free-form facts about the record, passed to evaluators."""
    tags: list[str]
    """``"key:value"`` strings; ``pull_dataset(tags=...)`` filters on them."""
    canonical_id: str | None
    """Id shared by every version of the record (equal to ``record_id`` in Assay)."""


class _TagEdit:
    """Pending tag operations of one stored record, folded as ddtrace folds them.

    Adding cancels a pending remove of the same tag and the reverse; after a replace,
    adds and removes edit the replacing set, so the replace alone is sent.
    """

    def __init__(self) -> None:
        self.add: list[str] = []
        self.remove: list[str] = []
        self.replace: list[str] | None = None

    def change(self, tags: Sequence[str], *, adding: bool) -> None:
        if self.replace is not None:
            kept = [tag for tag in self.replace if tag not in tags]
            self.replace = kept + list(tags) if adding else kept
            return
        grow, shrink = (self.add, self.remove) if adding else (self.remove, self.add)
        grow += [tag for tag in tags if tag not in grow]
        shrink[:] = [tag for tag in shrink if tag not in tags]

    def operations(self) -> TagOperations:
        replace = None if self.replace is None else tuple(dict.fromkeys(self.replace))
        return TagOperations(add=tuple(self.add), remove=tuple(self.remove), replace=replace)


def _check_tags(tags: Any, where: str) -> list[str]:
    if isinstance(tags, str) or not isinstance(tags, Sequence):
        raise DatasetError(f"Tags of {where} must be a list of 'key:value' strings, not {tags!r}")
    for tag in tags:
        if not isinstance(tag, str) or ":" not in tag:
            raise DatasetError(
                f"Tag {tag!r} of {where} is not a 'key:value' string; write it like 'lang:en'"
            )
    return list(tags)


def _check_metadata(metadata: Any, where: str) -> dict[str, JSON]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise DatasetError(f"Metadata of {where} must be a dict, not {metadata!r}")
    return dict(metadata)


def _check_keys(record: Any, allowed: Sequence[str], where: str) -> None:
    if not isinstance(record, Mapping):
        raise DatasetError(f"{where.capitalize()} must be a dict, not {record!r}")
    unknown = [key for key in record if key not in allowed and key not in _IGNORED_KEYS]
    if unknown:
        raise DatasetError(
            f"Unknown key {unknown[0]!r} in {where}; the keys are {', '.join(allowed)}"
        )


def _new_record(record: Mapping[str, Any]) -> DatasetRecord:
    """A checked ``DatasetRecord`` for a record given to ``append``, id generated if absent."""
    _check_keys(record, _NEW_RECORD_KEYS, "a new record")
    if "input_data" not in record:
        raise DatasetError(
            f"Record {dict(record)!r} has no 'input_data'; every record needs one, "
            "e.g. {'input_data': {'question': ...}}"
        )
    record_id = record.get("id", uuid.uuid4().hex)
    if not isinstance(record_id, str) or not record_id:
        raise DatasetError(f"Record id {record_id!r} must be a non-empty string")
    where = f"record {record_id!r}"
    if record["input_data"] is None:
        raise DatasetError(f"The input_data of {where} is None; give it a value")
    return DatasetRecord(
        record_id=record_id,
        input_data=record["input_data"],
        expected_output=record.get("expected_output"),
        metadata=_check_metadata(record.get("metadata"), where),
        tags=_check_tags(record.get("tags", []), where),
        canonical_id=None,
    )


def _from_stored(record: StoredRecord) -> DatasetRecord:
    return DatasetRecord(
        record_id=record.record_id,
        input_data=record.input_data,
        expected_output=record.expected_output,
        metadata=dict(record.metadata),
        tags=list(record.tags),
        canonical_id=record.canonical_id,
    )


class Dataset:
    """A dataset at one version: a sequence of records plus local edits not yet pushed.

    Get one from ``LLMObs.create_dataset``, ``LLMObs.pull_dataset`` or the
    ``create_dataset_from_*`` loaders rather than constructing it.
    """

    name: str
    description: str
    project: Project
    filter_tags: list[str]

    def __init__(
        self,
        backend: Backend,
        info: DatasetInfo,
        project: Project,
        records: Sequence[StoredRecord],
        *,
        version: int | None = None,
        filter_tags: Sequence[str] | None = None,
    ) -> None:
        self.name = info.name
        self.description = info.description
        self.project = project
        self.filter_tags = list(filter_tags or [])
        # The underscored names are ddtrace's, kept for code written against its internals.
        self._backend = backend
        self._id = info.id
        self._latest_version = info.current_version
        self._version = info.current_version if version is None else version
        self._records: list[DatasetRecord] = [_from_stored(record) for record in records]
        self._record_ids = {record["record_id"] for record in self._records}
        self._new_records: dict[str, DatasetRecord] = {}
        self._updates: dict[str, dict[str, Any]] = {}
        self._tag_edits: dict[str, _TagEdit] = {}
        self._deleted_record_ids: list[str] = []

    # Identity ---------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The dataset's id in the store."""
        return self._id

    @property
    def url(self) -> str:
        """The dataset's page in ``assay serve``."""
        return f"{config.server_url(self._backend.location)}/llm/datasets/{self._id}"

    @property
    def version(self) -> int:
        """The version these records are (the latest one after ``push()``)."""
        return self._version

    @property
    def latest_version(self) -> int:
        """The newest version of the dataset known to this object."""
        return self._latest_version

    @property
    def has_unpushed_changes(self) -> bool:
        """True when local edits wait for ``push()``."""
        return bool(
            self._new_records or self._updates or self._tag_edits or self._deleted_record_ids
        )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, id={self._id!r}, version={self._version}, "
            f"records={len(self._records)})"
        )

    # Sequence ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> DatasetRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[DatasetRecord]: ...

    def __getitem__(self, index: int | slice) -> DatasetRecord | list[DatasetRecord]:
        return self._records[index]

    def __iter__(self) -> Iterator[DatasetRecord]:
        return iter(self._records)

    # Local edits ------------------------------------------------------------------------

    def append(self, record: Mapping[str, Any]) -> None:
        """Add a record: ``{"input_data", "id"?, "expected_output"?, "metadata"?, "tags"?}``.

        The id defaults to a fresh ``uuid4().hex``; an id already in the dataset is a
        ``ValueError``. The record is stored by the next ``push()``.
        """
        new = _new_record(record)
        self._add(new)

    def _add(self, new: DatasetRecord) -> None:
        record_id = new["record_id"]
        if record_id in self._record_ids:
            raise DatasetError(
                f"Dataset {self.name!r} already has a record with id {record_id!r}; "
                "give the new record another 'id' or leave it out to get a generated one"
            )
        self._new_records[record_id] = new
        self._records.append(new)
        self._record_ids.add(record_id)

    def extend(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append every record, checking all of them before adding any."""
        checked = checked_records(
            [(f"Record {number}", record) for number, record in enumerate(records, start=1)]
        )
        for record in checked:
            if record["record_id"] in self._record_ids:
                self._add(record)  # raises, naming the id, before anything is added
        for record in checked:
            self._add(record)

    def update(self, index: int, record: Mapping[str, Any]) -> None:
        """Change the record at ``index``: any of input_data, expected_output, metadata, tags.

        ``tags`` replaces the record's tags; ``expected_output=None`` and ``metadata=None``
        erase them.
        """
        _check_keys(record, _UPDATE_KEYS, "an update")
        if not any(key in record for key in _UPDATE_KEYS):
            raise DatasetError(
                "Invalid update: give at least one of input_data, expected_output, "
                f"metadata or tags, not {dict(record)!r}"
            )
        current = self._records[index]
        where = f"record {current['record_id']!r}"
        changes: dict[str, Any] = {}
        if "input_data" in record:
            if record["input_data"] is None:
                raise DatasetError(f"The input_data of {where} cannot be set to None")
            changes["input_data"] = record["input_data"]
        if "expected_output" in record:
            changes["expected_output"] = record["expected_output"]
        if "metadata" in record:
            changes["metadata"] = _check_metadata(record["metadata"], where)
        tags = _check_tags(record["tags"], where) if "tags" in record else None
        current.update(changes)  # type: ignore[typeddict-item]
        if current["record_id"] not in self._new_records:
            self._updates.setdefault(current["record_id"], {}).update(changes)
        if tags is not None:
            self.replace_tags(index, tags)

    def delete(self, index: int) -> None:
        """Remove the record at ``index`` (from the store at the next ``push()``)."""
        record_id = self._records.pop(index)["record_id"]
        self._record_ids.discard(record_id)
        if self._new_records.pop(record_id, None) is not None:
            return
        self._updates.pop(record_id, None)
        self._tag_edits.pop(record_id, None)
        self._deleted_record_ids.append(record_id)

    def add_tags(self, index: int, tags: Sequence[str]) -> None:
        """Add ``"key:value"`` tags to the record at ``index``."""
        record, checked = self._tag_target(index, tags)
        record["tags"] += [tag for tag in checked if tag not in record["tags"]]
        if (edit := self._tag_edit(record)) is not None:
            edit.change(checked, adding=True)

    def remove_tags(self, index: int, tags: Sequence[str]) -> None:
        """Remove tags from the record at ``index``; absent tags are ignored."""
        record, checked = self._tag_target(index, tags)
        record["tags"] = [tag for tag in record["tags"] if tag not in checked]
        if (edit := self._tag_edit(record)) is not None:
            edit.change(checked, adding=False)

    def replace_tags(self, index: int, tags: Sequence[str]) -> None:
        """Make ``tags`` the record's only tags."""
        record, checked = self._tag_target(index, tags)
        record["tags"] = list(dict.fromkeys(checked))
        if (edit := self._tag_edit(record)) is not None:
            edit.replace, edit.add, edit.remove = list(checked), [], []

    def _tag_target(self, index: int, tags: Sequence[str]) -> tuple[DatasetRecord, list[str]]:
        record = self._records[index]
        return record, _check_tags(tags, f"record {record['record_id']!r}")

    def _tag_edit(self, record: DatasetRecord) -> _TagEdit | None:
        # A record not pushed yet is sent whole, so its tags need no operations.
        if record["record_id"] in self._new_records:
            return None
        return self._tag_edits.setdefault(record["record_id"], _TagEdit())

    # Push -------------------------------------------------------------------------------

    def push(
        self,
        deduplicate: bool = True,
        create_new_version: bool = True,
        bulk_upload: bool | None = None,
    ) -> None:
        """Send the local edits to the store as one delta, then reload the records.

        Adding or deleting records, or changing an input or expected output, makes one
        new version (or, with ``create_new_version=False``, changes the current one);
        metadata and tag edits never do. With ``deduplicate``, a new record whose input
        and expected output equal an existing record's is skipped. Afterwards the records
        are exactly those of the latest version (within ``filter_tags``).
        ``bulk_upload`` is accepted for ddtrace compatibility and changes nothing.
        """
        del bulk_upload  # one local transaction is already the fastest path
        edits = {record_id: edit.operations() for record_id, edit in self._tag_edits.items()}
        updates = [
            # Pending fields are keyed by RecordUpdate's own names; absent ones stay UNCHANGED.
            RecordUpdate(
                record_id=record_id,
                **self._updates.get(record_id, {}),
                tag_operations=edits.get(record_id),
            )
            for record_id in dict.fromkeys([*self._updates, *edits])
        ]
        inserts = [
            RecordInsert(
                record_id=record["record_id"],
                input_data=record["input_data"],
                expected_output=record["expected_output"],
                metadata=record["metadata"],
                tags=list(record["tags"]),
            )
            for record in self._new_records.values()
        ]
        version = self._backend.update_dataset_records(
            self._id,
            inserts=inserts,
            updates=updates,
            deletes=list(self._deleted_record_ids),
            deduplicate=deduplicate,
            create_new_version=create_new_version,
        )
        # Reloading is what makes the object true to the store: deduplicated inserts
        # vanish, and a pushed object always holds exactly the version it reports.
        stored = self._backend.dataset_records(self._id, version=version, tags=self.filter_tags)
        self._records = [_from_stored(record) for record in stored]
        self._record_ids = {record["record_id"] for record in self._records}
        self._version = self._latest_version = version
        self._new_records, self._updates, self._tag_edits = {}, {}, {}
        self._deleted_record_ids = []

    # Export -----------------------------------------------------------------------------

    def as_dataframe(self) -> pd.DataFrame:
        """The records as a pandas DataFrame with two-level columns.

        Columns are ``("input_data", key)``, ``("expected_output", key)``,
        ``("metadata", key)`` and ``("tags", "")``, in first-seen order; a value that is
        not a dict sits under the sub-column ``""``.
        """
        try:
            import pandas as pd
        except ImportError as error:
            raise ImportError(
                "Dataset.as_dataframe() needs pandas; install it with `pip install 'assay[pandas]'`"
            ) from error
        # Dicts as ordered sets: columns appear in the order their keys are first seen.
        groups: dict[str, dict[str, None]] = {
            "input_data": {},
            "expected_output": {},
            "metadata": {},
        }
        rows: list[dict[tuple[str, str], Any]] = []
        for record in self._records:
            row: dict[tuple[str, str], Any] = {("tags", ""): list(record["tags"])}
            for group, seen in groups.items():
                value = record[group]  # type: ignore[literal-required]
                for key, item in value.items() if isinstance(value, dict) else [("", value)]:
                    seen.setdefault(str(key))
                    row[(group, str(key))] = item
            rows.append(row)
        columns = [(group, key) for group, keys in groups.items() for key in keys]
        columns.append(("tags", ""))
        return pd.DataFrame(
            [[row.get(column) for column in columns] for row in rows],
            columns=pd.MultiIndex.from_tuples(columns),
        )


# Entry points used by the LLMObs facade -------------------------------------------------


def create_and_push(
    backend: Backend,
    project: ProjectInfo,
    name: str,
    description: str,
    records: Sequence[DatasetRecord],
    deduplicate: bool,
) -> Dataset:
    info = backend.create_dataset(project.id, name, description)
    # Create-or-get: an existing dataset keeps its records, and the new ones join them.
    dataset = Dataset(
        backend, info, Project(name=project.name, _id=project.id), backend.dataset_records(info.id)
    )
    for record in records:
        dataset._add(record)
    if records:
        dataset.push(deduplicate=deduplicate)
    return dataset


def checked_records(labelled: Sequence[tuple[str, Mapping[str, Any]]]) -> list[DatasetRecord]:
    """Every record checked, each error prefixed with its label (a line, a row)."""
    checked: list[DatasetRecord] = []
    seen: set[str] = set()
    for label, record in labelled:
        try:
            new = _new_record(record)
        except DatasetError as error:
            raise DatasetError(f"{label}: {error}") from error
        if new["record_id"] in seen:
            raise DatasetError(f"{label}: record id {new['record_id']!r} appears twice")
        seen.add(new["record_id"])
        checked.append(new)
    return checked


def create_dataset(
    backend: Backend,
    project: ProjectInfo,
    dataset_name: str,
    *,
    description: str = "",
    records: Sequence[Mapping[str, Any]] | None = None,
    deduplicate: bool = True,
) -> Dataset:
    """Create the dataset (or get the existing one) and push ``records`` as one delta."""
    labelled = [(f"Record {n}", record) for n, record in enumerate(records or [], start=1)]
    checked = checked_records(labelled)
    return create_and_push(backend, project, dataset_name, description, checked, deduplicate)


def pull_dataset(
    backend: Backend,
    project: ProjectInfo,
    dataset_name: str,
    *,
    version: int | None = None,
    tags: Sequence[str] | None = None,
) -> Dataset:
    """The dataset named ``dataset_name`` in the project, at ``version`` (default: latest).

    ``tags`` (``"key:value"`` strings) keeps only records that carry all of them, and is
    kept on the dataset as ``filter_tags``. An unknown name raises ``DatasetNotFoundError``
    (a ``ValueError``).
    """
    filter_tags = _check_tags(list(tags or []), "the tags filter")
    info = backend.find_dataset(project.id, dataset_name)
    if info is None:
        known = [dataset.name for dataset in backend.list_datasets(project.id)]
        hint = (
            f"its datasets are {', '.join(repr(name) for name in known[:10])}"
            if known
            else "it has no datasets yet; create one with LLMObs.create_dataset()"
        )
        raise DatasetNotFoundError(
            f"No dataset named {dataset_name!r} in project {project.name!r}; {hint}"
        )
    records = backend.dataset_records(info.id, version=version, tags=filter_tags)
    return Dataset(
        backend,
        info,
        Project(name=project.name, _id=project.id),
        records,
        version=info.current_version if version is None else version,
        filter_tags=filter_tags,
    )
