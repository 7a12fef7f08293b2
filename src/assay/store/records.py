"""The plain values that cross the backend interface.

Both backends (SQL and HTTP) take and return these and nothing else, so the SDK never sees
a table, a row object or an HTTP response.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Literal

JSON = Any
"""Any JSON-serialisable value."""

MetricType = Literal["score", "categorical", "boolean", "json"]
ExperimentStatus = Literal["created", "running", "completed", "failed", "interrupted"]


class _Unchanged(Enum):
    UNCHANGED = "UNCHANGED"


UNCHANGED = _Unchanged.UNCHANGED
"""Marks a field of a :class:`RecordUpdate` that the update leaves as it is."""


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    id: str
    name: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    id: str
    project_id: str
    name: str
    description: str
    current_version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One dataset record as it stands in one version."""

    record_id: str
    input_data: JSON
    expected_output: JSON
    metadata: dict[str, JSON]
    tags: list[str]
    canonical_id: str | None = None


@dataclass(frozen=True, slots=True)
class RecordInsert:
    record_id: str
    input_data: JSON
    expected_output: JSON = None
    metadata: dict[str, JSON] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TagOperations:
    """Tag edits of one record; ``replace`` (when not None) wins over add and remove."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    replace: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class RecordUpdate:
    """A change to one record; fields left ``UNCHANGED`` keep their stored value."""

    record_id: str
    input_data: JSON | _Unchanged = UNCHANGED
    expected_output: JSON | _Unchanged = UNCHANGED
    metadata: dict[str, JSON] | _Unchanged = UNCHANGED
    tag_operations: TagOperations | None = None


@dataclass(frozen=True, slots=True)
class DatasetVersionInfo:
    version: int
    records: int
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    """What is needed to create an experiment."""

    project_id: str
    dataset_id: str
    dataset_version: int
    name: str
    description: str = ""
    config: dict[str, JSON] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    run_count: int = 1
    parent_experiment_id: str | None = None
    task_name: str = ""
    evaluator_names: tuple[str, ...] = ()
    summary_evaluator_names: tuple[str, ...] = ()
    sample_size: int | None = None


@dataclass(frozen=True, slots=True)
class RunInfo:
    run_id: str
    run_iteration: int


@dataclass(frozen=True, slots=True)
class ExperimentInfo:
    id: str
    project_id: str
    project_name: str
    dataset_id: str
    dataset_name: str
    dataset_version: int
    name: str
    description: str
    config: dict[str, JSON]
    tags: dict[str, str]
    run_count: int
    status: ExperimentStatus
    error: str | None
    parent_experiment_id: str | None
    task_name: str
    evaluator_names: tuple[str, ...]
    summary_evaluator_names: tuple[str, ...]
    sample_size: int | None
    runner: str | None
    """``host:pid`` of the process that last ran it."""
    runs: tuple[RunInfo, ...]
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class ErrorInfo:
    """An exception as stored: fully qualified type, message and formatted stack."""

    type: str
    message: str
    stack: str


@dataclass(slots=True)
class EvaluationRecord:
    """One evaluation of one row (or, with no span, one summary evaluation of a run).

    ``value`` is the evaluator's value as returned; ``metric_type`` is inferred from it by
    :func:`assay.evaluation.metric_type_of`.
    """

    label: str
    metric_type: MetricType
    value: JSON
    timestamp_ms: int
    reasoning: str | None = None
    assessment: str | None = None
    metadata: dict[str, JSON] | None = None
    tags: dict[str, str] | None = None
    error: ErrorInfo | None = None


@dataclass(slots=True)
class SpanRecord:
    """A span inside a task call (an LLM call, a tool, a workflow step), under the row's root.

    Token counts and ``estimated_cost`` (nanodollars) are this span's own; the row carries
    the trace's roll-up.
    """

    span_id: str
    parent_id: str
    trace_id: str
    name: str
    kind: str
    start_ns: int
    duration_ns: int
    error: ErrorInfo | None = None
    input: JSON = None
    output: JSON = None
    metadata: dict[str, JSON] | None = None
    tags: list[str] | None = None
    model_name: str | None = None
    model_provider: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    estimated_cost: int | None = None

    @property
    def status(self) -> Literal["ok", "error"]:
        return "error" if self.error is not None else "ok"


@dataclass(slots=True)
class TraceRollup:
    """Token counts and cost summed over a trace's LLM spans (None where nothing is known)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    estimated_total_cost: int | None = None
    """Nanodollars (1e-9 USD); None when no span's model has a known price."""


@dataclass(slots=True)
class RowRecord:
    """One execution of the task on one record in one run: the root span of its trace."""

    experiment_id: str
    run_iteration: int
    record_id: str
    idx: int
    span_id: str
    trace_id: str
    span_name: str
    start_ns: int
    duration_ns: int
    input_data: JSON
    output: JSON
    expected_output: JSON
    record_metadata: dict[str, JSON]
    tags: list[str]
    error: ErrorInfo | None
    retries: int
    evaluations: list[EvaluationRecord]
    spans: list[SpanRecord] = field(default_factory=list)
    """Child spans of the root, in start order."""
    rollup: TraceRollup | None = None
    """Tokens and cost of the whole trace."""
    root_metadata: dict[str, JSON] | None = None
    """What ``LLMObs.annotate`` put on the root span (metadata, metrics, tags)."""

    @property
    def status(self) -> Literal["ok", "error"]:
        return "error" if self.error is not None else "ok"


@dataclass(slots=True)
class SummaryEvaluationRecord:
    run_iteration: int
    evaluation: EvaluationRecord


@dataclass(frozen=True, slots=True)
class RecordAggregate:
    """One record's across-run aggregate of one facet (see ``store.sql.aggregates``)."""

    record_id: str
    idx: int
    facet: str
    n: int
    errors: int
    mean: float | None
    mode: str | None


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of an experiment search, with the total it is a page of ("8 of 127")."""

    total: int
    """How many rows (or records, for a multi-run query) match in all."""
    items: list[dict[str, JSON]]
    """The page: rows (``record_id``, ``run_iteration``, ...) or records (``record_id``,
    ``aggregates``, ...)."""
    multi_run: bool
    """Whether the items are records selected by across-run aggregates."""
    description: str
    """The query as a plain sentence."""
    of: int
    """How many rows (or records) the experiment has in the searched scope."""


@dataclass(frozen=True, slots=True)
class ExperimentFilter:
    """Which experiments ``list_experiments`` returns (all fields optional, combined with AND)."""

    name: str | None = None
    project_id: str | None = None
    dataset_id: str | None = None
    status: ExperimentStatus | None = None
    parent_experiment_ids: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class PinnedBaseline:
    """The experiment pinned as the baseline of one project and dataset (``assay baseline
    set``): what ``assay gate`` compares with when it is given no ``--baseline``."""

    project_id: str
    project_name: str
    dataset_id: str
    dataset_name: str
    experiment_id: str
    experiment_name: str
    set_at: datetime
    """When it was pinned (UTC)."""
