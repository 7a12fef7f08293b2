"""The demo behind ``assay demo``: a multi-run experiment that needs no model and no network.

A small built-in dataset of capital-city questions (with ``difficulty`` and ``region``
metadata) is answered by :class:`SimulatedModel`, an offline and deliberately noisy
stand-in for an LLM, ``runs`` times per question. Its answers are scored by evaluators of
every metric type — a boolean ``exact_match``, a score ``overlap``, a categorical
``judge`` returning :class:`~assay.EvaluatorResult` — and a summary evaluator counts the
exact matches of each run. Everything goes through the public ``LLMObs`` API, so this file
doubles as an example of it::

    from assay.demo import run_demo

    experiment = run_demo(runs=5, jobs=8)
    experiment.summary()["exact_match"]["value"]   # mean share of runs answered exactly
"""

from __future__ import annotations

import difflib
import hashlib
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from assay.evaluation import EvaluatorResult
from assay.execution.context import current_row
from assay.execution.progress import ProgressDisplay
from assay.experiment import SyncExperiment
from assay.llmobs import LLMObs
from assay.store.records import JSON

__all__ = [
    "DEMO_CONFIG",
    "DEMO_DATASET",
    "DEMO_EXPERIMENT",
    "DEMO_PROJECT",
    "DEMO_QUESTIONS",
    "DemoQuestion",
    "SimulatedModel",
    "demo_records",
    "exact_match",
    "judge",
    "num_exact_matches",
    "overlap",
    "run_demo",
]

DEMO_PROJECT = "assay-demo"
DEMO_DATASET = "assay-demo-capitals"
DEMO_EXPERIMENT = "capitals-simulated-model"
DEMO_CONFIG: dict[str, JSON] = {
    "model_name": "assay-simulated-capitals",
    "prompt": "Answer with the name of the city only.",
    "seed": 7,
}


@dataclass(frozen=True, slots=True)
class DemoQuestion:
    """One question of the demo dataset, with what the simulated model gets wrong."""

    question: str
    answer: str
    confusion: str
    """The wrong capital the model answers when it errs the plausible way."""
    difficulty: str
    region: str


_QUESTIONS: tuple[DemoQuestion, ...] = (
    DemoQuestion("What is the capital of France?", "Paris", "Lyon", "easy", "Europe"),
    DemoQuestion("What is the capital of Japan?", "Tokyo", "Kyoto", "easy", "Asia"),
    DemoQuestion("What is the capital of Italy?", "Rome", "Milan", "easy", "Europe"),
    DemoQuestion("What is the capital of China?", "Beijing", "Shanghai", "easy", "Asia"),
    DemoQuestion("What is the capital of Egypt?", "Cairo", "Alexandria", "easy", "Africa"),
    DemoQuestion("What is the capital of Spain?", "Madrid", "Barcelona", "easy", "Europe"),
    DemoQuestion("What is the capital of Germany?", "Berlin", "Bonn", "easy", "Europe"),
    DemoQuestion(
        "What is the capital of Argentina?", "Buenos Aires", "Cordoba", "easy", "Americas"
    ),
    DemoQuestion("What is the capital of Canada?", "Ottawa", "Toronto", "medium", "Americas"),
    DemoQuestion("What is the capital of Australia?", "Canberra", "Sydney", "medium", "Oceania"),
    DemoQuestion("What is the capital of Turkey?", "Ankara", "Istanbul", "medium", "Asia"),
    DemoQuestion(
        "What is the capital of Brazil?", "Brasilia", "Rio de Janeiro", "medium", "Americas"
    ),
    DemoQuestion("What is the capital of Switzerland?", "Bern", "Zurich", "medium", "Europe"),
    DemoQuestion(
        "What is the capital of New Zealand?", "Wellington", "Auckland", "medium", "Oceania"
    ),
    DemoQuestion("What is the capital of Morocco?", "Rabat", "Casablanca", "medium", "Africa"),
    DemoQuestion(
        "Which city serves as the capital of South Africa?",
        "Pretoria",
        "Cape Town",
        "hard",
        "Africa",
    ),
    DemoQuestion("What is the capital of Nigeria?", "Abuja", "Lagos", "hard", "Africa"),
    DemoQuestion("What is the capital of Myanmar?", "Naypyidaw", "Yangon", "hard", "Asia"),
    DemoQuestion("What is the capital of Kazakhstan?", "Astana", "Almaty", "hard", "Asia"),
    DemoQuestion("What is the capital of Tanzania?", "Dodoma", "Dar es Salaam", "hard", "Africa"),
)

