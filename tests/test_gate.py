"""``assay compare``, ``assay gate`` and ``assay baseline``: verdicts worked out by hand on
constructed experiments, every exit code, the Markdown and JUnit reports, and the GitHub
workflow of ``examples/github`` run end to end as CI would run it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import yaml
from typer.testing import CliRunner, Result

from assay import LLMObs, compare, current_row
from assay.gate import REPORT_MARKER, gate_stored, markdown_report
from assay.store.records import ExperimentInfo

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "examples" / "github" / "experiment.yml"
RECORDS = range(10)


# Constructed experiments: 10 records x 2 runs, each a variant of the baseline -------------


def _correct(variant: str, n: int) -> bool:
    if variant == "worse":
        return n < 3  # records 3-7 go from pass to fail
    if variant == "noisy":
        return n != 0 if n < 9 else True  # record 0 fails, record 9 passes: no net change
    return n < 8  # base, same, better: 80%


def _quality(variant: str, n: int) -> float:
    shift = {"worse": -0.2, "better": 0.1}.get(variant, 0.0)
    return 0.5 + n / 20 + shift


def _tone(variant: str, n: int) -> str:
    return "cold" if variant == "worse" and n < 5 else "warm"


def task(input_data: Any, config: Any) -> Any:
    return {"n": input_data, "variant": config["variant"]}


def correct(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    assert current_row() is not None
    return _correct(output_data["variant"], output_data["n"])


def quality(input_data: Any, output_data: Any, expected_output: Any) -> float:
    return _quality(output_data["variant"], output_data["n"])


def tone(input_data: Any, output_data: Any, expected_output: Any) -> str:
    return _tone(output_data["variant"], output_data["n"])


Make = Callable[[str], ExperimentInfo]


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> Make:
    """``made("worse")``: the experiment of that variant, run once per test (SQLite)."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    LLMObs.enable(project_name="gate-project")
    dataset = LLMObs.create_dataset(
        dataset_name="gate", records=[{"input_data": n} for n in RECORDS]
    )
    cache: dict[str, ExperimentInfo] = {}

    def make(variant: str) -> ExperimentInfo:
        if variant not in cache:
            experiment = LLMObs.experiment(
                variant,
                task,
                dataset,
                [correct, quality, tone],
                config={"variant": variant},
                runs=2,
            )
            experiment.run(jobs=2)
            assert experiment.id is not None
            cache[variant] = LLMObs._require().get_experiment(experiment.id)
        return cache[variant]

    return make


def invoke(*args: str) -> Result:
    from assay.cli import app

    return CliRunner().invoke(app, list(args))


def gate(*args: str) -> Result:
    return invoke("gate", *args)


