"""Error bars and per-record stability: by hand, against numpy/scipy, and by simulation."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from scipy import stats as scipy_stats

from assay import stats
from assay.aggregation import summarize, summarize_records
from assay.evaluation import metric_type_of
from assay.store.records import JSON, EvaluationRecord, RowRecord

# --- by hand -------------------------------------------------------------------------------


def test_clustered_mean_by_hand() -> None:
    estimate = stats.clustered_mean([0.5, 1.0, 0.0])
    # mean 0.5; deviations -0, 0.5, -0.5: sd = sqrt(0.5 / 2) = 0.5; stderr = 0.5 / sqrt(3)
    assert estimate.mean == 0.5
    assert estimate.stderr == pytest.approx(0.5 / math.sqrt(3))
    t = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))  # t(0.975, df=2) has a closed form
    assert stats.t_quantile(0.975, 2) == pytest.approx(t, rel=1e-9)
    assert estimate.ci95 == pytest.approx([0.5 - t * 0.5 / math.sqrt(3), 0.5 + t * 0.5 / 3**0.5])


def test_clustered_mean_with_too_few_records() -> None:
    assert stats.clustered_mean([]) == (None, None, None)
    assert stats.clustered_mean([0.7]) == (0.7, None, None)


def test_records_that_all_agree_give_a_zero_width_interval() -> None:
    # fsum([0.1] * 3) / 3 is not exactly 0.1; the spread must still be exactly zero.
    mean, stderr, ci95 = stats.clustered_mean([0.1, 0.1, 0.1])
    assert (stderr, ci95) == (0.0, [mean, mean])
    assert stats.clustered_mean([1.0] * 4, bounds=(0.0, 1.0)) == (1.0, 0.0, [1.0, 1.0])


def test_bounds_cut_the_interval() -> None:
    unbounded = stats.clustered_mean([1.0, 1.0, 0.5])
    assert unbounded.ci95 is not None and unbounded.ci95[1] > 1
    bounded = stats.clustered_mean([1.0, 1.0, 0.5], bounds=(0.0, 1.0))
    assert bounded.ci95 == [unbounded.ci95[0], 1.0]
    assert bounded.stderr == unbounded.stderr


def test_sample_sd_and_run_sd_by_hand() -> None:
    assert stats.sample_sd([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 3))
    assert stats.sample_sd([2, 4]) == pytest.approx(math.sqrt(2))
    assert stats.sample_sd([3.0]) is None
    assert stats.sample_sd([]) is None
    # Runs with no value are left out; fewer than two left gives None.
    assert stats.run_sd([0.5, None, 0.7]) == pytest.approx(math.sqrt(0.02))
    assert stats.run_sd([0.5, None]) is None


def test_pass_at_k_by_hand() -> None:
    assert stats.pass_at_k(5, 1, 2) == pytest.approx(1 - 6 / 10)  # 1 - C(4,2)/C(5,2)
    assert stats.pass_at_k(5, 2, 1) == pytest.approx(2 / 5)  # pass@1 is the share
    assert stats.pass_at_k(5, 0, 5) == 0.0
    assert stats.pass_at_k(5, 1, 5) == 1.0  # five draws of five include the pass
    assert stats.pass_at_k(4, 2, 3) == 1.0  # only two fails: three draws include a pass
    assert stats.pass_hat_k(5, 4, 2) == pytest.approx(6 / 10)  # C(4,2)/C(5,2)
    assert stats.pass_hat_k(5, 4, 5) == 0.0
    assert stats.pass_hat_k(5, 5, 5) == 1.0
    assert stats.pass_hat_k(3, 2, 1) == pytest.approx(2 / 3)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)])
def test_impossible_counts_are_refused(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="0 <= c <= n"):
        stats.pass_at_k(n, c, k)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        stats.pass_hat_k(n, c, k)


def test_pass_curves_by_hand() -> None:
    # Three records: 1 of 3 runs pass, 3 of 3 pass, 1 of 2 pass (a run missing).
    at_k, hat_k = stats.pass_curves([(3, 1), (3, 3), (2, 1)], 3)
    assert list(at_k) == list(hat_k) == [1, 2, 3]
    assert at_k[1] == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)
    assert at_k[2] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert at_k[3] == pytest.approx((1 + 1) / 2)  # the two-run record does not count
    assert hat_k[1] == pytest.approx(at_k[1])
    assert hat_k[2] == pytest.approx((0 + 1 + 0) / 3)
    assert hat_k[3] == pytest.approx((0 + 1) / 2)


def test_pass_curves_with_k_no_record_reaches() -> None:
    assert stats.pass_curves([(1, 1), (1, 0)], 3) == ({1: 0.5, 2: None, 3: None},) * 2
    assert stats.pass_curves([], 2) == ({1: None, 2: None},) * 2


def test_agreement_and_flaky_by_hand() -> None:
    assert stats.agreement(["pos", "neg", "pos"]) == pytest.approx(2 / 3)
    assert stats.agreement(["a", "b", "c"]) == pytest.approx(1 / 3)
    assert stats.agreement(["a", "a"]) == 1.0
    assert stats.agreement([]) is None
    assert stats.flaky([True, False, True]) is True
    assert stats.flaky([True, True]) is False
    assert stats.flaky([False]) is False
    assert stats.flaky([]) is None


def test_infinities_and_nans_propagate_without_raising() -> None:
    inf, nan = math.inf, math.nan
    assert math.isnan(stats.sample_sd([inf, 1.0]) or 0.0)
    assert math.isnan(stats.sample_sd([inf, inf]) or 0.0)
    assert math.isnan(stats.sample_sd([nan, nan]) or 0.0)
    assert stats.sample_sd([1e308, -1e308]) == math.inf
    estimate = stats.clustered_mean([inf, -inf, 1.0])
    assert estimate.mean is not None and math.isnan(estimate.mean)


# --- against numpy and scipy ---------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_sd_stderr_and_interval_match_numpy_and_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for size in (2, 3, 10, 57, 400):
        values = rng.normal(rng.uniform(-5, 5), rng.uniform(0.01, 3), size)
        as_list = values.tolist()
        assert stats.sample_sd(as_list) == pytest.approx(np.std(values, ddof=1), rel=1e-12)
        estimate = stats.clustered_mean(as_list)
        assert estimate.mean == pytest.approx(np.mean(values), rel=1e-12, abs=1e-12)
        assert estimate.stderr == pytest.approx(scipy_stats.sem(values), rel=1e-12)
        low, high = scipy_stats.t.interval(
            0.95, size - 1, loc=np.mean(values), scale=scipy_stats.sem(values)
        )
        assert estimate.ci95 == pytest.approx([low, high], rel=1e-9, abs=1e-12)


def test_t_quantile_matches_scipy() -> None:
    for df in [*range(1, 40), 57, 100, 999, 10**6]:
        expected = scipy_stats.t.ppf(0.975, df)
        assert stats.t_quantile(0.975, df) == pytest.approx(expected, rel=1e-10)


def brute_force(runs: Sequence[bool], k: int) -> tuple[float, float]:
    """pass@k and pass^k by enumerating every k-subset of the runs."""
    subsets = list(itertools.combinations(runs, k))
    return (
        sum(any(subset) for subset in subsets) / len(subsets),
        sum(all(subset) for subset in subsets) / len(subsets),
    )


def test_pass_at_k_matches_enumeration_of_subsets() -> None:
    for n in range(1, 9):
        for c in range(n + 1):
            runs = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                at_k, hat_k = brute_force(runs, k)
                assert stats.pass_at_k(n, c, k) == pytest.approx(at_k, abs=1e-12), (n, c, k)
                assert stats.pass_hat_k(n, c, k) == pytest.approx(hat_k, abs=1e-12), (n, c, k)
                assert math.comb(n, k) == len(list(itertools.combinations(runs, k)))


def test_pass_at_k_stays_exact_for_many_runs() -> None:
    # The ratio of two large binomials is computed exactly, not through overflowing floats.
    assert stats.pass_at_k(1000, 1, 1) == pytest.approx(0.001)
    assert stats.pass_hat_k(1000, 999, 500) == pytest.approx(0.5)
    assert 0 < stats.pass_hat_k(1000, 990, 400) < 1e-2


# --- through summarize: unequal runs, errors, against independent implementations ----------


def evaluation(label: str, value: JSON) -> EvaluationRecord:
    return EvaluationRecord(
        label=label, metric_type=metric_type_of(value), value=value, timestamp_ms=0
    )


def row(record: int, run: int, evaluations: Mapping[str, JSON]) -> RowRecord:
    return RowRecord(
        experiment_id="exp",
        run_iteration=run,
        record_id=f"r{record}",
        idx=record,
        span_id=f"s{record}-{run}",
        trace_id=f"t{record}-{run}",
        span_name="task",
        start_ns=0,
        duration_ns=1,
        input_data={"q": record},
        output=None,
        expected_output=None,
        record_metadata={},
        tags=[],
        error=None,
        retries=0,
        evaluations=[evaluation(label, value) for label, value in evaluations.items()],
    )


def test_summary_by_hand() -> None:
    runs = [1, 2, 3]
    table: dict[int, list[dict[str, JSON]]] = {
        0: [{"s": 1.0, "b": True, "c": "x"}, {"s": 0.5, "b": True, "c": "x"}, {}],
        1: [{"s": 0.0, "b": False, "c": "x"}, {"s": 0.0, "b": True, "c": "y"}, {"b": False}],
        2: [{"s": 2.0, "b": True, "c": "z"}, {"s": None}, {}],
    }
    rows = [
        row(record, run, values)
        for record, by_run in table.items()
        for run, values in zip(runs, by_run, strict=True)
    ]
    summary = summarize(rows, runs)
    records = summarize_records(rows, runs)

    s = summary["s"]  # record means 0.75, 0, 2; per run 1.0, 0.25, none
    assert s["value"] == pytest.approx(2.75 / 3)
    assert s["stderr"] == pytest.approx(np.std([0.75, 0, 2], ddof=1) / math.sqrt(3))
    half = scipy_stats.t.ppf(0.975, 2) * s["stderr"]
    assert s["ci95"] == pytest.approx([2.75 / 3 - half, 2.75 / 3 + half])
    assert s["run_sd"] == pytest.approx(np.std([1.0, 0.25], ddof=1))
    assert s["pass_at_k"] is None and s["pass_hat_k"] is None
    assert [r["evaluations"]["s"]["sd"] for r in records] == pytest.approx(
        [math.sqrt(0.125), 0.0, None]
    )
    assert [r["evaluations"]["s"]["min"] for r in records] == [0.5, 0.0, 2.0]
    assert [r["evaluations"]["s"]["max"] for r in records] == [1.0, 0.0, 2.0]

    b = summary["b"]  # shares 1, 1/3, 1; per run 2/3, 1, 0
    assert b["value"] == pytest.approx(7 / 9)
    assert b["stderr"] == pytest.approx(np.std([1, 1 / 3, 1], ddof=1) / math.sqrt(3))
    assert b["ci95"] is not None and b["ci95"][1] == 1.0  # cut to [0, 1]
    assert b["run_sd"] == pytest.approx(np.std([2 / 3, 1, 0], ddof=1))
    # pass@k over (n, c) = (2, 2), (3, 1), (1, 1); k=2 and k=3 leave out the short records.
    assert b["pass_at_k"] == pytest.approx({1: 7 / 9, 2: (1 + 2 / 3) / 2, 3: 1.0})
    assert b["pass_hat_k"] == pytest.approx({1: 7 / 9, 2: (1 + 0) / 2, 3: 0.0})
    assert [r["evaluations"]["b"]["flaky"] for r in records] == [False, True, False]

    c = summary["c"]
    assert (c["stderr"], c["ci95"], c["run_sd"], c["pass_at_k"], c["pass_hat_k"]) == (None,) * 5
    assert [r["evaluations"]["c"]["agreement"] for r in records] == pytest.approx([1, 0.5, 1])
    assert all(r["evaluations"]["c"]["sd"] is None for r in records)
    assert all(r["evaluations"]["s"]["agreement"] is None for r in records)
    assert all(r["evaluations"]["s"]["flaky"] is None for r in records)


def test_one_run_and_one_record() -> None:
    rows = [row(0, 1, {"s": 0.5, "b": True}), row(1, 1, {"s": 0.7, "b": False})]
    s, b = summarize(rows, [1])["s"], summarize(rows, [1])["b"]
    assert s["run_sd"] is None and s["stderr"] == pytest.approx(0.1)
    assert b["pass_at_k"] == b["pass_hat_k"] == {1: 0.5}
    only = summarize(rows[:1], [1])["s"]
    assert (only["stderr"], only["ci95"], only["run_sd"]) == (None, None, None)
    record = summarize_records(rows[:1], [1])[0]["evaluations"]["s"]
    assert (record["sd"], record["min"], record["max"]) == (None, 0.5, 0.5)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_experiment_matches_numpy_scipy_and_enumeration(seed: int) -> None:
    rng = random.Random(seed)
    runs = list(range(1, 7))
    usable: dict[str, dict[int, list[JSON]]] = {"score": {}, "passed": {}, "verdict": {}}
    rows = []
    for record in range(60):
        for by_record in usable.values():
            by_record[record] = []
        for run in runs:
            if rng.random() < 0.15:
                continue  # no row: records end up with different numbers of runs
            values: dict[str, JSON] = {
                "score": rng.gauss(record / 60, 0.2),
                "passed": rng.random() < record / 60,
                "verdict": rng.choice("aab"),
            }
            if rng.random() < 0.1:
                values["score"] = None
            for label, value in values.items():
                if value is not None:
                    usable[label][record].append(value)
            rows.append(row(record, run, values))
    summary = summarize(rows, runs)
    records = {r["idx"]: r["evaluations"] for r in summarize_records(rows, runs)}

    means = [float(np.mean(v)) for v in usable["score"].values() if v]
    s = summary["score"]
    assert s["stderr"] == pytest.approx(scipy_stats.sem(means), rel=1e-9)
    interval = scipy_stats.t.interval(0.95, len(means) - 1, np.mean(means), scipy_stats.sem(means))
    assert s["ci95"] == pytest.approx(list(interval), rel=1e-9)
    per_run = [x for x in s["per_run"] if isinstance(x, float)]
    assert s["run_sd"] == pytest.approx(np.std(per_run, ddof=1), rel=1e-9)
    for record, values in usable["score"].items():
        e = records[record]["score"]
        if len(values) >= 2:
            assert e["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-9)
        assert (e["min"], e["max"]) == ((min(values), max(values)) if values else (None, None))

    shares = [float(np.mean(v)) for v in usable["passed"].values() if v]
    b = summary["passed"]
    assert b["stderr"] == pytest.approx(scipy_stats.sem(shares), rel=1e-9)
    assert b["pass_at_k"] is not None and b["pass_hat_k"] is not None
    for k in range(1, len(runs) + 1):
        brute = [brute_force(v, k) for v in usable["passed"].values() if len(v) >= k]
        expected = (np.mean([a for a, _ in brute]), np.mean([h for _, h in brute]))
        assert (b["pass_at_k"][k], b["pass_hat_k"][k]) == pytest.approx(expected), k
    for record, values in usable["passed"].items():
        assert records[record]["passed"]["flaky"] == (len(set(values)) > 1)
        # agreement of the verdicts: the share of the most frequent, counted by numpy
        verdicts = np.array(usable["verdict"][record])
        _, counts = np.unique(verdicts, return_counts=True)
        assert records[record]["verdict"]["agreement"] == pytest.approx(
            counts.max() / len(verdicts)
        )


# --- simulation: does the 95% interval cover the true mean 95% of the time? ---------------

EXPERIMENTS = 1000
RECORDS = 100
RUNS = 5
TRUE_SCORE = 0.6
BETWEEN_RECORDS = 0.15  # sd of the records' true mean scores around TRUE_SCORE
WITHIN_RECORD = 0.1  # sd of one run's score around its record's true mean
PASS_BETA = (2.0, 1.0)  # each record's chance to pass ~ Beta(2, 1), whose mean is 2/3
TRUE_PASS = PASS_BETA[0] / (PASS_BETA[0] + PASS_BETA[1])
ABSENT = 0.1  # the share of (record, run) rows never stored: unequal runs per record


def simulated_experiments(
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, passes and row presence, shaped (experiments, records, runs)."""
    rng = np.random.default_rng(seed)
    shape = (EXPERIMENTS, RECORDS, RUNS)
    record_scores = rng.normal(TRUE_SCORE, BETWEEN_RECORDS, (EXPERIMENTS, RECORDS, 1))
    scores = record_scores + rng.normal(0.0, WITHIN_RECORD, shape)
    pass_chances = rng.beta(*PASS_BETA, (EXPERIMENTS, RECORDS, 1))
    passes = rng.random(shape) < pass_chances
    present = rng.random(shape) >= ABSENT
    return scores, passes, present


