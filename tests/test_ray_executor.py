"""The Ray executor on a real Ray cluster of two nodes on this machine.

One cluster (``ray.cluster_utils.Cluster``: a head and a worker node, each its own raylet)
serves the whole module, since starting one costs seconds. Tasks run in Ray's worker
processes, so what they do is observed through files under ``tmp_path`` (every call
leaves one), not through driver memory. The fault test adds a third node and kills it
while a pair runs on it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assay import (
    BaseEvaluator,
    EvaluatorContext,
    EvaluatorResult,
    ExperimentError,
    LLMObs,
    current_row,
)
from assay.store import open_backend

ray = pytest.importorskip("ray", reason="ray is not installed (it comes with the 'dev' extra)")
from ray.cluster_utils import Cluster  # noqa: E402

RECORDS = [
    {"input_data": {"q": q}, "expected_output": q.upper(), "metadata": {"n": n}}
    for n, q in enumerate(["alpha", "beta", "boom", "gamma", "delta", "eps"])
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Workers cannot import this test module: send its functions by value, as a user's
    # script (__main__) is sent.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    started.add_node(num_cpus=2)
    ray.init(address=started.address)
    started.wait_for_nodes()
    try:
        yield started
    finally:
        ray.shutdown()
        started.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def dataset(cluster: Cluster) -> Any:
    LLMObs.enable(project_name="ray-tests", integrations_enabled=False)
    return LLMObs.create_dataset(dataset_name="words", records=RECORDS)


# Tasks and evaluators, as users write them --------------------------------------------


def answer(input_data: dict[str, str], config: dict[str, Any]) -> str:
    row = current_row()
    assert row is not None
    if input_data["q"] == "boom":
        raise ValueError("no answer for boom")
    with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai", name="draft"):
        LLMObs.annotate(
            output_data=input_data["q"], metrics={"input_tokens": 12, "output_tokens": 3}
        )
    return input_data["q"].upper() if row.run_iteration != 2 else input_data["q"]


def exact_match(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    return bool(output_data == expected_output)


def picky(input_data: Any, output_data: Any, expected_output: Any) -> float:
    if output_data == "GAMMA":
        raise RuntimeError("picky cannot judge gamma")
    return float(len(output_data or ""))


class Length(BaseEvaluator):
    def evaluate(self, context: EvaluatorContext) -> EvaluatorResult:
        size = len(context.output_data or "")
        return EvaluatorResult(value=size, reasoning=f"{size} characters", tags={"kind": "len"})


async def polite(input_data: Any, output_data: Any, expected_output: Any) -> str:
    await asyncio.sleep(0)
    return "yes" if output_data else "no"


def matches(inputs: Any, outputs: Any, expected_outputs: Any, evaluators_results: Any) -> int:
    return sum(1 for value in evaluators_results["exact_match"] if value)


def where(input_data: dict[str, str], config: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.02)
    return {"q": input_data["q"], "pid": os.getpid()}


async def where_async(input_data: dict[str, str], config: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.02)
    return {"q": input_data["q"], "pid": os.getpid()}


def logged(calls: Path, *, delay: float = 0.0, stuck_on: str | None = None) -> Any:
    """A task that leaves one file per call: which pair, on which node.

    On node ``stuck_on`` it never finishes: it is there to be killed with its node.
    """

    def task(input_data: dict[str, str], config: dict[str, Any]) -> str:
        row = current_row()
        assert row is not None
        node = ray.get_runtime_context().get_node_id()
        name = f"{row.record_id}@{row.run_iteration}@{node}@{uuid.uuid4().hex}"
        (calls / name).touch()
        if (calls.parent / "broken").exists() and row.idx == 2 and row.run_iteration == 2:
            raise RuntimeError("provider went away")
        time.sleep(delay)
        while node == stuck_on:
            time.sleep(0.1)
        return input_data["q"]

    task.__name__ = "logged"
    return task


def calls_in(folder: Path) -> list[tuple[str, int, str]]:
    found = []
    for path in folder.iterdir():
        record_id, run, node, _ = path.name.split("@")
        found.append((record_id, int(run), node))
    return found


def comparable(row: Any) -> dict[str, Any]:
    """What must not depend on the executor (ids, times and stacks may)."""
    return {
        "record": (row.record_id, row.run_iteration, row.idx),
        "output": row.output,
        "error": (row.error.type, row.error.message) if row.error else None,
        "retries": row.retries,
        "evaluations": sorted(
            (
                e.label,
                e.metric_type,
                repr(e.value),
                e.reasoning,
                e.tags,
                (e.error.type, e.error.message) if e.error else None,
            )
            for e in row.evaluations
        ),
        "spans": [
            (s.name, s.kind, s.model_name, s.input_tokens, s.output_tokens, s.estimated_cost)
            for s in row.spans
        ],
        "rollup": row.rollup,
        "span_name": row.span_name,
    }


# Tests ----------------------------------------------------------------------------------


def test_ray_rows_are_the_thread_executor_rows(dataset: Any) -> None:
    results = {}
    for executor in ("threads", "ray"):
        experiment = LLMObs.experiment(
            f"parity-{executor}",
            answer,
            dataset,
            [exact_match, picky, Length(), polite],
            summary_evaluators=[matches],
            config={"model": "m"},
            runs=3,
        )
        result = experiment.run(jobs=3, executor=executor, max_retries=1, retry_delay=lambda n: 0)
        assert experiment.info is not None and experiment.info.status == "failed"
        assert "ValueError: no answer for boom" in (experiment.info.error or "")
        assert experiment.id is not None
        stored = open_backend().experiment_rows(experiment.id)
        results[executor] = (
            sorted((comparable(row) for row in stored), key=lambda r: r["record"]),
            [run.summary_evaluations for run in result["runs"]],
            experiment.summary(),
            # Errors are listed in the order rows finished, which no executor fixes.
            set((experiment.info.error or "").split("; ")),
        )
    threads, on_ray = results["threads"], results["ray"]
    assert len(on_ray[0]) == len(RECORDS) * 3
    assert on_ray[0] == threads[0]
    assert (
        on_ray[1]
        == threads[1]
        == [
            {"matches": {"value": 5, "error": None}},
            {"matches": {"value": 0, "error": None}},
            {"matches": {"value": 5, "error": None}},
        ]
    )
    assert on_ray[2] == threads[2]
    assert on_ray[3] == threads[3]
    some = next(row for row in on_ray[0] if row["output"] == "ALPHA")
    assert some["rollup"].total_tokens == 15 and some["rollup"].estimated_total_cost


@pytest.mark.parametrize("task", [where, where_async], ids=["sync", "async"])
def test_sync_and_async_tasks_run_in_ray_workers(dataset: Any, task: Any) -> None:
    experiment = LLMObs.experiment(f"where-{task.__name__}", task, dataset, [exact_match], runs=2)
    result = experiment.run(jobs=3, executor="ray", ray_options={"num_cpus": 0.5})
    rows = [row for run in result["runs"] for row in run.rows]
    assert sorted(
        (row["output"]["q"], n) for n, run in enumerate(result["runs"]) for row in run.rows
    ) == sorted((record["input_data"]["q"], n) for n in range(2) for record in RECORDS)
    pids = {row["output"]["pid"] for row in rows}
    assert os.getpid() not in pids  # computed by Ray's workers, not by this process


def test_executor_comes_from_the_environment(dataset: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSAY_EXECUTOR", "ray")
    experiment = LLMObs.experiment("from-env", where, dataset, [exact_match])
    result = experiment.run(jobs=2)
    assert os.getpid() not in {row["output"]["pid"] for row in result["runs"][0].rows}
    monkeypatch.setenv("ASSAY_EXECUTOR", "rays")
    with pytest.raises(ValueError, match=r"ASSAY_EXECUTOR='rays'.*threads, ray"):
        experiment.run(jobs=2)


def test_a_task_that_cannot_be_pickled_fails_before_anything_starts(dataset: Any) -> None:
    lock = threading.Lock()

    def guarded(input_data: Any, config: Any) -> Any:
        with lock:
            return input_data

    experiment = LLMObs.experiment("unpicklable", guarded, dataset, [exact_match])
    with pytest.raises(ExperimentError) as raised:
        experiment.run(jobs=2, executor="ray")
    message = str(raised.value)
    assert "Task 'guarded' cannot be sent to Ray workers" in message
    assert "lock" in message and "inside the function" in message
    assert experiment.id is None  # nothing was stored
    assert LLMObs._backend is not None
    assert all(e.name != "unpicklable" for e in LLMObs._backend.list_experiments())


def test_without_ray_installed_the_error_says_how_to_install_it(
    dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when it is absent
    experiment = LLMObs.experiment("no-ray", where, dataset, [exact_match])
    with pytest.raises(ExperimentError, match=r"pip install 'assay\[ray\]'"):
        experiment.run(jobs=2, executor="ray")
    assert experiment.id is None


def test_bad_ray_options_are_refused_before_anything_starts(dataset: Any) -> None:
    experiment = LLMObs.experiment("bad-options", where, dataset, [exact_match])
    with pytest.raises(ValueError, match=r"ray_options .* are not valid"):
        experiment.run(executor="ray", ray_options={"num_cpu": 1})
    with pytest.raises(ValueError, match="executor='ray'"):
        experiment.run(ray_options={"num_cpus": 1})
    assert experiment.id is None


def test_resume_on_ray_runs_only_the_missing_pairs(dataset: Any, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    calls.mkdir()
    (tmp_path / "broken").touch()
    task = logged(calls)
    first = LLMObs.experiment("resumable", task, dataset, [exact_match], runs=3)
    with pytest.raises(ExperimentError, match="provider went away"):
        first.run(jobs=2, executor="ray", raise_errors=True)
    assert first.info is not None and first.info.status == "interrupted"
    assert first.id is not None
    stored_first = {
        (r.record_id, r.run_iteration) for r in open_backend().experiment_rows(first.id)
    }
    assert 0 < len(stored_first) < len(RECORDS) * 3

    (tmp_path / "broken").unlink()
    for path in calls.iterdir():
        path.unlink()
    second = LLMObs.experiment("resumable", task, dataset, [exact_match], runs=3)
    second.run(jobs=2, executor="ray", resume=True)
    assert second.id == first.id
    ran = Counter((record_id, run) for record_id, run, _node in calls_in(calls))
    everything = {(r.record_id, r.run_iteration) for r in open_backend().experiment_rows(first.id)}
    assert set(ran) == everything - stored_first and max(ran.values()) == 1
    assert len(everything) == len(RECORDS) * 3


def test_a_crashed_worker_is_retried_and_its_pairs_land_once(dataset: Any, tmp_path: Path) -> None:
    crashed = tmp_path / "crashed"

    def crash_once(input_data: dict[str, str], config: Any) -> str:
        if input_data["q"] == "beta" and not crashed.exists():
            crashed.touch()
            os._exit(1)  # the worker process dies, as when the OOM killer takes it
        return input_data["q"]

    experiment = LLMObs.experiment("crash", crash_once, dataset, [exact_match], runs=2)
    experiment.run(jobs=2, executor="ray")
    assert crashed.exists()
    assert experiment.info is not None and experiment.info.status == "completed"
    assert experiment.id is not None
    rows = open_backend().experiment_rows(experiment.id)
    assert Counter((r.record_id, r.run_iteration) for r in rows) == Counter(
        {(r.record_id, r.run_iteration): 1 for r in rows}
    )
    assert len(rows) == len(RECORDS) * 2

    crashed.unlink()
    again = LLMObs.experiment("crash-no-retry", crash_once, dataset, [exact_match], runs=2)
    with pytest.raises(ExperimentError, match=r"Ray lost a task .* resume=True"):
        again.run(jobs=2, executor="ray", ray_options={"max_retries": 0})
    assert again.info is not None and again.info.status == "interrupted"


def test_a_node_killed_mid_run_loses_nothing_and_duplicates_nothing(
    cluster: Cluster, dataset: Any, tmp_path: Path
) -> None:
    victim = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    calls = tmp_path / "calls"
    calls.mkdir()
    records = [{"input_data": {"q": f"q{n}"}} for n in range(24)]
    many = LLMObs.create_dataset(dataset_name="many", records=records)
    experiment = LLMObs.experiment(
        "node-dies", logged(calls, delay=0.1, stuck_on=victim.node_id), many, [exact_match], runs=2
    )

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(node == victim.node_id for _r, _n, node in calls_in(calls)):
                cluster.remove_node(victim, allow_graceful=False)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    try:
        experiment.run(jobs=5, executor="ray")
    finally:
        killer.join()
    assert experiment.info is not None and experiment.info.status == "completed"
    assert experiment.id is not None
    rows = open_backend().experiment_rows(experiment.id)
    pairs = Counter((r.record_id, r.run_iteration) for r in rows)
    assert len(pairs) == len(records) * 2 and set(pairs.values()) == {1}
    executions = calls_in(calls)
    on_victim = {(r, n) for r, n, node in executions if node == victim.node_id}
    assert on_victim, "no pair ran on the node that was killed"
    ran = Counter((r, n) for r, n, _node in executions)
    # The pair running when the node died ran again elsewhere; it is stored once.
    assert any(ran[pair] > 1 for pair in on_victim)


def test_assay_run_sets_the_executor_and_address_for_the_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from assay.cli import app

    monkeypatch.delenv("ASSAY_EXECUTOR", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    script = tmp_path / "show.py"
    script.write_text(
        "import os\nprint(os.environ.get('ASSAY_EXECUTOR'), os.environ.get('RAY_ADDRESS'))\n"
    )
    ran = CliRunner().invoke(
        app, ["run", str(script), "--executor", "ray", "--address", "head:6379"]
    )
    assert ran.exit_code == 0, ran.output
    assert "ray head:6379" in ran.output
    assert "ASSAY_EXECUTOR" not in os.environ and "RAY_ADDRESS" not in os.environ
    refused = CliRunner().invoke(app, ["run", str(script), "--address", "head:6379"])
    assert refused.exit_code == 2 and "--executor ray" in refused.output
    unknown = CliRunner().invoke(app, ["run", str(script), "--executor", "dask"])
    assert unknown.exit_code == 2 and "unknown executor 'dask'" in unknown.output
