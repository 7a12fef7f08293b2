"""Resuming experiments: only missing (record, run) pairs run, and only with the same setup."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from assay import ExperimentError, LLMObs, current_row
from assay.store import open_backend
from assay.store.sql.backend import SqlBackend
from backends import on_every_backend


def is_even(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    return output_data is not None and output_data % 2 == 0


def evens(inputs: Any, outputs: Any, expected_outputs: Any, evaluators_results: Any) -> int:
    return sum(1 for value in evaluators_results["is_even"] if value)


@on_every_backend
def test_resume_runs_only_the_missing_pairs(llmobs: type[LLMObs]) -> None:
    dataset = llmobs.create_dataset(
        dataset_name="numbers", records=[{"input_data": i} for i in range(10)]
    )
    calls: list[tuple[int, int]] = []
    lock = threading.Lock()
    broken = {"on": True}

    def double(input_data: int, config: Any) -> int:
        row = current_row()
        assert row is not None
        with lock:
            calls.append((input_data, row.run_iteration))
        if broken["on"] and row.run_iteration == 2 and input_data == 4:
            raise RuntimeError("provider went away")
        return input_data * 2 + row.run_iteration

    first = llmobs.experiment(
        "resumable", double, dataset, [is_even], summary_evaluators=[evens], runs=3
    )
    with pytest.raises(ExperimentError):
        first.run(jobs=1, raise_errors=True)
    assert first.info is not None and first.info.status == "interrupted"
    done_before = set(calls)
    assert (4, 2) in done_before and len(done_before) == 15  # run 1, then run 2 up to record 4

    broken["on"] = False
    calls.clear()
    second = llmobs.experiment(
        "resumable", double, dataset, [is_even], summary_evaluators=[evens], runs=3
    )
    result = second.run(jobs=3, resume=True)
    assert second.id == first.id
    assert second.info is not None and second.info.status == "failed"  # the stored error stays
    assert set(calls) == {(i, r) for i in range(10) for r in (1, 2, 3)} - done_before
    assert len(calls) == len(set(calls))  # nothing ran twice
    assert [len(run.rows) for run in result["runs"]] == [10, 10, 10]
    for run in result["runs"]:
        assert run.summary_evaluations["evens"]["value"] == sum(
            1 for row in run.rows if row["output"] is not None and row["output"] % 2 == 0
        )
    backend = open_backend()
    try:
        assert backend.count_rows(first.id or "") == 30
        assert len(backend.summary_evaluations(first.id or "")) == 3
    finally:
        backend.close()


@on_every_backend
def test_resume_with_nothing_unfinished_starts_a_new_experiment(llmobs: type[LLMObs]) -> None:
    dataset = llmobs.create_dataset(dataset_name="d", records=[{"input_data": 1}])

    def task(input_data: Any, config: Any) -> Any:
        return input_data

    first = llmobs.experiment("again", task, dataset, [is_even])
    first.run()
    second = llmobs.experiment("again", task, dataset, [is_even])
    second.run(resume=True)
    assert second.id != first.id


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"config": {"temperature": 1.0}}, "the config changed"),
        ({"runs": 3}, r"runs changed \(2 -> 3\)"),
        ({"evaluators": "other"}, "the evaluators changed"),
        ({"dataset": "new-version"}, r"the dataset version changed \(1 -> 2\)"),
    ],
)
@on_every_backend
def test_resume_refuses_a_changed_setup(
    llmobs: type[LLMObs], change: dict[str, Any], message: str
) -> None:
    dataset = llmobs.create_dataset(dataset_name="d", records=[{"input_data": 1}])

    def fails(input_data: Any, config: Any) -> Any:
        raise KeyboardInterrupt

    def task(input_data: Any, config: Any) -> Any:
        return input_data

    def other(input_data: Any, output_data: Any, expected_output: Any) -> bool:
        return True

    with pytest.raises(KeyboardInterrupt):
        llmobs.experiment(
            "changed", fails, dataset, [is_even], config={"temperature": 0.0}, runs=2
        ).run()
    if change.get("dataset"):
        dataset.append({"input_data": 2})
        dataset.push()
    retry = llmobs.experiment(
        "changed",
        task,
        dataset,
        [other] if change.get("evaluators") else [is_even],
        config=change.get("config", {"temperature": 0.0}),
        runs=change.get("runs", 2),
    )
    with pytest.raises(ExperimentError, match=message):
        retry.run(resume=True)


RESUMABLE = textwrap.dedent(
    """
    import sys, time
    from assay import LLMObs, current_row

    def task(input_data, config):
        time.sleep(0.005)
        row = current_row()
        return (input_data * 7 + row.run_iteration * 3) % 10

    def high(input_data, output_data, expected_output):
        return output_data >= 5

    def value(input_data, output_data, expected_output):
        return output_data / 10

    def label(input_data, output_data, expected_output):
        return "odd" if output_data % 2 else "even"

    def highs(inputs, outputs, expected_outputs, evaluators_results):
        return sum(1 for v in evaluators_results["high"] if v)

    LLMObs.enable(project_name="resume")
    dataset = LLMObs.create_dataset(
        dataset_name="numbers", records=[{"input_data": i} for i in range(2000)]
    )
    experiment = LLMObs.experiment(
        "kill-and-resume", task, dataset, [high, value, label], summary_evaluators=[highs],
        runs=3,
    )
    experiment.run(jobs=16)
    print(experiment.id)
    """
)


def _run_script(script: Path, home: Path, *arguments: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "assay", "run", *arguments, str(script)]
    env = {**os.environ, "ASSAY_HOME": str(home), "ASSAY_PROGRESS": "0"}
    env.pop("ASSAY_DATABASE_URL", None)
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _summaries(home: Path) -> tuple[Any, Any, list[tuple[int, Any]], int]:
    from assay.experiment import pulled_experiment

    backend = SqlBackend(f"sqlite:///{home}/assay.db")
    try:
        listed = backend.list_experiments()
        assert len(listed) == 1, [(i.id, i.status, backend.count_rows(i.id)) for i in listed]
        (info,) = listed
        experiment = pulled_experiment(backend, info)
        rows = backend.experiment_rows(info.id)
        pairs = {(row.record_id, row.run_iteration) for row in rows}
        assert len(pairs) == len(rows) == 6000, "every (record, run) exactly once"
        summaries = sorted(
            (item.run_iteration, item.evaluation.value)
            for item in backend.summary_evaluations(info.id)
        )
        # Record ids are random per store; records are compared by their index.
        by_index = [
            {key: value for key, value in record.items() if key != "record_id"}
            for record in experiment.record_summaries()
        ]
        return experiment.summary(), by_index, summaries, len(rows)
    finally:
        backend.close()


def _stored_rows(database: Path) -> int:
    """The rows (root spans) in the store's file so far; 0 before its tables exist."""
    if not database.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as db:
            (count,) = db.execute("SELECT count(*) FROM spans WHERE parent_id IS NULL").fetchone()
    except sqlite3.OperationalError:  # no tables yet, or the writer holds a lock
        return 0
    return int(count)


