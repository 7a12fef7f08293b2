"""Comparisons: the paired test against scipy, verdicts by hand, and calibration by simulation."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest
import scipy.stats

from assay import LLMObs, compare, current_row
from assay.errors import ExperimentError
from assay.stats import paired_difference, verdict
from backends import on_every_backend

# Per (version, record n, run): passed (boolean), quality (score), tone (categorical).
TABLE: dict[tuple[str, int], list[tuple[bool, float, str]]] = {
    ("a", 0): [(True, 0.9, "warm"), (True, 0.7, "warm")],
    ("a", 1): [(False, 0.2, "cold"), (False, 0.4, "cold")],
    ("a", 2): [(True, 0.5, "warm"), (False, 0.5, "warm")],
    ("a", 3): [(True, 1.0, "warm"), (True, 0.8, "cold")],
    ("a", 4): [(False, 0.0, "cold"), (False, 0.2, "cold")],
    ("a", 5): [(True, 0.6, "warm"), (True, 0.6, "warm")],
    ("a", 6): [(True, 0.6, "warm"), (True, 0.6, "warm")],
    ("b", 0): [(True, 0.8, "warm"), (True, 0.8, "warm")],
    ("b", 1): [(True, 0.6, "warm"), (False, 0.4, "cold")],
    ("b", 2): [(False, 0.1, "cold"), (False, 0.3, "cold")],
    ("b", 3): [(True, 0.9, "warm"), (True, 0.9, "warm")],
    ("b", 4): [(False, 0.0, "cold"), (False, 0.0, "cold")],
    ("b", 5): [(True, 0.2, "cold"), (False, 0.2, "cold")],
}


def task(input_data: Any, config: Any) -> Any:
    return {"n": input_data["n"], "version": config["version"]}


def _cell(output: Any) -> tuple[bool, float, str]:
    row = current_row()
    assert row is not None
    return TABLE[(output["version"], output["n"])][row.run_iteration - 1]


def passed(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    return _cell(output_data)[0]


def quality(input_data: Any, output_data: Any, expected_output: Any) -> float:
    return _cell(output_data)[1]


def tone(input_data: Any, output_data: Any, expected_output: Any) -> str:
    return _cell(output_data)[2]


@pytest.fixture
def pair(llmobs: type[LLMObs]) -> tuple[Any, Any]:
    dataset = llmobs.create_dataset(
        dataset_name="compare", records=[{"input_data": {"n": n}} for n in range(7)]
    )
    evaluators = [passed, quality, tone]
    a = llmobs.experiment("base", task, dataset, evaluators, config={"version": "a"}, runs=2)
    a.run(jobs=2)
    dataset.delete(6)  # record 6 is in the baseline only
    dataset.push()
    b = llmobs.experiment("cand", task, dataset, evaluators, config={"version": "b"}, runs=2)
    b.run(jobs=2)
    return a, b


def _record_means(version: str, column: int, records: range, runs: list[int]) -> list[float]:
    return [
        float(np.mean([float(TABLE[(version, n)][run - 1][column]) for run in runs]))
        for n in records
    ]


def test_every_label_by_hand_and_by_scipy(pair: tuple[Any, Any]) -> None:
    a, b = pair
    result = compare(a, b)
    assert (result.a.name, result.b.name, result.a.runs, result.b.runs) == (
        "base",
        "cand",
        [1, 2],
        [1, 2],
    )
    assert result.only_in_b == [] and len(result.only_in_a) == 1
    assert (result.a.records, result.b.records) == (7, 6)

    passed_ = result.labels["passed"]
    # Shares: a = 1, 0, .5, 1, 0, 1 (and 1 for record 6); b = 1, .5, 0, 1, 0, .5.
    assert passed_.a == pytest.approx(4.5 / 7) and passed_.b == pytest.approx(3 / 6)
    assert passed_.difference == pytest.approx((0 + 0.5 - 0.5 + 0 + 0 - 0.5) / 6)
    assert passed_.records == 6
    assert (passed_.improved, passed_.regressed, passed_.unchanged) == (1, 2, 3)
    # Modes (a tie is False): a T F F T F T, b T F F T F F: record 5 went pass -> fail.
    assert (passed_.pass_to_fail, passed_.fail_to_pass) == (1, 0)

    quality_ = result.labels["quality"]
    before = _record_means("a", 1, range(6), [1, 2])
    after = _record_means("b", 1, range(6), [1, 2])
    reference = scipy.stats.ttest_rel(after, before)
    assert quality_.difference == pytest.approx(np.mean(np.subtract(after, before)))
    assert quality_.p_value == pytest.approx(reference.pvalue)
    low, high = reference.confidence_interval(0.95)
    assert quality_.ci95 == pytest.approx([low, high])
    assert quality_.stderr == pytest.approx(scipy.stats.sem(np.subtract(after, before)))
    assert quality_.verdict == "inconclusive"  # six noisy records: nothing is established
    assert "inconclusive" in quality_.explanation and "6 records" in quality_.explanation

    tone_ = result.labels["tone"]
    assert tone_.verdict is None and tone_.difference is None
    # Modes (ties to the first text, "cold"): a warm cold warm cold cold warm; b warm cold
    # cold warm cold cold.
    assert tone_.label_changes == {"warm → cold": 2, "cold → warm": 1}
    assert tone_.unchanged == 3

    changes = {record.idx: record.change for record in result.records}
    assert changes == {
        0: "unchanged",
        1: "improved",  # passed and quality up, tone the same
        2: "regressed",
        3: "changed",  # only the tone changed
        4: "regressed",  # quality 0.1 -> 0.0
        5: "regressed",
    }
    assert result.to_dict()["labels"]["passed"]["verdict"] == passed_.verdict


def test_one_run_against_another(pair: tuple[Any, Any]) -> None:
    a, b = pair
    result = compare(a.id, b.name, run_a=1, run_b=2)
    assert (result.a.run, result.b.run, result.a.runs, result.b.runs) == (1, 2, [1], [2])
    quality_ = result.labels["quality"]
    before = [TABLE[("a", n)][0][1] for n in range(6)]
    after = [TABLE[("b", n)][1][1] for n in range(6)]
    assert quality_.difference == pytest.approx(np.mean(np.subtract(after, before)))
    assert quality_.p_value == pytest.approx(scipy.stats.ttest_rel(after, before).pvalue)
    with pytest.raises(ExperimentError, match="no run 3"):
        compare(a, b, run_a=3)
    with pytest.raises(TypeError, match="call run"):
        compare(object(), b)


def test_lower_is_better_and_allowed_drops(pair: tuple[Any, Any]) -> None:
    a, b = pair
    flipped = compare(a, b, lower_is_better=["quality"])
    assert flipped.labels["quality"].improved == compare(a, b).labels["quality"].regressed
    with pytest.raises(ExperimentError, match="No evaluation 'qualty'"):
        compare(a, b, max_drop={"qualty": 0.1})


def test_paired_difference_matches_scipy_on_random_data() -> None:
    rng = random.Random(3)
    for _ in range(50):
        n = rng.randint(2, 40)
        a = [rng.random() for _ in range(n)]
        b = [x + rng.gauss(0.05, 0.2) for x in a]
        ours = paired_difference(a, b)
        theirs = scipy.stats.ttest_rel(b, a)
        assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
        assert ours.ci95 == pytest.approx(list(theirs.confidence_interval(0.95)), rel=1e-9)


def test_verdicts_by_hand() -> None:
    same = paired_difference([0.5] * 10, [0.5] * 10)
    assert (same.p_value, verdict(same)) == (1.0, "unchanged")
    shifted = paired_difference([0.5] * 10, [0.4] * 10)
    assert verdict(shifted) == "regressed" and shifted.p_value == 0.0
    assert verdict(shifted, max_drop=0.2) == "unchanged"  # a tolerated drop, exactly known
    assert verdict(shifted, higher_is_better=False) == "improved"
    assert verdict(paired_difference([1.0], [0.0])) == "inconclusive"  # one record
    # t = mean / se; one-sided 5% with 9 degrees of freedom needs t below -1.833.
    a = [0.0] * 10
    drop = [-0.1, -0.3, 0.1, -0.2, 0.0, -0.1, -0.2, 0.1, -0.3, 0.0]
    d = paired_difference(a, drop)
    # mean -0.1, sd sqrt(0.2 / 9), se sd / sqrt(10): t = -0.1 / 0.04714 = -2.1213.
    t = d.mean / d.stderr
    assert t == pytest.approx(-0.1 / math.sqrt(0.2 / 9 / 10))
    assert verdict(d) == "regressed"
    # One-sided p = 0.031; a two-sided test (p = 0.063) would have missed this drop.
    assert d.p_value == pytest.approx(2 * scipy.stats.t.cdf(t, 9))
    assert scipy.stats.t.cdf(t, 9) < 0.05 < d.p_value
    noisy = paired_difference(a, [0.3, -0.3, 0.2, -0.2, 0.1, -0.1, 0.3, -0.3, 0.2, -0.2])
    assert verdict(noisy) == "inconclusive"
    assert verdict(noisy, margin=1.0) == "unchanged"
    with pytest.raises(ValueError, match="negative"):
        verdict(d, max_drop=-1)


def _simulate(drop: float, runs: int, *, seed: int, sims: int = 2000, records: int = 200) -> float:
    """Share of simulated comparisons whose verdict is "regressed" (the gate failing).

    Each record has its own pass rate (records differ in difficulty: Beta(3.5, 1.5), mean
    0.7); each run passes with that rate, on the baseline, and on the candidate with the
    rate lowered by ``drop``.
    """
    rng = np.random.default_rng(seed)
    regressed = 0
    for _ in range(sims):
        rates = rng.beta(3.5, 1.5, size=records)
        before = (rng.random((records, runs)) < rates[:, None]).mean(axis=1)
        lowered = np.clip(rates - drop, 0, 1)
        after = (rng.random((records, runs)) < lowered[:, None]).mean(axis=1)
        result = paired_difference(before.tolist(), after.tolist())
        regressed += verdict(result, margin=0.02) == "regressed"
    return regressed / sims


def test_false_alarms_stay_near_five_percent() -> None:
    rate = _simulate(0.0, 5, seed=20261127)
    assert 0.03 <= rate <= 0.07, rate


def test_a_drop_of_five_points_is_caught_and_more_runs_catch_more() -> None:
    five = _simulate(0.05, 5, seed=7)
    one = _simulate(0.05, 1, seed=8)
    assert five >= 0.80, five
    assert one < five - 0.2, (one, five)
    assert not math.isnan(one)


def test_the_api_gives_the_same_comparison(pair: tuple[Any, Any], store_url: str) -> None:
    from fastapi.testclient import TestClient

    from assay.server.app import create_app

    a, b = pair
    expected = compare(a, b, run_a=2, max_drop={"passed": 0.1}).to_dict()
    with TestClient(create_app(database_url=store_url)) as client:
        path = "/api/v2/llm-obs/v1/experiments/compare"
        response = client.get(
            path, params={"a": a.id, "b": b.id, "run_a": 2, "max_drop": "passed=0.1"}
        )
        assert response.status_code == 200, response.text
        # The same numbers exactly: one implementation behind both (JSON keeps floats exact).
        assert response.json()["data"]["attributes"] == json.loads(json.dumps(expected))
        wrong = client.get(path, params={"a": a.id, "b": b.id, "run_b": 7})
        assert wrong.status_code == 400
        assert wrong.json()["errors"][0]["source"] == {"parameter": "run_b"}
        missing = client.get(path, params={"a": "nope", "b": b.id})
        assert missing.status_code == 404
        bad = client.get(path, params={"a": a.id, "b": b.id, "max_drop": "passed"})
        assert bad.status_code == 400 and "LABEL=DROP" in bad.json()["errors"][0]["detail"]


def _messy(n: int, run: int) -> dict[str, Any]:
    """Evaluations that take every path of ``comparison_values``: mixed types, errors,
    ``None``, NaN, JSON, categorical values too long for the index, sums that ``fsum``
    rounds differently from plain addition."""
    return {
        "sum": [0.1, 0.2, 0.3, 0.7, 0.6][(n + run) % 5] * (1 + n % 3),
        "flaky": None if (n + run) % 4 == 0 else float("nan") if n == 3 else 0.7 + run / 10,
        "mixed": [True, "yes", 0.5][(n + run) % 3] if n % 2 else "no",
        "numbers": [True, 1, 0.25][(n * run) % 3],
        "shape": {"n": n} if run != 2 else {"n": -n},
        "prose": ("x" * 300 if (n + run) % 3 == 0 else "short") + str(n % 2),
        "sometimes": n % 3 == run % 3,
    }


def messy_task(input_data: Any, config: Any) -> Any:
    return {"version": config["v"]}


def messy_evaluator(input_data: Any, output_data: Any, expected_output: Any) -> Any:
    row = current_row()
    assert row is not None
    n = input_data["n"]
    if (n + row.run_iteration + output_data["version"]) % 7 == 0:
        raise ValueError("an evaluator that fails now and then")
    return _messy(n, row.run_iteration)


def _label(name: str) -> Any:
    def evaluator(input_data: Any, output_data: Any, expected_output: Any) -> Any:
        if name in ("numbers", "sum"):  # never failing: one run reads these off the indexes
            row = current_row()
            assert row is not None
            return _messy(input_data["n"], row.run_iteration)[name]
        return messy_evaluator(input_data, output_data, expected_output)[name]

    evaluator.__name__ = name
    return evaluator


@on_every_backend
def test_values_read_in_the_store_equal_the_rows(
    llmobs: type[LLMObs], pair: tuple[Any, Any]
) -> None:
    """``compare_stored`` reads per-record values computed by the store (SQL, or a server's
    SQL over HTTP); it must give exactly what comparing the full rows gives."""
    from assay.compare import compare_rows, compare_stored
    from assay.store.comparison_values import values_from_rows

    def errors_sometimes(input_data: Any, output_data: Any, expected_output: Any) -> Any:
        if input_data["n"] % 5 == 1:
            raise RuntimeError("always broken here")
        return None

    dataset = llmobs.create_dataset(
        dataset_name="messy", records=[{"input_data": {"n": n}} for n in range(23)]
    )
    evaluators = [_label(name) for name in _messy(0, 1)] + [errors_sometimes]
    messy = [
        llmobs.experiment(
            f"messy{version}",
            messy_task,
            dataset,
            evaluators,
            config={"v": version},
            runs=3,
        )
        for version in (0, 1)
    ]
    for experiment in messy:
        experiment.run(jobs=2)
    backend = llmobs._require()
    for first, second in [pair, messy]:
        infos = [backend.get_experiment(item.id) for item in (first, second)]
        rows = [backend.experiment_rows(info.id) for info in infos]
        for info, stored in zip(infos, rows, strict=True):
            for run in (None, 1, 2):
                runs = [run] if run else [item.run_iteration for item in info.runs]
                assert backend.comparison_values(info.id, run=run) == values_from_rows(
                    stored, runs
                ), (info.name, run)
        for run_a, run_b in [(None, None), (1, 2), (2, None)]:
            expected = compare_rows(
                (infos[0], rows[0]), (infos[1], rows[1]), run_a=run_a, run_b=run_b
            )
            found = compare_stored(backend, infos[0].id, infos[1].id, run_a=run_a, run_b=run_b)
            assert json.dumps(found.to_dict()) == json.dumps(expected.to_dict())


def test_the_collector_is_paused_while_a_comparison_is_built_and_restored_after() -> None:
    import gc

    from assay.store.collector import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(KeyError), collector_paused():
        raise KeyError("a failed read")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # off before: left off
    finally:
        gc.enable()
