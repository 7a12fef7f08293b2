"""The ``assay`` command, in-process with CliRunner and as a real ``python -m assay``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from assay import LLMObs, SyncExperiment, __version__
from assay.cli import app
from assay.demo import run_demo
from assay.store import open_backend
from assay.store.records import ExperimentInfo


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("ASSAY_HOME", str(tmp_path))
    # Wide enough that rich never wraps an id or a path in the middle.
    monkeypatch.setenv("COLUMNS", "250")
    yield tmp_path
    LLMObs.disable()


@pytest.fixture
def demo() -> SyncExperiment:
    """A small demo experiment: 6 questions x 3 runs."""
    experiment = run_demo(runs=3, records=6, jobs=4)
    LLMObs.disable()  # the CLI opens the store on its own, as a new process would
    return experiment


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def stored_experiments() -> list[ExperimentInfo]:
    backend = open_backend()
    try:
        return backend.list_experiments()
    finally:
        backend.close()


def experiment_id(experiment: SyncExperiment) -> str:
    assert experiment.id is not None
    return experiment.id


def assert_one_error_line(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""
    assert "Traceback" not in result.output


def json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


# assay demo -------------------------------------------------------------------------------


def test_demo_prints_the_summary_where_results_are_and_what_to_try(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ASSAY_PROGRESS")  # as a person runs it: the bar shows
    result = invoke("demo", "--runs", "3", "--records", "5", "--jobs", "4")

    assert result.exit_code == 0, result.output
    out = result.stdout
    for label in ("exact_match", "overlap", "judge", "num_exact_matches"):
        assert label in out
    for metric_type in ("boolean", "score", "categorical"):
        assert metric_type in out
    assert str(home / "assay.db") in out
    (info,) = stored_experiments()
    assert info.run_count == 3 and info.status == "completed"
    assert f"Experiment id: {info.id}" in out
    assert f"assay show {info.id}\n" in out
    assert f"assay show {info.id} --run 2" in out
    assert "assay experiments list" in out
    assert f"/llm/experiments/{info.id}" in out and "assay serve" in out
    # The progress bar is forced on, on stderr: rows done out of records x runs.
    assert "15/15" in result.stderr
    assert "Traceback" not in result.output


def test_demo_defaults_are_five_runs_of_every_question(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSAY_PROGRESS")
    result = invoke("demo")

    assert result.exit_code == 0, result.output
    (info,) = stored_experiments()
    assert info.run_count == 5
    assert "100/100" in result.stderr
    assert "rows        100" in result.stdout


# assay show -------------------------------------------------------------------------------


def test_show_json_matches_the_sdk(demo: SyncExperiment) -> None:
    result = invoke("show", experiment_id(demo), "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # nothing but JSON on stdout
    assert set(data) == {
        "experiment",
        "run",
        "summary",
        "summary_evaluations",
        "record_summaries",
        "metrics",
    }
    assert data["summary"] == json_roundtrip(demo.summary())
    assert data["metrics"] == json_roundtrip(demo.trace_metrics())
    assert data["record_summaries"] == json_roundtrip(demo.record_summaries())
    assert data["run"] is None
    info = data["experiment"]
    assert info["id"] == demo.id and info["name"] == "capitals-simulated-model"
    assert info["project_name"] == "assay-demo"
    assert info["run_count"] == 3 and info["rows"] == 18 and info["status"] == "completed"
    assert info["failed_rows"] == 0
    assert info["url"] == demo.url
    assert [run["run_iteration"] for run in info["runs"]] == [1, 2, 3]
    counts = [run.summary_evaluations["num_exact_matches"]["value"] for run in demo.runs]
    assert data["summary_evaluations"] == {
        "num_exact_matches": {"metric_type": "score", "per_run": counts, "errors": 0}
    }


def test_show_one_run(demo: SyncExperiment) -> None:
    result = invoke("show", experiment_id(demo), "--run", "2", "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run"] == 2
    assert data["summary"] == json_roundtrip(demo.summary(run=2))
    assert data["record_summaries"] == json_roundtrip(demo.record_summaries(run=2))
    assert data["experiment"]["rows"] == 6
    count = demo.runs[1].summary_evaluations["num_exact_matches"]["value"]
    assert data["summary_evaluations"]["num_exact_matches"]["per_run"] == [count]

    table = invoke("show", experiment_id(demo), "--run", "2")
    assert table.exit_code == 0, table.output
    assert "showing run 2" in table.stdout
    assert "Evaluations, run 2" in table.stdout
    assert "run 2" in table.stdout and "run 1" not in table.stdout


def test_show_table(demo: SyncExperiment) -> None:
    result = invoke("show", experiment_id(demo))

    assert result.exit_code == 0, result.output
    out = result.stdout
    summary = demo.summary()
    assert demo.info is not None
    for text in (
        demo.info.name,
        experiment_id(demo),
        "assay-demo",
        "assay-demo-capitals-first-6 (version 1)",
        "completed",
        '"model_name": "assay-simulated-capitals"',
        "per run (1..3)",
        "Summary evaluations",
        "num_exact_matches",
        f"{summary['exact_match']['value']:.1%}",
        f"{summary['overlap']['value']:.3g}",
        f"{summary['judge']['value']} (",
    ):
        assert text in out, text


def test_show_table_has_intervals_run_spread_and_pass_at_k(demo: SyncExperiment) -> None:
    result = invoke("show", experiment_id(demo))

    assert result.exit_code == 0, result.output
    out = result.stdout
    summary = demo.summary()
    exact, overlap = summary["exact_match"], summary["overlap"]
    assert exact["ci95"] is not None and overlap["ci95"] is not None
    assert exact["pass_at_k"] is not None and exact["pass_hat_k"] is not None
    low, high = exact["ci95"]
    for text in (
        "95% CI",
        f"[{low:.1%}, {high:.1%}]",
        f"[{overlap['ci95'][0]:.3g}, {overlap['ci95'][1]:.3g}]",
        "Across runs",
        "run sd",
        f"{overlap['run_sd']:.3g}",
        f"pass@1 {exact['pass_at_k'][1]:.0%} · pass@3 {exact['pass_at_k'][3]:.0%}",
        f"pass^3 {exact['pass_hat_k'][3]:.0%}",
        "flaky",
        "agreement",
    ):
        assert text in out, text
    flaky = sum(bool(r["evaluations"]["exact_match"]["flaky"]) for r in demo.record_summaries())
    assert f"{flaky}/6 flaky" in out

    one_run = invoke("show", experiment_id(demo), "--run", "2").stdout
    assert "95% CI" in one_run
    assert "Across runs" not in one_run and "pass@" not in one_run


@pytest.mark.parametrize("reference", ["prefix", "name"])
def test_show_finds_an_experiment_by_prefix_or_name(demo: SyncExperiment, reference: str) -> None:
    given = experiment_id(demo)[:8] if reference == "prefix" else demo.name
    result = invoke("show", given, "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["experiment"]["id"] == demo.id


def test_show_a_failed_experiment() -> None:
    LLMObs.enable(project_name="failing")
    dataset = LLMObs.create_dataset(
        dataset_name="numbers", records=[{"input_data": {"x": x}} for x in range(3)]
    )

    def task(input_data: dict[str, int], config: dict[str, Any]) -> int:
        if input_data["x"] == 1:
            raise ZeroDivisionError("no ones")
        return input_data["x"]

    def positive(input_data: Any, output_data: Any, expected_output: Any) -> bool:
        return bool(output_data > 0)

    experiment = LLMObs.experiment(
        name="failing", task=task, dataset=dataset, evaluators=[positive], runs=2
    )
    experiment.run(jobs=2)
    LLMObs.disable()

    result = invoke("show", "failing")

    assert result.exit_code == 0, result.output
    assert "failed" in result.stdout
    assert "ZeroDivisionError: no ones" in result.stdout  # the error line of the header
    assert "6 (2 with a task error)" in result.stdout
    assert "errors" in result.stdout and "positive" in result.stdout
    data = json.loads(invoke("show", "failing", "--json").stdout)
    assert data["experiment"]["status"] == "failed"
    assert data["experiment"]["failed_rows"] == 2
    assert "ZeroDivisionError" in data["experiment"]["error"]
    assert data["summary"] == json_roundtrip(experiment.summary())


# assay experiments list ---------------------------------------------------------------------


def test_experiments_list(demo: SyncExperiment) -> None:
    other = run_demo(runs=2, records=3)
    LLMObs.disable()

    result = invoke("experiments", "list")

    assert result.exit_code == 0, result.output
    out = result.stdout
    for experiment, dataset in ((demo, "first-6@1"), (other, "first-3@1")):
        assert experiment_id(experiment)[:8] in out
        assert f"assay-demo-capitals-{dataset}" in out
    assert out.index(experiment_id(other)[:8]) < out.index(experiment_id(demo)[:8])
    assert "capitals-simulated-model" in out and "completed" in out
    assert "exact_match" in out and "%" in out

    listed = json.loads(invoke("experiments", "list", "--json").stdout)
    assert [item["id"] for item in listed] == [other.id, demo.id]
    assert listed[1]["summary"] == json_roundtrip(demo.summary())
    assert listed[1]["rows"] == 18 and listed[0]["rows"] == 6

    limited = json.loads(invoke("experiments", "list", "--limit", "1", "--json").stdout)
    assert [item["id"] for item in limited] == [other.id]


def test_experiments_list_filters(demo: SyncExperiment) -> None:
    by_project = json.loads(
        invoke("experiments", "list", "--project", "assay-demo", "--json").stdout
    )
    assert [item["id"] for item in by_project] == [demo.id]
    by_name = json.loads(invoke("experiments", "list", "--name", demo.name, "--json").stdout)
    assert [item["id"] for item in by_name] == [demo.id]

    assert json.loads(invoke("experiments", "list", "--name", "other", "--json").stdout) == []
    missing = invoke("experiments", "list", "--project", "nope", "--json")
    assert missing.exit_code == 0 and json.loads(missing.stdout) == []
    empty = invoke("experiments", "list", "--project", "nope")
    assert empty.exit_code == 0
    assert "No experiments in project 'nope'" in empty.stdout
    assert "assay demo" in empty.stdout


def test_experiments_list_on_an_empty_store() -> None:
    result = invoke("experiments", "list")

    assert result.exit_code == 0, result.output
    assert "No experiments in" in result.stdout


# Errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (["show", "no-such-experiment"], 1, ["no-such-experiment", "assay experiments list"]),
        (["show", "{id}", "--run", "9"], 2, ["--run", "runs 1..3"]),
        (["show", "{id}", "--run", "0"], 2, ["--run", "runs 1..3"]),
        (["show", "{id}", "--run", "two"], 2, ["--run"]),
        (["show"], 2, ["EXPERIMENT"]),
        (["demo", "--runs", "0"], 2, ["--runs"]),
        (["demo", "--jobs", "0"], 2, ["--jobs"]),
        (["demo", "--records", "21"], 2, ["--records"]),
        (["experiments", "list", "--limit", "0"], 2, ["--limit"]),
        (["run", "{home}/missing.py"], 2, ["missing.py", "no such file"]),
        (["run", "{home}/notes.txt"], 2, ["notes.txt", ".py"]),
        (["run", "{home}"], 2, [".py"]),
        (["run"], 2, ["FILE"]),
        (["no-such-command"], 2, ["no-such-command"]),
        (["show", "{id}", "--bogus"], 2, ["--bogus"]),
    ],
)
def test_errors_are_one_line_and_a_non_zero_exit(
    demo: SyncExperiment, home: Path, args: list[str], code: int, fragments: list[str]
) -> None:
    (home / "notes.txt").write_text("not python\n")
    filled = [arg.format(id=demo.id, home=home) for arg in args]

    assert_one_error_line(invoke(*filled), code, *fragments)


def test_an_unknown_experiment_in_an_empty_store() -> None:
    assert_one_error_line(invoke("show", "abcd1234"), 1, "abcd1234")


def test_a_store_that_cannot_be_created(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    (home / "file").write_text("")
    monkeypatch.setenv("ASSAY_HOME", str(home / "file" / "inside"))

    assert_one_error_line(invoke("experiments", "list"), 1, "ASSAY_HOME")


# assay run --------------------------------------------------------------------------------

SCRIPT = """
import sys
from assay import LLMObs

