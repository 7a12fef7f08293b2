"""The engine: every (record, run) pair through the task and evaluators, ``jobs`` at a time.

All runs share one queue of pairs, in run order, so workers stay busy across run
boundaries (the reference idles at the end of each run) while each run still completes
as a unit and gets its summary evaluators as soon as its last row is in. Sync tasks run
on exactly ``jobs`` threads that each take a pair, call the task and its sync evaluators,
and hand the row to the writer: one hop per pair, not one per call. Async tasks run as
``jobs`` coroutines on the caller's event loop.
"""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from assay.errors import ExperimentError
from assay.evaluation import SummaryEvaluatorContext
from assay.execution.callables import (
    Evaluator,
    SummaryEvaluator,
    Task,
    error_info,
    evaluation_records,
    failed_evaluation,
    merge_labels,
)
from assay.execution.context import RowContext, current_row, set_current_row
from assay.execution.progress import NoProgress, ProgressCounter, ProgressDisplay
from assay.execution.writer import ResultWriter
from assay.store.records import (
    JSON,
    ErrorInfo,
    EvaluationRecord,
    RowRecord,
    RunInfo,
    StoredRecord,
)

RetryDelay = Callable[[int], float]


def default_retry_delay(attempt: int) -> float:
    """ddtrace's default: 0.1 s, 0.2 s, 0.3 s, ... after the first, second, third failure."""
    return 0.1 * (attempt + 1)


@dataclass
class RunPlan:
    """Everything one execution needs, checked and prepared before anything starts."""

    experiment_id: str
    config: dict[str, JSON]
    records: Sequence[StoredRecord]
    runs: Sequence[RunInfo]
    task: Task
    evaluators: Sequence[Evaluator]
    summary_evaluators: Sequence[SummaryEvaluator]
    jobs: int
    raise_errors: bool = False
    max_retries: int = 0
    retry_delay: RetryDelay = default_retry_delay
    stored_rows: Sequence[RowRecord] = ()
    """Rows already in the store (resuming): they are not run again, and they count
    towards their run's completion and its summary evaluators."""
    summarized_runs: frozenset[int] = frozenset()
    """Run iterations whose summary evaluations are already stored."""
    replay: Sequence[Sequence[RowRecord | None]] | None = None
    """Re-scoring: per [run index][record index], the stored row whose output the
    evaluators score instead of calling the task (None: call the task for that pair)."""
    skip: frozenset[tuple[int, int]] = frozenset()
    """(run index, record index) pairs not to execute at all."""


