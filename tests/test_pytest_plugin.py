"""The ``assay_gate`` fixture, in a pytest run of its own (pytester, in a subprocess)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

SUITE = """
from assay import LLMObs


def task(input_data, config):
    return input_data["n"] % config["every"] == 0


def passed(input_data, output_data, expected_output):
    return bool(output_data)


def _experiments(every):
    LLMObs.enable(project_name="plugin")
    dataset = LLMObs.create_dataset(
        dataset_name="numbers", records=[{{"input_data": {{"n": n}}}} for n in range(40)]
    )
    base = LLMObs.experiment("numbers", task, dataset, [passed], config={{"every": 1}}, runs=2)
    base.run()
    candidate = LLMObs.experiment(
        "numbers", task, dataset, [passed], config={{"every": every}}, runs=2
    )
    candidate.run()
    return base, candidate


def test_gate(assay_gate):
    base, candidate = _experiments({every})
    result = assay_gate(candidate, baseline=base, max_drop={{"passed": 0.01}})
    assert result.exit_code == 0
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("ASSAY_HOME", str(tmp_path / "home"))

    def run(every: int, *arguments: str) -> pytest.RunResult:
        pytester.makepyfile(test_suite=SUITE.format(every=every))
        return pytester.runpytest_subprocess(*arguments)

    return run


def test_an_unchanged_candidate_passes_and_shows_its_report(suite: Any, tmp_path: Path) -> None:
    report = tmp_path / "gates.md"
    result = suite(1, f"--assay-report={report}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*assay gates*", "*Assay gate ✅ passed*"])
    assert "| passed |" in report.read_text(encoding="utf-8")


def test_a_regression_fails_the_test_with_the_report(suite: Any) -> None:
    result = suite(2)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Assay gate ❌ failed: regression*", "*'passed' regressed*"])
