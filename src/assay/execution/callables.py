"""Tasks and evaluators, checked and wrapped once so the per-call path does no inspection.

The checks are ddtrace's: parameters are recognised by *name* (``input_data``, ``config``,
optional ``metadata``; ``input_data, output_data, expected_output`` for evaluators;
``inputs, outputs, expected_outputs, evaluators_results`` for summary evaluators).
"""

from __future__ import annotations

import inspect
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from assay.evaluation import (
    BaseAsyncEvaluator,
    BaseAsyncSummaryEvaluator,
    BaseEvaluator,
    BaseSummaryEvaluator,
    EvaluatorContext,
    EvaluatorResult,
    MultiEvaluatorResult,
    SummaryEvaluatorContext,
    metric_type_of,
    validate_label,
)
from assay.store.records import JSON, ErrorInfo, EvaluationRecord, MetricType

TASK_PARAMETERS = ("input_data", "config")
EVALUATOR_PARAMETERS = ("input_data", "output_data", "expected_output")
SUMMARY_PARAMETERS = ("inputs", "outputs", "expected_outputs", "evaluators_results")


def error_info(error: BaseException) -> ErrorInfo:
    """An exception as stored: ``module.QualName``, message and the formatted stack."""
    kind = type(error)
    module = kind.__module__
    return ErrorInfo(
        type=f"{module}.{kind.__qualname__}",
        message=str(error),
        stack="".join(traceback.format_exception(error)),
    )


def _parameter_names(function: Callable[..., Any]) -> list[str]:
    try:
        return list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return []


def _is_async(function: object) -> bool:
    call = getattr(function, "__call__", None)  # noqa: B004 - a class instance may be async
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call)


def _callable_name(function: object) -> str:
    return str(getattr(function, "__name__", type(function).__name__))


@dataclass(frozen=True, slots=True)
class Task:
    """The task, with how to call it decided once."""

    function: Callable[..., Any]
    name: str
    is_async: bool
    takes_metadata: bool

    @classmethod
    def check(cls, task: object, *, require_async: bool = False) -> Task:
        if not callable(task):
            raise TypeError(f"task must be a callable function, got {type(task).__name__}")
        names = _parameter_names(task)
        missing = [name for name in TASK_PARAMETERS if name not in names]
        if missing:
            raise TypeError(
                f"Task function {_callable_name(task)!r} must have parameters named "
                f"'input_data' and 'config' (missing {', '.join(map(repr, missing))}); "
                "an optional third one named 'metadata' receives the record's metadata"
            )
        is_async = _is_async(task)
        if require_async and not is_async:
            raise TypeError(
                f"async_experiment needs an `async def` task; {_callable_name(task)!r} is "
                "synchronous: use LLMObs.experiment() for it"
            )
        return cls(
            function=task,
            name=_callable_name(task),
            is_async=is_async,
            takes_metadata="metadata" in names,
        )

    def arguments(
        self, input_data: JSON, config: dict[str, JSON], metadata: dict[str, JSON]
    ) -> tuple[Any, ...]:
        if self.takes_metadata:
            return (input_data, config, metadata)
        return (input_data, config)


@dataclass(frozen=True, slots=True)
class Evaluator:
    """A row evaluator, function or class, sync or async."""

    label: str
    call: Callable[[JSON, JSON, JSON, dict[str, JSON], str, str], Any]
    is_async: bool
    direct: Callable[[JSON, JSON, JSON], Any] | None = None
    """A sync function evaluator itself, called with its three arguments and no wrapper."""

    @classmethod
    def check(cls, evaluator: object) -> Evaluator:
        if isinstance(evaluator, BaseEvaluator | BaseAsyncEvaluator):
            method = evaluator.evaluate

            def call_class(
                input_data: JSON,
                output_data: JSON,
                expected_output: JSON,
                metadata: dict[str, JSON],
                span_id: str,
                trace_id: str,
            ) -> Any:
                return method(
                    EvaluatorContext(
                        input_data=input_data,
                        output_data=output_data,
                        expected_output=expected_output,
                        metadata=metadata,
                        span_id=span_id,
                        trace_id=trace_id,
                    )
                )

            return cls(
                label=evaluator.name,
                call=call_class,
                is_async=isinstance(evaluator, BaseAsyncEvaluator),
            )
        if isinstance(evaluator, type) and issubclass(
            evaluator, BaseEvaluator | BaseAsyncEvaluator
        ):
            raise TypeError(
                f"Evaluator {evaluator.__name__} is a class: pass an instance, "
                f"e.g. {evaluator.__name__}()"
            )
        if not callable(evaluator):
            raise TypeError(
                f"Evaluator {evaluator!r} must be a function or a BaseEvaluator instance"
            )
        names = _parameter_names(evaluator)
        missing = [name for name in EVALUATOR_PARAMETERS if name not in names]
        if missing:
            raise TypeError(
                f"Evaluator function {_callable_name(evaluator)!r} must have parameters named "
                "'input_data', 'output_data' and 'expected_output' "
                f"(missing {', '.join(map(repr, missing))})"
            )
        function = evaluator

        def call_function(
            input_data: JSON,
            output_data: JSON,
            expected_output: JSON,
            _metadata: dict[str, JSON],
            _span_id: str,
            _trace_id: str,
        ) -> Any:
            return function(input_data, output_data, expected_output)

        is_async = _is_async(evaluator)
        return cls(
            label=validate_label(_callable_name(evaluator)),
            call=call_function,
            is_async=is_async,
            direct=None if is_async else function,
        )


