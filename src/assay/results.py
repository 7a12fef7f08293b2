"""What ``experiment.run()`` returns, in ddtrace's shapes.

``ExperimentResult`` is a dict with ``runs`` (one :class:`ExperimentRun` per run, in run
order) and, for compatibility, ``rows`` / ``summary_evaluations`` of the first run.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from assay.store.records import JSON, EvaluationRecord, RowRecord

if TYPE_CHECKING:
    import pandas


class ErrorResult(TypedDict):
    message: str | None
    stack: str | None
    type: str | None


class ExperimentRowResult(TypedDict, total=False):
    """One row: the task's execution on one record in one run, with its evaluations."""

    idx: int
    """Index of the record in the dataset (or its sampled subset)."""
    record_id: str
    span_id: str
    """The root span's id (a decimal string of a random 63-bit number)."""
    trace_id: str
    """The trace's id (32 hex characters)."""
    timestamp: int
    """Start of the task call, in nanoseconds since the epoch."""
    duration: int
    """Duration of the task call, in nanoseconds."""
    span_name: str
    input: JSON
    expected_output: JSON
    output: JSON
    evaluations: dict[str, dict[str, JSON]]
    """Label → ``{"value", "error", ...}`` plus reasoning/assessment/metadata/tags when given."""
    metadata: dict[str, JSON]
    """Experiment context: tags, dataset_record_index, experiment_name, dataset_name."""
    error: ErrorResult
    """The task's error; every field None when the task succeeded."""
    retries: int
    """How many times the task call was retried."""


_NO_ERROR: ErrorResult = {"message": None, "stack": None, "type": None}


def evaluation_result(evaluation: EvaluationRecord, *, pulled: bool = False) -> dict[str, JSON]:
    """An evaluation as ddtrace shows it in a row (``pulled`` adds ``type`` and ``status``)."""
    error = evaluation.error
    result: dict[str, JSON] = {
        "value": evaluation.value,
        "error": (
            {"message": error.message, "type": error.type, "stack": error.stack} if error else None
        ),
    }
    # Most evaluations are bare values: skip the optional fields in one test.
    if (
        evaluation.reasoning is not None
        or evaluation.assessment is not None
        or evaluation.metadata is not None
        or evaluation.tags is not None
    ):
        for key in ("reasoning", "assessment", "metadata", "tags"):
            value = getattr(evaluation, key)
            if value is not None:
                result[key] = value
    if error is not None:
        result["status"] = "ERROR"
    elif pulled:
        result["status"] = "OK"
    if pulled:
        result["type"] = evaluation.metric_type
    return result


def row_result(
    row: RowRecord, context: dict[str, JSON], *, pulled: bool = False
) -> ExperimentRowResult:
    error = row.error
    return {
        "idx": row.idx,
        "record_id": row.record_id,
        "span_id": row.span_id,
        "trace_id": row.trace_id,
        "timestamp": row.start_ns,
        "duration": row.duration_ns,
        "span_name": row.span_name,
        "input": row.input_data,
        "expected_output": row.expected_output,
        "output": row.output,
        "evaluations": {
            evaluation.label: evaluation_result(evaluation, pulled=pulled)
            for evaluation in row.evaluations
        },
        "metadata": {**context, "dataset_record_index": row.idx},
        "error": (
            {"message": error.message, "stack": error.stack, "type": error.type}
            if error
            else dict(_NO_ERROR)  # type: ignore[typeddict-item]
        ),
        "retries": row.retries,
    }


class ExperimentRun:
    """One run of an experiment: every record once.

    ``rows`` are built from the stored row records on first access: an experiment of many
    runs returns at once, and a caller who reads one run pays for that run.
    """

    def __init__(
        self,
        run_id: uuid.UUID,
        run_iteration: int,
        rows: list[ExperimentRowResult] | Callable[[], list[ExperimentRowResult]],
        summary_evaluations: dict[str, dict[str, JSON]],
    ) -> None:
        self.run_id = run_id
        self.run_iteration = run_iteration
        self._rows = rows
        self.summary_evaluations = summary_evaluations

    @property
    def rows(self) -> list[ExperimentRowResult]:
        if callable(self._rows):
            self._rows = self._rows()
        return self._rows

    def __repr__(self) -> str:
        return (
            f"ExperimentRun(run_iteration={self.run_iteration}, run_id={self.run_id}, "
            f"rows={len(self.rows)})"
        )

    def as_dataframe(self) -> pandas.DataFrame:
        """This run's rows as a DataFrame (see :func:`rows_dataframe`)."""
        return rows_dataframe([self])