DEMO_QUESTIONS = _QUESTIONS
"""The demo dataset's questions, in dataset order."""


def demo_records(count: int | None = None) -> list[dict[str, JSON]]:
    """The demo dataset's records (the first ``count`` of them), in ddtrace's record shape."""
    questions = _QUESTIONS if count is None else _QUESTIONS[:count]
    return [
        {
            "input_data": {"question": item.question},
            "expected_output": item.answer,
            "metadata": {"difficulty": item.difficulty, "region": item.region},
        }
        for item in questions
    ]


# How often the simulated model is right, by difficulty: easy questions are almost always
# right and hard ones a coin flip, so a 5-run experiment shows stable and flaky records.
_P_RIGHT = {"easy": 0.95, "medium": 0.75, "hard": 0.5}
# Harder questions take longer, as they do for a model that reasons more.
_SLOWNESS = {"easy": 1, "medium": 2, "hard": 3}
_FILLERS = ("{}.", "It is {}.", "The capital is {}.", "{}, of course.")


class SimulatedModel:
    """An offline, deliberately noisy capital-city "LLM"; it never touches the network.

    Each call draws from its own ``random.Random`` seeded with a SHA-256 of the config's
    ``seed``, the question and the run it belongs to (:func:`assay.current_row`), so the
    same demo gives the same answers in every run of every process — Python's ``hash`` is
    salted per process and the global ``random`` is shared, so neither is used. Called
    outside an experiment, the n-th ask of a question counts as run n.

    An answer is right with a probability that depends on the question's difficulty;
    otherwise it is a near miss (a misspelling) or a plausible wrong capital. Sometimes
    filler text surrounds the city, and each call sleeps a few milliseconds like a remote
    model would.
    """

    def __init__(self, questions: tuple[DemoQuestion, ...] = _QUESTIONS) -> None:
        self._known = {item.question: item for item in questions}
        self._asked: dict[str, int] = {}
        self._lock = threading.Lock()

    def answer(self, input_data: JSON, config: dict[str, JSON], metadata: dict[str, JSON]) -> str:
        """The task: answer ``input_data["question"]``."""
        question = str(input_data["question"]) if isinstance(input_data, dict) else str(input_data)
        row = current_row()
        if row is not None:
            ask = row.run_iteration
        else:
            with self._lock:
                ask = self._asked.get(question, 0) + 1
                self._asked[question] = ask
        rng = random.Random(_seed(config.get("seed", 0), question, ask))
        known = self._known.get(question)
        difficulty = str(metadata.get("difficulty", known.difficulty if known else "hard"))
        time.sleep(rng.uniform(0.005, 0.015) * _SLOWNESS.get(difficulty, 3))
        if known is None:
            return "I don't know."
        roll = rng.random()
        if roll < _P_RIGHT.get(difficulty, 0.5):
            city = known.answer
        elif rng.random() < 0.4:
            city = _misspell(known.answer, rng)
        else:
            city = known.confusion
        if rng.random() < 0.15:
            return rng.choice(_FILLERS).format(city)
        return city