@pytest.mark.slow
def test_kill_minus_nine_then_resume_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    script = tmp_path / "experiment.py"
    script.write_text(RESUMABLE)
    reference_home = tmp_path / "reference"
    reference = _run_script(script, reference_home)
    _, stderr = reference.communicate(timeout=300)
    assert reference.returncode == 0, stderr
    expected = _summaries(reference_home)

    # The writer commits about every half second: kill right after its first commit, then
    # twice later, each a little into the batch in flight.
    for kill_after, delay in ((1, 0.0), (2001, 0.1), (4001, 0.05)):
        home = tmp_path / f"killed-{kill_after}"
        process = _run_script(script, home)
        database = home / "assay.db"
        deadline = time.monotonic() + 120
        stored = 0
        while time.monotonic() < deadline and process.poll() is None:
            # A bare read-only count, not a store (whose opening checks the schema): on a
            # busy machine a slow poll could miss the whole run.
            stored = _stored_rows(database)
            if stored >= kill_after:
                break
            time.sleep(0.01)
        time.sleep(delay)
        assert process.poll() is None, f"the experiment finished before the kill at {stored}"
        process.kill()
        process.communicate()
        killed = SqlBackend(f"sqlite:///{database}")
        try:
            (info,) = killed.list_experiments()
            assert info.status == "running", "the kill came after the experiment finished"
        finally:
            killed.close()
        resumed = _run_script(script, home, "--resume")
        _, stderr = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, stderr
        assert _summaries(home) == expected, f"killed after {stored} rows"


@pytest.mark.slow
def test_resume_refuses_an_experiment_still_running_in_a_live_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "experiment.py"
    script.write_text(RESUMABLE.replace("time.sleep(0.005)", "time.sleep(0.05)"))
    home = tmp_path / "home"
    process = _run_script(script, home)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (home / "assay.db").exists():
                backend = SqlBackend(f"sqlite:///{home}/assay.db")
                try:
                    running = [i for i in backend.list_experiments() if i.status == "running"]
                finally:
                    backend.close()
                if running:
                    break
            time.sleep(0.05)
        monkeypatch.setenv("ASSAY_HOME", str(home))
        LLMObs.enable(project_name="resume")
        dataset = LLMObs.pull_dataset("numbers")

        def task(input_data: Any, config: Any) -> Any:
            return input_data

        def high(input_data: Any, output_data: Any, expected_output: Any) -> bool:
            return True

        def highs(inputs: Any, outputs: Any, expected_outputs: Any, evaluators_results: Any) -> int:
            return 0

        experiment = LLMObs.experiment(
            "kill-and-resume", task, dataset, [high], summary_evaluators=[highs], runs=3
        )
        with pytest.raises(ExperimentError, match="is still running in process"):
            experiment.run(resume=True)
    finally:
        process.kill()
        process.communicate()