@dataclass(frozen=True, slots=True)
class SummaryEvaluator:
    """A summary evaluator, function or class, sync or async."""

    label: str
    call: Callable[[SummaryEvaluatorContext], Any]
    is_async: bool

    @classmethod
    def check(cls, evaluator: object) -> SummaryEvaluator:
        if isinstance(evaluator, BaseSummaryEvaluator | BaseAsyncSummaryEvaluator):
            return cls(
                label=evaluator.name,
                call=evaluator.evaluate,
                is_async=isinstance(evaluator, BaseAsyncSummaryEvaluator),
            )
        if not callable(evaluator):
            raise TypeError(
                f"Summary evaluator {evaluator!r} must be a function or a "
                "BaseSummaryEvaluator instance"
            )
        names = _parameter_names(evaluator)
        missing = [name for name in SUMMARY_PARAMETERS if name not in names]
        if missing:
            raise TypeError(
                f"Summary evaluator function {_callable_name(evaluator)!r} must have parameters "
                "named 'inputs', 'outputs', 'expected_outputs' and 'evaluators_results' "
                f"(missing {', '.join(map(repr, missing))})"
            )
        function = evaluator

        def call_function(context: SummaryEvaluatorContext) -> Any:
            return function(
                context.inputs,
                context.outputs,
                context.expected_outputs,
                context.evaluation_results,
            )

        return cls(
            label=validate_label(_callable_name(evaluator)),
            call=call_function,
            is_async=_is_async(evaluator),
        )


def check_unique_labels(labels: list[str], *, what: str) -> None:
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ValueError(
                f"Two {what} are named {label!r}; their results would overwrite each other. "
                "Give one of them another name (class evaluators: name=...)"
            )
        seen.add(label)


# Metric types of the plain values evaluators return most, looked up by exact type: the
# per-evaluation path is hot, and a dict lookup beats a chain of isinstance checks.
_PLAIN_METRIC_TYPES: dict[type, MetricType] = {
    bool: "boolean",
    int: "score",
    float: "score",
    str: "categorical",
    type(None): "categorical",
    dict: "json",
}


def add_evaluations(
    into: list[EvaluationRecord], label: str, returned: Any, timestamp_ms: int
) -> None:
    """Append what an evaluator returned to ``into`` (the hot path: no list per value)."""
    metric_type = _PLAIN_METRIC_TYPES.get(type(returned))
    if metric_type is not None:
        into.append(EvaluationRecord(label, metric_type, returned, timestamp_ms))
    else:
        into.extend(evaluation_records(label, returned, timestamp_ms))


def evaluation_records(label: str, returned: Any, timestamp_ms: int) -> list[EvaluationRecord]:
    """What an evaluator returned, as stored evaluations (several for a MultiEvaluatorResult)."""
    metric_type = _PLAIN_METRIC_TYPES.get(type(returned))
    if metric_type is not None:
        return [EvaluationRecord(label, metric_type, returned, timestamp_ms)]
    if isinstance(returned, MultiEvaluatorResult):
        records: list[EvaluationRecord] = []
        for key, value in returned.values.items():
            records.extend(
                evaluation_records(
                    f"{label}-{key}" if returned.prefix else key, value, timestamp_ms
                )
            )
        return records
    if isinstance(returned, EvaluatorResult):
        return [
            EvaluationRecord(
                label=label,
                metric_type=metric_type_of(returned.value),
                value=returned.value,
                timestamp_ms=timestamp_ms,
                reasoning=returned.reasoning,
                assessment=returned.assessment,
                metadata=returned.metadata,
                tags=returned.tags,
            )
        ]
    return [
        EvaluationRecord(
            label=label,
            metric_type=metric_type_of(returned),
            value=returned,
            timestamp_ms=timestamp_ms,
        )
    ]


def failed_evaluation(label: str, error: BaseException, timestamp_ms: int) -> EvaluationRecord:
    return EvaluationRecord(
        label=label,
        metric_type="categorical",
        value=None,
        timestamp_ms=timestamp_ms,
        error=error_info(error),
    )


def merge_labels(records: list[EvaluationRecord]) -> list[EvaluationRecord]:
    """Keep one evaluation per label; on a collision the later one wins, with a warning."""
    by_label: dict[str, EvaluationRecord] = {}
    for record in records:
        if record.label in by_label:
            warnings.warn(
                f"Two evaluations of one row are labelled {record.label!r}; keeping the later. "
                "Use MultiEvaluatorResult(prefix=True) or rename an evaluator",
                stacklevel=2,
            )
        by_label[record.label] = record
    return list(by_label.values())
