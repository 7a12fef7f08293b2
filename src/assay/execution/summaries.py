"""What a summary evaluator sees of one run: every row, row-aligned."""

from __future__ import annotations

import time
from collections.abc import Sequence

from assay.evaluation import SummaryEvaluatorContext
from assay.execution.plan import RunPlan
from assay.store.records import JSON, RowRecord


def summary_context(
    plan: RunPlan,
    rows: Sequence[RowRecord | None],
    evaluator_metadata: list[dict[str, JSON]],
) -> SummaryEvaluatorContext:
    """The run's inputs, outputs, expected outputs and evaluation values, one slot per record.

    A failed or missing evaluation is None in its slot, never a skipped slot, so the lists
    stay aligned with each other and with the dataset.
    """
    seen = list(dict.fromkeys(e.label for row in rows if row for e in row.evaluations))
    # An evaluator that never produced a label in this run still gets its column.
    labels = seen + [
        evaluator.label
        for evaluator in plan.evaluators
        if evaluator.label not in seen
        and not any(label.startswith(f"{evaluator.label}-") for label in seen)
    ]
    results: dict[str, list[JSON]] = {label: [] for label in labels}
    outputs: list[JSON] = []
    for row in rows:
        values = {e.label: e.value for e in row.evaluations if e.error is None} if row else {}
        outputs.append(row.output if row else None)
        for label in labels:
            results[label].append(values.get(label))
    return SummaryEvaluatorContext(
        inputs=[record.input_data for record in plan.records],
        outputs=outputs,
        expected_outputs=[record.expected_output for record in plan.records],
        evaluation_results=results,
        metadata=list(evaluator_metadata),
    )


def summary_timestamp(rows: Sequence[RowRecord | None]) -> int:
    """The run's latest row start, in ms, as ddtrace stamps summary metrics."""
    starts = [row.start_ns for row in rows if row is not None]
    return (max(starts) if starts else time.time_ns()) // 1_000_000
