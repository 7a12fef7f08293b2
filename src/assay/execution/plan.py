"""What one execution is asked to do (:class:`RunPlan`) and what it produced (:class:`Outcome`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from assay.execution.callables import Evaluator, SummaryEvaluator, Task
from assay.execution.calls import RetryDelay, default_retry_delay
from assay.store.records import JSON, EvaluationRecord, RowRecord, RunInfo, StoredRecord


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
    timeout: float | None = None
    """Seconds one task or evaluator call may take before it fails as a timeout."""
    budget: int | None = None
    """Nanodollars of estimated cost after which no new pair starts."""
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
    spent: int = 0
    """Estimated cost of the rows produced in this execution, in nanodollars."""
    budget_exhausted: bool = False
    rate_limited: int = 0
    """How many calls a provider answered with a rate limit (and were retried)."""