def experiment_rows_of(
    scores: list[list[float]], passes: list[list[bool]], present: list[list[bool]]
) -> list[RowRecord]:
    return [
        row(record, run + 1, {"score": scores[record][run], "passed": passes[record][run]})
        for record in range(RECORDS)
        for run in range(RUNS)
        if present[record][run]
    ]


@pytest.mark.slow
def test_the_95_interval_covers_the_true_mean_95_percent_of_the_time() -> None:
    scores, passes, present = simulated_experiments(2024)
    runs = list(range(1, RUNS + 1))
    covered = {"score": 0, "passed": 0}
    truth = {"score": TRUE_SCORE, "passed": TRUE_PASS}
    for experiment in range(EXPERIMENTS):
        rows = experiment_rows_of(
            scores[experiment].tolist(), passes[experiment].tolist(), present[experiment].tolist()
        )
        summary = summarize(rows, runs)
        for label, true_mean in truth.items():
            interval = summary[label]["ci95"]
            assert interval is not None
            covered[label] += interval[0] <= true_mean <= interval[1]
    coverage = {label: hits / EXPERIMENTS for label, hits in covered.items()}
    print(f"coverage of the 95% interval: {coverage}")
    assert 0.93 <= coverage["score"] <= 0.97, coverage
    assert 0.93 <= coverage["passed"] <= 0.97, coverage

    # The same data treated as records x runs independent values: the interval is far too
    # narrow, which is why the runs are first averaged per record.
    values = np.where(present, scores, np.nan).reshape(EXPERIMENTS, -1)
    count = np.sum(present.reshape(EXPERIMENTS, -1), axis=1)
    naive_se = np.nanstd(values, axis=1, ddof=1) / np.sqrt(count)
    half = scipy_stats.t.ppf(0.975, count - 1) * naive_se
    record_means = np.nanmean(np.where(present, scores, np.nan), axis=2)
    estimate = np.nanmean(record_means, axis=1)
    naive = np.mean(np.abs(estimate - TRUE_SCORE) <= half)
    print(f"coverage treating runs as independent: {naive}")
    assert naive < 0.85, naive