class ExperimentResult(TypedDict):
    runs: list[ExperimentRun]
    rows: list[ExperimentRowResult]
    """The first run's rows (kept for compatibility with ddtrace; prefer ``runs``)."""
    summary_evaluations: dict[str, dict[str, JSON]]
    """The first run's summary evaluations (compatibility; prefer ``runs``)."""


def _row_results(
    rows: Sequence[RowRecord], context: dict[str, JSON], pulled: bool
) -> list[ExperimentRowResult]:
    return [row_result(row, context, pulled=pulled) for row in rows]


def build_result(
    runs: Sequence[tuple[str, int]],
    rows_by_run: dict[int, list[RowRecord]],
    summaries_by_run: dict[int, list[EvaluationRecord]],
    context: dict[str, JSON],
    *,
    pulled: bool = False,
) -> ExperimentResult:
    """Assemble the result dict from stored (or just produced) rows and summaries."""
    experiment_runs = []
    base_tags = list(context.get("tags", []))
    for run_id, run_iteration in runs:
        run_context = {
            **context,
            "tags": [*base_tags, f"run_id:{run_id}", f"run_iteration:{run_iteration}"],
        }
        rows = functools.partial(
            _row_results, rows_by_run.get(run_iteration, []), run_context, pulled
        )
        summaries = {
            evaluation.label: evaluation_result(evaluation, pulled=pulled)
            for evaluation in summaries_by_run.get(run_iteration, [])
        }
        experiment_runs.append(ExperimentRun(uuid.UUID(run_id), run_iteration, rows, summaries))
    first = experiment_runs[0] if experiment_runs else None
    return {
        "runs": experiment_runs,
        "rows": first.rows if first else [],
        "summary_evaluations": first.summary_evaluations if first else {},
    }


def _flatten(prefix: str, value: Any, into: dict[tuple[str, str], Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            into[(prefix, str(key))] = inner
    else:
        into[(prefix, "")] = value


def rows_dataframe(runs: Sequence[ExperimentRun]) -> pandas.DataFrame:
    """All rows of the given runs stacked, one row per (record, run).

    Two-level columns: ``("run_id", "")``, ``("run_iteration", "")`` first, then
    ``("idx", "")``, ``("record_id", "")``, ``("input_data", key)``,
    ``("expected_output", key)``, ``("output", key)`` (non-dict values under ``""``),
    ``("evaluations", label)`` with the evaluation's value, ``("error", "type")``,
    ``("error", "message")``, ``("duration", "")`` in seconds and ``("span_id", "")``.
    """
    try:
        import pandas
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("as_dataframe() needs pandas: pip install 'assay[pandas]'") from error
    records: list[dict[tuple[str, str], Any]] = []
    for run in runs:
        for row in run.rows:
            flat: dict[tuple[str, str], Any] = {
                ("run_id", ""): str(run.run_id),
                ("run_iteration", ""): run.run_iteration,
                ("idx", ""): row["idx"],
                ("record_id", ""): row["record_id"],
            }
            _flatten("input_data", row["input"], flat)
            _flatten("expected_output", row["expected_output"], flat)
            _flatten("output", row["output"], flat)
            for label, evaluation in row["evaluations"].items():
                flat[("evaluations", label)] = evaluation.get("value")
            flat[("error", "type")] = row["error"]["type"]
            flat[("error", "message")] = row["error"]["message"]
            flat[("duration", "")] = row["duration"] / 1e9
            flat[("span_id", "")] = row["span_id"]
            records.append(flat)
    columns = list(dict.fromkeys(key for record in records for key in record))
    if not columns:
        return pandas.DataFrame()
    return pandas.DataFrame(
        [[record.get(column) for column in columns] for record in records],
        columns=pandas.MultiIndex.from_tuples(columns),
    )
