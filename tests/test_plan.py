"""Planning: variance estimates against numpy, power against a simulation of the gate."""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner, Result

import assay.plan
from assay import LLMObs, current_row
from assay.cli import app
from assay.errors import ExperimentError
from assay.plan import (
    LabelVariance,
    detection_power,
    label_variance,
    plan,
    plan_label,
    plan_stored,
    records_needed,
)
from assay.stats import paired_difference, verdict
from assay.store import open_backend

# The estimates --------------------------------------------------------------------------------

SCORES: list[list[float | None]] = [
    [0.9, 0.7, 0.8],
    [0.2, None, 0.4],  # a run with no usable value
    [0.5, 0.5, 0.5],
    [1.0, 0.6, None],
    [0.3, None, None],  # one usable run: a record mean, but nothing about runs
]


def test_score_variances_match_numpy() -> None:
    result = label_variance(SCORES, label="quality")
    usable = [np.array([v for v in runs if v is not None]) for runs in SCORES]
    means = [values.mean() for values in usable]
    assert result.records == 5 and result.runs == 3
    assert result.mean == pytest.approx(np.mean(means))
    assert result.between_variance == pytest.approx(np.var(means, ddof=1))
    repeated = [values for values in usable if len(values) >= 2]
    pooled = sum((len(v) - 1) * np.var(v, ddof=1) for v in repeated) / sum(
        len(v) - 1 for v in repeated
    )
    assert result.within_variance == pytest.approx(pooled)
    assert (result.within_records, result.within_source) == (4, "runs")


def test_boolean_within_variance_is_the_pooled_p_times_one_minus_p() -> None:
    runs = [[1, 1, 0, 1], [0, 0, 0, 0], [1, 0, None, 1], [1, 1, 1, 1], [0, 1, 0, 0]]
    result = label_variance(
        [[None if v is None else float(v) for v in r] for r in runs], metric_type="boolean"
    )
    usable = [np.array([v for v in r if v is not None], dtype=float) for r in runs]
    # Each record's p(1 - p) with the n/(n - 1) correction, pooled by degrees of freedom...
    shares = [(len(v), v.mean()) for v in usable]
    by_shares = sum(n * p * (1 - p) for n, p in shares) / sum(n - 1 for n, _ in shares)
    # ...is the pooled sample variance of the 0/1 values.
    by_numpy = sum((len(v) - 1) * np.var(v, ddof=1) for v in usable) / sum(
        len(v) - 1 for v in usable
    )
    assert result.within_variance == pytest.approx(by_shares) == pytest.approx(by_numpy)
    assert result.between_variance == pytest.approx(np.var([v.mean() for v in usable], ddof=1))


def test_a_single_run_boolean_uses_the_pass_rate_and_says_it_is_an_upper_bound() -> None:
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    result = label_variance([[v] for v in values], metric_type="boolean")
    p = np.mean(values)
    assert result.within_source == "pass_rate" and result.within_records == 0
    assert result.within_variance == pytest.approx(p * (1 - p) * 6 / 5)
    assert result.within_variance == pytest.approx(np.var(values, ddof=1))
    assert "upper bound" in result.explanation


def test_a_single_run_score_cannot_estimate_the_within_variance() -> None:
    result = label_variance([[0.2], [0.9], [0.5]], metric_type="score")
    assert result.within_variance is None and result.within_source == "unknown"
    assert "2+ runs" in result.explanation and "--within-sd" in result.explanation
    assert result.between_variance == pytest.approx(np.var([0.2, 0.9, 0.5], ddof=1))
    planned = plan_label(result, drop=0.1, runs=[1, 3])
    assert [line.records_needed for line in planned.plans] == [None, None]
    given = plan_label(result, drop=0.1, runs=[1, 3], within_sd=0.2)
    assert given.variance.within_source == "given"
    assert given.variance.within_variance == pytest.approx(0.04)
    assert all(line.records_needed is not None for line in given.plans)


def test_too_few_records() -> None:
    result = label_variance([[0.5]], metric_type="boolean")
    assert (result.records, result.between_variance, result.within_variance) == (1, None, None)
    assert label_variance([], metric_type="score").mean is None


# Power against the gate itself ----------------------------------------------------------------


def _gate_power(after: Any, before: Any, *, records: int, seed: int, sims: int = 2000) -> float:
    """Share of simulated comparisons the gate calls regressed (its real test, run as is).

    ``before(rng)`` and ``after(rng, state)`` give each side's record means; ``state`` is
    what ``before`` returns next to them, so both sides share the same records.
    """
    rng = np.random.default_rng(seed)
    regressed = 0
    for _ in range(sims):
        a, state = before(rng, records)
        b = after(rng, state)
        regressed += verdict(paired_difference(a.tolist(), b.tolist()), margin=0.02) == "regressed"
    return regressed / sims


