"""`assay records`: search from the terminal, as a table or as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from assay.cli import app
from assay.demo import run_demo


def invoke(*arguments: str) -> object:
    return CliRunner().invoke(app, list(arguments), env={"COLUMNS": "160"})


def test_records_prints_n_of_m_and_json(assay_home: Path) -> None:
    demo = run_demo(runs=3, jobs=4, records=8)
    result = CliRunner().invoke(
        app,
        ["records", demo.id or "", "-q", "run_iteration:2"],
        env={"COLUMNS": "160"},
    )
    assert result.exit_code == 0, result.output
    assert "8 of 24 rows match (1-8 shown): rows of run 2" in result.output
    as_json = CliRunner().invoke(
        app,
        [
            "records",
            demo.id or "",
            "--query",
            "@multi_run_avg.@evaluations.custom.overlap:>=0",
            "--json",
        ],
    )
    data = json.loads(as_json.stdout)
    assert data["total"] == 8 and data["of"] == 8 and data["multi_run"] is True
    assert {"record_id", "aggregates"} <= set(data["items"][0])
    expected = demo.search("@multi_run_avg.@evaluations.custom.overlap:>=0", limit=50)
    assert [item["record_id"] for item in data["items"]] == [
        item["record_id"] for item in expected.items
    ]


def test_a_bad_query_is_one_error_with_a_suggestion(assay_home: Path) -> None:
    demo = run_demo(runs=1, jobs=2, records=3)
    result = CliRunner().invoke(app, ["records", demo.id or "", "-q", "@evaluations.custom.judg:x"])
    assert result.exit_code == 1
    assert "did you mean '@evaluations.custom.judge'" in result.stderr
    assert "Traceback" not in result.output + result.stderr