def _seed(seed: object, question: str, ask: int) -> int:
    digest = hashlib.sha256(f"assay-demo\0{seed}\0{question}\0{ask}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _misspell(city: str, rng: random.Random) -> str:
    """A near miss: one letter dropped, doubled or swapped with its neighbour."""
    position = rng.randrange(1, len(city) - 1)
    kind = rng.choice(("drop", "double", "swap"))
    if kind == "drop":
        return city[:position] + city[position + 1 :]
    if kind == "double":
        return city[:position] + city[position] + city[position:]
    swapped = city[:position] + city[position + 1] + city[position] + city[position + 2 :]
    # Swapping two equal letters changes nothing; a dropped letter always does.
    return swapped if swapped != city else city[:position] + city[position + 1 :]


# Evaluators -------------------------------------------------------------------------------


def exact_match(input_data: JSON, output_data: JSON, expected_output: JSON) -> bool:
    """Boolean: the answer is exactly the expected city."""
    return bool(output_data == expected_output)


def overlap(input_data: JSON, output_data: JSON, expected_output: JSON) -> float:
    """Score in [0, 1]: Jaccard similarity of the answer's and the city's sets of letters.

    The seed's own example uses this measure; it is crude on purpose, so that a near miss
    scores high and a wrong city low, while padding with filler lowers it.
    """
    output_set = set(str(output_data or "").lower())
    expected_set = set(str(expected_output or "").lower())
    union = output_set | expected_set
    return len(output_set & expected_set) / len(union) if union else 1.0


def _normalized(text: JSON) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", str(text or "").lower()).strip()


def judge(input_data: JSON, output_data: JSON, expected_output: JSON) -> EvaluatorResult:
    """Categorical, like an LLM judge: ``correct``, ``partially_correct`` or ``incorrect``.

    A rule-based stand-in for an LLM-as-a-judge so the demo stays offline: the right city
    wrapped in extra words is partially correct (the prompt asked for the city only) and
    passes; a misspelling of the right city is partially correct and fails.
    """
    answer, expected = _normalized(output_data), _normalized(expected_output)
    if answer == expected:
        return EvaluatorResult(
            value="correct",
            reasoning=f"The answer is {expected_output}, as expected.",
            assessment="pass",
            tags={"judge": "rule-based"},
        )
    if re.search(rf"\b{re.escape(expected)}\b", answer):
        return EvaluatorResult(
            value="partially_correct",
            reasoning=f"Names {expected_output}, but adds words the prompt did not ask for.",
            assessment="pass",
            tags={"judge": "rule-based"},
        )
    if difflib.SequenceMatcher(None, answer, expected).ratio() >= 0.7:
        return EvaluatorResult(
            value="partially_correct",
            reasoning=f"{output_data!r} looks like a misspelling of {expected_output}.",
            assessment="fail",
            tags={"judge": "rule-based"},
        )
    return EvaluatorResult(
        value="incorrect",
        reasoning=f"Expected {expected_output}, got {output_data!r}.",
        assessment="fail",
        tags={"judge": "rule-based"},
    )


def num_exact_matches(
    inputs: list[JSON],
    outputs: list[JSON],
    expected_outputs: list[JSON],
    evaluators_results: dict[str, list[Any]],
) -> int:
    """Summary evaluator: how many records of the run were answered exactly."""
    return evaluators_results["exact_match"].count(True)


# Running ----------------------------------------------------------------------------------


def run_demo(
    *,
    runs: int = 5,
    jobs: int = 8,
    records: int | None = None,
    display: ProgressDisplay | None = None,
) -> SyncExperiment:
    """Create the demo dataset and run the demo experiment on the embedded store.

    Enables ``LLMObs`` with the project ``assay-demo`` (replacing any earlier
    ``LLMObs.enable``). ``records`` keeps the first N questions, which go to a dataset of
    their own so the full dataset's versions are never touched. ``display`` is passed to
    ``run()`` (default: a progress bar when stderr is a terminal or ``ASSAY_PROGRESS=1``).
    """
    if records is not None and not 1 <= records <= len(_QUESTIONS):
        raise ValueError(f"records must be between 1 and {len(_QUESTIONS)}, got {records!r}")
    LLMObs.enable(project_name=DEMO_PROJECT)
    # create_dataset is create-or-get and adds the records it is given; a dataset per subset
    # keeps `--records 3` from growing the full dataset or the full one from growing it.
    name = DEMO_DATASET if records is None else f"{DEMO_DATASET}-first-{records}"
    dataset = LLMObs.create_dataset(
        dataset_name=name,
        description="Capital-city questions with known answers (Assay's demo)",
        records=demo_records(records),
    )
    model = SimulatedModel()
    experiment = LLMObs.experiment(
        name=DEMO_EXPERIMENT,
        task=model.answer,
        dataset=dataset,
        evaluators=[exact_match, overlap, judge],
        summary_evaluators=[num_exact_matches],
        description="A noisy simulated model answers capital-city questions, several times each",
        config=dict(DEMO_CONFIG),
        tags={"source": "assay-demo"},
        runs=runs,
    )
    experiment.run(jobs=jobs, display=display)
    return experiment
