"""The one interface between the SDK and wherever results are kept.

``SqlBackend`` implements it over SQLAlchemy (SQLite by default, PostgreSQL by URL), and
``HttpBackend`` (``assay.store.http``) against an Assay server. The SDK only ever holds a
``Backend``; ``assay.store.open_backend`` chooses which.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from assay.store.comparison_values import ComparisonValues
from assay.store.records import (
    DatasetInfo,
    DatasetVersionInfo,
    EvaluationRecord,
    ExperimentFilter,
    ExperimentInfo,
    ExperimentSpec,
    ExperimentStatus,
    PinnedBaseline,
    ProjectInfo,
    RecordAggregate,
    RecordInsert,
    RecordUpdate,
    RowRecord,
    RunInfo,
    SearchPage,
    StoredRecord,
    SummaryEvaluationRecord,
)


class Backend(Protocol):
    """Projects, versioned datasets, experiments with runs, rows and evaluations."""

    @property
    def location(self) -> str:
        """Where the data lives, for people (a path or a URL, never a password)."""
        ...

    def close(self) -> None: ...

    # Projects -------------------------------------------------------------------------

    def ensure_project(self, name: str, description: str = "") -> ProjectInfo:
        """The project with this name, created if it does not exist."""
        ...

    def find_project(self, name: str) -> ProjectInfo | None: ...

    # Datasets -------------------------------------------------------------------------

    def create_dataset(self, project_id: str, name: str, description: str = "") -> DatasetInfo:
        """Create-or-get: an existing dataset with this name is returned unchanged."""
        ...

    def find_dataset(self, project_id: str, name: str) -> DatasetInfo | None: ...

    def get_dataset(self, dataset_id: str) -> DatasetInfo:
        """Raises ``DatasetNotFoundError`` when there is no such dataset."""
        ...

    def list_datasets(self, project_id: str | None = None) -> list[DatasetInfo]: ...

    def update_dataset_records(
        self,
        dataset_id: str,
        *,
        inserts: Sequence[RecordInsert] = (),
        updates: Sequence[RecordUpdate] = (),
        deletes: Sequence[str] = (),
        deduplicate: bool = True,
        create_new_version: bool = True,
    ) -> int:
        """Apply one delta; returns the dataset's current version afterwards.

        A new version is made (when ``create_new_version``) only if records are added or
        deleted or an input or expected output changes; metadata and tag edits change the
        records in place.
        """
        ...

    def dataset_records(
        self, dataset_id: str, *, version: int | None = None, tags: Sequence[str] = ()
    ) -> list[StoredRecord]:
        """The records of one version (default: current), in insertion order."""
        ...

    def dataset_versions(self, dataset_id: str) -> list[DatasetVersionInfo]: ...

    def delete_dataset(self, dataset_id: str) -> None: ...

    # Experiments ----------------------------------------------------------------------

    def create_experiment(self, spec: ExperimentSpec, runs: Sequence[RunInfo]) -> ExperimentInfo:
        """Store a new experiment (status ``created``) with its runs."""
        ...

    def set_experiment_status(
        self,
        experiment_id: str,
        status: ExperimentStatus,
        error: str | None = None,
        *,
        runner: str | None = None,
    ) -> None:
        """Set the status (and error); ``runner`` records which process now runs it."""
        ...

    def get_experiment(self, experiment_id: str) -> ExperimentInfo:
        """Raises ``ExperimentNotFoundError`` when there is no such experiment."""
        ...

    def resolve_experiment(self, reference: str) -> ExperimentInfo:
        """An experiment by id, unique id prefix, or name (the newest with that name)."""
        ...

    def list_experiments(self, where: ExperimentFilter | None = None) -> list[ExperimentInfo]:
        """Experiments, newest first."""
        ...

    def write_rows(self, rows: Sequence[RowRecord]) -> None:
        """Store rows with their evaluations, all in one transaction."""
        ...

    def write_summary_evaluations(
        self, experiment_id: str, run_iteration: int, evaluations: Sequence[EvaluationRecord]
    ) -> None: ...

    def experiment_rows(
        self, experiment_id: str, *, run_iteration: int | None = None, with_spans: bool = False
    ) -> list[RowRecord]:
        """Stored rows, ordered by run iteration then record index.

        Each row carries its trace's token and cost roll-up; ``with_spans`` also loads the
        child spans (LLM calls, tools) of every row.
        """
        ...

    def summary_evaluations(self, experiment_id: str) -> list[SummaryEvaluationRecord]: ...

    def refresh_aggregates(self, experiment_id: str, *, only_if_stale: bool = False) -> None:
        """Rebuild the per-record aggregates multi-run search reads (one pass over rows)."""
        ...

    def record_aggregates(self, experiment_id: str) -> list[RecordAggregate]:
        """Every record's across-run aggregate of every facet, refreshed if stale."""
        ...

    def comparison_values(self, experiment_id: str, *, run: int | None = None) -> ComparisonValues:
        """Each record's value of each evaluation label over one run, or all runs (``None``):
        what a comparison pairs on (see :mod:`assay.store.comparison_values`). Raises
        ``ExperimentNotFoundError`` for an unknown id."""
        ...

    def search(
        self,
        experiment_id: str,
        query: str,
        *,
        run: int | None = None,
        limit: int = 50,
        offset: int = 0,
        sort: str | None = None,
    ) -> SearchPage:
        """A page of the experiment's rows (or records, for a multi-run query) matching
        ``query`` (Datadog's search syntax), with the total count."""
        ...

    def count_rows(self, experiment_id: str) -> int:
        """How many rows (record x run) of an experiment are stored."""
        ...

    # Baselines ------------------------------------------------------------------------

    def set_baseline(self, experiment_id: str) -> PinnedBaseline:
        """Pin the experiment as the baseline of its project and dataset, replacing the
        one pinned before. Raises ``ExperimentNotFoundError`` for an unknown id."""
        ...

    def list_baselines(
        self, *, project_id: str | None = None, dataset_id: str | None = None
    ) -> list[PinnedBaseline]:
        """The pinned baselines (one per project and dataset), by project and dataset name;
        with ``project_id`` or ``dataset_id``, only those."""
        ...
