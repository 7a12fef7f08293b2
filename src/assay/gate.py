"""The CI gate: a candidate experiment against its baseline, and floors, as one verdict.

Every numeric evaluation of the comparison is a check (its verdict from
:func:`assay.stats.verdict`, with the drop the team allows for it); each ``min`` floor is
another. The gate fails on ``regressed`` checks, and also on ``inconclusive`` ones when
asked to. Exit codes, for CI: 0 pass, 1 regression, 3 inconclusive (only with
``fail_on`` including it); 2 is left to the command line for errors and bad usage.

A floor (``min={"correct": 0.8}``) is judged like everything else here, with its
uncertainty: regressed when the candidate is below the floor beyond doubt (its one-sided
95% upper bound, clustered by record, is under it), passed when its value is at or above
it, inconclusive in between.

:func:`gate_stored` runs the gate on stored experiments, as ``assay gate`` does: it finds
the baseline (:mod:`assay.baseline`), compares, and falls back on the floors alone when
there is no baseline.

The report exists in two forms: Markdown (for the step summary of GitHub Actions and a
sticky pull-request comment) and JUnit XML (for CI systems that show test results), each
verdict explained in one sentence.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Literal, TypedDict
from xml.etree import ElementTree

from assay import stats
from assay.aggregation import AggregateValue
from assay.baseline import resolve_baseline
from assay.compare import Comparison, compare_values
from assay.errors import BaselineNotFoundError, ExperimentError
from assay.store.backend import Backend
from assay.store.comparison_values import ComparisonValues
from assay.store.records import MetricType

__all__ = [
    "Check",
    "Figures",
    "GateResult",
    "evaluate_gate",
    "figures",
    "gate_stored",
    "junit_xml",
    "markdown_report",
]

Outcome = Literal["pass", "regressed", "inconclusive"]
EXIT_CODES: dict[Outcome, int] = {"pass": 0, "regressed": 1, "inconclusive": 3}
REPORT_MARKER = "<!-- assay-gate -->"
"""First line of the Markdown report: how a bot finds its own sticky comment to update."""


class Figures(TypedDict):
    """What a floor is judged on: the fields of an
    :class:`~assay.aggregation.EvaluationSummary` it reads, so either may be given."""

    metric_type: MetricType
    value: AggregateValue
    stderr: float | None
    """The standard error of ``value``, clustered by record."""
    records: int
    """How many records have a usable value."""


def figures(values: ComparisonValues) -> dict[str, Figures]:
    """Each label's :class:`Figures` from the per-record values, by the rules of
    :func:`assay.aggregation.summarize` (no row needed)."""
    found: dict[str, Figures] = {}
    for label, item in values.labels.items():
        stderr: float | None = None
        if item.metric_type in ("score", "boolean"):
            numbers = [value for value in item.values if isinstance(value, float)]
            bounds = (0.0, 1.0) if item.metric_type == "boolean" else None
            stderr = stats.clustered_mean(numbers, bounds=bounds).stderr
        found[label] = Figures(
            metric_type=item.metric_type,
            value=item.summary(),
            stderr=stderr,
            records=sum(value is not None for value in item.values),
        )
    return found


@dataclass(frozen=True)
class Check:
    """One thing the gate looked at, and what it concluded."""

    label: str
    kind: Literal["baseline", "min"]
    verdict: stats.Verdict
    explanation: str
    value: float | None
    """The candidate's value."""
    reference: float | None
    """The baseline's value, or the floor."""
    difference: float | None = None
    ci95: list[float] | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class GateResult:
    """The checks, and what they add up to."""

    candidate: str
    baseline: str | None
    checks: list[Check]
    fail_on: frozenset[stats.Verdict]
    comparison: Comparison | None = None
    notes: tuple[str, ...] = ()
    """Sentences for the report: how the baseline was chosen, or why there is none."""

    @property
    def outcome(self) -> Outcome:
        verdicts = {check.verdict for check in self.checks}
        if "regressed" in verdicts:
            return "regressed"
        if "inconclusive" in verdicts and "inconclusive" in self.fail_on:
            return "inconclusive"
        return "pass"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]