def _scores(drop: float, runs: int, within_sd: float, interaction_sd: float) -> tuple[Any, Any]:
    def before(rng: np.random.Generator, records: int) -> tuple[Any, Any]:
        quality = rng.normal(0.6, 0.2, records)  # records differ a lot: pairing removes it
        noise = rng.normal(0, within_sd, (records, runs))
        return (quality[:, None] + noise).mean(axis=1), quality

    def after(rng: np.random.Generator, quality: Any) -> Any:
        moved = quality - drop + rng.normal(0, interaction_sd, quality.shape)
        return (moved[:, None] + rng.normal(0, within_sd, (len(quality), runs))).mean(axis=1)

    return before, after


def _booleans(drop: float, runs: int) -> tuple[Any, Any]:
    """The issue's scenario: pass rates Beta(3.5, 1.5), mean 0.7, lowered by ``drop``."""

    def before(rng: np.random.Generator, records: int) -> tuple[Any, Any]:
        rates = rng.beta(3.5, 1.5, records)
        return (rng.random((records, runs)) < rates[:, None]).mean(axis=1), rates

    def after(rng: np.random.Generator, rates: Any) -> Any:
        lowered = np.clip(rates - drop, 0, 1)
        return (rng.random((len(rates), runs)) < lowered[:, None]).mean(axis=1)

    return before, after


BETA_WITHIN = 3.5 * 1.5 / (5 * 6)  # E[p(1 - p)] of Beta(3.5, 1.5)


@pytest.mark.parametrize(
    ("records", "runs", "within_sd", "interaction_sd", "seed"),
    [(10, 1, 0.1, 0.0, 1), (40, 3, 0.15, 0.0, 2), (30, 2, 0.1, 0.05, 3)],
)
def test_score_power_matches_the_simulated_gate(
    records: int, runs: int, within_sd: float, interaction_sd: float, seed: int
) -> None:
    before, after = _scores(0.05, runs, within_sd, interaction_sd)
    simulated = _gate_power(after, before, records=records, seed=seed)
    predicted = detection_power(
        0.05,
        records=records,
        runs=runs,
        within_variance=within_sd**2,
        interaction_variance=interaction_sd**2,
    )
    assert abs(predicted - simulated) <= 0.04, (predicted, simulated)


def test_boolean_power_matches_the_simulated_gate() -> None:
    variance = LabelVariance(
        label="passed",
        metric_type="boolean",
        records=100,
        runs=3,
        mean=0.7,
        between_variance=None,
        within_variance=BETA_WITHIN,
        within_records=100,
        within_source="runs",
        explanation="",
    )
    planned = plan_label(variance, drop=0.05, runs=[3], records=100)
    predicted = planned.plans[0].power
    assert predicted is not None
    before, after = _booleans(0.05, 3)
    simulated = _gate_power(after, before, records=100, seed=4)
    assert abs(predicted - simulated) <= 0.04, (predicted, simulated)
    # The candidate's runs vary more once a 0.7 pass rate drops towards 0.5.
    assert planned.candidate_within_variance == pytest.approx(
        BETA_WITHIN - 0.05 * (1 - 2 * 0.7) - 0.05**2
    )


def test_no_true_drop_gives_the_false_alarm_rate() -> None:
    for records in (3, 30, 300):
        power = detection_power(0.0, records=records, runs=2, within_variance=0.04)
        assert power == pytest.approx(0.05)
    assert detection_power(0.05, records=1, runs=5, within_variance=0.04) == 0.0


