"""The engine: every (record, run) pair through the task and evaluators, ``jobs`` at a time.

All runs share one queue of pairs, in run order, so workers stay busy across run
boundaries (the reference idles at the end of each run) while each run still completes
as a unit and gets its summary evaluators as soon as its last row is in. Sync tasks run
on exactly ``jobs`` threads that each take a pair, call the task and its sync evaluators,
and hand the row to the writer: one hop per pair, not one per call. Async tasks run as
``jobs`` coroutines on the caller's event loop. Computing a row is
:class:`~assay.execution.rows.RowExecutor`'s job; this module schedules and keeps count.
With a :class:`RemoteRows` (the Ray executor) rows are computed elsewhere and this process
only hands out pairs, keeps count, writes and runs summary evaluators.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from assay.errors import ExperimentError
from assay.execution.callables import (
    SummaryEvaluator,
    error_info,
    evaluation_records,
    failed_evaluation,
)
from assay.execution.calls import CallPolicy, RetryDelay, default_retry_delay
from assay.execution.context import set_current_row
from assay.execution.plan import Outcome, RunPlan
from assay.execution.progress import NoProgress, ProgressCounter, ProgressDisplay
from assay.execution.rows import RowExecutor
from assay.execution.summaries import summary_context, summary_timestamp
from assay.execution.writer import ResultWriter
from assay.store.records import EvaluationRecord, RowRecord

logger = logging.getLogger("assay")

__all__ = [
    "Engine",
    "Outcome",
    "RemoteRows",
    "RetryDelay",
    "RunPlan",
    "default_retry_delay",
    "run_coroutine",
]


class RemoteCollected(Protocol):
    @property
    def rows(self) -> list[tuple[int, int, RowRecord]]: ...
    @property
    def failure(self) -> BaseException | None: ...


class RemoteRows(Protocol):
    """Computes the rows of (run index, record index) pairs somewhere else (a cluster)."""

    @property
    def in_flight(self) -> int:
        """Batches of pairs submitted and not collected yet."""
        ...

    def room(self, remaining: int) -> int:
        """How many of the ``remaining`` pairs to submit as the next batch; 0: not now."""
        ...

    def submit(self, pairs: list[tuple[int, int]]) -> None: ...

    def collect(self, timeout: float) -> RemoteCollected:
        """The rows of finished batches (waiting up to ``timeout`` s), and any failure."""
        ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...


class Engine:
    """Executes a :class:`RunPlan`, streaming rows to a :class:`ResultWriter`."""

    def __init__(
        self,
        plan: RunPlan,
        writer: ResultWriter,
        *,
        display: ProgressDisplay | None = None,
        description: str = "experiment",
        remote: RemoteRows | None = None,
    ) -> None:
        self.plan = plan
        self.remote = remote
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
        self._warned_unpriced = False
        self.policy = CallPolicy(
            jobs=plan.jobs,
            max_retries=plan.max_retries,
            retry_delay=plan.retry_delay,
            timeout=plan.timeout,
            stopping=lambda: self._stop,
        )
        self.rows = RowExecutor(plan, self.policy)

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
            self.outcome.errors.extend(_row_errors(row))
            # A budget is the experiment's: what the rows stored before a resume cost counts.
            self.outcome.spent += _row_cost(row)

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

    # Bookkeeping ------------------------------------------------------------------------

    def _finish(self, run_index: int, record_index: int, row: RowRecord) -> bool:
        """Record a row; True when it completed its run."""
        errors = _row_errors(row)
        cost = _row_cost(row)
        with self._lock:
            self.outcome.rows[run_index][record_index] = row
            self._remaining[run_index] -= 1
            self.counter.done += 1
            if (
                self.plan.budget is not None
                and not cost
                and not self._warned_unpriced
                and row.rollup is not None
                and row.rollup.total_tokens
            ):
                self._warned_unpriced = True
                logger.warning(
                    "A row used %d tokens of a model with no known price: the budget does "
                    "not count it, so it cannot stop calls to that model",
                    row.rollup.total_tokens,
                )
            if cost:
                self.outcome.spent += cost
                budget = self.plan.budget
                if budget is not None and self.outcome.spent >= budget:
                    self.outcome.budget_exhausted = True
                    self._stop = True
            if errors:
                self.counter.errors += 1
                self.outcome.errors.extend(errors)
                if self.plan.raise_errors and self.outcome.raised is None:
                    self.outcome.raised = _raise_for(row)
                    self._stop = True
            run_complete = self._remaining[run_index] == 0
        self.writer.put(row)
        return run_complete and not self._stop

    def _record_summary(
        self,
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
        rows = self.outcome.rows[run_index]
        context = summary_context(self.plan, rows, self.rows.evaluator_metadata)
        timestamp_ms = summary_timestamp(rows)
        evaluations: list[EvaluationRecord] = []
        for evaluator in self.plan.summary_evaluators:
            try:
                returned = evaluator.call(context)
                if evaluator.is_async:
                    returned = self.rows.await_from_thread(returned)
                evaluations += self._record_summary(evaluator, returned, None, timestamp_ms)
            except Exception as error:
                evaluations += self._record_summary(evaluator, None, error, timestamp_ms)
        self._store_summaries(run_index, evaluations)

    async def _summaries_async(self, run_index: int, pool: ThreadPoolExecutor) -> None:
        if not self.plan.summary_evaluators:
            return
        rows = self.outcome.rows[run_index]
        context = summary_context(self.plan, rows, self.rows.evaluator_metadata)
        timestamp_ms = summary_timestamp(rows)
        loop = asyncio.get_running_loop()
        evaluations: list[EvaluationRecord] = []
        for evaluator in self.plan.summary_evaluators:
            try:
                if evaluator.is_async:
                    returned = await evaluator.call(context)
                else:
                    returned = await loop.run_in_executor(pool, evaluator.call, context)
                evaluations += self._record_summary(evaluator, returned, None, timestamp_ms)
            except Exception as error:
                evaluations += self._record_summary(evaluator, None, error, timestamp_ms)
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
                row = self.rows.execute(run_index, record_index)
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
            self.rows.close()
            self.outcome.rate_limited = self.policy.rate_limited
        if self._fatal is not None:
            self.outcome.interrupted = True
            raise self._fatal
        return self.outcome

    def run_remote(self) -> Outcome:
        """Execute on :attr:`remote`: pairs go out in batches, rows come back to the writer.

        Summary evaluators run on one thread of this process as each run completes, so
        handing out pairs never waits for them. Ctrl-C stops handing out pairs and waits
        for the batches in flight; a second one abandons them.
        """
        remote = self.remote
        assert remote is not None
        summaries = ThreadPoolExecutor(max_workers=1, thread_name_prefix="assay-summaries")
        self.display.start(self.description, self.counter)
        try:
            for run_index in self._runs_to_summarize_first():
                self._summaries_sync(run_index)
            try:
                self._exchange(remote, summaries)
            except KeyboardInterrupt:
                self._stop = True
                self.outcome.interrupted = True
                try:
                    while remote.in_flight:
                        self._collect(remote, summaries)
                except KeyboardInterrupt:
                    remote.cancel()
        finally:
            summaries.shutdown(wait=True)
            self.display.stop()
            remote.close()
            self.rows.close()
        if self._fatal is not None:
            self.outcome.interrupted = True
            raise self._fatal
        return self.outcome

    def _exchange(self, remote: RemoteRows, summaries: ThreadPoolExecutor) -> None:
        while True:
            while not (self._stop or self.writer.failed) and (
                size := remote.room(len(self._pairs))
            ):
                remote.submit([self._pairs.popleft() for _ in range(min(size, len(self._pairs)))])
            if not remote.in_flight:
                return
            self._collect(remote, summaries)

    def _collect(self, remote: RemoteRows, summaries: ThreadPoolExecutor) -> None:
        collected = remote.collect(timeout=0.1)
        for run_index, record_index, row in collected.rows:
            if self.outcome.rows[run_index][record_index] is not None:
                continue  # a pair is written once, whatever a cluster sends back twice
            if self._finish(run_index, record_index, row):
                summaries.submit(self._summaries_sync, run_index)
        if collected.failure is not None:
            with self._lock:
                self._fatal = self._fatal or collected.failure
            self._stop = True
        self.display.refresh()

    async def run_async(self) -> Outcome:
        """Execute with ``jobs`` coroutines on the running loop (async tasks)."""
        jobs = max(1, min(self.plan.jobs, len(self._pairs)))
        pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="assay-evaluator")

        async def worker() -> None:
            while (pair := self._next_pair()) is not None:
                run_index, record_index = pair
                row = await self.rows.execute_async(run_index, record_index, pool)
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
            self.outcome.rate_limited = self.policy.rate_limited
        return self.outcome


def _row_cost(row: RowRecord) -> int:
    """Nanodollars a row cost: its trace's estimate plus what LLM judges report spending."""
    cost = (row.rollup.estimated_total_cost or 0) if row.rollup is not None else 0
    for evaluation in row.evaluations:
        spent = evaluation.metadata.get("judge_estimated_cost") if evaluation.metadata else None
        if isinstance(spent, int) and not isinstance(spent, bool):
            cost += spent
    return cost


def _row_errors(row: RowRecord) -> list[str]:
    """The "Type: message" of a row's task error and failed evaluations."""
    errors = [f"{row.error.type}: {row.error.message}"] if row.error is not None else []
    for evaluation in row.evaluations:
        if evaluation.error is not None:
            errors.append(f"{evaluation.error.type}: {evaluation.error.message}")
    return errors


def _raise_for(row: RowRecord) -> ExperimentError:
    """The error ``raise_errors=True`` raises for a row, worded as ddtrace words it."""
    if row.error is not None:
        return ExperimentError(
            f"Error on record {row.idx}: {row.error.message}\n{row.error.type}\n{row.error.stack}"
        )
    evaluation = next(e for e in row.evaluations if e.error is not None)
    assert evaluation.error is not None
    return ExperimentError(
        f"Evaluator {evaluation.label} failed on row {row.idx}: "
        f"{evaluation.error.type}: {evaluation.error.message}\n{evaluation.error.stack}"
    )


def run_coroutine(coroutine: Coroutine[Any, Any, Outcome]) -> Outcome:
    """Run to completion from sync code, also when a loop is already running (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
