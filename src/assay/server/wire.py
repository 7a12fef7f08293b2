"""Request bodies of the Experiments API, as ddtrace 4.16 and the public API send them.

Pydantic models in strict mode: ``"5"`` is not a number and ``true`` is not 1, so a wrong
type is a 422 naming the field (the error handler turns pydantic's location into a JSON
pointer). Unknown keys are ignored, as ddtrace sends more than the server reads. Text
that goes to a text column may not contain NUL, which PostgreSQL cannot store.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator

from assay.store.records import ErrorInfo
from assay.store.sql.ingest import IncomingMetric, IncomingSpan

INT64 = 2**63 - 1
MAX_RUN_COUNT = 10_000
"""More runs than any experiment needs; the bound keeps a typo from making a million."""


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("Text must not contain NUL (\\u0000) characters")
    return value


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("Input should be a number")
    if isinstance(value, int) and not -INT64 <= value <= INT64:
        raise ValueError("Input should be a number within 64 bits")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
Identifier = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_no_nul)]
SpanId = Annotated[str, Field(max_length=32), AfterValidator(_no_nul)]
Count = Annotated[int, Field(ge=0, le=INT64)]
Number = Annotated[Any, PlainValidator(_number, json_schema_input_type=float)]


class WireModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


# Projects ----------------------------------------------------------------------------------


class ProjectAttributes(WireModel):
    name: Name
    description: Text | None = None


class ProjectData(WireModel):
    type: Text | None = None
    attributes: ProjectAttributes


class ProjectBody(WireModel):
    data: ProjectData


# Datasets ----------------------------------------------------------------------------------


class DatasetAttributes(WireModel):
    name: Name
    description: Text | None = None


class DatasetData(WireModel):
    type: Text | None = None
    attributes: DatasetAttributes


class DatasetBody(WireModel):
    data: DatasetData


class InsertRecord(WireModel):
    id: Identifier | None = None
    """Client-made (ddtrace sends one); a new id is made when absent."""
    input: Any = None
    expected_output: Any = None
    metadata: dict[str, Any] | None = None
    tags: list[Text] | None = None


class TagOperationsBody(WireModel):
    add: list[Text] | None = None
    remove: list[Text] | None = None
    set: list[Text] | None = None


class UpdateRecord(WireModel):
    """``null`` (or absent) leaves a field as it is; ``""`` / ``{}`` erase it."""

    id: Identifier
    input: Any = None
    expected_output: Any = None
    metadata: dict[str, Any] | None = None
    tag_operations: TagOperationsBody | None = None


class BatchUpdateAttributes(WireModel):
    insert_records: list[InsertRecord] | None = None
    update_records: list[UpdateRecord] | None = None
    delete_records: list[Identifier] | None = None
    deduplicate: bool = True
    create_new_version: bool = True


class BatchUpdateData(WireModel):
    type: Text | None = None
    id: Text | None = None
    attributes: BatchUpdateAttributes


class BatchUpdateBody(WireModel):
    data: BatchUpdateData


class AppendRecordsAttributes(WireModel):
    records: list[InsertRecord]
    deduplicate: bool = True


class AppendRecordsData(WireModel):
    type: Text | None = None
    attributes: AppendRecordsAttributes


class AppendRecordsBody(WireModel):
    data: AppendRecordsData


class UpdateRecordsAttributes(WireModel):
    records: list[UpdateRecord]


class UpdateRecordsData(WireModel):
    type: Text | None = None
    attributes: UpdateRecordsAttributes


class UpdateRecordsBody(WireModel):
    data: UpdateRecordsData


class DeleteRecordsAttributes(WireModel):
    record_ids: list[Identifier]


class DeleteRecordsData(WireModel):
    type: Text | None = None
    attributes: DeleteRecordsAttributes


class DeleteRecordsBody(WireModel):
    data: DeleteRecordsData


class DeleteDatasetsAttributes(WireModel):
    type: Literal["soft"] | None = None
    """Only soft deletes: an experiment pinned to a dataset keeps reading its version."""
    dataset_ids: list[Identifier]


class DeleteDatasetsData(WireModel):
    type: Text | None = None
    attributes: DeleteDatasetsAttributes


class DeleteDatasetsBody(WireModel):
    data: DeleteDatasetsData


# Experiments -------------------------------------------------------------------------------


class ExperimentAttributes(WireModel):
    name: Annotated[str, Field(min_length=1, max_length=400), AfterValidator(_no_nul)]
    project_id: Identifier
    dataset_id: Identifier
    description: Text | None = None
    dataset_version: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    """Default: the dataset's current version."""
    config: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    """``{"tags": ["k:v", ...]}``; other keys become tags too."""
    ensure_unique: bool | None = None
    run_count: Annotated[int, Field(ge=1, le=MAX_RUN_COUNT)] | None = None
    """How many runs (1 when absent)."""
    parent_experiment_id: Identifier | None = None


