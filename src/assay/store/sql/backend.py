"""``SqlBackend``: the backend interface over SQLAlchemy (SQLite or PostgreSQL)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, func, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from assay.errors import ExperimentNotFoundError
from assay.store.collector import collector_paused
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
    SpanRecord,
    StoredRecord,
    SummaryEvaluationRecord,
)
from assay.store.sql import baselines as baseline_store
from assay.store.sql import datasets as dataset_store
from assay.store.sql import keys
from assay.store.sql.aggregates import refresh_record_aggregates
from assay.store.sql.bulk import bulk_insert, encode_json
from assay.store.sql.comparison_values import comparison_values
from assay.store.sql.counters import aggregates_are_fresh, count_written
from assay.store.sql.engine import migrate, open_engine
from assay.store.sql.keys import ApiKeyInfo
from assay.store.sql.search import search as search_experiment
from assay.store.sql.side_count import SideCounter
from assay.store.sql.tables import datasets as dataset_table
from assay.store.sql.tables import evaluations as evaluation_table
from assay.store.sql.tables import (
    experiments,
    projects,
    spans,
)
from assay.store.sql.tables import record_aggregates as record_aggregate_table
from assay.store.sql.tables import runs as run_table
from assay.store.sql.tables import summary_evaluations as summary_table
from assay.store.sql.values import (
    EVALUATION_VALUE_COLUMNS,
    evaluation_from_columns,
    evaluation_values,
    rows_from_columns,
)

SPAN_COLUMNS = (
    "experiment_id",
    "run_iteration",
    "record_id",
    "idx",
    "span_id",
    "trace_id",
    "parent_id",
    "name",
    "kind",
    "start_ns",
    "duration_ns",
    "status",
    "input",
    "output",
    "expected_output",
    "metadata",
    "tags",
    "error_type",
    "error_message",
    "error_stack",
    "retries",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "estimated_total_cost",
    "model_name",
    "model_provider",
    "annotations",
)
# An experiment with the names of its project and dataset, and the runs of experiments:
# built once, since every search and page reads its experiment first.
_EXPERIMENTS = (
    select(
        experiments,
        projects.c.name.label("project_name"),
        dataset_table.c.name.label("dataset_name"),
    )
    .join(projects, projects.c.id == experiments.c.project_id)
    .join(dataset_table, dataset_table.c.id == experiments.c.dataset_id)
)
_EXPERIMENT_BY_ID = _EXPERIMENTS.where(experiments.c.id == bindparam("experiment_id"))
_RUNS_OF = (
    select(run_table)
    .where(run_table.c.experiment_id.in_(bindparam("experiment_ids", expanding=True)))
    .order_by(run_table.c.run_iteration)
)
EVALUATION_KEYS = ("experiment_id", "run_iteration", "record_id", "span_id")
EVALUATION_COLUMNS = (*EVALUATION_KEYS, *EVALUATION_VALUE_COLUMNS)


def _child_span_values(row: RowRecord, span: SpanRecord) -> tuple[Any, ...]:
    """A child span's columns, in SPAN_COLUMNS order; its tokens and cost are its own."""
    error = span.error
    return (
        row.experiment_id,
        row.run_iteration,
        row.record_id,
        row.idx,
        span.span_id,
        span.trace_id,
        span.parent_id,
        span.name,
        span.kind,
        span.start_ns,
        span.duration_ns,
        "error" if error else "ok",
        encode_json(span.input),
        encode_json(span.output),
        None,
        encode_json(span.metadata or {}),
        encode_json(span.tags or []),
        error.type if error else None,
        error.message if error else None,
        error.stack if error else None,
        0,
        span.input_tokens,
        span.output_tokens,
        span.total_tokens,
        span.estimated_cost,
        span.model_name,
        span.model_provider,
        None,
    )


