"""Tracing inside experiments: child spans, token and cost roll-ups, stored and read back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from assay import LLMObs
from assay.pricing import estimate_cost
from assay.store import open_backend
from backends import on_every_backend


def stored(experiment_id: str, **options: Any) -> list[Any]:
    backend = open_backend()
    try:
        return backend.experiment_rows(experiment_id, **options)
    finally:
        backend.close()


def answer(input_data: Any, config: Any) -> str:
    with LLMObs.workflow(name="plan"):
        with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai", name="draft"):
            LLMObs.annotate(
                input_data="draft it",
                output_data="a draft",
                metrics={"input_tokens": 1000, "output_tokens": 200},
            )
        with LLMObs.tool(name="lookup"):
            pass
    with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai", name="final"):
        LLMObs.annotate(metrics={"input_tokens": 500, "output_tokens": 100})
    LLMObs.annotate(metadata={"strategy": "two-pass"})
    return "done"


def ok(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    return output_data == "done"


@on_every_backend
def test_spans_tokens_and_cost_are_stored_with_the_row(llmobs: type[LLMObs]) -> None:
    dataset = llmobs.create_dataset(dataset_name="d", records=[{"input_data": 1}])
    experiment = llmobs.experiment("traced", answer, dataset, [ok], runs=2)
    experiment.run(jobs=2)
    rows = stored(experiment.id or "", with_spans=True)
    assert len(rows) == 2
    expected_cost = (estimate_cost("gpt-4o-mini", "openai", 1000, 200) or 0) + (
        estimate_cost("gpt-4o-mini", "openai", 500, 100) or 0
    )
    assert expected_cost > 0
    for row in rows:
        assert row.rollup is not None
        assert (row.rollup.input_tokens, row.rollup.output_tokens) == (1500, 300)
        assert row.rollup.total_tokens == 1800
        assert row.rollup.estimated_total_cost == expected_cost
        assert row.root_metadata == {"metadata": {"strategy": "two-pass"}}
        names = [span.name for span in row.spans]
        assert names == ["plan", "draft", "lookup", "final"]
        plan, draft, lookup, final = row.spans
        assert plan.parent_id == row.span_id and final.parent_id == row.span_id
        assert draft.parent_id == plan.span_id and lookup.parent_id == plan.span_id
        assert {span.trace_id for span in row.spans} == {row.trace_id}
        assert draft.kind == "llm" and draft.model_name == "gpt-4o-mini"
        assert draft.total_tokens == 1200 and draft.input == "draft it"
    # Without with_spans the roll-up still comes back; the child spans do not.
    assert stored(experiment.id or "")[0].spans == []
    assert stored(experiment.id or "")[0].rollup == rows[0].rollup


@on_every_backend
def test_async_tasks_are_traced_too(llmobs: type[LLMObs]) -> None:
    dataset = llmobs.create_dataset(dataset_name="d", records=[{"input_data": i} for i in range(6)])

    async def task(input_data: Any, config: Any) -> Any:
        with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai"):
            await asyncio.sleep(0.001 * (6 - input_data))
            LLMObs.annotate(metrics={"input_tokens": input_data, "output_tokens": 1})
        return input_data

    experiment = llmobs.async_experiment("async-traced", task, dataset, [ok])
    asyncio.run(experiment.run(jobs=6))
    rows = stored(experiment.id or "", with_spans=True)
    # Concurrent coroutines each keep their own spans.
    for row in rows:
        assert row.rollup is not None
        assert row.rollup.input_tokens == row.output
        assert [span.input_tokens for span in row.spans] == [row.output]


@on_every_backend
def test_a_task_without_spans_has_no_rollup(llmobs: type[LLMObs]) -> None:
    dataset = llmobs.create_dataset(dataset_name="d", records=[{"input_data": 1}])

    def plain(input_data: Any, config: Any) -> str:
        return "done"

    experiment = llmobs.experiment("plain", plain, dataset, [ok])
    experiment.run()
    (row,) = stored(experiment.id or "", with_spans=True)
    assert row.rollup is None and row.spans == [] and row.root_metadata is None


@on_every_backend
def test_budget_stops_new_calls_and_the_experiment_can_resume(llmobs: type[LLMObs]) -> None:
    dataset = llmobs.create_dataset(
        dataset_name="d", records=[{"input_data": i} for i in range(20)]
    )

    def priced(input_data: Any, config: Any) -> str:
        with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai"):
            LLMObs.annotate(metrics={"input_tokens": 100_000, "output_tokens": 10_000})
        return "done"

    per_call = estimate_cost("gpt-4o-mini", "openai", 100_000, 10_000) or 0
    budget_usd = per_call * 5 / 1e9
    experiment = llmobs.experiment("budgeted", priced, dataset, [ok], runs=2)
    with pytest.raises(Exception, match="budget"):
        experiment.run(jobs=1, budget=budget_usd)
    assert experiment.info is not None and experiment.info.status == "interrupted"
    assert "budget" in (experiment.info.error or "")
    done = len(stored(experiment.id or ""))
    assert 5 <= done < 40
    again = llmobs.experiment("budgeted", priced, dataset, [ok], runs=2)
    again.run(jobs=2, resume=True)
    assert again.id == experiment.id
    assert len(stored(experiment.id or "")) == 40


def test_trace_metrics_average_by_record_and_total_by_row(llmobs: type[LLMObs]) -> None:
    from assay.store.records import RowRecord, TraceRollup
    from assay.trace_metrics import summarize_trace_metrics

    def row(record: str, run: int, seconds: float, tokens: int | None, cost: int | None) -> Any:
        made = RowRecord(
            experiment_id="e",
            run_iteration=run,
            record_id=record,
            idx=0,
            span_id="1",
            trace_id="t",
            span_name="task",
            start_ns=0,
            duration_ns=int(seconds * 1e9),
            input_data=None,
            output=None,
            expected_output=None,
            record_metadata={},
            tags=[],
            error=None,
            retries=0,
            evaluations=[],
        )
        if tokens is not None:
            made.rollup = TraceRollup(total_tokens=tokens, estimated_total_cost=cost)
        return made

    rows = [
        row("a", 1, 1.0, 100, 1000),
        row("a", 2, 3.0, 300, None),
        row("b", 1, 2.0, None, None),
        row("b", 2, 2.0, 50, 500),
    ]
    metrics = summarize_trace_metrics(rows)
    # Record means: duration a=2, b=2; tokens a=200, b=50; cost a=1000, b=500.
    assert metrics["duration"]["value"] == pytest.approx(2.0)
    assert metrics["duration"]["p50"] == pytest.approx(2.0)
    assert metrics["duration"]["p95"] == pytest.approx(2.85)
    assert metrics["total_tokens"] == {
        "value": 125.0,
        "total": 450.0,
        "rows": 3,
        "p50": None,
        "p95": None,
    }
    assert metrics["estimated_total_cost"]["value"] == 750.0
    assert metrics["estimated_total_cost"]["total"] == 1500.0
    assert metrics["input_tokens"]["value"] is None


@on_every_backend
def test_assay_show_prints_tokens_and_cost(llmobs: type[LLMObs]) -> None:
    from typer.testing import CliRunner

    from assay.cli import app

    dataset = llmobs.create_dataset(dataset_name="d", records=[{"input_data": 1}])
    experiment = llmobs.experiment("shown", answer, dataset, [ok], runs=2)
    experiment.run()
    result = CliRunner().invoke(app, ["show", experiment.id or ""], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "1,800 per call, 3,600 in all" in result.output
    assert "est. cost" in result.output and "(2 rows priced)" in result.output
    shown = CliRunner().invoke(app, ["show", experiment.id or "", "--json"])
    import json

    assert json.loads(shown.stdout)["metrics"]["total_tokens"]["total"] == 3600
