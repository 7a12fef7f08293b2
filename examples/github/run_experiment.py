"""The experiment that ``experiment.yml`` runs in CI: capital cities, answered 3 times each.

Written like ``examples/capitals.py``, with a stand-in for the model so that it runs
offline and gives the same answers every time the code is the same: the "model" knows
every capital but slips on some questions, harder ones more often, and which (question,
run) pairs slip is fixed by a seed. Replace ``task`` with your own LLM call.

    python examples/github/run_experiment.py              # the code as it is
    python examples/github/run_experiment.py --regress    # a worse "prompt": the gate fails

It prints the experiment id, and under GitHub Actions writes it to ``$GITHUB_OUTPUT`` as
``experiment_id`` for the steps that gate on it and pin it as the baseline.
"""

from __future__ import annotations

import argparse
import difflib
import os
import random
from typing import Any

from assay import LLMObs, current_row

# Country, capital, the wrong city a slip gives, difficulty.
CAPITALS = [
    ("France", "Paris", "Lyon", "easy"),
    ("Japan", "Tokyo", "Kyoto", "easy"),
    ("Italy", "Rome", "Milan", "easy"),
    ("Egypt", "Cairo", "Alexandria", "easy"),
    ("Spain", "Madrid", "Barcelona", "easy"),
    ("Germany", "Berlin", "Bonn", "easy"),
    ("Canada", "Ottawa", "Toronto", "medium"),
    ("Australia", "Canberra", "Sydney", "medium"),
    ("Brazil", "Brasília", "Rio de Janeiro", "medium"),
    ("Turkey", "Ankara", "Istanbul", "medium"),
    ("India", "New Delhi", "Mumbai", "medium"),
    ("Switzerland", "Bern", "Zurich", "medium"),
    ("Morocco", "Rabat", "Casablanca", "medium"),
    ("Vietnam", "Hanoi", "Ho Chi Minh City", "medium"),
    ("Nigeria", "Abuja", "Lagos", "hard"),
    ("Pakistan", "Islamabad", "Karachi", "hard"),
    ("Kazakhstan", "Astana", "Almaty", "hard"),
    ("Tanzania", "Dodoma", "Dar es Salaam", "hard"),
    ("Myanmar", "Naypyidaw", "Yangon", "hard"),
    ("Sri Lanka", "Sri Jayawardenepura Kotte", "Colombo", "hard"),
    ("Bolivia", "Sucre", "La Paz", "hard"),
    ("Côte d'Ivoire", "Yamoussoukro", "Abidjan", "hard"),
    ("Belize", "Belmopan", "Belize City", "hard"),
    ("Palau", "Ngerulmud", "Koror", "hard"),
]
ANSWERS = {
    f"What is the capital of {country}?": (capital, decoy, difficulty)
    for country, capital, decoy, difficulty in CAPITALS
}
SLIP_BY_DIFFICULTY = {"easy": 0.0, "medium": 0.1, "hard": 0.3}
CONFIGS: dict[str, dict[str, Any]] = {
    "current": {"prompt": "Answer with the name of the city only.", "care": 1.0},
    # A deliberately worse prompt: the stand-in model slips three times as often.
    "regressed": {"prompt": "City?", "care": 3.0},
}

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--regress", action="store_true", help="run a deliberately worse prompt")
arguments = parser.parse_args()
config = CONFIGS["regressed" if arguments.regress else "current"]

LLMObs.enable(project_name="capitals-ci")

dataset = LLMObs.create_dataset(
    dataset_name="capitals-ci",
    description="Questions about world capitals, for the CI gate",
    records=[
        {
            "input_data": {"question": question},
            "expected_output": capital,
            "metadata": {"difficulty": difficulty},
        }
        for question, (capital, _decoy, difficulty) in ANSWERS.items()
    ],
)


def task(input_data: dict[str, Any], config: dict[str, Any]) -> str:
    """A stand-in for the model: right, unless this (question, run) slips to the decoy."""
    row = current_row()
    assert row is not None
    question = input_data["question"]
    capital, decoy, difficulty = ANSWERS[question]
    # Seeded by question and run: the same code gives the same answers on every machine.
    chance = random.Random(f"{question}|{row.run_iteration}").random()
    return decoy if chance < SLIP_BY_DIFFICULTY[difficulty] * config["care"] else capital


def exact_match(input_data: dict[str, Any], output_data: str, expected_output: str) -> bool:
    return output_data == expected_output


def similarity(input_data: dict[str, Any], output_data: str, expected_output: str) -> float:
    return difflib.SequenceMatcher(None, output_data, expected_output).ratio()


experiment = LLMObs.experiment(
    name="capitals-ci",
    task=task,
    dataset=dataset,
    evaluators=[exact_match, similarity],
    description="Capital cities, gated in CI",
    config=config,
    runs=3,
)
experiment.run(jobs=4, raise_errors=True)
summary = experiment.summary()
print(
    f"experiment {experiment.id}: exact_match {summary['exact_match']['value']:.1%}, "
    f"similarity {summary['similarity']['value']:.3f}"
)
if "GITHUB_OUTPUT" in os.environ:
    with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as output:
        output.write(f"experiment_id={experiment.id}\n")
