"""A per-call timeout: a task or evaluator that hangs fails its row, the experiment goes on."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from assay import LLMObs, current_row


def quick(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    return output_data == "done"


def test_sync_calls_past_the_timeout_fail_as_timeouts(llmobs: type[LLMObs]) -> None:
    dataset = llmobs.create_dataset(dataset_name="d", records=[{"input_data": i} for i in range(4)])
    # The hung call waits on an event the test sets only after the run returned: a run
    # that waited for it would return with `hung_call_ended` set (after 30 s), not clear.
    release, hung_call_ended = threading.Event(), threading.Event()

    def sometimes_hangs(input_data: int, config: Any) -> str:
        row = current_row()  # the timed call still knows its row
        assert row is not None and row.idx == input_data
        with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai"):
            LLMObs.annotate(metrics={"input_tokens": 10, "output_tokens": 1})
        if input_data == 2:
            release.wait(30)
            hung_call_ended.set()
        return "done"

    experiment = llmobs.experiment("timeouts", sometimes_hangs, dataset, [quick])
    try:
        result = experiment.run(jobs=4, timeout=1.5)
        assert not hung_call_ended.is_set()
    finally:
        release.set()
    errors = [row["error"]["type"] for row in result["rows"]]
    assert errors == [None, None, "assay.execution.calls.CallTimeout", None]
    assert "timeout of 1.5 s" in result["rows"][2]["error"]["message"]
    assert [row["evaluations"]["quick"]["value"] for row in result["rows"]] == [
        True,
        True,
        False,
        True,
    ]


def test_async_calls_past_the_timeout_fail_as_timeouts(llmobs: type[LLMObs]) -> None:
    dataset = llmobs.create_dataset(dataset_name="d", records=[{"input_data": 1}])

    async def hangs(input_data: Any, config: Any) -> str:
        await asyncio.sleep(5)
        return "done"

    experiment = llmobs.async_experiment("async-timeouts", hangs, dataset, [quick])
    result = asyncio.run(experiment.run(timeout=0.1, max_retries=1, retry_delay=lambda n: 0))
    row = result["rows"][0]
    assert row["error"]["type"] == "assay.execution.calls.CallTimeout"
    assert row["retries"] == 1


@pytest.mark.parametrize("bad", [0, -1, "1", True])
def test_timeout_and_budget_must_be_positive_numbers(llmobs: type[LLMObs], bad: Any) -> None:
    dataset = llmobs.create_dataset(dataset_name="d", records=[{"input_data": 1}])

    def task(input_data: Any, config: Any) -> str:
        return "done"

    experiment = llmobs.experiment("bad-options", task, dataset, [quick])
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        experiment.run(timeout=bad)
    with pytest.raises(ValueError, match="budget must be a positive number of US dollars"):
        experiment.run(budget=bad)