def evaluate_gate(
    candidate: str,
    summary: Mapping[str, Figures],
    comparison: Comparison | None,
    *,
    minimums: Mapping[str, float] | None = None,
    fail_on: Collection[str] = ("regressed",),
) -> GateResult:
    """Gather the comparison's verdicts and the floors on ``summary`` (the candidate's).

    ``comparison`` is ``None`` when there is no baseline: only the floors are checked.
    """
    unknown = set(fail_on) - {"regressed", "inconclusive"}
    if unknown:
        raise ExperimentError(
            f"fail_on takes 'regressed' and 'inconclusive', not {sorted(unknown)[0]!r}"
        )
    wanted = frozenset(
        verdict for verdict in ("regressed", "inconclusive") if verdict in set(fail_on)
    )
    checks: list[Check] = []
    if comparison is not None:
        for label, item in comparison.labels.items():
            if item.verdict is None or item.difference is None:
                continue
            checks.append(
                Check(
                    label,
                    "baseline",
                    item.verdict,
                    item.explanation,
                    value=item.b if isinstance(item.b, float) else None,
                    reference=item.a if isinstance(item.a, float) else None,
                    difference=item.difference,
                    ci95=item.ci95,
                    p_value=item.p_value,
                )
            )
    for label, floor in sorted((minimums or {}).items()):
        entry = summary.get(label)
        if entry is None or entry["metric_type"] not in ("score", "boolean"):
            known = ", ".join(
                name
                for name, item in summary.items()
                if item["metric_type"] in ("score", "boolean")
            )
            raise ExperimentError(
                f"A floor needs a score or boolean evaluation; {label!r} is not one of "
                f"the candidate's ({known or 'none'})"
            )
        checks.append(_floor(label, floor, entry))
    return GateResult(
        candidate=comparison.b.describe() if comparison else candidate,
        baseline=comparison.a.describe() if comparison else None,
        checks=checks,
        fail_on=wanted,
        comparison=comparison,
    )


def gate_stored(
    backend: Backend,
    candidate: str,
    *,
    baseline: str | None = None,
    max_drop: Mapping[str, float] | None = None,
    minimums: Mapping[str, float] | None = None,
    margin: float | Mapping[str, float] | None = None,
    lower_is_better: Collection[str] = (),
    fail_on: Collection[str] = ("regressed",),
) -> GateResult:
    """The gate on a stored candidate (an id, unique id prefix or name): what ``assay gate``
    runs.

    ``baseline`` is a spec for :func:`assay.baseline.resolve_baseline` (default: the
    baseline pinned for the candidate's project and dataset). When no baseline is found
    and ``minimums`` are given, the floors alone are checked and a note says so; without
    floors, the :class:`~assay.errors.BaselineNotFoundError` is raised. ``max_drop``,
    ``margin`` and ``lower_is_better`` go to :func:`assay.compare.compare_values`.
    """
    info = backend.resolve_experiment(candidate)
    # Per-record values only, computed by the store: the gate never reads a row.
    values = backend.comparison_values(info.id)
    notes: list[str] = []
    if info.status != "completed":
        notes.append(
            f"The candidate's status is {info.status!r}: records it did not run are missing."
        )
    comparison: Comparison | None = None
    try:
        chosen = resolve_baseline(backend, baseline, info)
    except BaselineNotFoundError as error:
        if not minimums:
            raise BaselineNotFoundError(
                f"{error}; or give floors (--min LABEL=VALUE) to gate on them alone"
            ) from error
        # The message is "what is missing; how to fix it": the report needs the first part.
        notes.append(f"{str(error).split(';')[0]}: the gate checks the floors alone.")
    else:
        notes.append(
            f"Baseline: {chosen.chosen_by}, created "
            f"{chosen.experiment.created_at:%Y-%m-%d %H:%M} UTC."
        )
        comparison = compare_values(
            (chosen.experiment, backend.comparison_values(chosen.experiment.id)),
            (info, values),
            max_drop=max_drop,
            margin=margin,
            lower_is_better=lower_is_better,
        )
    summary = figures(values)
    known = set(comparison.labels) if comparison is not None else set(summary)
    for option, labels in (
        ("max_drop", max_drop or {}),
        ("margin", margin if isinstance(margin, Mapping) else {}),
        ("lower_is_better", lower_is_better),
    ):
        unknown = sorted(set(labels) - known)
        if unknown:
            raise ExperimentError(
                f"No evaluation {unknown[0]!r} to apply {option} to; labels are "
                f"{', '.join(sorted(known)) or 'none'}"
            )
    described = f"{info.name} ({info.id[:8]}, {len(info.runs)} run(s))"
    result = evaluate_gate(described, summary, comparison, minimums=minimums, fail_on=fail_on)
    return replace(result, notes=tuple(notes))


