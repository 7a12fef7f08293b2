"""What runs inside a Ray worker process: a chunk of (record, run) pairs, one after another.

Each Ray task computes its pairs exactly as a worker thread of the thread executor does
(:class:`~assay.execution.rows.RowExecutor`: the task, traced, then its evaluators) and
returns the rows; the driver keeps count and writes them. The plan (task, evaluators,
records) is put in Ray's object store once per experiment and reaches each task as a
reference *inside a list*, which Ray leaves unresolved: a worker process fetches and
unpickles it on its first chunk only, and keeps the prepared executor for later chunks.

This module imports Ray only through the object reference it is handed, so it is safe to
import (and to unpickle on a worker) wherever Assay is installed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from assay.execution.calls import CallPolicy
from assay.execution.context import set_current_row
from assay.execution.plan import RunPlan
from assay.execution.rows import RowExecutor
from assay.store.records import RowRecord

Pair = tuple[int, int]
"""(run index, record index) into the plan's runs and records."""

_KEEP_PLANS = 2
"""Prepared plans a worker process keeps: a long-lived worker serves experiment after
experiment, and each plan holds its dataset."""


@dataclass(frozen=True)
class ShippedPlan:
    """The part of a run's plan that workers need, as put in the object store."""

    key: str
    """Unique per execution: names the prepared plan in each worker's cache."""
    plan: RunPlan
    """Without stored rows and summary evaluators: those stay on the driver."""
    integrations: bool
    """Whether the driver instruments client libraries (openai, anthropic): workers then
    do too, so LLM calls inside tasks become spans with tokens and cost, as with threads."""


@dataclass
class _Prepared:
    rows: RowExecutor
    is_async: bool
    loop: asyncio.AbstractEventLoop | None = None
    pool: ThreadPoolExecutor | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        self.rows.close()
        if self.loop is not None:
            self.loop.close()
        if self.pool is not None:
            self.pool.shutdown(wait=False)


_prepared: OrderedDict[str, _Prepared] = OrderedDict()
_prepared_lock = threading.Lock()


def _prepare(key: str, boxed: list[Any]) -> _Prepared:
    with _prepared_lock:
        found = _prepared.get(key)
        if found is not None:
            _prepared.move_to_end(key)
            return found
    import ray  # only ever imported on a Ray worker, where it is installed

    shipped: ShippedPlan = ray.get(boxed[0])
    if shipped.integrations:
        from assay import integrations

        integrations.patch_all()
    plan = shipped.plan
    # The policy's stop flag belongs to the driver; a worker finishes the pairs it holds.
    policy = CallPolicy(
        jobs=plan.jobs,
        max_retries=plan.max_retries,
        retry_delay=plan.retry_delay,
        timeout=plan.timeout,
    )
    prepared = _Prepared(rows=RowExecutor(plan, policy), is_async=plan.task.is_async)
    with _prepared_lock:
        _prepared[key] = prepared
        while len(_prepared) > _KEEP_PLANS:
            _prepared.popitem(last=False)[1].close()
    return prepared


def compute_rows(boxed: list[Any], key: str, pairs: list[Pair]) -> tuple[list[RowRecord], float]:
    """The rows of ``pairs``, in order, and the seconds this worker spent computing them.

    ``boxed`` is ``[ObjectRef of a ShippedPlan]``. The seconds exclude fetching the plan,
    so the driver can size later chunks from what a pair really takes.
    """
    prepared = _prepare(key, boxed)
    started = time.perf_counter()
    # One chunk at a time per process (Ray runs one task per worker) but be safe with
    # threaded actors or a user's own concurrency: the executor's loop is not reentrant.
    with prepared.lock:
        if prepared.is_async:
            rows = _rows_async(prepared, pairs)
        else:
            rows = []
            for run_index, record_index in pairs:
                rows.append(prepared.rows.execute(run_index, record_index))
                set_current_row(None)
    return rows, time.perf_counter() - started


def _rows_async(prepared: _Prepared, pairs: list[Pair]) -> list[RowRecord]:
    # One loop per worker process, kept between chunks: an async client a task caches
    # (an httpx.AsyncClient at module level) stays bound to a loop that is still open.
    if prepared.loop is None:
        prepared.loop = asyncio.new_event_loop()
        prepared.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="assay-evaluator")
    pool = prepared.pool
    assert pool is not None

    async def chunk() -> list[RowRecord]:
        rows = []
        for run_index, record_index in pairs:
            rows.append(await prepared.rows.execute_async(run_index, record_index, pool))
            set_current_row(None)
        return rows

    return prepared.loop.run_until_complete(chunk())