def _known_experiment(connection: Connection, experiment_id: str) -> None:
    """An unknown id is an error, not an experiment with nothing stored yet."""
    known = select(experiments.c.id).where(experiments.c.id == experiment_id)
    if connection.execute(known).first() is None:
        raise ExperimentNotFoundError(
            f"No experiment with id {experiment_id!r}; `assay experiments list` shows them"
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone-aware columns; they are UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class SqlBackend:
    """Everything stored in one SQL database reached through SQLAlchemy."""

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine if engine is not None else open_engine(url)
        migrate(self.engine)
        # Every run of a record stores the same input, expected output and metadata
        # objects: encode each once. Entries hold the object, so its id stays unique.
        self._encoded: dict[int, tuple[object, str | None]] = {}
        self._counter = SideCounter()  # its threads and engine start with the first search

    @property
    def location(self) -> str:
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "sqlite":
            return parsed.database or ":memory:"
        return parsed.render_as_string(hide_password=True)

    def close(self) -> None:
        self._counter.close()
        self.engine.dispose()

    # Projects -------------------------------------------------------------------------

    def ensure_project(self, name: str, description: str = "") -> ProjectInfo:
        found = self.find_project(name)
        if found is not None:
            return found
        project_id = str(uuid.uuid4())
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(projects).values(
                        id=project_id, name=name, description=description, created_at=_now()
                    )
                )
        except IntegrityError:
            # Another writer (a process, or a request of `assay serve`) created the name
            # between our look-up and our insert: create-or-get means theirs is the answer.
            raced = self.find_project(name)
            if raced is None:
                raise
            return raced
        return ProjectInfo(id=project_id, name=name, description=description)

    def find_project(self, name: str) -> ProjectInfo | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(projects).where(projects.c.name == name)).first()
        return ProjectInfo(id=row.id, name=row.name, description=row.description) if row else None

    # Datasets -------------------------------------------------------------------------

    def create_dataset(self, project_id: str, name: str, description: str = "") -> DatasetInfo:
        return dataset_store.create_dataset(self.engine, project_id, name, description)

    def find_dataset(self, project_id: str, name: str) -> DatasetInfo | None:
        return dataset_store.find_dataset(self.engine, project_id, name)

    def get_dataset(self, dataset_id: str) -> DatasetInfo:
        return dataset_store.get_dataset(self.engine, dataset_id)

    def list_datasets(self, project_id: str | None = None) -> list[DatasetInfo]:
        return dataset_store.list_datasets(self.engine, project_id)

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
        return dataset_store.update_dataset_records(
            self.engine,
            dataset_id,
            inserts=inserts,
            updates=updates,
            deletes=deletes,
            deduplicate=deduplicate,
            create_new_version=create_new_version,
        )

    def dataset_records(
        self, dataset_id: str, *, version: int | None = None, tags: Sequence[str] = ()
    ) -> list[StoredRecord]:
        return dataset_store.dataset_records(self.engine, dataset_id, version=version, tags=tags)

    def dataset_versions(self, dataset_id: str) -> list[DatasetVersionInfo]:
        return dataset_store.dataset_versions(self.engine, dataset_id)

    def delete_dataset(self, dataset_id: str) -> None:
        dataset_store.delete_dataset(self.engine, dataset_id)

    # Experiments ----------------------------------------------------------------------

    def create_experiment(self, spec: ExperimentSpec, runs: Sequence[RunInfo]) -> ExperimentInfo:
        experiment_id = str(uuid.uuid4())
        now = _now()
        with self.engine.begin() as connection:
            connection.execute(
                insert(experiments).values(
                    id=experiment_id,
                    project_id=spec.project_id,
                    dataset_id=spec.dataset_id,
                    dataset_version=spec.dataset_version,
                    name=spec.name,
                    description=spec.description,
                    config=spec.config,
                    tags=spec.tags,
                    run_count=spec.run_count,
                    status="created",
                    error=None,
                    parent_experiment_id=spec.parent_experiment_id,
                    task_name=spec.task_name,
                    evaluator_names=list(spec.evaluator_names),
                    summary_evaluator_names=list(spec.summary_evaluator_names),
                    sample_size=spec.sample_size,
                    created_at=now,
                    updated_at=now,
                )
            )
            if runs:
                connection.execute(
                    insert(run_table),
                    [
                        {
                            "run_id": run.run_id,
                            "experiment_id": experiment_id,
                            "run_iteration": run.run_iteration,
                        }
                        for run in runs
                    ],
                )
        return self.get_experiment(experiment_id)

    def set_experiment_status(
        self,
        experiment_id: str,
        status: ExperimentStatus,
        error: str | None = None,
        *,
        runner: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status, "error": error, "updated_at": _now()}
        if runner is not None:
            values["runner"] = runner
        with self.engine.begin() as connection:
            result = connection.execute(
                update(experiments).where(experiments.c.id == experiment_id).values(**values)
            )
        if result.rowcount == 0:
            raise ExperimentNotFoundError(f"No experiment with id {experiment_id!r}")

    def _experiment_infos(self, where: Any, *, limit: int | None = None) -> list[ExperimentInfo]:
        query = _EXPERIMENTS.where(where)
        query = query.order_by(experiments.c.created_at.desc(), experiments.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            return self._read_experiment_infos(connection, query)

    def _read_experiment_infos(
        self, connection: Connection, query: Any, parameters: dict[str, Any] | None = None
    ) -> list[ExperimentInfo]:
        rows = connection.execute(query, parameters).all()
        run_rows = (
            connection.execute(_RUNS_OF, {"experiment_ids": [row.id for row in rows]}).all()
            if rows
            else []
        )
        runs_by_experiment: dict[str, list[RunInfo]] = defaultdict(list)
        for run in run_rows:
            runs_by_experiment[run.experiment_id].append(
                RunInfo(run_id=run.run_id, run_iteration=run.run_iteration)
            )
        return [
            ExperimentInfo(
                id=row.id,
                project_id=row.project_id,
                project_name=row.project_name,
                dataset_id=row.dataset_id,
                dataset_name=row.dataset_name,
                dataset_version=row.dataset_version,
                name=row.name,
                description=row.description,
                config=row.config,
                tags=row.tags,
                run_count=row.run_count,
                status=row.status,
                error=row.error,
                parent_experiment_id=row.parent_experiment_id,
                task_name=row.task_name,
                evaluator_names=tuple(row.evaluator_names),
                summary_evaluator_names=tuple(row.summary_evaluator_names),
                sample_size=row.sample_size,
                runner=row.runner,
                runs=tuple(runs_by_experiment[row.id]),
                created_at=_aware(row.created_at),
                updated_at=_aware(row.updated_at),
            )
            for row in rows
        ]

    def get_experiment(self, experiment_id: str) -> ExperimentInfo:
        with self.engine.connect() as connection:
            return self._experiment_info(connection, experiment_id)

    def _experiment_info(self, connection: Connection, experiment_id: str) -> ExperimentInfo:
        found = self._read_experiment_infos(
            connection, _EXPERIMENT_BY_ID, {"experiment_id": experiment_id}
        )
        if not found:
            raise ExperimentNotFoundError(
                f"No experiment with id {experiment_id!r}; `assay experiments list` shows them"
            )
        return found[0]

    def resolve_experiment(self, reference: str) -> ExperimentInfo:
        reference = reference.strip()
        by_id = self._experiment_infos(experiments.c.id == reference)
        if by_id:
            return by_id[0]
        if len(reference) >= 4:
            by_prefix = self._experiment_infos(
                experiments.c.id.startswith(reference, autoescape=True)
            )
            if len(by_prefix) == 1:
                return by_prefix[0]
            if len(by_prefix) > 1:
                raise ExperimentNotFoundError(
                    f"Experiment id prefix {reference!r} matches {len(by_prefix)} experiments; "
                    "give more characters of the id"
                )
        by_name = self._experiment_infos(experiments.c.name == reference, limit=1)
        if by_name:
            return by_name[0]
        raise ExperimentNotFoundError(
            f"No experiment with id, id prefix or name {reference!r}; "
            "`assay experiments list` shows them"
        )

    def list_experiments(self, where: ExperimentFilter | None = None) -> list[ExperimentInfo]:
        where = where or ExperimentFilter()
        conditions: list[Any] = []
        if where.name is not None:
            conditions.append(experiments.c.name == where.name)
        if where.project_id is not None:
            conditions.append(experiments.c.project_id == where.project_id)
        if where.dataset_id is not None:
            conditions.append(experiments.c.dataset_id == where.dataset_id)
        if where.status is not None:
            conditions.append(experiments.c.status == where.status)
        if where.parent_experiment_ids:
            conditions.append(
                experiments.c.parent_experiment_id.in_(list(where.parent_experiment_ids))
            )
        # Tag containment is checked in Python: JSON operators differ between dialects,
        # and the candidate set is already narrowed by the indexed conditions above.
        found = self._experiment_infos(
            and_(True, *conditions), limit=None if where.tags else where.limit
        )
        if where.tags:
            found = [
                info
                for info in found
                if all(info.tags.get(key) == value for key, value in where.tags.items())
            ][: where.limit]
        return found

    def _encode_shared(self, value: object) -> str | None:
        if not isinstance(value, dict | list):
            return encode_json(value)
        cached = self._encoded.get(id(value))
        if cached is not None and cached[0] is value:
            return cached[1]
        if len(self._encoded) > 200_000:
            self._encoded.clear()
        encoded = encode_json(value)
        self._encoded[id(value)] = (value, encoded)
        return encoded

    def write_rows(self, rows: Sequence[RowRecord]) -> None:
        if not rows:
            return
        shared = self._encode_shared
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        span_values: list[tuple[Any, ...]] = []
        evaluation_values_: list[tuple[Any, ...]] = []
        for row in rows:
            error = row.error
            rollup = row.rollup
            span_values.append(
                (
                    row.experiment_id,
                    row.run_iteration,
                    row.record_id,
                    row.idx,
                    row.span_id,
                    row.trace_id,
                    None,
                    row.span_name,
                    "experiment",
                    row.start_ns,
                    row.duration_ns,
                    "error" if error else "ok",
                    shared(row.input_data),
                    encode_json(row.output),
                    shared(row.expected_output),
                    shared(row.record_metadata),
                    shared(row.tags),
                    error.type if error else None,
                    error.message if error else None,
                    error.stack if error else None,
                    row.retries,
                    rollup.input_tokens if rollup else None,
                    rollup.output_tokens if rollup else None,
                    rollup.total_tokens if rollup else None,
                    rollup.estimated_total_cost if rollup else None,
                    None,
                    None,
                    encode_json(row.root_metadata) if row.root_metadata else None,
                )
            )
            for span in row.spans:
                span_values.append(_child_span_values(row, span))
            keys = (row.experiment_id, row.run_iteration, row.record_id, row.span_id)
            for evaluation in row.evaluations:
                evaluation_values_.append(keys + evaluation_values(evaluation))
            written = counts[row.experiment_id]
            written[0] += 1
            written[1] += len(row.evaluations)
        with self.engine.begin() as connection:
            bulk_insert(connection, spans, SPAN_COLUMNS).execute(connection, span_values)
            bulk_insert(connection, evaluation_table, EVALUATION_COLUMNS).execute(
                connection, evaluation_values_
            )
            for experiment_id, (added_rows, added_evaluations) in counts.items():
                count_written(connection, experiment_id, added_rows, added_evaluations)

    def write_summary_evaluations(
        self, experiment_id: str, run_iteration: int, evaluations: Sequence[EvaluationRecord]
    ) -> None:
        columns = ("experiment_id", "run_iteration", *EVALUATION_VALUE_COLUMNS)
        with self.engine.begin() as connection:
            bulk_insert(connection, summary_table, columns).execute(
                connection,
                [(experiment_id, run_iteration, *evaluation_values(e)) for e in evaluations],
            )

    def experiment_rows(
        self, experiment_id: str, *, run_iteration: int | None = None, with_spans: bool = False
    ) -> list[RowRecord]:
        span_query = select(spans).where(
            spans.c.experiment_id == experiment_id, spans.c.parent_id.is_(None)
        )
        evaluation_query = select(evaluation_table).where(
            evaluation_table.c.experiment_id == experiment_id
        )
        child_query = select(spans).where(
            spans.c.experiment_id == experiment_id, spans.c.parent_id.is_not(None)
        )
        if run_iteration is not None:
            span_query = span_query.where(spans.c.run_iteration == run_iteration)
            child_query = child_query.where(spans.c.run_iteration == run_iteration)
            evaluation_query = evaluation_query.where(
                evaluation_table.c.run_iteration == run_iteration
            )
        span_query = span_query.order_by(spans.c.run_iteration, spans.c.idx)
        with collector_paused():
            with self.engine.connect() as connection:
                _known_experiment(connection, experiment_id)
                span_rows = connection.execute(span_query).all()
                evaluation_rows = connection.execute(
                    evaluation_query.order_by(evaluation_table.c.pk)
                ).all()
                child_rows = (
                    connection.execute(child_query.order_by(spans.c.start_ns, spans.c.pk)).all()
                    if with_spans
                    else []
                )
            return rows_from_columns(span_rows, evaluation_rows, child_rows)

    def summary_evaluations(self, experiment_id: str) -> list[SummaryEvaluationRecord]:
        with self.engine.connect() as connection:
            _known_experiment(connection, experiment_id)
            rows = connection.execute(
                select(summary_table)
                .where(summary_table.c.experiment_id == experiment_id)
                .order_by(summary_table.c.run_iteration, summary_table.c.pk)
            ).all()
        return [
            SummaryEvaluationRecord(
                run_iteration=row.run_iteration, evaluation=evaluation_from_columns(row)
            )
            for row in rows
        ]

    def refresh_aggregates(self, experiment_id: str, *, only_if_stale: bool = False) -> None:
        with self.engine.begin() as connection:
            if only_if_stale and aggregates_are_fresh(connection, experiment_id):
                return
            # Else the rebuild's insert would fail on the foreign key, obscurely.
            _known_experiment(connection, experiment_id)
            refresh_record_aggregates(connection, experiment_id)

    def record_aggregates(self, experiment_id: str) -> list[RecordAggregate]:
        self.refresh_aggregates(experiment_id, only_if_stale=True)
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(record_aggregate_table)
                .where(record_aggregate_table.c.experiment_id == experiment_id)
                .order_by(record_aggregate_table.c.facet, record_aggregate_table.c.idx)
            ).all()
        return [
            RecordAggregate(
                record_id=row.record_id,
                idx=row.idx,
                facet=row.facet,
                n=row.n,
                errors=row.errors,
                mean=row.mean,
                mode=row.mode,
            )
            for row in rows
        ]

    def comparison_values(self, experiment_id: str, *, run: int | None = None) -> ComparisonValues:
        if run is None:
            # The across-run values are the aggregates' (one row per record and label).
            self.refresh_aggregates(experiment_id, only_if_stale=True)
        with self.engine.connect() as connection:
            _known_experiment(connection, experiment_id)
            return comparison_values(connection, experiment_id, run=run)

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
        # The experiment, the freshness check and the search in one read transaction,
        # unless the aggregates must be rebuilt first: the catalog of facets and the
        # multi-run aggregates come from the same rebuild.
        def page(connection: Connection, info: ExperimentInfo) -> SearchPage:
            return search_experiment(
                connection,
                info,
                query,
                run=run,
                limit=limit,
                offset=offset,
                sort=sort,
                counter=self._counter,
            )

        with self.engine.connect() as connection:
            info = self._experiment_info(connection, experiment_id)
            if aggregates_are_fresh(connection, experiment_id):
                return page(connection, info)
        self.refresh_aggregates(experiment_id, only_if_stale=True)
        with self.engine.connect() as connection:
            return page(connection, info)

    def count_rows(self, experiment_id: str) -> int:
        """How many rows (record x run) of an experiment are stored."""
        with self.engine.connect() as connection:
            _known_experiment(connection, experiment_id)
            count = connection.execute(
                select(func.count())
                .select_from(spans)
                .where(spans.c.experiment_id == experiment_id, spans.c.parent_id.is_(None))
            ).scalar_one()
        return int(count)

    # Baselines (see assay.store.sql.baselines) ------------------------------------------

    def set_baseline(self, experiment_id: str) -> PinnedBaseline:
        return baseline_store.set_baseline(self.engine, experiment_id)

    def list_baselines(
        self, *, project_id: str | None = None, dataset_id: str | None = None
    ) -> list[PinnedBaseline]:
        return baseline_store.list_baselines(
            self.engine, project_id=project_id, dataset_id=dataset_id
        )

    # API keys (of `assay serve`; see assay.store.sql.keys) -------------------------------

    def create_api_key(
        self, name: str, *, projects: Sequence[str] | None = None
    ) -> tuple[ApiKeyInfo, str]:
        """A new key: its stored info and the key itself, which is not stored."""
        return keys.create_api_key(self.engine, name, projects=projects)

    def list_api_keys(self) -> list[ApiKeyInfo]:
        return keys.list_api_keys(self.engine)

    def revoke_api_key(self, reference: str) -> tuple[ApiKeyInfo, bool]:
        """Revoke a key by name or id; also says whether it was live until now."""
        return keys.revoke_api_key(self.engine, reference)

    def find_api_key(self, key: str) -> ApiKeyInfo | None:
        return keys.find_api_key(self.engine, key)

    def record_api_key_use(self, key_id: str, when: datetime) -> None:
        keys.record_api_key_use(self.engine, key_id, when)
