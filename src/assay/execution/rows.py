"""Computing one row: the task call (or a stored output), traced, then every evaluator.

:class:`RowExecutor` is the per-pair path of the engine. It is kept free of scheduling
and bookkeeping, and does as little as it can per call: signatures were inspected once,
metadata for class evaluators is built once per record, and a task that opens no span
pays only for starting and ending its trace.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from assay.execution.callables import (
    Evaluator,
    add_evaluations,
    error_info,
    evaluation_records,
    failed_evaluation,
    merge_labels,
)
from assay.execution.calls import CallOutcome, CallPolicy
from assay.execution.context import RowContext, set_current_row
from assay.execution.plan import RunPlan
from assay.ids import new_span_id, new_trace_id
from assay.store.records import JSON, ErrorInfo, EvaluationRecord, RowRecord
from assay.tracing import FinishedTrace, begin_trace, end_trace


async def _in_context(context: contextvars.Context, coroutine: Any) -> Any:
    # A task made on another thread's loop starts from that thread's context: carry the
    # worker's (current row, open trace) over.
    for variable, value in context.items():
        variable.set(value)
    return await coroutine


class RowExecutor:
    """Runs the task (or replays a stored output) and the evaluators for one pair."""

    def __init__(self, plan: RunPlan, policy: CallPolicy) -> None:
        self.plan = plan
        self.policy = policy
        # Per record, computed once: what class evaluators see as metadata.
        self._evaluator_metadata = [
            {**(record.metadata or {}), "experiment_config": plan.config} for record in plan.records
        ]
        self._needs_label_merge = len({e.label for e in plan.evaluators}) < len(plan.evaluators)
        self._lock = threading.Lock()
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._async_thread: threading.Thread | None = None

    @property
    def evaluator_metadata(self) -> list[dict[str, JSON]]:
        return self._evaluator_metadata

    def row_context(self, run_index: int, record_index: int) -> RowContext:
        run = self.plan.runs[run_index]
        # Positional: a frozen dataclass built with keywords costs three times as much.
        return RowContext(
            self.plan.experiment_id,
            self.plan.records[record_index].record_id,
            record_index,
            run.run_id,
            run.run_iteration,
        )

    def _replayed(self, run_index: int, record_index: int) -> RowRecord | None:
        """The stored row whose output this pair re-scores, when re-scoring."""
        if self.plan.replay is None:
            return None
        return self.plan.replay[run_index][record_index]

    def _row(
        self,
        run_index: int,
        record_index: int,
        start_ns: int,
        duration_ns: int,
        output: JSON,
        error: ErrorInfo | None,
        retries: int,
        span_id: str,
        trace_id: str,
        evaluations: list[EvaluationRecord],
        trace: FinishedTrace | None,
    ) -> RowRecord:
        record = self.plan.records[record_index]
        if self._needs_label_merge or len(evaluations) != len(self.plan.evaluators):
            evaluations = merge_labels(evaluations)
        row = RowRecord(
            experiment_id=self.plan.experiment_id,
            run_iteration=self.plan.runs[run_index].run_iteration,
            record_id=record.record_id,
            idx=record_index,
            span_id=span_id,
            trace_id=trace_id,
            span_name=self.plan.task.name,
            start_ns=start_ns,
            duration_ns=duration_ns,
            input_data=record.input_data,
            output=output,
            expected_output=record.expected_output,
            record_metadata=record.metadata,
            tags=record.tags,
            error=error,
            retries=retries,
            evaluations=evaluations,
        )
        if trace is not None and (trace.spans or trace.root_annotations):
            row.spans = trace.spans
            row.rollup = trace.rollup
            row.root_metadata = trace.root_annotations
        return row

    # Sync ---------------------------------------------------------------------------------

    def execute(self, run_index: int, record_index: int) -> RowRecord:
        """The row of one pair, computed on the calling (worker) thread."""
        plan = self.plan
        record = plan.records[record_index]
        set_current_row(self.row_context(run_index, record_index))
        span_id, trace_id = new_span_id(), new_trace_id()
        start_ns = time.time_ns()
        started = time.perf_counter_ns()
        replayed = self._replayed(run_index, record_index)
        trace: FinishedTrace | None = None
        if replayed is not None:
            output, failure, retries = replayed.output, replayed.error, 0
            duration_ns = replayed.duration_ns
        else:
            arguments = plan.task.arguments(record.input_data, plan.config, record.metadata)
            function = plan.task.function
            opened = begin_trace(trace_id, span_id)
            try:
                if self.policy.plain:
                    try:
                        output, failure, retries = function(*arguments), None, 0
                    except Exception as error:
                        called = self.policy.call(function, arguments, first_error=error)
                        output, failure, retries = self._unpack(called)
                else:
                    output, failure, retries = self._unpack(self.policy.call(function, arguments))
            finally:
                trace = end_trace(opened)
            duration_ns = time.perf_counter_ns() - started
        timestamp_ms = start_ns // 1_000_000
        evaluations: list[EvaluationRecord] = []
        for evaluator in plan.evaluators:
            self.evaluate(
                evaluations, evaluator, record_index, output, span_id, trace_id, timestamp_ms
            )
        return self._row(
            run_index,
            record_index,
            start_ns,
            duration_ns,
            output,
            failure,
            retries,
            span_id,
            trace_id,
            evaluations,
            trace,
        )

    @staticmethod
    def _unpack(called: CallOutcome) -> tuple[JSON, ErrorInfo | None, int]:
        error = called.error
        return called.value, error_info(error) if error is not None else None, called.retries

    def evaluate(
        self,
        into: list[EvaluationRecord],
        evaluator: Evaluator,
        record_index: int,
        output: JSON,
        span_id: str,
        trace_id: str,
        timestamp_ms: int,
    ) -> None:
        """One evaluator on one row, from a worker thread; its evaluations go ``into``."""
        record = self.plan.records[record_index]
        function: Callable[..., Any]
        arguments: tuple[Any, ...]
        if evaluator.direct is not None:
            function = evaluator.direct
            arguments = (record.input_data, output, record.expected_output)
        else:
            function, arguments = (
                evaluator.call,
                (
                    record.input_data,
                    output,
                    record.expected_output,
                    self._evaluator_metadata[record_index],
                    span_id,
                    trace_id,
                ),
            )
            if evaluator.is_async:
                function, arguments = self._evaluate_from_thread, (evaluator, arguments)
        if self.policy.plain:
            try:
                add_evaluations(into, evaluator.label, function(*arguments), timestamp_ms)
                return
            except Exception as error:
                called = self.policy.call(function, arguments, first_error=error)
        else:
            called = self.policy.call(function, arguments)
        if called.error is not None:
            into.append(failed_evaluation(evaluator.label, called.error, timestamp_ms))
        else:
            add_evaluations(into, evaluator.label, called.value, timestamp_ms)

    def _evaluate_from_thread(self, evaluator: Evaluator, arguments: tuple[Any, ...]) -> Any:
        return self.await_from_thread(evaluator.call(*arguments))

    def await_from_thread(self, coroutine: Any) -> Any:
        """Run a coroutine (an async evaluator) from a worker thread, on one shared loop."""
        with self._lock:
            if self._async_loop is None:
                loop = asyncio.new_event_loop()
                self._async_thread = threading.Thread(
                    target=loop.run_forever, name="assay-async-evaluators", daemon=True
                )
                self._async_thread.start()
                self._async_loop = loop
            loop = self._async_loop
        wrapped = _in_context(contextvars.copy_context(), coroutine)
        return asyncio.run_coroutine_threadsafe(wrapped, loop).result()

    def close(self) -> None:
        loop, thread = self._async_loop, self._async_thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            self._async_loop = self._async_thread = None

    # Async --------------------------------------------------------------------------------

    async def execute_async(
        self, run_index: int, record_index: int, pool: ThreadPoolExecutor
    ) -> RowRecord:
        """The row of one pair, computed by a coroutine (async task)."""
        plan = self.plan
        record = plan.records[record_index]
        row_context = self.row_context(run_index, record_index)
        set_current_row(row_context)
        span_id, trace_id = new_span_id(), new_trace_id()
        start_ns = time.time_ns()
        started = time.perf_counter_ns()
        replayed = self._replayed(run_index, record_index)
        trace: FinishedTrace | None = None
        if replayed is not None:
            output, failure, retries = replayed.output, replayed.error, 0
            duration_ns = replayed.duration_ns
        else:
            arguments = plan.task.arguments(record.input_data, plan.config, record.metadata)
            opened = begin_trace(trace_id, span_id)
            try:
                called = await self.policy.call_async(plan.task.function, arguments)
            finally:
                trace = end_trace(opened)
            duration_ns = time.perf_counter_ns() - started
            output, failure, retries = self._unpack(called)
        timestamp_ms = start_ns // 1_000_000
        evaluations: list[EvaluationRecord] = []
        loop = asyncio.get_running_loop()
        for evaluator in plan.evaluators:
            if evaluator.is_async:
                evaluations.extend(
                    await self._evaluate_async(
                        evaluator, record_index, output, span_id, trace_id, timestamp_ms
                    )
                )
            else:
                # A sync evaluator may be slow (a judge over HTTP): keep it off the loop,
                # in this coroutine's context (executor threads do not inherit it).
                context = contextvars.copy_context()
                found: list[EvaluationRecord] = []
                await loop.run_in_executor(
                    pool,
                    functools.partial(
                        context.run,
                        self.evaluate,
                        found,
                        evaluator,
                        record_index,
                        output,
                        span_id,
                        trace_id,
                        timestamp_ms,
                    ),
                )
                evaluations.extend(found)
        return self._row(
            run_index,
            record_index,
            start_ns,
            duration_ns,
            output,
            failure,
            retries,
            span_id,
            trace_id,
            evaluations,
            trace,
        )

    async def _evaluate_async(
        self,
        evaluator: Evaluator,
        record_index: int,
        output: JSON,
        span_id: str,
        trace_id: str,
        timestamp_ms: int,
    ) -> list[EvaluationRecord]:
        record = self.plan.records[record_index]
        called = await self.policy.call_async(
            evaluator.call,
            (
                record.input_data,
                output,
                record.expected_output,
                self._evaluator_metadata[record_index],
                span_id,
                trace_id,
            ),
        )
        if called.error is not None:
            return [failed_evaluation(evaluator.label, called.error, timestamp_ms)]
        return evaluation_records(evaluator.label, called.value, timestamp_ms)
