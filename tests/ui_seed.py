"""A small store for the web UI tests: two experiments on one dataset, every kind of value.

``seed(database_url)`` writes, through the public SDK:

- the dataset ``capitals-ui`` (version 1: ten questions; version 2: one more);
- ``baseline`` on version 1: 3 runs, a boolean ``exact_match``, a score ``overlap``, a
  categorical ``tone`` (with reasoning and assessment), a summary evaluator, an LLM child
  span with tokens and cost on every row, and one task error (record 4, run 2);
- ``candidate`` on version 2: 4 runs, right more often.

Everything is deterministic: the answer depends on the question and the run only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from assay import EvaluatorResult, LLMObs, current_row

QUESTIONS = [
    ("What is the capital of France?", "Paris", "easy"),
    ("What is the capital of Japan?", "Tokyo", "easy"),
    ("What is the capital of Australia?", "Canberra", "hard"),
    ("What is the capital of Canada?", "Ottawa", "medium"),
    ("What is the capital of Brazil?", "Brasilia", "hard"),
    ("What is the capital of Kenya?", "Nairobi", "medium"),
    ("What is the capital of Italy?", "Rome", "easy"),
    ("What is the capital of Turkey?", "Ankara", "hard"),
    ("What is the capital of Egypt?", "Cairo", "easy"),
    ("What is the capital of Peru?", "Lima", "medium"),
]
EXTRA = ("What is the capital of Norway?", "Oslo", "easy")
WRONG = {"Canberra": "Sydney", "Ottawa": "Toronto", "Brasilia": "Rio", "Ankara": "Istanbul"}


@dataclass(frozen=True)
class Seeded:
    """The ids the tests open pages of."""

    dataset_id: str
    baseline_id: str
    candidate_id: str
    failing_record_id: str
    """The record whose run 2 of ``baseline`` raised."""


def _answer(question: str, expected: str, difficulty: str, run: int, *, better: bool) -> str:
    if difficulty == "hard" and (run % 2 == 1 or not better):
        return WRONG.get(expected, expected.lower())
    if difficulty == "medium" and run == 2:
        return expected.lower()
    return expected


def _task(better: bool) -> Any:
    def task(input_data: dict[str, Any], config: dict[str, Any] | None = None) -> str:
        row = current_row()
        run = row.run_iteration if row is not None else 1
        question = input_data["question"]
        if not better and run == 2 and "Canada" in question:
            raise TimeoutError("the model did not answer within 30 s")
        with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai", name="answer"):
            LLMObs.annotate(
                input_data=question,
                metrics={"input_tokens": 100 + 10 * len(question), "output_tokens": 5 + run},
            )
        expected, difficulty = input_data["expected"], input_data["difficulty"]
        return _answer(question, expected, difficulty, run, better=better)

    return task


def exact_match(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    return output_data == expected_output


def overlap(input_data: Any, output_data: Any, expected_output: Any) -> float:
    a, b = set(str(output_data or "")), set(str(expected_output or ""))
    return round(len(a & b) / len(a | b), 3) if a | b else 0.0


def tone(input_data: Any, output_data: Any, expected_output: Any) -> EvaluatorResult:
    if output_data == expected_output:
        value, assessment = "positive", "pass"
    elif str(output_data or "").lower() == str(expected_output).lower():
        value, assessment = "neutral", "pass"
    else:
        value, assessment = "negative", "fail"
    return EvaluatorResult(
        value=value, reasoning=f"the answer {output_data!r} reads {value}", assessment=assessment
    )


def num_exact_matches(
    inputs: Any, outputs: Any, expected_outputs: Any, evaluators_results: Any
) -> int:
    return int(evaluators_results["exact_match"].count(True))


def _records(items: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    return [
        {
            "input_data": {"question": question, "expected": answer, "difficulty": difficulty},
            "expected_output": answer,
            "metadata": {"difficulty": difficulty},
            "tags": [f"difficulty:{difficulty}"],
        }
        for question, answer, difficulty in items
    ]


def seed(database_url: str) -> Seeded:
    """Write the UI test store at ``database_url`` (a SQLite URL) and return its ids."""
    previous = os.environ.get("ASSAY_DATABASE_URL")
    os.environ["ASSAY_DATABASE_URL"] = database_url
    try:
        LLMObs.enable(project_name="ui-tests")
        dataset = LLMObs.create_dataset(dataset_name="capitals-ui", records=_records(QUESTIONS))
        baseline = LLMObs.experiment(
            "baseline",
            _task(better=False),
            dataset,
            [exact_match, overlap, tone],
            summary_evaluators=[num_exact_matches],
            config={"model_name": "gpt-4o-mini", "temperature": 0.7},
            tags={"team": "search"},
            runs=3,
        )
        baseline.run(jobs=1)
        dataset.extend(_records([EXTRA]))
        dataset.push()
        candidate = LLMObs.experiment(
            "candidate",
            _task(better=True),
            dataset,
            [exact_match, overlap, tone],
            summary_evaluators=[num_exact_matches],
            config={"model_name": "gpt-4o", "temperature": 0.2},
            runs=4,
        )
        candidate.run(jobs=1)
        failing = next(record for record in dataset if "Canada" in str(record["input_data"]))
        return Seeded(
            dataset_id=dataset.id,
            baseline_id=baseline.id or "",
            candidate_id=candidate.id or "",
            failing_record_id=str(failing["record_id"]),
        )
    finally:
        LLMObs.disable()
        if previous is None:
            os.environ.pop("ASSAY_DATABASE_URL", None)
        else:
            os.environ["ASSAY_DATABASE_URL"] = previous