class ExperimentData(WireModel):
    type: Text | None = None
    attributes: ExperimentAttributes


class ExperimentBody(WireModel):
    data: ExperimentData


class ExperimentUpdateAttributes(WireModel):
    status: Literal["created", "running", "completed", "failed", "interrupted"] | None = None
    error: Text | None = None


class ExperimentUpdateData(WireModel):
    type: Text | None = None
    attributes: ExperimentUpdateAttributes


class ExperimentUpdateBody(WireModel):
    data: ExperimentUpdateData


# Spans and metrics -------------------------------------------------------------------------


class WireError(WireModel):
    message: Text | None = None
    type: Text | None = None
    stack: Text | None = None

    def info(self) -> ErrorInfo | None:
        """None for an empty error (the API writes ``{}`` when there is none)."""
        if not (self.message or self.type or self.stack):
            return None
        # The type names a class: 400 characters (what the store keeps) is plenty.
        kind = (self.type or "Error")[:400]
        return ErrorInfo(type=kind, message=self.message or "", stack=self.stack or "")


class WireSpanKind(WireModel):
    kind: Text | None = None


class WireSpanMeta(WireModel):
    span: WireSpanKind | None = None
    """``{"kind": "llm"}``: how ddtrace 4.16 sends the span kind."""
    flat_kind: Text | None = Field(default=None, alias="span.kind")
    """``"span.kind": "llm"``: how the public API documents it."""
    input: Any = None
    output: Any = None
    expected_output: Any = None
    metadata: Any = None
    error: WireError | None = None
    model_name: Text | None = None
    model_provider: Text | None = None


class WireSpan(WireModel):
    span_id: Annotated[str, Field(min_length=1, max_length=32), AfterValidator(_no_nul)]
    trace_id: Annotated[str, Field(min_length=1, max_length=32), AfterValidator(_no_nul)]
    parent_id: SpanId | None = None
    name: Text = "span"
    start_ns: Count
    duration: Count
    status: Text = "ok"
    meta: WireSpanMeta = Field(default_factory=WireSpanMeta)
    metrics: dict[str, Any] | None = None
    tags: list[Text] | None = None

    def incoming(self) -> IncomingSpan:
        meta = self.meta
        return IncomingSpan(
            span_id=self.span_id,
            trace_id=self.trace_id,
            parent_id=self.parent_id,
            name=self.name,
            start_ns=self.start_ns,
            duration_ns=self.duration,
            status=self.status,
            kind=meta.span.kind if meta.span is not None and meta.span.kind else meta.flat_kind,
            input=meta.input,
            output=meta.output,
            expected_output=meta.expected_output,
            metadata=meta.metadata,
            error=meta.error.info() if meta.error is not None else None,
            tags=tuple(self.tags or ()),
            metrics=self.metrics or {},
            model_name=meta.model_name,
            model_provider=meta.model_provider,
        )


class WireMetric(WireModel):
    metric_source: Text = "custom"
    """``custom`` (a row evaluator) or ``summary`` (a summary evaluator)."""
    span_id: SpanId = ""
    trace_id: SpanId = ""
    timestamp_ms: Count
    metric_type: Literal["score", "categorical", "boolean", "json"]
    label: Name
    score_value: Number | None = None
    categorical_value: Text | None = None
    boolean_value: bool | None = None
    json_value: dict[str, Any] | None = None
    error: WireError | None = None
    tags: list[Text] | None = None
    status: Text | None = None
    reasoning: Text | None = None
    assessment: Annotated[str, Field(max_length=16), AfterValidator(_no_nul)] | None = None
    metadata: dict[str, Any] | None = None

    def incoming(self) -> IncomingMetric:
        return IncomingMetric(
            label=self.label,
            metric_type=self.metric_type,
            value=getattr(self, f"{self.metric_type}_value"),
            timestamp_ms=self.timestamp_ms,
            span_id=self.span_id,
            trace_id=self.trace_id,
            summary=self.metric_source == "summary",
            error=self.error.info() if self.error is not None else None,
            reasoning=self.reasoning,
            assessment=self.assessment,
            metadata=self.metadata,
            tags=tuple(self.tags or ()),
        )


class EventsAttributes(WireModel):
    scope: Text | None = None
    metrics: list[WireMetric] | None = None
    tags: list[Text] | None = None
    spans: list[WireSpan] | None = None


class EventsData(WireModel):
    type: Text | None = None
    attributes: EventsAttributes


class EventsBody(WireModel):
    data: EventsData


class IntakeEvent(WireModel):
    """One element of a span intake post: ``{"event_type": "span", "spans": [...]}``."""

    event_type: Text | None = None
    spans: list[WireSpan] | None = None