@dataclass
class Outcome:
    """What an execution produced, beyond what the writer stored."""

    rows: list[list[RowRecord | None]]
    summaries: dict[int, list[EvaluationRecord]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    raised: BaseException | None = None
    interrupted: bool = False


class Engine:
    """Executes a :class:`RunPlan`, streaming rows to a :class:`ResultWriter`."""

    def __init__(
        self,
        plan: RunPlan,
        writer: ResultWriter,
        *,
        display: ProgressDisplay | None = None,
        description: str = "experiment",
    ) -> None:
        self.plan = plan
        self.writer = writer
        self.display = display or NoProgress()
        self.description = description
        runs, records = len(plan.runs), len(plan.records)
        self.outcome = Outcome(rows=[[None] * records for _ in range(runs)])
        self._place_stored_rows()
        pairs = [
            (run, record)
            for run in range(runs)
            for record in range(records)
            if self.outcome.rows[run][record] is None and (run, record) not in plan.skip
        ]
        self._pairs: deque[tuple[int, int]] = deque(pairs)
        self._remaining = [0] * runs
        for run, _record in pairs:
            self._remaining[run] += 1
        self.counter = ProgressCounter(total=len(pairs))
        self._lock = threading.Lock()
        self._stop = False
        self._fatal: BaseException | None = None
        # Per record, computed once: what class evaluators see as metadata.
        self._evaluator_metadata = [
            {**(record.metadata or {}), "experiment_config": plan.config} for record in plan.records
        ]
        self._needs_label_merge = len({e.label for e in plan.evaluators}) < len(plan.evaluators)
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._async_thread: threading.Thread | None = None

    def _place_stored_rows(self) -> None:
        if not self.plan.stored_rows:
            return
        run_index = {run.run_iteration: n for n, run in enumerate(self.plan.runs)}
        record_index = {record.record_id: n for n, record in enumerate(self.plan.records)}
        for row in self.plan.stored_rows:
            run, record = run_index.get(row.run_iteration), record_index.get(row.record_id)
            if run is None or record is None:
                continue  # a row of a record outside this sample: kept in the store, not run
            self.outcome.rows[run][record] = row
            if row.error is not None:
                self.outcome.errors.append(f"{row.error.type}: {row.error.message}")
            for evaluation in row.evaluations:
                if evaluation.error is not None:
                    self.outcome.errors.append(
                        f"{evaluation.error.type}: {evaluation.error.message}"
                    )

    def _runs_to_summarize_first(self) -> list[int]:
        """Runs complete before anything runs (resuming) whose summaries were never stored."""
        if not self.plan.summary_evaluators:
            return []
        return [
            n
            for n, run in enumerate(self.plan.runs)
            if self._remaining[n] == 0
            and run.run_iteration not in self.plan.summarized_runs
            and any(row is not None for row in self.outcome.rows[n])
        ]

    # The per-pair path ------------------------------------------------------------------

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
    ) -> RowRecord:
        record = self.plan.records[record_index]
        if self._needs_label_merge or len(evaluations) != len(self.plan.evaluators):
            evaluations = merge_labels(evaluations)
        return RowRecord(
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

    def _row_context(self, run_index: int, record_index: int) -> RowContext:
        run = self.plan.runs[run_index]
        return RowContext(
            experiment_id=self.plan.experiment_id,
            record_id=self.plan.records[record_index].record_id,
            idx=record_index,
            run_id=run.run_id,
            run_iteration=run.run_iteration,
        )

    def _replayed(self, run_index: int, record_index: int) -> RowRecord | None:
        """The stored row whose output this pair re-scores, when re-scoring."""
        if self.plan.replay is None:
            return None
        return self.plan.replay[run_index][record_index]

    def _execute_sync(self, run_index: int, record_index: int) -> RowRecord:
        plan = self.plan
        record = plan.records[record_index]
        set_current_row(self._row_context(run_index, record_index))
        output: JSON = None
        failure: ErrorInfo | None = None
        retries = 0
        start_ns = time.time_ns()
        started = time.perf_counter_ns()
        replayed = self._replayed(run_index, record_index)
        if replayed is not None:
            output, failure = replayed.output, replayed.error
        else:
            arguments = plan.task.arguments(record.input_data, plan.config, record.metadata)
            function = plan.task.function
            while True:
                try:
                    output = function(*arguments)
                    break
                except Exception as error:
                    if retries < plan.max_retries and not self._stop:
                        time.sleep(plan.retry_delay(retries))
                        retries += 1
                        continue
                    failure = error_info(error)
                    break
        duration_ns = (
            replayed.duration_ns if replayed is not None else time.perf_counter_ns() - started
        )
        span_id = str(random.getrandbits(63) or 1)
        trace_id = f"{random.getrandbits(128):032x}"
        timestamp_ms = start_ns // 1_000_000
        evaluations: list[EvaluationRecord] = []
        for evaluator in plan.evaluators:
            evaluations.extend(
                self._evaluate_sync(
                    evaluator, record_index, output, span_id, trace_id, timestamp_ms
                )
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
        )

    def _evaluate_sync(
        self,
        evaluator: Evaluator,
        record_index: int,
        output: JSON,
        span_id: str,
        trace_id: str,
        timestamp_ms: int,
    ) -> list[EvaluationRecord]:
        record = self.plan.records[record_index]
        attempt = 0
        while True:
            try:
                returned = evaluator.call(
                    record.input_data,
                    output,
                    record.expected_output,
                    self._evaluator_metadata[record_index],
                    span_id,
                    trace_id,
                )
                if evaluator.is_async:
                    returned = self._await_from_thread(returned)
                return evaluation_records(evaluator.label, returned, timestamp_ms)
            except Exception as error:
                if attempt < self.plan.max_retries and not self._stop:
                    time.sleep(self.plan.retry_delay(attempt))
                    attempt += 1
                    continue
                return [failed_evaluation(evaluator.label, error, timestamp_ms)]

    async def _execute_async(
        self, run_index: int, record_index: int, pool: ThreadPoolExecutor
    ) -> RowRecord:
        plan = self.plan
        record = plan.records[record_index]
        row_context = self._row_context(run_index, record_index)
        set_current_row(row_context)
        output: JSON = None
        failure: ErrorInfo | None = None
        retries = 0
        start_ns = time.time_ns()
        started = time.perf_counter_ns()
        replayed = self._replayed(run_index, record_index)
        if replayed is not None:
            output, failure = replayed.output, replayed.error
        else:
            arguments = plan.task.arguments(record.input_data, plan.config, record.metadata)
            while True:
                try:
                    output = await plan.task.function(*arguments)
                    break
                except Exception as error:
                    if retries < plan.max_retries and not self._stop:
                        await asyncio.sleep(plan.retry_delay(retries))
                        retries += 1
                        continue
                    failure = error_info(error)
                    break
        duration_ns = (
            replayed.duration_ns if replayed is not None else time.perf_counter_ns() - started
        )
        span_id = str(random.getrandbits(63) or 1)
        trace_id = f"{random.getrandbits(128):032x}"
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
                # A sync evaluator may be slow (a judge over HTTP): keep it off the loop.
                evaluations.extend(
                    await loop.run_in_executor(
                        pool,
                        functools.partial(
                            self._evaluate_sync_in,
                            row_context,
                            evaluator,
                            record_index,
                            output,
                            span_id,
                            trace_id,
                            timestamp_ms,
                        ),
                    )
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
        )

    def _evaluate_sync_in(self, row_context: RowContext, *arguments: Any) -> list[EvaluationRecord]:
        # Executor threads do not inherit the coroutine's context: carry the row over.
        set_current_row(row_context)
        return self._evaluate_sync(*arguments)

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
        attempt = 0
        while True:
            try:
                returned = await evaluator.call(
                    record.input_data,
                    output,
                    record.expected_output,
                    self._evaluator_metadata[record_index],
                    span_id,
                    trace_id,
                )
                return evaluation_records(evaluator.label, returned, timestamp_ms)
            except Exception as error:
                if attempt < self.plan.max_retries and not self._stop:
                    await asyncio.sleep(self.plan.retry_delay(attempt))
                    attempt += 1
                    continue
                return [failed_evaluation(evaluator.label, error, timestamp_ms)]

    def _await_from_thread(self, coroutine: Any) -> Any:
        """Run an async evaluator's coroutine from a worker thread, on one shared loop."""
        with self._lock:
            if self._async_loop is None:
                loop = asyncio.new_event_loop()
                self._async_thread = threading.Thread(
                    target=loop.run_forever, name="assay-async-evaluators", daemon=True
                )
                self._async_thread.start()
                self._async_loop = loop
            loop = self._async_loop
        return asyncio.run_coroutine_threadsafe(_in_row(current_row(), coroutine), loop).result()

    # Bookkeeping ------------------------------------------------------------------------

    def _finish(self, run_index: int, record_index: int, row: RowRecord) -> bool:
        """Record a row; True when it completed its run."""
        failed_evaluations = [e for e in row.evaluations if e.error is not None]
        with self._lock:
            self.outcome.rows[run_index][record_index] = row
            self._remaining[run_index] -= 1
            self.counter.done += 1
            if row.error is not None or failed_evaluations:
                self.counter.errors += 1
                if row.error is not None:
                    self.outcome.errors.append(f"{row.error.type}: {row.error.message}")
                for evaluation in failed_evaluations:
                    assert evaluation.error is not None
                    self.outcome.errors.append(
                        f"{evaluation.error.type}: {evaluation.error.message}"
                    )
                if self.plan.raise_errors and self.outcome.raised is None:
                    self.outcome.raised = self._raise_for(row, failed_evaluations)
                    self._stop = True
            run_complete = self._remaining[run_index] == 0
        self.writer.put(row)
        return run_complete and not self._stop

    def _raise_for(self, row: RowRecord, failed: list[EvaluationRecord]) -> ExperimentError:
        if row.error is not None:
            return ExperimentError(
                f"Error on record {row.idx}: {row.error.message}\n{row.error.type}\n"
                f"{row.error.stack}"
            )
        evaluation = failed[0]
        assert evaluation.error is not None
        return ExperimentError(
            f"Evaluator {evaluation.label} failed on row {row.idx}: "
            f"{evaluation.error.type}: {evaluation.error.message}\n{evaluation.error.stack}"
        )

    def _summary_context(self, run_index: int) -> SummaryEvaluatorContext:
        rows = self.outcome.rows[run_index]
        seen = list(dict.fromkeys(e.label for row in rows if row for e in row.evaluations))
        # An evaluator that never produced a label in this run still gets its column.
        labels = seen + [
            evaluator.label
            for evaluator in self.plan.evaluators
            if evaluator.label not in seen
            and not any(label.startswith(f"{evaluator.label}-") for label in seen)
        ]
        results: dict[str, list[JSON]] = {label: [] for label in labels}
        outputs: list[JSON] = []
        for row in rows:
            # Row-aligned: a failed or missing evaluation is None, never a skipped slot.
            values = {e.label: e.value for e in row.evaluations if e.error is None} if row else {}
            outputs.append(row.output if row else None)
            for label in labels:
                results[label].append(values.get(label))
        return SummaryEvaluatorContext(
            inputs=[record.input_data for record in self.plan.records],
            outputs=outputs,
            expected_outputs=[record.expected_output for record in self.plan.records],
            evaluation_results=results,
            metadata=list(self._evaluator_metadata),
        )

    def _summary_timestamp(self, run_index: int) -> int:
        starts = [row.start_ns for row in self.outcome.rows[run_index] if row is not None]
        return (max(starts) if starts else time.time_ns()) // 1_000_000

    def _record_summary(
        self,
        run_index: int,
        evaluator: SummaryEvaluator,
        returned: Any,
        error: BaseException | None,
        timestamp_ms: int,
    ) -> list[EvaluationRecord]:
        if error is None:
            return evaluation_records(evaluator.label, returned, timestamp_ms)
        with self._lock:
            self.outcome.errors.append(f"{error_info(error).type}: {error}")
            if self.plan.raise_errors and self.outcome.raised is None:
                raised = ExperimentError(f"Summary evaluator {evaluator.label} failed: {error}")
                raised.__cause__ = error
                self.outcome.raised = raised
                self._stop = True
        return [failed_evaluation(evaluator.label, error, timestamp_ms)]

    def _store_summaries(self, run_index: int, evaluations: list[EvaluationRecord]) -> None:
        run_iteration = self.plan.runs[run_index].run_iteration
        with self._lock:
            self.outcome.summaries[run_iteration] = evaluations
        if evaluations:
            self.writer.put_summary(run_iteration, evaluations)

    def _summaries_sync(self, run_index: int) -> None:
        if not self.plan.summary_evaluators:
            return
        context = self._summary_context(run_index)
        timestamp_ms = self._summary_timestamp(run_index)
        evaluations: list[EvaluationRecord] = []
        for evaluator in self.plan.summary_evaluators:
            try:
                returned = evaluator.call(context)
                if evaluator.is_async:
                    returned = self._await_from_thread(returned)
                evaluations += self._record_summary(
                    run_index, evaluator, returned, None, timestamp_ms
                )
            except Exception as error:
                evaluations += self._record_summary(run_index, evaluator, None, error, timestamp_ms)
        self._store_summaries(run_index, evaluations)

    async def _summaries_async(self, run_index: int, pool: ThreadPoolExecutor) -> None:
        if not self.plan.summary_evaluators:
            return
        context = self._summary_context(run_index)
        timestamp_ms = self._summary_timestamp(run_index)
        loop = asyncio.get_running_loop()
        evaluations: list[EvaluationRecord] = []
        for evaluator in self.plan.summary_evaluators:
            try:
                if evaluator.is_async:
                    returned = await evaluator.call(context)
                else:
                    returned = await loop.run_in_executor(pool, evaluator.call, context)
                evaluations += self._record_summary(
                    run_index, evaluator, returned, None, timestamp_ms
                )
            except Exception as error:
                evaluations += self._record_summary(run_index, evaluator, None, error, timestamp_ms)
        self._store_summaries(run_index, evaluations)

    # Entry points -------------------------------------------------------------------------

    def _next_pair(self) -> tuple[int, int] | None:
        if self._stop or self.writer.failed:
            return None
        try:
            return self._pairs.popleft()  # deque.popleft is atomic: no lock needed
        except IndexError:
            return None

    def _thread_worker(self) -> None:
        try:
            while (pair := self._next_pair()) is not None:
                run_index, record_index = pair
                row = self._execute_sync(run_index, record_index)
                set_current_row(None)  # summary evaluators belong to a run, not a row
                if self._finish(run_index, record_index, row):
                    self._summaries_sync(run_index)
        except BaseException as error:  # a bug or SystemExit in a task: stop everything
            with self._lock:
                self._fatal = self._fatal or error
            self._stop = True

    def run_threads(self) -> Outcome:
        """Execute with ``jobs`` worker threads; the calling thread shows progress.

        Ctrl-C stops taking new pairs, lets the ones in flight finish and be stored, and
        marks the outcome interrupted.
        """
        workers = [
            threading.Thread(target=self._thread_worker, name=f"assay-worker-{n}", daemon=True)
            for n in range(max(1, min(self.plan.jobs, len(self._pairs))))
        ]
        self.display.start(self.description, self.counter)
        try:
            for run_index in self._runs_to_summarize_first():
                self._summaries_sync(run_index)
            for worker in workers:
                worker.start()
            for worker in workers:
                while worker.is_alive():
                    worker.join(0.1)
                    self.display.refresh()
        except KeyboardInterrupt:
            self._stop = True
            self.outcome.interrupted = True
            for worker in workers:
                worker.join()
        finally:
            self.display.stop()
            self._close_async_loop()
        if self._fatal is not None:
            self.outcome.interrupted = True
            raise self._fatal
        return self.outcome

    async def run_async(self) -> Outcome:
        """Execute with ``jobs`` coroutines on the running loop (async tasks)."""
        jobs = max(1, min(self.plan.jobs, len(self._pairs)))
        pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="assay-evaluator")

        async def worker() -> None:
            while (pair := self._next_pair()) is not None:
                run_index, record_index = pair
                row = await self._execute_async(run_index, record_index, pool)
                set_current_row(None)
                if self._finish(run_index, record_index, row):
                    await self._summaries_async(run_index, pool)

        async def refresher() -> None:
            while True:
                self.display.refresh()
                await asyncio.sleep(0.1)

        self.display.start(self.description, self.counter)
        for run_index in self._runs_to_summarize_first():
            await self._summaries_async(run_index, pool)
        refreshing = asyncio.create_task(refresher())
        workers = [asyncio.create_task(worker()) for _ in range(jobs)]
        try:
            await asyncio.gather(*workers)
        except (asyncio.CancelledError, KeyboardInterrupt):
            self._stop = True
            self.outcome.interrupted = True
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        except BaseException:
            self._stop = True
            self.outcome.interrupted = True
            raise
        finally:
            refreshing.cancel()
            self.display.stop()
            pool.shutdown(wait=False, cancel_futures=True)
        return self.outcome

    def _close_async_loop(self) -> None:
        loop, thread = self._async_loop, self._async_thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            self._async_loop = self._async_thread = None


async def _in_row(row: RowContext | None, coroutine: Any) -> Any:
    # A task made by another thread's loop starts from that thread's context.
    set_current_row(row)
    return await coroutine


def run_coroutine(coroutine: Coroutine[Any, Any, Outcome]) -> Outcome:
    """Run to completion from sync code, also when a loop is already running (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
