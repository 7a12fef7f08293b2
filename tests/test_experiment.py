"""Experiments end to end on a real SQLite store: runs, rows, errors, retries, async."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from assay import (
    BaseAsyncEvaluator,
    BaseEvaluator,
    BaseSummaryEvaluator,
    EvaluatorContext,
    EvaluatorResult,
    ExperimentError,
    LLMObs,
    MultiEvaluatorResult,
    NotEnabledError,
    SummaryEvaluatorContext,
)
from assay.store import open_backend
from backends import on_every_backend

RECORDS = [
    {"input_data": {"q": "a"}, "expected_output": "A", "metadata": {"difficulty": "easy"}},
    {"input_data": {"q": "b"}, "expected_output": "B", "metadata": {"difficulty": "hard"}},
    {"input_data": {"q": "c"}, "expected_output": "C"},
]


def upper(input_data: dict[str, str], config: dict[str, Any]) -> str:
    return input_data["q"].upper()


def exact_match(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    return bool(output_data == expected_output)


def count_true(inputs: Any, outputs: Any, expected_outputs: Any, evaluators_results: Any) -> int:
    return int(evaluators_results["exact_match"].count(True))


def stored_rows(experiment_id: str) -> list[Any]:
    """The rows as a separate reader of the store sees them."""
    backend = open_backend()
    try:
        return backend.experiment_rows(experiment_id)
    finally:
        backend.close()


@pytest.fixture
def dataset(llmobs: type[LLMObs]) -> Any:
    return llmobs.create_dataset(dataset_name="letters", records=RECORDS)


@on_every_backend
def test_runs_give_every_record_n_times_with_run_ids(llmobs: type[LLMObs], dataset: Any) -> None:
    experiment = llmobs.experiment(
        "letters", upper, dataset, [exact_match], summary_evaluators=[count_true], runs=3
    )
    result = experiment.run(jobs=2)
    assert [run.run_iteration for run in result["runs"]] == [1, 2, 3]
    assert all(isinstance(run.run_id, uuid.UUID) for run in result["runs"])
    assert len({run.run_id for run in result["runs"]}) == 3
    for run in result["runs"]:
        assert [row["idx"] for row in run.rows] == [0, 1, 2]
        assert [row["output"] for row in run.rows] == ["A", "B", "C"]
        assert run.summary_evaluations["count_true"]["value"] == 3
        assert f"run_iteration:{run.run_iteration}" in run.rows[0]["metadata"]["tags"]
    # rows / summary_evaluations are the first run's, as in ddtrace.
    assert result["rows"] is result["runs"][0].rows
    assert result["summary_evaluations"] is result["runs"][0].summary_evaluations
    row = result["rows"][0]
    assert row["evaluations"]["exact_match"] == {"value": True, "error": None}
    assert row["error"] == {"message": None, "stack": None, "type": None}
    assert len(row["trace_id"]) == 32 and row["span_id"].isdigit()
    assert row["duration"] >= 0 and row["timestamp"] > 0
    assert row["metadata"]["experiment_name"] == "letters"
    assert row["metadata"]["dataset_name"] == "letters"
    assert experiment.info is not None and experiment.info.status == "completed"
    assert experiment.url.endswith(f"/llm/experiments/{experiment.id}")
    stored = stored_rows(experiment.id or "")
    assert len(stored) == 9


def test_default_is_one_run(llmobs: type[LLMObs], dataset: Any) -> None:
    result = llmobs.experiment("one", upper, dataset, [exact_match]).run()
    assert len(result["runs"]) == 1


@on_every_backend
def test_task_error_is_recorded_evaluators_still_run(llmobs: type[LLMObs], dataset: Any) -> None:
    seen_outputs: list[Any] = []

    def flaky(input_data: dict[str, str], config: dict[str, Any]) -> str:
        if input_data["q"] == "b":
            raise ValueError("no b today")
        return input_data["q"].upper()

    def records_output(input_data: Any, output_data: Any, expected_output: Any) -> bool:
        seen_outputs.append(output_data)
        return output_data is not None

    def outputs_seen(
        inputs: Any, outputs: Any, expected_outputs: Any, evaluators_results: Any
    ) -> Any:
        return {"outputs": outputs, "results": evaluators_results["records_output"]}

    experiment = llmobs.experiment(
        "flaky", flaky, dataset, [records_output], summary_evaluators=[outputs_seen], runs=2
    )
    result = experiment.run(jobs=3)
    failed = result["rows"][1]
    assert failed["output"] is None
    assert failed["error"]["type"] == "builtins.ValueError"
    assert failed["error"]["message"] == "no b today"
    assert "Traceback" in failed["error"]["stack"]
    assert failed["evaluations"]["records_output"]["value"] is False
    assert None in seen_outputs
    # Summary evaluators see every row, aligned: the failed row is None, not skipped.
    summary = result["runs"][0].summary_evaluations["outputs_seen"]["value"]
    assert summary["outputs"] == ["A", None, "C"]
    assert summary["results"] == [True, False, True]
    assert experiment.info is not None
    assert experiment.info.status == "failed"
    assert experiment.info.error == "builtins.ValueError: no b today"


@on_every_backend
def test_raise_errors_raises_after_recording(llmobs: type[LLMObs], dataset: Any) -> None:
    def fails_on_b(input_data: dict[str, str], config: dict[str, Any]) -> str:
        if input_data["q"] == "b":
            raise KeyError("b")
        return "x"

    experiment = llmobs.experiment("raising", fails_on_b, dataset, [exact_match], runs=2)
    with pytest.raises(ExperimentError, match="Error on record 1"):
        experiment.run(jobs=1, raise_errors=True)
    assert experiment.info is not None
    assert experiment.info.status == "interrupted"
    rows = stored_rows(experiment.id or "")
    assert [row.idx for row in rows] == [0, 1]  # what ran before the error is kept
    assert rows[1].error is not None and rows[1].error.type == "builtins.KeyError"


@on_every_backend
def test_evaluator_error_gives_none_with_error(llmobs: type[LLMObs], dataset: Any) -> None:
    def broken(input_data: Any, output_data: Any, expected_output: Any) -> float:
        raise ZeroDivisionError("oops")

    experiment = llmobs.experiment("evaluator-error", upper, dataset, [exact_match, broken])
    result = experiment.run()
    evaluation = result["rows"][0]["evaluations"]["broken"]
    assert evaluation["value"] is None
    assert evaluation["status"] == "ERROR"
    assert evaluation["error"]["type"] == "builtins.ZeroDivisionError"
    assert result["rows"][0]["evaluations"]["exact_match"]["value"] is True
    assert experiment.summary()["broken"]["errors"] == 3
    with pytest.raises(ExperimentError, match="Evaluator broken failed on row 0"):
        llmobs.experiment("evaluator-raise", upper, dataset, [broken]).run(raise_errors=True)


@on_every_backend
def test_retries_are_counted_on_the_row(llmobs: type[LLMObs], dataset: Any) -> None:
    calls: dict[str, int] = {}
    lock = threading.Lock()

    def transient(input_data: dict[str, str], config: dict[str, Any]) -> str:
        with lock:
            calls[input_data["q"]] = calls.get(input_data["q"], 0) + 1
            attempt = calls[input_data["q"]]
        if attempt <= 2:
            raise ConnectionError("try again")
        return input_data["q"].upper()

    delays: list[int] = []

    def delay(attempt: int) -> float:
        delays.append(attempt)
        return 0.0

    experiment = llmobs.experiment("retries", transient, dataset, [exact_match])
    result = experiment.run(jobs=3, max_retries=2, retry_delay=delay)
    assert [row["retries"] for row in result["rows"]] == [2, 2, 2]
    assert all(row["error"]["type"] is None for row in result["rows"])
    assert sorted(delays) == [0, 0, 0, 1, 1, 1]
    assert [row.retries for row in stored_rows(experiment.id or "")] == [2, 2, 2]


def test_task_with_metadata_parameter(llmobs: type[LLMObs], dataset: Any) -> None:
    def with_metadata(input_data: Any, config: Any, metadata: Any) -> Any:
        return (metadata or {}).get("difficulty")

    result = llmobs.experiment("meta", with_metadata, dataset, [exact_match]).run()
    assert [row["output"] for row in result["rows"]] == ["easy", "hard", None]


def test_config_reaches_the_task(llmobs: type[LLMObs], dataset: Any) -> None:
    def configured(input_data: Any, config: Any) -> Any:
        return config["suffix"]

    result = llmobs.experiment(
        "config", configured, dataset, [exact_match], config={"suffix": "!"}
    ).run()
    assert {row["output"] for row in result["rows"]} == {"!"}


class Contains(BaseEvaluator):
    def evaluate(self, context: EvaluatorContext) -> EvaluatorResult:
        assert context.metadata["experiment_config"] == {"k": 1}
        return EvaluatorResult(
            value=context.expected_output in str(context.output_data),
            reasoning="substring",
            assessment="pass",
            tags={"kind": "class"},
        )


class AsyncLength(BaseAsyncEvaluator):
    async def evaluate(self, context: EvaluatorContext) -> int:
        await asyncio.sleep(0)
        return len(str(context.output_data))


class Total(BaseSummaryEvaluator):
    def evaluate(self, context: SummaryEvaluatorContext) -> int:
        assert len(context.metadata) == len(context.inputs)
        return sum(context.evaluation_results["AsyncLength"])


def multi(input_data: Any, output_data: Any, expected_output: Any) -> MultiEvaluatorResult:
    return MultiEvaluatorResult({"length": len(output_data), "label": "short"})


@on_every_backend
def test_class_async_and_multi_evaluators(llmobs: type[LLMObs], dataset: Any) -> None:
    experiment = llmobs.experiment(
        "classes",
        upper,
        dataset,
        [Contains(), AsyncLength(), multi],
        summary_evaluators=[Total()],
        config={"k": 1},
        runs=2,
    )
    result = experiment.run(jobs=2)
    evaluations = result["rows"][0]["evaluations"]
    assert evaluations["Contains"] == {
        "value": True,
        "error": None,
        "reasoning": "substring",
        "assessment": "pass",
        "tags": {"kind": "class"},
    }
    assert evaluations["AsyncLength"]["value"] == 1
    assert evaluations["multi-length"]["value"] == 1
    assert evaluations["multi-label"]["value"] == "short"
    assert result["summary_evaluations"]["Total"]["value"] == 3
    summary = experiment.summary()
    assert summary["multi-label"]["metric_type"] == "categorical"
    assert summary["Contains"]["metric_type"] == "boolean"


async def async_upper(input_data: dict[str, str], config: Any) -> str:
    await asyncio.sleep(0.001)
    return input_data["q"].upper()


@on_every_backend
def test_async_experiment(llmobs: type[LLMObs], dataset: Any) -> None:
    experiment = llmobs.async_experiment(
        "async", async_upper, dataset, [exact_match, AsyncLength()], runs=3
    )
    result = asyncio.run(experiment.run(jobs=4))
    assert len(result["runs"]) == 3
    assert all(
        row["evaluations"]["exact_match"]["value"] for run in result["runs"] for row in run.rows
    )
    assert experiment.summary()["exact_match"]["value"] == 1.0


def test_async_experiment_needs_async_task(llmobs: type[LLMObs], dataset: Any) -> None:
    with pytest.raises(TypeError, match="async def"):
        llmobs.async_experiment("sync-task", upper, dataset, [exact_match])


@on_every_backend
def test_sync_experiment_runs_inside_a_running_loop(llmobs: type[LLMObs], dataset: Any) -> None:
    async def notebook_cell() -> Any:
        sync = llmobs.experiment("in-loop", upper, dataset, [exact_match], runs=2).run(jobs=2)
        asynchronous = llmobs.experiment("in-loop-async", async_upper, dataset, [exact_match]).run()
        return sync, asynchronous

    sync, asynchronous = asyncio.run(notebook_cell())
    assert len(sync["runs"]) == 2
    assert [row["output"] for row in asynchronous["rows"]] == ["A", "B", "C"]


@on_every_backend
def test_jobs_bounds_concurrency_and_spans_runs(llmobs: type[LLMObs]) -> None:
    dataset = llmobs.create_dataset(
        dataset_name="many", records=[{"input_data": i} for i in range(12)]
    )
    active = 0
    peak = 0
    lock = threading.Lock()
    started_runs: list[int] = []

    def slow(input_data: Any, config: Any) -> Any:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        return input_data

    experiment = llmobs.experiment("concurrency", slow, dataset, [exact_match], runs=3)
    experiment.run(jobs=4)
    assert peak == 4
    rows = stored_rows(experiment.id or "")
    assert len(rows) == 36
    # Workers move on to run 2 before run 1's slowest row is done: no idle gap per run.
    by_run = {n: [r for r in rows if r.run_iteration == n] for n in (1, 2)}
    last_end_run1 = max(r.start_ns + r.duration_ns for r in by_run[1])
    first_start_run2 = min(r.start_ns for r in by_run[2])
    assert first_start_run2 < last_end_run1
    del started_runs


@on_every_backend
def test_sample_size_takes_the_first_records(llmobs: type[LLMObs], dataset: Any) -> None:
    result = llmobs.experiment("sample", upper, dataset, [exact_match], runs=2).run(sample_size=2)
    assert [row["idx"] for row in result["runs"][1].rows] == [0, 1]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"task": lambda x, y: x}, TypeError, "'input_data' and 'config'"),
        ({"task": 3}, TypeError, "callable"),
        ({"evaluators": []}, TypeError, "non-empty"),
        ({"evaluators": [lambda a, b: 1]}, TypeError, "'output_data'"),
        ({"evaluators": [Contains]}, TypeError, "pass an instance"),
        ({"summary_evaluators": [lambda a: 1]}, TypeError, "'evaluators_results'"),
        ({"runs": 0}, ValueError, "runs must be an integer >= 1"),
        ({"dataset": [1, 2]}, TypeError, "dataset must be a Dataset"),
        ({"tags": {"a": 1}}, TypeError, "tags must be a dict of str to str"),
        ({"evaluators": [exact_match, exact_match]}, ValueError, "Two evaluators"),
    ],
)
def test_invalid_experiments_are_refused(
    llmobs: type[LLMObs],
    dataset: Any,
    arguments: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    parameters: dict[str, Any] = {
        "name": "bad",
        "task": upper,
        "dataset": dataset,
        "evaluators": [exact_match],
        **arguments,
    }
    with pytest.raises(error, match=message):
        llmobs.experiment(**parameters)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"jobs": 0}, "jobs"),
        ({"max_retries": -1}, "max_retries"),
        ({"sample_size": 0}, "sample_size"),
    ],
)
def test_invalid_run_arguments(
    llmobs: type[LLMObs], dataset: Any, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        llmobs.experiment("bad-run", upper, dataset, [exact_match]).run(**arguments)


def test_not_enabled_is_a_clear_error() -> None:
    with pytest.raises(NotEnabledError, match=r"LLMObs.enable"):
        LLMObs.create_dataset(dataset_name="x", records=[])


def test_enable_says_where_results_go(assay_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    LLMObs.enable(site="datadoghq.com", api_key="k", app_key="a", project_name="p")
    notice = capsys.readouterr().err.strip()
    assert notice.count("\n") == 0
    assert str(assay_home / "assay.db") in notice
    assert "'datadoghq.com' is not an Assay server" in notice


@on_every_backend
def test_pull_and_list_experiments(llmobs: type[LLMObs], dataset: Any) -> None:
    experiment = llmobs.experiment(
        "pulled",
        upper,
        dataset,
        [exact_match],
        summary_evaluators=[count_true],
        runs=2,
        tags={"team": "evals"},
    )
    experiment.run()
    pulled = llmobs.pull_experiment(experiment.id or "")
    assert pulled.result is not None
    assert len(pulled.result["runs"]) == 2
    row = pulled.result["runs"][1].rows[2]
    assert row["evaluations"]["exact_match"] == {
        "value": True,
        "error": None,
        "status": "OK",
        "type": "boolean",
    }
    assert pulled.result["runs"][1].summary_evaluations["count_true"]["value"] == 3
    assert pulled.summary() == experiment.summary()
    assert pulled.record_summaries() == experiment.record_summaries()
    with pytest.raises(ExperimentError, match="no task"):
        pulled.run()

    listed = llmobs.list_experiments(experiment_name="pulled")
    assert [item["id"] for item in listed] == [experiment.id]
    assert listed[0]["run_count"] == 2
    assert listed[0]["status"] == "completed"
    assert "team:evals" in listed[0]["tags"]
    assert listed[0]["aggregate_data"]["exact_match"]["value"] == 1.0
    assert llmobs.list_experiments(metadata_filter={"tags": ["team:other"]}) == []
    assert len(llmobs.list_experiments(metadata_filter={"tags": ["team:evals"]})) == 1


@on_every_backend
def test_as_dataframe_stacks_runs(llmobs: type[LLMObs], dataset: Any) -> None:
    experiment = llmobs.experiment("frame", upper, dataset, [exact_match], runs=2)
    experiment.run()
    frame = experiment.as_dataframe()
    assert list(frame.columns[:2]) == [("run_id", ""), ("run_iteration", "")]
    assert list(frame[("run_iteration", "")]) == [1, 1, 1, 2, 2, 2]
    assert list(frame[("evaluations", "exact_match")]) == [True] * 6
    assert list(frame[("input_data", "q")]) == ["a", "b", "c"] * 2


@on_every_backend
def test_unpushed_dataset_changes_are_refused(llmobs: type[LLMObs], dataset: Any) -> None:
    dataset.append({"input_data": {"q": "d"}, "expected_output": "D"})
    with pytest.raises(ExperimentError, match=r"dataset.push\(\)"):
        llmobs.experiment("unpushed", upper, dataset, [exact_match]).run()


class Opaque:
    def __repr__(self) -> str:
        return "Opaque()"


@on_every_backend
def test_outputs_that_are_not_json_are_stored_as_text(llmobs: type[LLMObs], dataset: Any) -> None:
    def opaque(input_data: Any, config: Any) -> Any:
        return {"answer": Opaque(), "score": float("nan")}

    experiment = llmobs.experiment("opaque", opaque, dataset, [exact_match])
    result = experiment.run()
    assert isinstance(result["rows"][0]["output"]["answer"], Opaque)
    (row, *_) = stored_rows(experiment.id or "")
    assert row.output == {"answer": "Opaque()", "score": None}


def test_a_store_that_fails_mid_run_stops_the_experiment_with_a_clear_error(
    assay_home: Path,
) -> None:
    import sqlite3

    LLMObs.enable(project_name="failing-store")
    dataset = LLMObs.create_dataset(
        dataset_name="d", records=[{"input_data": i} for i in range(50)]
    )
    database = assay_home / "assay.db"
    dropped = threading.Event()

    def sabotage(input_data: Any, config: Any) -> Any:
        if input_data == 5 and not dropped.is_set():
            connection = sqlite3.connect(database)
            connection.execute("DROP TABLE evaluations")
            connection.commit()
            connection.close()
            dropped.set()
        time.sleep(0.01)
        return input_data

    experiment = LLMObs.experiment("failing", sabotage, dataset, [exact_match], runs=20)
    with pytest.raises(ExperimentError, match="could not be stored"):
        experiment.run(jobs=2)
    assert experiment.info is not None and experiment.info.status == "interrupted"
    # Workers stopped soon after the failure instead of running all 1,000 pairs.
    assert experiment.result is not None
    assert sum(len(run.rows) for run in experiment.result["runs"]) < 1000


@on_every_backend
def test_current_row_tells_tasks_and_evaluators_which_row_runs(
    llmobs: type[LLMObs], dataset: Any
) -> None:
    from assay import current_row

    def task(input_data: Any, config: Any) -> Any:
        row = current_row()
        assert row is not None
        return [row.record_id, row.idx, row.run_iteration]

    def sees_row(input_data: Any, output_data: Any, expected_output: Any) -> bool:
        row = current_row()
        return row is not None and [row.record_id, row.idx, row.run_iteration] == output_data

    class AsyncSeesRow(BaseAsyncEvaluator):
        async def evaluate(self, context: EvaluatorContext) -> bool:
            row = current_row()
            return row is not None and row.run_iteration == context.output_data[2]

    experiment = llmobs.experiment("context", task, dataset, [sees_row, AsyncSeesRow()], runs=3)
    result = experiment.run(jobs=4)
    for run in result["runs"]:
        for row in run.rows:
            assert row["output"] == [row["record_id"], row["idx"], run.run_iteration]
            assert row["evaluations"]["sees_row"]["value"] is True
            assert row["evaluations"]["AsyncSeesRow"]["value"] is True
    assert current_row() is None

    async def async_task(input_data: Any, config: Any) -> Any:
        await asyncio.sleep(0)
        row = current_row()
        assert row is not None
        return [row.record_id, row.idx, row.run_iteration]

    asynchronous = llmobs.async_experiment("context-async", async_task, dataset, [sees_row], runs=2)
    result = asyncio.run(asynchronous.run(jobs=3))
    assert all(
        row["evaluations"]["sees_row"]["value"] for run in result["runs"] for row in run.rows
    )