def assert_exit_2(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == "" and "Traceback" not in result.output


# Verdicts, by hand ------------------------------------------------------------------------


def test_verdicts_of_known_differences(made: Make) -> None:
    base, worse = made("base"), made("worse")
    result = gate_stored(LLMObs._require(), worse.id, baseline=base.id)
    checks = {check.label: check for check in result.checks}
    assert set(checks) == {"correct", "quality"}  # tone is categorical: no verdict

    # correct: records 3..7 drop from 1 to 0, the other five stay: mean -0.5; the sd of the
    # differences is sqrt(10 * 0.25 / 9), so t = -0.5 / (0.527 / sqrt(10)) = -3.0 with 9
    # degrees of freedom, beyond the one-sided 5% point (-1.833).
    assert checks["correct"].difference == pytest.approx(-0.5)
    assert checks["correct"].verdict == "regressed"
    assert (checks["correct"].reference, checks["correct"].value) == (0.8, 0.3)
    # quality: every record drops by 0.2 (to rounding): no spread, certain.
    assert checks["quality"].difference == pytest.approx(-0.2)
    assert checks["quality"].verdict == "regressed" and checks["quality"].p_value < 1e-9
    assert result.outcome == "regressed" and result.exit_code == 1
    comparison = result.comparison
    assert comparison is not None
    assert comparison.labels["correct"].pass_to_fail == 5
    assert comparison.labels["tone"].label_changes == {"warm → cold": 5}

    # A drop of 0.2 is within an allowed 0.25. The pass rate fell by 0.5, more than the
    # allowed 0.1 beyond doubt: t = (-0.5 + 0.1) / 0.1667 = -2.4.
    tolerant = gate_stored(
        LLMObs._require(),
        worse.id,
        baseline=base.id,
        max_drop={"quality": 0.25, "correct": 0.1},
    )
    verdicts = {check.label: check.verdict for check in tolerant.checks}
    assert verdicts == {"correct": "regressed", "quality": "unchanged"}
    assert tolerant.checks[0].explanation.endswith(
        "a drop of more than the allowed 0.1 is established (one-sided p = 0.02)."
    )

    better = gate_stored(LLMObs._require(), made("better").id, baseline=base.id)
    assert {c.label: c.verdict for c in better.checks} == {
        "correct": "unchanged",  # identical: a drop beyond the margin is ruled out
        "quality": "improved",
    }
    assert better.exit_code == 0

    # One record lost, another gained: no net change, but with differences of -1 and +1
    # among 10 records (sd 0.471, se 0.149) a drop of 0.02 is far from ruled out.
    noisy = gate_stored(LLMObs._require(), made("noisy").id, baseline=base.id)
    assert {c.label: c.verdict for c in noisy.checks} == {
        "correct": "inconclusive",
        "quality": "unchanged",
    }
    assert noisy.exit_code == 0
    strict = gate_stored(
        LLMObs._require(), made("noisy").id, baseline=base.id, fail_on=("inconclusive",)
    )
    assert strict.outcome == "inconclusive" and strict.exit_code == 3


def test_floors_by_hand(made: Make) -> None:
    backend = LLMObs._require()
    worse = made("worse")
    # 30% pass; record shares 1,1,1,0,...: se = 0.483 / sqrt(10) = 0.153, and the one-sided
    # 95% upper bound 0.3 + 1.833 * 0.153 = 0.58 is below 0.8: regressed beyond doubt.
    gated = gate_stored(backend, worse.id, baseline=made("base").id, minimums={"correct": 0.8})
    [floor] = [check for check in gated.checks if check.kind == "min"]
    assert floor.verdict == "regressed" and "0.58" in floor.explanation
    # 80% against a floor of 0.85: upper bound 0.8 + 1.833 * 0.133 = 1.04, so it may be a
    # fluke of these 10 records: inconclusive.
    base_only = gate_stored(backend, made("base").id, minimums={"correct": 0.85})
    assert [check.verdict for check in base_only.checks] == ["inconclusive"]
    assert base_only.comparison is None and base_only.exit_code == 0
    assert base_only.notes[0].startswith("No baseline is pinned for project 'gate-project'")
    assert base_only.notes[0].endswith("the gate checks the floors alone.")


# assay gate: exit codes and reports -------------------------------------------------------


def test_gate_passes_with_exit_0_and_writes_every_report(
    made: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("# Earlier steps\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    base, same = made("base"), made("same")
    report, junit = tmp_path / "report.md", tmp_path / "junit.xml"
    result = gate(
        same.id,
        "--baseline",
        base.id,
        "--min",
        "correct=0.5",
        "--report",
        str(report),
        "--junit",
        str(junit),
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.startswith(REPORT_MARKER + "\n## Assay gate ✅ passed")
    assert f"Candidate **same ({same.id[:8]}, 2 run(s))**" in text
    assert f"against baseline **base ({base.id[:8]}, 2 run(s))**" in text
    assert f"Baseline: given as {base.id!r}, created " in text
    assert "| correct | 0.8 | 0.8 | +0 (+0 to +0) | 1 | ⚪ unchanged |" in text
    assert "| correct ≥ 0.5 | – | 0.8 |" in text
    assert "- 'quality' unchanged: mean change +0 over 10 records" in text
    assert "- 'tone' is categorical: 0 of 10 shared record(s) changed" in text
    assert report.read_text(encoding="utf-8") == text  # ready for a sticky comment
    # Appended to the step summary, after what earlier steps wrote.
    assert summary.read_text(encoding="utf-8") == "# Earlier steps\n" + text + "\n"

    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("3", "0")
    names = [case.get("name") for case in suite.iter("testcase")]
    assert names == ["correct", "quality", "correct >= 0.5"]
    assert suite.find("testcase/failure") is None


def test_gate_fails_with_exit_1_on_a_regression(made: Make, tmp_path: Path) -> None:
    base, worse = made("base"), made("worse")
    junit = tmp_path / "junit.xml"
    result = gate(worse.id, "--baseline", base.id, "--junit", str(junit))
    assert result.exit_code == 1, result.output
    text = result.stdout
    assert "## Assay gate ❌ failed: regression" in text
    assert "| correct | 0.8 | 0.3 | -0.5 (" in text and "🔴 regressed |" in text
    assert "- 'correct' regressed: mean change -0.5 over 10 records" in text
    assert "a drop this large is unlikely by chance (one-sided p = 0.0075)." in text
    assert "<details><summary>10 record(s) regressed</summary>" in text  # quality: all
    assert "- 'tone' is categorical: 5 of 10 shared record(s) changed" in text
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "2"
    failure = suite.find("testcase[@name='correct']/failure")
    assert failure is not None and failure.get("message") == "regressed"
    assert failure.text is not None and failure.text.startswith("'correct' regressed")
    # Allowed drops: quality may fall by 0.25 (it fell by 0.2), correct by 0.6 (0.5).
    allowed = gate(
        worse.id, "--baseline", base.id, "--max-drop", "quality=0.25", "--max-drop", "correct=0.6"
    )
    assert allowed.exit_code == 0, allowed.output


def test_gate_exit_3_only_when_asked_to_fail_on_inconclusive(made: Make) -> None:
    base, noisy = made("base"), made("noisy")
    assert gate(noisy.id, "--baseline", base.id).exit_code == 0
    strict = gate(noisy.id, "--baseline", base.id, "--fail-on", "inconclusive")
    assert strict.exit_code == 3, strict.output
    assert "## Assay gate ⚠️ failed: inconclusive" in strict.stdout
    assert "more records or runs would tell" in strict.stdout


def test_gate_uses_the_pinned_baseline_or_the_floors_alone(made: Make) -> None:
    base, worse = made("base"), made("worse")
    # No baseline and no floor: nothing to gate on.
    assert_exit_2(gate(worse.id), "No baseline is pinned", "assay baseline set", "--baseline")
    # Floors alone, said so in the report.
    floors = gate(worse.id, "--min", "correct=0.2")
    assert floors.exit_code == 0, floors.output
    assert "(no baseline)" in floors.stdout
    assert "the gate checks the floors alone." in floors.stdout
    assert gate(worse.id, "--min", "correct=0.8").exit_code == 1
    assert invoke("baseline", "set", base.id).exit_code == 0
    pinned = gate(worse.id)
    assert pinned.exit_code == 1
    assert "Baseline: pinned for project 'gate-project', dataset 'gate' on " in pinned.stdout


@pytest.mark.parametrize(
    ("arguments", "fragments"),
    [
        (["no-such-experiment", "--min", "correct=0.5"], ["No experiment with id"]),
        (["{worse}", "--baseline", "{base}", "--max-drop", "corect=0.1"], ["'corect'"]),
        (["{worse}", "--baseline", "{base}", "--margin", "qualty=0.1"], ["'qualty'"]),
        (["{worse}", "--baseline", "{base}", "--min", "tone=0.5"], ["score or boolean"]),
        (["{worse}", "--baseline", "{base}", "--max-drop", "correct"], ["LABEL=NUMBER"]),
        (["{worse}", "--baseline", "{base}", "--max-drop", "correct=-1"], ["negative"]),
        (["{worse}", "--baseline", "{base}", "--min", "correct=lots"], ["LABEL=NUMBER"]),
        (["{worse}", "--baseline", "{base}", "--fail-on", "never"], ["'never'"]),
        (["{worse}", "--baseline", "tag:model"], ["tag:KEY=VALUE"]),
        (["{worse}", "--baseline", "{worse}"], ["the candidate itself"]),
        (["{worse}", "--baseline", "branch:gone"], ["No completed experiment on branch"]),
        (["{worse}", "--baseline", "{base}", "--report", "{missing}/r.md"], ["cannot write"]),
        (["{worse}", "--baseline", "{base}", "--database-url", "nope://"], ["'nope'"]),
        ([], ["Missing argument 'EXPERIMENT'"]),
    ],
)
def test_every_error_of_gate_exits_2_with_one_line(
    made: Make, tmp_path: Path, arguments: list[str], fragments: list[str]
) -> None:
    values = {"worse": made("worse").id, "base": made("base").id, "missing": str(tmp_path / "x")}
    assert_exit_2(gate(*[argument.format(**values) for argument in arguments]), *fragments)


# assay compare ----------------------------------------------------------------------------


def test_compare_prints_verdicts_counts_flips_and_label_changes(made: Make) -> None:
    base, worse = made("base"), made("worse")
    result = invoke("compare", base.id, worse.id)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"base ({base.id[:8]}, 2 run(s), completed)" in out
    assert "10 on both sides, 0 only in a, 0 only in b" in out
    rows = [
        line.split() for line in out.splitlines() if line.split()[:1] in (["correct"], ["quality"])
    ]
    # evaluation, a, b, change (pt for a boolean), 95% CI (2 cells), p, verdict
    assert rows[0][:5] == ["correct", "80.0%", "30.0%", "-50.0", "pt"]
    assert rows[0][-1] == "regressed"
    assert rows[1][3] == "-0.2" and rows[1][-1] == "regressed"
    assert "- 'correct' regressed: mean change -0.5 over 10 records" in out
    assert "- 'tone' is categorical: 5 of 10 shared record(s) changed" in out
    # improved, regressed, unchanged, pass→fail, fail→pass (then label changes, for tone)
    assert rows[2] == ["correct", "0", "5", "5", "5", "0"]
    assert rows[3] == ["quality", "0", "10", "0"]
    assert "warm → cold ×5" in out
    assert "Records on both sides: 10 regressed." in out  # quality fell on every record
    assert "Regressed records (10)" in out


def test_compare_json_is_the_sdks_comparison(made: Make) -> None:
    base, worse = made("base"), made("worse")
    result = invoke("compare", base.name, worse.name, "--run-a", "1", "--run-b", "2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    expected = compare(base.id, worse.id, run_a=1, run_b=2).to_dict()
    assert data == json.loads(json.dumps(expected))
    assert (data["a"]["run"], data["b"]["runs"]) == (1, [2])
    assert data["labels"]["correct"]["verdict"] == "regressed"
    flipped = invoke("compare", base.id, worse.id, "--lower-is-better", "quality", "--json")
    assert json.loads(flipped.stdout)["labels"]["quality"]["verdict"] == "improved"


def test_compare_errors(made: Make) -> None:
    base = made("base")
    bad_run = invoke("compare", base.id, base.id, "--run-b", "3")
    assert bad_run.exit_code == 2 and "has runs 1..2" in bad_run.stderr
    unknown_label = invoke("compare", base.id, base.id, "--lower-is-better", "nope")
    assert unknown_label.exit_code == 2 and "no evaluation 'nope'" in unknown_label.stderr
    missing = invoke("compare", base.id, "no-such-experiment")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: No experiment with id, id prefix or name")


# assay baseline ---------------------------------------------------------------------------


def test_baseline_set_and_show(made: Make) -> None:
    base, same = made("base"), made("same")
    assert "No baseline is pinned in " in invoke("baseline", "show").stdout
    first = invoke("baseline", "set", base.name)
    assert first.exit_code == 0, first.output
    assert first.stdout == (
        f"Pinned 'base' ({base.id[:8]}) as the baseline of project 'gate-project', "
        "dataset 'gate'.\n"
    )
    second = invoke("baseline", "set", same.id[:8])
    assert f"replacing 'base' ({base.id[:8]})" in second.stdout
    shown = invoke("baseline", "show")
    assert shown.exit_code == 0
    assert "gate-project" in shown.stdout and same.id[:8] in shown.stdout
    [item] = json.loads(invoke("baseline", "show", "--json").stdout)
    assert (item["experiment_id"], item["experiment_name"]) == (same.id, "same")
    assert (item["project_name"], item["dataset_name"]) == ("gate-project", "gate")
    assert item["set_at"].endswith("+00:00")
    assert json.loads(invoke("baseline", "show", "--dataset", "other", "--json").stdout) == []
    other = invoke("baseline", "show", "--project", "other")
    assert "No baseline is pinned for project 'other' in " in other.stdout
    missing = invoke("baseline", "set", "no-such-experiment")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: No experiment")
    assert "Usage" in invoke("baseline").stdout


def test_a_report_without_checks_or_baseline_still_reads(made: Make) -> None:
    result = gate_stored(LLMObs._require(), made("base").id, minimums={"quality": 0.1})
    text = markdown_report(result)
    assert text.startswith(REPORT_MARKER)
    assert "(no baseline)" in text and "| quality ≥ 0.1 |" in text


# The GitHub workflow, end to end ----------------------------------------------------------


def _workflow_steps() -> dict[str, str]:
    """The workflow's ``run`` commands, by step name."""
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    steps = workflow["jobs"]["experiment"]["steps"]
    return {step["name"]: " ".join(step["run"].split()) for step in steps if "run" in step}


def test_the_workflow_runs_the_script_and_gates_against_main(tmp_path: Path) -> None:
    steps = _workflow_steps()
    assert steps["Run the experiment"] == "python examples/github/run_experiment.py"
    gate_step = steps["Gate against main"]
    assert gate_step.startswith("assay gate ${{ steps.run.outputs.experiment_id }} ")
    assert "--baseline branch:main" in gate_step
    summary, output = tmp_path / "step-summary.md", tmp_path / "github-output"
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GITHUB_", "DD_GIT_", "ASSAY_"))
    }
    environment |= {
        "ASSAY_HOME": str(tmp_path / "home"),
        "ASSAY_PROGRESS": "0",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_ACTIONS": "true",
    }

    def run_experiment(branch: str, *arguments: str) -> str:
        """The script as the workflow runs it; the experiment id it passes on."""
        output.write_text("", encoding="utf-8")
        script = ROOT / steps["Run the experiment"].split()[1]
        # A pull request: a detached checkout, its branch in GITHUB_HEAD_REF.
        env = environment | {"GITHUB_HEAD_REF": branch, "GITHUB_REF_NAME": "7/merge"}
        completed = subprocess.run(
            [sys.executable, str(script), *arguments],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
        [line] = output.read_text(encoding="utf-8").splitlines()
        key, _, experiment_id = line.partition("=")
        assert key == "experiment_id" and experiment_id in completed.stdout
        return experiment_id

    def assay(command: str) -> subprocess.CompletedProcess[str]:
        arguments = shlex.split(command)
        assert arguments[0] == "assay"
        return subprocess.run(
            [sys.executable, "-m", "assay", *arguments[1:]],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )

    on_main = run_experiment("main")
    unchanged = run_experiment("fix-typo")
    regressed = run_experiment("terse-prompt", "--regress")
    passed = assay(gate_step.replace("${{ steps.run.outputs.experiment_id }}", unchanged))
    assert passed.returncode == 0, passed.stderr
    first = summary.read_text(encoding="utf-8")
    assert first.startswith(REPORT_MARKER + "\n## Assay gate ✅ passed")
    assert f"({on_main[:8]}, 3 run(s))" in first
    assert "the newest completed experiment on branch 'main'" in first
    assert "| exact_match | 0.861 | 0.861 | +0 (+0 to +0) | 1 | ⚪ unchanged |" in first
    assert (tmp_path / "assay-report.md").read_text(encoding="utf-8") == passed.stdout

    failed = assay(gate_step.replace("${{ steps.run.outputs.experiment_id }}", regressed))
    assert failed.returncode == 1, failed.stderr
    both = summary.read_text(encoding="utf-8")
    assert both.startswith(first) and both.count(REPORT_MARKER) == 2
    report = both[len(first) :]
    assert "## Assay gate ❌ failed: regression" in report
    assert "- 'exact_match' regressed: mean change -0.319 over 24 records" in report
    assert "'exact_match' is 0.542, below 0.7 beyond doubt" in report
    junit = ElementTree.parse(tmp_path / "assay-junit.xml").getroot().find("testsuite")
    assert junit is not None and junit.get("failures") == "3"
