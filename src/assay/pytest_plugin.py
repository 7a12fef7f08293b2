"""Gate inside the test suite a team already has: the ``assay_gate`` pytest fixture.

Installed with Assay (a ``pytest11`` entry point), so any test can ask for it::

    def test_capitals_do_not_regress(assay_gate):
        experiment = LLMObs.experiment("capitals", task, dataset, [exact_match], runs=5)
        experiment.run(jobs=8)
        assay_gate(experiment, baseline="branch:main", max_drop={"exact_match": 0.02})

The fixture compares the experiment with its baseline exactly as ``assay gate`` does
(:mod:`assay.gate`), fails the test with the report when the gate fails, and adds every
gate's report to pytest's terminal summary (and to ``--assay-report FILE``), so a passing
gate still shows its numbers. Options, for CI: ``--assay-baseline SPEC`` is the baseline
of calls that name none, ``--assay-fail-on inconclusive`` makes inconclusive gates fail
too.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

_REPORTS = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("assay", "Assay experiment gates")
    group.addoption(
        "--assay-baseline",
        metavar="SPEC",
        default=None,
        help="baseline of assay_gate calls that name none: an experiment id or name, "
        "tag:KEY=VALUE or branch:NAME (default: the pinned baseline)",
    )
    group.addoption(
        "--assay-fail-on",
        action="append",
        choices=("regressed", "inconclusive"),
        default=None,
        help="verdicts that fail a gate (repeatable; default: regressed)",
    )
    group.addoption(
        "--assay-report",
        metavar="FILE",
        default=None,
        help="write every gate's Markdown report to FILE",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_REPORTS] = []


@pytest.fixture
def assay_gate(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``assay_gate(experiment, baseline=None, *, max_drop=None, minimums=None,
    lower_is_better=(), fail_on=None)``: gate ``experiment`` and return the
    :class:`assay.gate.GateResult`; the test fails (with the report) if the gate does."""
    config = request.config

    def gate(
        experiment: Any,
        baseline: Any = None,
        *,
        max_drop: Mapping[str, float] | None = None,
        minimums: Mapping[str, float] | None = None,
        lower_is_better: Collection[str] = (),
        fail_on: Collection[str] | None = None,
    ) -> Any:
        from assay.compare import experiment_reference
        from assay.gate import gate_stored, markdown_report
        from assay.llmobs import LLMObs

        if baseline is not None and not isinstance(baseline, str):
            baseline = experiment_reference(baseline, "baseline")
        result = gate_stored(
            LLMObs._require(),
            experiment_reference(experiment, "experiment"),
            baseline=baseline if baseline is not None else config.getoption("--assay-baseline"),
            max_drop=max_drop,
            minimums=minimums,
            lower_is_better=lower_is_better,
            fail_on=fail_on or config.getoption("--assay-fail-on") or ("regressed",),
        )
        report = markdown_report(result)
        config.stash[_REPORTS].append(f"{request.node.nodeid}\n\n{report}")
        if result.exit_code:
            pytest.fail(report, pytrace=False)
        return result

    yield gate


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    reports = config.stash.get(_REPORTS, [])
    if not reports:
        return
    terminalreporter.write_sep("=", "assay gates")
    for report in reports:
        terminalreporter.write_line(report)
    destination = config.getoption("--assay-report")
    if destination:
        Path(destination).write_text("\n\n".join(reports), encoding="utf-8")
