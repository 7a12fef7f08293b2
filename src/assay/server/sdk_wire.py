"""Request bodies of Assay's own routes for the remote SDK (``assay.server.api.sdk``).

They carry the backend's records (``assay.store.records``) field for field, with the
dataclasses' own names, in JSON:API documents. Strict, as ``assay.server.wire``: ``"5"`` is
not a number. Unlike the Datadog-shaped bodies, unknown keys are refused: this protocol is
lossless, and a field the server does not know is data it would drop (an SDK newer than its
server), so the SDK hears a 422 naming the field instead.

Types are checked where a wrong one would fail inside the store; the values of dataset
records are left loose, so the store checks them and says what is wrong in the words a
local store uses.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from assay.server.wire import INT64, MAX_RUN_COUNT
from assay.store.records import (
    UNCHANGED,
    ErrorInfo,
    EvaluationRecord,
    ExperimentSpec,
    ExperimentStatus,
    MetricType,
    RecordInsert,
    RecordUpdate,
    RowRecord,
    RunInfo,
    SpanRecord,
    TagOperations,
    TraceRollup,
)

Int64 = Annotated[int, Field(ge=-INT64 - 1, le=INT64)]
Count = Annotated[int, Field(ge=0, le=INT64)]
Iteration = Annotated[int, Field(ge=1, le=MAX_RUN_COUNT)]


class SdkModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ErrorBody(SdkModel):
    type: str
    message: str
    stack: str

    def info(self) -> ErrorInfo:
        return ErrorInfo(type=self.type, message=self.message, stack=self.stack)


def _error(body: ErrorBody | None) -> ErrorInfo | None:
    return body.info() if body is not None else None


class EvaluationBody(SdkModel):
    label: str
    metric_type: MetricType
    value: Any = None
    timestamp_ms: Int64
    reasoning: str | None = None
    assessment: str | None = None
    metadata: dict[str, Any] | None = None
    tags: dict[str, Any] | None = None
    error: ErrorBody | None = None

    @model_validator(mode="after")
    def _score_is_a_number(self) -> EvaluationBody:
        value = self.value
        if self.metric_type == "score" and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise ValueError(f"a score evaluation's value must be a number, not {value!r}")
        return self

    def record(self) -> EvaluationRecord:
        return EvaluationRecord(
            label=self.label,
            metric_type=self.metric_type,
            value=self.value,
            timestamp_ms=self.timestamp_ms,
            reasoning=self.reasoning,
            assessment=self.assessment,
            metadata=self.metadata,
            tags=self.tags,
            error=_error(self.error),
        )


class SpanBody(SdkModel):
    span_id: str
    parent_id: str
    trace_id: str
    name: str
    kind: str
    start_ns: Int64
    duration_ns: Int64
    error: ErrorBody | None = None
    input: Any = None
    output: Any = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    model_name: str | None = None
    model_provider: str | None = None
    input_tokens: Int64 | None = None
    output_tokens: Int64 | None = None
    total_tokens: Int64 | None = None
    estimated_cost: Int64 | None = None

    def record(self) -> SpanRecord:
        fields = self.model_dump(exclude={"error"})
        return SpanRecord(**fields, error=_error(self.error))


class RollupBody(SdkModel):
    input_tokens: Int64 | None = None
    output_tokens: Int64 | None = None
    total_tokens: Int64 | None = None
    estimated_total_cost: Int64 | None = None


class RowAttributes(SdkModel):
    run_iteration: Iteration
    record_id: str
    idx: Count
    span_id: str
    trace_id: str
    span_name: str
    start_ns: Int64
    duration_ns: Int64
    input_data: Any = None
    output: Any = None
    expected_output: Any = None
    record_metadata: dict[str, Any]
    tags: list[Any]
    error: ErrorBody | None = None
    retries: Count = 0
    evaluations: list[EvaluationBody] = []
    spans: list[SpanBody] = []
    rollup: RollupBody | None = None
    root_metadata: dict[str, Any] | None = None

    def record(self, experiment_id: str) -> RowRecord:
        rollup = self.rollup
        return RowRecord(
            experiment_id=experiment_id,
            run_iteration=self.run_iteration,
            record_id=self.record_id,
            idx=self.idx,
            span_id=self.span_id,
            trace_id=self.trace_id,
            span_name=self.span_name,
            start_ns=self.start_ns,
            duration_ns=self.duration_ns,
            input_data=self.input_data,
            output=self.output,
            expected_output=self.expected_output,
            record_metadata=self.record_metadata,
            tags=self.tags,
            error=_error(self.error),
            retries=self.retries,
            evaluations=[evaluation.record() for evaluation in self.evaluations],
            spans=[span.record() for span in self.spans],
            rollup=TraceRollup(**rollup.model_dump()) if rollup is not None else None,
            root_metadata=self.root_metadata,
        )


class RowResource(SdkModel):
    type: Literal["experiment_rows"]
    id: str | None = None
    attributes: RowAttributes


class RowsBody(SdkModel):
    data: list[RowResource]


class SummaryEvaluationsAttributes(SdkModel):
    run_iteration: Iteration
    evaluations: list[EvaluationBody]


class SummaryEvaluationsData(SdkModel):
    type: Literal["summary_evaluations"]
    attributes: SummaryEvaluationsAttributes


class SummaryEvaluationsBody(SdkModel):
    data: SummaryEvaluationsData


class RunBody(SdkModel):
    run_id: Annotated[str, Field(min_length=1, max_length=64)]
    run_iteration: Iteration


class ExperimentSpecAttributes(SdkModel):
    project_id: str
    dataset_id: str
    dataset_version: Annotated[int, Field(ge=0, le=2**31 - 1)]
    name: Annotated[str, Field(min_length=1, max_length=400)]
    description: str = ""
    config: dict[str, Any] = {}
    tags: dict[str, str] = {}
    run_count: Iteration = 1
    parent_experiment_id: str | None = None
    task_name: str = ""
    evaluator_names: list[str] = []
    summary_evaluator_names: list[str] = []
    sample_size: Count | None = None
    runs: list[RunBody] = []

    def spec(self) -> ExperimentSpec:
        fields = self.model_dump(exclude={"runs", "evaluator_names", "summary_evaluator_names"})
        return ExperimentSpec(
            **fields,
            evaluator_names=tuple(self.evaluator_names),
            summary_evaluator_names=tuple(self.summary_evaluator_names),
        )

    def run_infos(self) -> list[RunInfo]:
        return [RunInfo(run_id=run.run_id, run_iteration=run.run_iteration) for run in self.runs]


class ExperimentSpecData(SdkModel):
    type: Literal["experiments"]
    attributes: ExperimentSpecAttributes


class ExperimentSpecBody(SdkModel):
    data: ExperimentSpecData


class ExperimentStateAttributes(SdkModel):
    status: ExperimentStatus
    error: str | None = None
    runner: str | None = None


class ExperimentStateData(SdkModel):
    type: Literal["experiments"]
    attributes: ExperimentStateAttributes


class ExperimentStateBody(SdkModel):
    data: ExperimentStateData


class TagEditsBody(SdkModel):
    add: list[str] = []
    remove: list[str] = []
    replace: list[str] | None = None


class InsertBody(SdkModel):
    record_id: str
    input_data: Any = None
    expected_output: Any = None
    metadata: Any = None
    tags: list[Any] = []

    def record(self) -> RecordInsert:
        return RecordInsert(
            record_id=self.record_id,
            input_data=self.input_data,
            expected_output=self.expected_output,
            metadata=self.metadata,
            tags=self.tags,
        )


class UpdateBody(SdkModel):
    """A field that is absent stays as it is; ``null`` sets it to None."""

    record_id: str
    input_data: Any = None
    expected_output: Any = None
    metadata: Any = None
    tag_operations: TagEditsBody | None = None

    def record(self) -> RecordUpdate:
        given = self.model_fields_set
        operations = self.tag_operations
        return RecordUpdate(
            record_id=self.record_id,
            input_data=self.input_data if "input_data" in given else UNCHANGED,
            expected_output=self.expected_output if "expected_output" in given else UNCHANGED,
            metadata=self.metadata if "metadata" in given else UNCHANGED,
            tag_operations=None
            if operations is None
            else TagOperations(
                add=tuple(operations.add),
                remove=tuple(operations.remove),
                replace=tuple(operations.replace) if operations.replace is not None else None,
            ),
        )


class DatasetChangesAttributes(SdkModel):
    inserts: list[InsertBody] = []
    updates: list[UpdateBody] = []
    deletes: list[str] = []
    deduplicate: bool = True
    create_new_version: bool = True


class DatasetChangesData(SdkModel):
    type: Literal["dataset_changes"]
    attributes: DatasetChangesAttributes


class DatasetChangesBody(SdkModel):
    data: DatasetChangesData


class BaselineAttributes(SdkModel):
    experiment_id: str


class BaselineData(SdkModel):
    type: Literal["baselines"]
    attributes: BaselineAttributes


class BaselineBody(SdkModel):
    data: BaselineData