def test_the_planned_records_catch_the_drop_in_simulation() -> None:
    """From a simulated baseline (the issue's boolean scenario), plan 5 runs; then run the
    gate on that many records: it catches the drop at least 80% of the time, up to the
    simulation's own error (0.02: twice its standard error)."""
    before, after = _booleans(0.05, 5)
    rng = np.random.default_rng(5)
    rates = rng.beta(3.5, 1.5, 400)
    baseline = (rng.random((400, 5)) < rates[:, None]).astype(float)
    variance = label_variance(baseline.tolist(), metric_type="boolean")
    assert variance.within_variance == pytest.approx(BETA_WITHIN, rel=0.1)
    needed = plan_label(variance, drop=0.05, runs=[5]).plans[0].records_needed
    assert needed is not None and 120 < needed < 250
    assert _gate_power(after, before, records=needed, seed=6) >= 0.78
    assert _gate_power(after, before, records=needed // 2, seed=7) < 0.7


def test_records_needed_is_the_smallest_that_reaches_the_power() -> None:
    for runs, interaction in ((1, 0.0), (3, 0.0), (5, 0.003), (2, 0.0)):
        options: dict[str, Any] = {
            "runs": runs,
            "within_variance": 0.09,
            "interaction_variance": interaction,
        }
        needed = records_needed(0.1, power=0.9, **options)
        assert needed is not None
        assert detection_power(0.1, records=needed, **options) >= 0.9
        assert needed == 2 or detection_power(0.1, records=needed - 1, **options) < 0.9
    # Exact with few records: the normal approximation would ask for fewer.
    small = records_needed(0.5, runs=1, within_variance=0.05)
    assert small is not None
    normal = math.ceil((1.6449 + 0.8416) ** 2 * 2 * 0.05 / 0.25)
    assert small > normal
    assert records_needed(0.1, runs=1, within_variance=0.0) == 2  # no noise at all


def test_more_runs_need_fewer_records_but_not_beyond_the_interaction() -> None:
    runs = list(range(1, 11))
    alike = [records_needed(0.05, runs=r, within_variance=0.04) for r in runs]
    uneven = [
        records_needed(0.05, runs=r, within_variance=0.04, interaction_variance=0.01) for r in runs
    ]
    assert all(n is not None for n in [*alike, *uneven])
    assert alike == sorted(alike, reverse=True) and alike[-1] < alike[0] / 5
    assert uneven == sorted(uneven, reverse=True)
    assert all(u > a for u, a in zip(uneven, alike, strict=True))  # type: ignore[operator]
    # Runs only shrink the run-to-run term: with uneven changes they help far less.
    floor = records_needed(0.05, runs=1, within_variance=0.0, interaction_variance=0.01)
    assert floor is not None and uneven[-1] >= floor  # type: ignore[operator]
    assert uneven[0] / uneven[-1] < alike[0] / alike[-1]  # type: ignore[operator]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="drop to detect must be a number > 0"):
        records_needed(0.0, runs=1, within_variance=0.1)
    with pytest.raises(ValueError, match="power must be between 0 and 1"):
        records_needed(0.1, runs=1, within_variance=0.1, power=1.0)
    with pytest.raises(ValueError, match="runs must be at least 1"):
        detection_power(0.1, records=5, runs=0, within_variance=0.1)
    variance = label_variance([[0.1, 0.2], [0.3, 0.5]])
    with pytest.raises(ValueError, match="records must be at least 2"):
        plan_label(variance, drop=0.1, records=1)
    with pytest.raises(ValueError, match="interaction_sd must be a finite number"):
        plan_label(variance, drop=0.1, interaction_sd=-1)


def test_docstring_examples() -> None:
    assert doctest.testmod(assay.plan).failed == 0


# From a stored experiment, and the command ----------------------------------------------------

# Per record, one (passed, quality, tone) per run.
SCRIPT: list[list[tuple[bool, float, str]]] = [
    [(True, 0.9, "warm"), (True, 0.7, "warm"), (False, 0.8, "cold")],
    [(False, 0.2, "cold"), (False, 0.4, "cold"), (False, 0.3, "cold")],
    [(True, 0.5, "warm"), (False, 0.6, "warm"), (True, 0.4, "warm")],
    [(True, 1.0, "warm"), (True, 0.8, "cold"), (True, 0.9, "warm")],
    [(False, 0.1, "cold"), (True, 0.5, "cold"), (False, 0.2, "cold")],
]


def replay(input_data: Any, config: Any) -> Any:
    row = current_row()
    assert row is not None
    return SCRIPT[input_data][row.run_iteration - 1]


def passed(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    return bool(output_data[0])


def quality(input_data: Any, output_data: Any, expected_output: Any) -> float:
    return float(output_data[1])


def tone(input_data: Any, output_data: Any, expected_output: Any) -> str:
    return str(output_data[2])


@pytest.fixture
def baseline() -> str:
    """A stored 5 records x 3 runs experiment, 'base'; LLMObs disabled again after."""
    LLMObs.enable(project_name="plan")
    dataset = LLMObs.create_dataset(
        dataset_name="plan", records=[{"input_data": n} for n in range(len(SCRIPT))]
    )
    experiment = LLMObs.experiment("base", replay, dataset, [passed, quality, tone], runs=3)
    experiment.run(jobs=2)
    single = LLMObs.experiment("single", replay, dataset, [passed, quality], runs=1)
    single.run(jobs=2)
    LLMObs.disable()
    assert experiment.id is not None
    return experiment.id


def _column(column: int) -> list[list[float | None]]:
    return [[float(run[column]) for run in runs] for runs in SCRIPT]


def test_a_stored_experiment_gives_the_same_estimates(baseline: str) -> None:
    backend = open_backend()
    try:
        result = plan_stored(backend, "base", drop=0.1, runs=[1, 4], records=30)
    finally:
        backend.close()
    assert (result.baseline.name, result.baseline.runs, result.baseline.records) == ("base", 3, 5)
    assert result.baseline.other_labels == {"tone": "categorical"}
    assert sorted(result.labels) == ["passed", "quality"]
    for label, column in (("passed", 0), ("quality", 1)):
        found = result.labels[label].variance
        expected = label_variance(_column(column), metric_type=found.metric_type)
        assert found.within_variance == pytest.approx(expected.within_variance)
        assert found.between_variance == pytest.approx(expected.between_variance)
    quality_plan = result.labels["quality"]
    within = quality_plan.variance.within_variance
    assert within is not None
    assert [line.records_needed for line in quality_plan.plans] == [
        records_needed(0.1, runs=r, within_variance=within) for r in (1, 4)
    ]
    assert quality_plan.plans[1].power == pytest.approx(
        detection_power(0.1, records=30, runs=4, within_variance=within)
    )
    assert json.loads(json.dumps(result.to_dict()))["labels"]["quality"]["within_source"] == "runs"


def test_plan_through_llmobs_and_its_errors(baseline: str) -> None:
    LLMObs.enable(project_name="plan")
    result = plan(baseline, drop=0.1, labels=["quality"], interaction_sd={"quality": 0.05})
    assert list(result.labels) == ["quality"]
    assert result.labels["quality"].interaction_variance == pytest.approx(0.0025)
    with pytest.raises(ExperimentError, match=r"No evaluation 'qualty'.*did you mean 'quality'"):
        plan(baseline, drop=0.1, labels=["qualty"])
    with pytest.raises(ExperimentError, match=r"'tone'.* is categorical"):
        plan(baseline, drop=0.1, within_sd={"tone": 0.1})
    with pytest.raises(TypeError, match="call run"):
        plan(object(), drop=0.1)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def assert_one_error_line(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.stdout == "" and "Traceback" not in result.output


def test_the_command_prints_variances_and_records_needed(
    baseline: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = invoke("plan", "base", "--drop", "0.1", "--runs", "1,3,5", "--records", "40")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Baseline 'base'" in out and "5 records x 3 run(s)" in out
    assert "passed (boolean)" in out and "quality (score)" in out and "tone" not in out
    within = label_variance(_column(1)).within_variance
    assert within is not None
    assert f"variance {within:.4g}" in out
    assert "interaction:     0, assumed" in out
    assert "power with 40 records" in out
    for runs in (1, 3, 5):
        needed = records_needed(0.1, runs=runs, within_variance=within)
        assert f"{needed:,}" in out


def test_the_command_json(baseline: str, assay_home: Path) -> None:
    args = ["plan", "base", "--drop", "0.1", "--runs", "2,6", "--label", "quality", "--json"]
    result = invoke(*args, "--database-url", f"sqlite:///{assay_home}/assay.db")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["experiment"]["name"] == "base" and data["drop"] == 0.1
    assert list(data["labels"]) == ["quality"]
    backend = open_backend()
    try:
        expected = plan_stored(backend, "base", drop=0.1, runs=[2, 6], labels=["quality"])
    finally:
        backend.close()
    assert data == json.loads(json.dumps(expected.to_dict()))
    assert [line["runs"] for line in data["labels"]["quality"]["plans"]] == [2, 6]


def test_a_single_run_score_needs_a_given_within_sd(baseline: str) -> None:
    result = invoke("plan", "single", "--drop", "0.1", "--runs", "1,3")
    assert result.exit_code == 0, result.output
    assert "2+ runs" in result.stdout and "no plan without it" in result.stdout
    assert "upper bound" in result.stdout  # the boolean uses its pass rate
    given = invoke("plan", "single", "--drop", "0.1", "--within-sd", "quality=0.1", "--json")
    data = json.loads(given.stdout)
    assert data["labels"]["quality"]["within_source"] == "given"
    assert data["labels"]["passed"]["within_source"] == "pass_rate"


ERRORS = [
    (["--drop", "0"], "must be > 0"),
    (["--drop", "-0.1"], "must be > 0"),
    (["--drop", "0.1", "--power", "1.5"], "between 0 and 1"),
    (["--drop", "0.1", "--runs", "1,zero"], "'--runs'"),
    (["--drop", "0.1", "--records", "1"], "at least 2 records"),
    (["--drop", "0.1", "--label", "qualty"], "did you mean 'quality'"),
    (["--drop", "0.1", "--label", "tone"], "is categorical"),
    (["--drop", "0.1", "--within-sd", "x=y"], "'--within-sd'"),
    (["--drop", "0.1", "--interaction-sd", "tone=0.1"], "'--interaction-sd'"),
    (["--drop"], "requires an argument"),
]


def test_bad_usage_is_one_line_and_exit_2(baseline: str) -> None:
    for args, fragment in ERRORS:
        assert_one_error_line(invoke("plan", "base", *args), 2, fragment)


def test_an_unknown_experiment_is_an_error(baseline: str) -> None:
    assert_one_error_line(invoke("plan", "nope", "--drop", "0.1"), 1, "'nope'")