def _floor(label: str, floor: float, entry: Figures) -> Check:
    value = entry["value"]
    stderr = entry["stderr"]
    records = entry["records"]
    if not isinstance(value, float):
        return Check(
            label,
            "min",
            "inconclusive",
            f"{label!r} has no value to hold to {floor:g}.",
            None,
            floor,
        )
    if value >= floor:
        return Check(
            label,
            "min",
            "unchanged",
            f"{label!r} is {value:.3g}, at or above {floor:g}.",
            value,
            floor,
        )
    if stderr is None or records < 2:
        upper = value if stderr == 0 else math.inf
    else:
        upper = value + stats.t_quantile(1 - stats.ALPHA, records - 1) * stderr
    if upper < floor:
        explanation = (
            f"{label!r} is {value:.3g}, below {floor:g} beyond doubt (one-sided 95% upper "
            f"bound {upper:.3g} over {records} records)."
        )
        return Check(label, "min", "regressed", explanation, value, floor)
    explanation = (
        f"{label!r} is {value:.3g}, below {floor:g}, but within its uncertainty (one-sided "
        f"95% upper bound {upper:.3g} over {records} records): more records or runs would tell."
    )
    return Check(label, "min", "inconclusive", explanation, value, floor)


_ICONS = {"improved": "🟢", "unchanged": "⚪", "inconclusive": "🟡", "regressed": "🔴"}
_HEADLINES: dict[Outcome, str] = {
    "pass": "✅ passed",
    "regressed": "❌ failed: regression",
    "inconclusive": "⚠️ failed: inconclusive",
}


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.3g}" if signed else f"{value:.3g}"


def markdown_report(result: GateResult, *, regressed_records: int = 10) -> str:
    """The gate as Markdown: the outcome, a table of checks, then the records that moved."""
    lines = [
        REPORT_MARKER,
        f"## Assay gate {_HEADLINES[result.outcome]}",
        "",
        f"Candidate **{result.candidate}**"
        + (f" against baseline **{result.baseline}**." if result.baseline else " (no baseline)."),
        "",
    ]
    for note in result.notes:
        lines += [note, ""]
    if result.checks:
        lines += [
            "| Check | Baseline | Candidate | Change (95% CI) | p | Verdict |",
            "|---|---|---|---|---|---|",
        ]
        for check in result.checks:
            name = (
                check.label if check.kind == "baseline" else f"{check.label} ≥ {check.reference:g}"
            )
            interval = (
                f"{_number(check.difference, True)} ({_number(check.ci95[0], True)} to "
                f"{_number(check.ci95[1], True)})"
                if check.ci95
                else _number(check.difference, True)
            )
            reference = _number(check.reference) if check.kind == "baseline" else "–"
            lines.append(
                f"| {name} | {reference} | {_number(check.value)} | {interval} | "
                f"{_number(check.p_value)} | {_ICONS[check.verdict]} {check.verdict} |"
            )
        lines += [""] + [f"- {check.explanation}" for check in result.checks] + [""]
    else:
        lines += ["No numeric evaluation to check.", ""]
    comparison = result.comparison
    if comparison is not None:
        categorical = [item for item in comparison.labels.values() if item.verdict is None]
        lines += [f"- {item.explanation}" for item in categorical]
        if comparison.only_in_a or comparison.only_in_b:
            lines.append(
                f"- Records on one side only: {len(comparison.only_in_a)} in the baseline, "
                f"{len(comparison.only_in_b)} in the candidate (left out of the comparison)."
            )
        worst = [record for record in comparison.records if record.change in ("regressed", "mixed")]
        if worst:
            lines += [
                "",
                f"<details><summary>{len(worst)} record(s) regressed</summary>",
                "",
                "| Record | Label | Baseline | Candidate |",
                "|---|---|---|---|",
            ]
            for record in worst[:regressed_records]:
                for label, entry in record.labels.items():
                    if entry["change"] == "regressed":
                        before, after = _cell(entry["a"]), _cell(entry["b"])
                        lines.append(f"| {record.idx} | {label} | {before} | {after} |")
            if len(worst) > regressed_records:
                lines.append(f"| … | {len(worst) - regressed_records} more | | |")
            lines += ["", "</details>"]
    return "\n".join(lines).rstrip() + "\n"


def _cell(value: object) -> str:
    return _number(value) if isinstance(value, float) else str(value)


def junit_xml(result: GateResult) -> str:
    """One test case per check: failed when it regressed (or was inconclusive, if asked)."""
    suite = ElementTree.Element(
        "testsuite",
        name="assay-gate",
        tests=str(len(result.checks)),
        failures=str(sum(_fails(result, check) for check in result.checks)),
    )
    for check in result.checks:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=f"assay.gate.{check.kind}",
            name=check.label
            if check.kind == "baseline"
            else f"{check.label} >= {check.reference:g}",
        )
        if _fails(result, check):
            failure = ElementTree.SubElement(case, "failure", message=check.verdict)
            failure.text = check.explanation
        else:
            ElementTree.SubElement(case, "system-out").text = check.explanation
    suites = ElementTree.Element("testsuites")
    suites.append(suite)
    ElementTree.indent(suites)
    return ElementTree.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _fails(result: GateResult, check: Check) -> bool:
    return check.verdict == "regressed" or (
        check.verdict == "inconclusive" and "inconclusive" in result.fail_on
    )