LLMObs.enable(project_name="scripted")
dataset = LLMObs.create_dataset(
    dataset_name="doubling",
    records=[{"input_data": {"x": x}, "expected_output": 2 * x} for x in range(4)],
)

def task(input_data, config):
    return input_data["x"] * 2 if input_data["x"] else -1

def correct(input_data, output_data, expected_output):
    return output_data == expected_output

experiment = LLMObs.experiment(
    name="doubling-test", task=task, dataset=dataset, evaluators=[correct], runs=2
)
experiment.run(jobs=2)
print("name", __name__, "argv", sys.argv, "id", experiment.id)
"""


def test_run_a_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSAY_PROGRESS", raising=False)
    script = tmp_path / "experiment.py"
    script.write_text(SCRIPT)
    argv, path = sys.argv[:], sys.path[:]

    result = invoke("run", str(script), "one", "--flag", "--", "two")

    assert result.exit_code == 0, result.output
    (info,) = stored_experiments()
    assert info.name == "doubling-test" and info.run_count == 2
    expected_argv = [str(script), "one", "--flag", "two"]
    assert f"name __main__ argv {expected_argv} id {info.id}" in result.stdout
    assert "8/8" in result.stderr  # the progress bar, forced on
    # Everything the command changed for the script is put back.
    assert sys.argv == argv and sys.path == path
    assert "ASSAY_PROGRESS" not in os.environ


def test_run_keeps_an_explicit_progress_setting(tmp_path: Path) -> None:
    script = tmp_path / "experiment.py"
    script.write_text(SCRIPT)

    result = invoke("run", str(script))  # the suite sets ASSAY_PROGRESS=0

    assert result.exit_code == 0, result.output
    assert "8/8" not in result.stderr
    assert os.environ["ASSAY_PROGRESS"] == "0"


def test_run_a_script_that_raises(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("def helper():\n    raise ValueError('boom in the script')\n\nhelper()\n")

    result = invoke("run", str(script))

    assert result.exit_code == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert f'File "{script}", line 4, in <module>' in result.stderr
    assert f'File "{script}", line 2, in helper' in result.stderr
    assert result.stderr.rstrip().endswith("ValueError: boom in the script")
    # The traceback is the script's: no frame of the CLI or of runpy.
    assert "cli.py" not in result.stderr and "runpy" not in result.stderr


def test_run_a_script_with_a_syntax_error(tmp_path: Path) -> None:
    script = tmp_path / "typo.py"
    script.write_text("def broken(:\n    pass\n")

    result = invoke("run", str(script))

    assert result.exit_code == 1
    assert "SyntaxError" in result.stderr and str(script) in result.stderr
    assert "runpy" not in result.stderr


def test_run_keeps_the_scripts_exit_code(tmp_path: Path) -> None:
    script = tmp_path / "exits.py"
    script.write_text("import sys\nsys.exit(3)\n")

    assert invoke("run", str(script)).exit_code == 3


# Help and version -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["demo"], ["run"], ["show"], ["experiments", "list"], ["experiments"], []]
)
def test_help_mentions_the_store_settings(command: list[str]) -> None:
    result = invoke(*command, "--help")

    assert result.exit_code == 0, result.output
    assert "ASSAY_HOME" in result.stdout and "ASSAY_DATABASE_URL" in result.stdout


def test_no_command_shows_help() -> None:
    for args in ([], ["experiments"]):
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.stdout


def test_version() -> None:
    assert invoke("version").stdout == f"assay {__version__}\n"
    assert invoke("--version").stdout == f"assay {__version__}\n"


# A real process ---------------------------------------------------------------------------


def assay_process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "assay", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "250"},
    )


def test_python_dash_m_assay(home: Path) -> None:
    demo = assay_process("demo", "--runs", "3", "--records", "6")
    assert demo.returncode == 0, demo.stderr
    (info,) = stored_experiments()
    assert f"Experiment id: {info.id}" in demo.stdout
    assert str(home / "assay.db") in demo.stdout

    shown = assay_process("show", info.id[:8], "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["experiment"]["id"] == info.id

    # The same demo in this process gives the same aggregates: the simulated model is
    # seeded from the question, not from Python's per-process hash or the global random.
    here = run_demo(runs=3, records=6)
    for label, item in json_roundtrip(here.summary()).items():
        theirs = data["summary"][label]
        assert (theirs["value"], theirs["records"], theirs["errors"]) == (
            item["value"],
            item["records"],
            item["errors"],
        ), label

    missing = assay_process("show", "no-such-experiment")
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr.startswith("error: ") and len(missing.stderr.splitlines()) == 1
    assert "Traceback" not in missing.stderr
