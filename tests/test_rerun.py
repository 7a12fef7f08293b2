"""Re-scoring stored outputs into a child experiment, and judge variance with repeats."""

from __future__ import annotations

import math
import statistics
import threading
from typing import Any

import pytest

from assay import ExperimentError, LLMObs, current_row
from backends import on_every_backend


def length(input_data: Any, output_data: Any, expected_output: Any) -> int:
    return len(str(output_data))


def starts_with_a(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    return str(output_data).startswith("a")


def count_a(inputs: Any, outputs: Any, expected_outputs: Any, evaluators_results: Any) -> int:
    return sum(1 for value in evaluators_results["starts_with_a"] if value)


@pytest.fixture
def parent(llmobs: type[LLMObs]) -> Any:
    dataset = llmobs.create_dataset(
        dataset_name="words", records=[{"input_data": w} for w in ("apple", "berry", "avocado")]
    )

    def echo(input_data: Any, config: Any) -> Any:
        row = current_row()
        assert row is not None
        if input_data == "berry" and row.run_iteration == 2:
            raise ValueError("no berries in run 2")
        return f"{input_data}-{row.run_iteration}"

    experiment = llmobs.experiment("parent", echo, dataset, [length], runs=2)
    experiment.run(jobs=2)
    return experiment


@on_every_backend
def test_rerun_scores_stored_outputs_without_running_the_task(
    llmobs: type[LLMObs], parent: Any
) -> None:
    child = parent.rerun_evaluators(
        [starts_with_a], missing_task_strategy="skip", summary_evaluators=[count_a]
    )
    assert child.info.parent_experiment_id == parent.id
    assert child.name.startswith("parent-rerun-")
    assert child.info.config["evaluators"] == ["starts_with_a"]
    assert child.info.status == "completed"
    result = child.result
    assert [len(run.rows) for run in result["runs"]] == [3, 2]  # the failed row is skipped
    outputs = sorted(row["output"] for run in result["runs"] for row in run.rows)
    assert outputs == ["apple-1", "apple-2", "avocado-1", "avocado-2", "berry-1"]
    for run in result["runs"]:
        for row in run.rows:
            assert set(row["evaluations"]) == {"starts_with_a"}
    assert [run.summary_evaluations["count_a"]["value"] for run in result["runs"]] == [2, 2]
    # The child is a stored experiment like any other.
    pulled = llmobs.pull_experiment(child.id)
    assert pulled.summary()["starts_with_a"]["value"] == pytest.approx((1 + 0 + 1) / 3)
    children = llmobs.list_experiments(parent_experiment_ids=[parent.id])
    assert [item["id"] for item in children] == [child.id]


@on_every_backend
def test_missing_outputs_raise_by_default(parent: Any) -> None:
    with pytest.raises(ExperimentError, match="1 rows of experiment 'parent' have no output"):
        parent.rerun_evaluators([starts_with_a])


@on_every_backend
def test_retry_runs_the_task_only_for_missing_rows(parent: Any) -> None:
    calls: list[Any] = []
    lock = threading.Lock()

    def fixed(input_data: Any, config: Any) -> Any:
        with lock:
            calls.append(input_data)
        return "again"

    child = parent.rerun_evaluators(
        [starts_with_a], task=fixed, missing_task_strategy="retry", jobs=2
    )
    assert calls == ["berry"]
    outputs = sorted(row["output"] for run in child.result["runs"] for row in run.rows)
    assert outputs == ["again", "apple-1", "apple-2", "avocado-1", "avocado-2", "berry-1"]
    with pytest.raises(ValueError, match="needs task="):
        parent.rerun_evaluators([starts_with_a], missing_task_strategy="retry")


@on_every_backend
def test_pulled_experiments_can_be_rescored(llmobs: type[LLMObs], parent: Any) -> None:
    pulled = llmobs.pull_experiment(parent.id)
    child = pulled.rerun_evaluators([length], missing_task_strategy="skip")
    # The parent scored the failed row's None output too (len("None") == 4); the child
    # skipped it: record means 7, 7 and 9.
    assert parent.summary()["length"]["value"] == pytest.approx((7 + (7 + 4) / 2 + 9) / 3)
    assert child.summary()["length"]["value"] == pytest.approx((7 + 7 + 9) / 3)


@on_every_backend
def test_judge_variance_separates_evaluator_noise_from_task_variation(
    llmobs: type[LLMObs],
) -> None:
    dataset = llmobs.create_dataset(
        dataset_name="scores", records=[{"input_data": i} for i in range(4)]
    )

    def task(input_data: int, config: Any) -> int:
        row = current_row()
        assert row is not None
        return input_data * 10 + row.run_iteration  # varies across runs by 1 per run

    experiment = llmobs.experiment("noisy", task, dataset, [length], runs=3)
    experiment.run()

    def judge(input_data: Any, output_data: int, expected_output: Any) -> float:
        # Deterministic "noise" per repeat: repeat k of child run adds k - 2 (so -1, 0, +1).
        row = current_row()
        assert row is not None
        repeat = (row.run_iteration - 1) % 3 + 1
        return float(output_data) + (repeat - 2)

    def verdict(input_data: Any, output_data: int, expected_output: Any) -> bool:
        row = current_row()
        assert row is not None
        repeat = (row.run_iteration - 1) % 3 + 1
        return output_data % 2 == 0 if repeat < 3 else True

    child = experiment.rerun_evaluators([judge, verdict], repeats=3, jobs=3)
    assert child.info.run_count == 9
    report = child.judge_variance()
    # Within one output the judge gives x-1, x, x+1: sample sd 1.
    assert report["judge"]["judge_sd"] == pytest.approx(1.0)
    # Across runs a record's outputs are 10i+1, 10i+2, 10i+3: sample sd 1.
    assert report["judge"]["task_sd"] == pytest.approx(statistics.stdev([1, 2, 3]))
    assert report["judge"]["outputs"] == 12
    # verdict: odd outputs get False, False, True (agreement 2/3); even ones always True.
    odd = sum(1 for i in range(4) for r in (1, 2, 3) if (i * 10 + r) % 2)
    assert report["verdict"]["judge_agreement"] == pytest.approx((odd * 2 / 3 + (12 - odd)) / 12)
    assert report["verdict"]["judge_flaky_outputs"] == pytest.approx(odd / 12)
    assert not math.isnan(report["verdict"]["task_agreement"])
    with pytest.raises(ExperimentError, match="repeats=3"):
        experiment.judge_variance()
