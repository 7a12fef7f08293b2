"""The demo: offline, reproducible, and showing every metric type and a flaky record."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assay import LLMObs
from assay.demo import (
    DEMO_QUESTIONS,
    SimulatedModel,
    demo_records,
    exact_match,
    judge,
    num_exact_matches,
    overlap,
    run_demo,
)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("ASSAY_HOME", str(tmp_path))
    yield tmp_path
    LLMObs.disable()


def _aggregates(experiment: Any) -> tuple[dict[str, Any], list[Any]]:
    """What must not change between two runs of the demo: every aggregate over the runs.

    ``per_run`` and each record's run-by-run list are left out: which run gets which of a
    record's answers can swap when two runs of one record start at the same time (the
    task does not see its run number), and that never changes an aggregate.
    """
    summary = {
        label: {key: value for key, value in item.items() if key != "per_run"}
        for label, item in experiment.summary().items()
    }
    records = [
        (
            record["idx"],
            {label: e["value"] for label, e in record["evaluations"].items()},
        )
        for record in experiment.record_summaries()
    ]
    return summary, records


def test_demo_shows_every_metric_type_and_a_summary_evaluator() -> None:
    experiment = run_demo(runs=5, jobs=8)

    summary = experiment.summary()
    assert {label: item["metric_type"] for label, item in summary.items()} == {
        "exact_match": "boolean",
        "overlap": "score",
        "judge": "categorical",
    }
    assert all(item["records"] == len(DEMO_QUESTIONS) for item in summary.values())
    assert all(item["errors"] == 0 and item["missing"] == 0 for item in summary.values())
    assert experiment.info is not None and experiment.info.status == "completed"
    assert len(experiment.runs) == 5
    for run in experiment.runs:
        assert len(run.rows) == len(DEMO_QUESTIONS)
        exact = sum(row["evaluations"]["exact_match"]["value"] is True for row in run.rows)
        assert run.summary_evaluations["num_exact_matches"]["value"] == exact
        for row in run.rows:
            judged = row["evaluations"]["judge"]
            assert judged["value"] in {"correct", "partially_correct", "incorrect"}
            assert judged["assessment"] in {"pass", "fail"}
            assert judged["reasoning"]


def test_demo_has_flaky_records_and_every_judge_label() -> None:
    experiment = run_demo(runs=5)

    shares = [r["evaluations"]["exact_match"]["value"] for r in experiment.record_summaries()]
    flaky = [share for share in shares if share is not None and 0 < share < 1]
    assert flaky, f"no record is flaky across runs: {shares}"
    assert 1.0 in shares  # and some are stable
    labels = {row["evaluations"]["judge"]["value"] for run in experiment.runs for row in run.rows}
    assert labels == {"correct", "partially_correct", "incorrect"}


def test_demo_is_reproducible() -> None:
    first = run_demo(runs=5, jobs=8)
    second = run_demo(runs=5, jobs=3)

    assert first.id != second.id
    assert _aggregates(first) == _aggregates(second)


def test_demo_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the demo tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)

    experiment = run_demo(runs=2, records=4)

    assert experiment.info is not None and experiment.info.status == "completed"


def test_simulated_model_ignores_the_global_random() -> None:
    records = demo_records(5)
    answers = []
    for global_seed in (2, 3):
        random.seed(global_seed)
        model = SimulatedModel()
        answers.append([model.answer(r["input_data"], {"seed": 7}, r["metadata"]) for r in records])
    assert answers[0] == answers[1]


def test_simulated_model_answers_depend_on_seed_question_and_ask() -> None:
    record = demo_records(1)[0]
    model = SimulatedModel()
    asks = [model.answer(record["input_data"], {"seed": 7}, record["metadata"]) for _ in range(40)]
    again = SimulatedModel()
    assert asks == [
        again.answer(record["input_data"], {"seed": 7}, record["metadata"]) for _ in range(40)
    ]
    other = SimulatedModel()
    other_seed = [
        other.answer(record["input_data"], {"seed": 8}, record["metadata"]) for _ in range(40)
    ]
    assert other_seed != asks
    assert "Paris" in asks  # an easy question is mostly right
    assert SimulatedModel().answer({"question": "Who are you?"}, {}, {}) == "I don't know."


def test_evaluators() -> None:
    question = {"question": "What is the capital of France?"}
    assert exact_match(question, "Paris", "Paris") is True
    assert exact_match(question, "Paris.", "Paris") is False
    assert overlap(question, "Paris", "Paris") == 1.0
    assert overlap(question, "Lyon", "Paris") == 0.0
    assert 0 < overlap(question, "Marseille", "Paris") < overlap(question, "Pars", "Paris") < 1

    verdicts = {
        answer: (result.value, result.assessment)
        for answer in ("Paris", "It is Paris.", "Pariss", "Lyon", None)
        for result in [judge(question, answer, "Paris")]
    }
    assert verdicts == {
        "Paris": ("correct", "pass"),
        "It is Paris.": ("partially_correct", "pass"),
        "Pariss": ("partially_correct", "fail"),
        "Lyon": ("incorrect", "fail"),
        None: ("incorrect", "fail"),
    }
    counts = num_exact_matches([], [], [], {"exact_match": [True, None, False, True]})
    assert counts == 2


def test_demo_records_have_answers_and_metadata() -> None:
    records = demo_records()
    assert len(records) == len(DEMO_QUESTIONS) >= 20
    assert len({r["input_data"]["question"] for r in records}) == len(records)
    for record in records:
        assert record["expected_output"]
        assert record["metadata"]["difficulty"] in {"easy", "medium", "hard"}
        assert record["metadata"]["region"]
    assert {r["metadata"]["difficulty"] for r in records} == {"easy", "medium", "hard"}


def test_a_subset_gets_its_own_dataset() -> None:
    small = run_demo(runs=1, records=3)
    full = run_demo(runs=1)
    small_again = run_demo(runs=1, records=3)

    assert [len(e.runs[0].rows) for e in (small, full, small_again)] == [3, 20, 3]
    assert full.info is not None and small.info is not None
    assert full.info.dataset_id != small.info.dataset_id
    assert small_again.info is not None
    assert small_again.info.dataset_version == small.info.dataset_version


@pytest.mark.parametrize("records", [0, len(DEMO_QUESTIONS) + 1])
def test_run_demo_rejects_a_bad_record_count(records: int) -> None:
    with pytest.raises(ValueError, match="records must be between 1 and"):
        run_demo(records=records)


@pytest.mark.parametrize(("runs", "jobs"), [(0, 1), (1, 0)])
def test_run_demo_rejects_bad_runs_and_jobs(runs: int, jobs: int) -> None:
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        run_demo(runs=runs, jobs=jobs, records=2)
