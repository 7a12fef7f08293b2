"""The aggregation rules, checked by hand and against independent implementations."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping

import numpy as np
import pytest
from scipy import stats

from assay.aggregation import summarize, summarize_records, summarize_summary_evaluations
from assay.evaluation import metric_type_of
from assay.store.records import (
    JSON,
    ErrorInfo,
    EvaluationRecord,
    RowRecord,
    SummaryEvaluationRecord,
)

RUNS = [1, 2, 3]


class _Failed:
    """Marks an evaluation whose evaluator raised."""


FAILED = _Failed()


def evaluation(label: str, value: JSON) -> EvaluationRecord:
    if value is FAILED:
        return EvaluationRecord(
            label=label,
            metric_type="categorical",
            value=None,
            timestamp_ms=0,
            error=ErrorInfo(type="builtins.RuntimeError", message="boom", stack=""),
        )
    return EvaluationRecord(
        label=label, metric_type=metric_type_of(value), value=value, timestamp_ms=0
    )


def row(record: int, run: int, evaluations: Mapping[str, JSON]) -> RowRecord:
    """A row of record ``r<record>`` (dataset idx ``record``) in run ``run``."""
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


# label -> record -> one value per run (FAILED: evaluator raised; MISSING: no evaluation).
MISSING = object()
TABLE: dict[str, dict[int, list[JSON]]] = {
    "accuracy": {  # score
        0: [1.0, 0.5, 0.0],  # mean 0.5
        1: [0.9, FAILED, None],  # mean 0.9
        2: [0.3, MISSING, 0.6],  # mean 0.45
        3: [FAILED, FAILED, FAILED],  # nothing usable
    },
    "sentiment": {  # categorical
        0: ["pos", "neg", "pos"],  # pos
        1: ["neg", "pos", FAILED],  # tie -> neg
        2: ["pos", MISSING, "neg"],  # tie -> neg
        3: ["pos", "pos", "neg"],  # pos
    },
    "correct": {  # boolean
        0: [True, True, False],  # share 2/3, mode True
        1: [True, False, None],  # share 1/2, mode tie -> False
        2: [False, MISSING, False],  # share 0, mode False
        3: [True, FAILED, True],  # share 1, mode True
    },
    "details": {  # json
        0: [{"a": 1}, {"a": 2}, {"a": 3}],
        1: [FAILED, {"b": 1}, MISSING],
        2: [MISSING, MISSING, MISSING],
        3: [MISSING, MISSING, MISSING],
    },
    "mixed": {  # booleans and numbers: a score, booleans as 1/0
        0: [True, 0.5, False],  # mean 0.5
        1: [2, True, 0],  # mean 1
        2: [MISSING, MISSING, MISSING],
        3: [MISSING, MISSING, MISSING],
    },
    "odd": {  # any other mix: categorical, compared as text
        0: ["yes", 1, "yes"],  # "yes"
        1: [True, 1, "1"],  # "1" twice
        2: [{"k": 1}, MISSING, {"k": 1}],  # "{'k': 1}"
        3: [1.0, 1, MISSING],  # "1" and "1.0" tie -> "1"
    },
    "judge": {  # only one row has it
        0: [0.25, MISSING, MISSING],
        1: [MISSING, MISSING, MISSING],
        2: [MISSING, MISSING, MISSING],
        3: [MISSING, MISSING, MISSING],
    },
}


def experiment_rows(table: Mapping[str, Mapping[int, list[JSON]]]) -> list[RowRecord]:
    """Rows of ``table``; record 2 has no row at all in run 2 (never stored)."""
    rows = []
    for record in range(4):
        for position, run in enumerate(RUNS):
            if (record, run) == (2, 2):
                continue
            values = {
                label: by_record[record][position]
                for label, by_record in table.items()
                if by_record[record][position] is not MISSING
            }
            rows.append(row(record, run, values))
    random.Random(0).shuffle(rows)  # the order of rows must not matter
    return rows


@pytest.fixture
def rows() -> list[RowRecord]:
    return experiment_rows(TABLE)


def test_labels_sorted_and_typed(rows: list[RowRecord]) -> None:
    summary = summarize(rows, RUNS)
    assert list(summary) == sorted(TABLE)
    assert {label: s["metric_type"] for label, s in summary.items()} == {
        "accuracy": "score",
        "correct": "boolean",
        "details": "json",
        "judge": "score",
        "mixed": "score",
        "odd": "categorical",
        "sentiment": "categorical",
    }


def test_score_summary(rows: list[RowRecord]) -> None:
    s = summarize(rows, RUNS)["accuracy"]
    assert s["value"] == pytest.approx((0.5 + 0.9 + 0.45) / 3)
    assert s["records"] == 3
    assert s["errors"] == 4
    assert s["missing"] == 2  # r1's None in run 3 and r2's absent row in run 2
    assert s["per_run"] == pytest.approx([(1.0 + 0.9 + 0.3) / 3, 0.5, (0.0 + 0.6) / 2])


def test_score_records(rows: list[RowRecord]) -> None:
    records = summarize_records(rows, RUNS)
    assert [(r["record_id"], r["idx"]) for r in records] == [(f"r{i}", i) for i in range(4)]
    accuracy = [r["evaluations"]["accuracy"] for r in records]
    assert [e["value"] for e in accuracy] == pytest.approx([0.5, 0.9, 0.45, None])
    assert [e["runs"] for e in accuracy] == [
        [1.0, 0.5, 0.0],
        [0.9, None, None],
        [0.3, None, 0.6],
        [None, None, None],
    ]
    assert [(e["errors"], e["missing"]) for e in accuracy] == [(0, 0), (1, 1), (0, 1), (3, 0)]
    assert all(e["mode"] is None for e in accuracy)


def test_categorical_mode_of_modes_with_ties(rows: list[RowRecord]) -> None:
    records = summarize_records(rows, RUNS)
    modes = [r["evaluations"]["sentiment"]["value"] for r in records]
    assert modes == ["pos", "neg", "neg", "pos"]  # r1 and r2 are ties, the first text wins
    s = summarize(rows, RUNS)["sentiment"]
    # Across all twelve values "pos" is the most frequent (6 to 4), but the summary is the
    # mode of the record modes, a 2-2 tie that "neg" wins.
    assert s["value"] == "neg"
    assert (s["records"], s["errors"], s["missing"]) == (4, 1, 1)
    # run 1: pos neg pos pos; run 2: neg pos - pos; run 3: pos x neg neg
    assert s["per_run"] == ["pos", "pos", "neg"]


def test_categorical_per_run_tie() -> None:
    table = {"verdict": {0: ["b", "b", "b"], 1: ["a", "a", "a"], 2: ["b"] * 3, 3: ["a"] * 3}}
    s = summarize(experiment_rows(table), RUNS)["verdict"]
    assert s["value"] == "a"  # two records each
    assert s["per_run"] == ["a", "a", "a"]  # run 2: r2 absent, so "a" 2 to 1; others tie


def test_boolean_share_and_mode(rows: list[RowRecord]) -> None:
    records = summarize_records(rows, RUNS)
    correct = [r["evaluations"]["correct"] for r in records]
    assert [e["value"] for e in correct] == pytest.approx([2 / 3, 0.5, 0.0, 1.0])
    assert [e["mode"] for e in correct] == [True, False, False, True]  # r1 ties: False
    assert [e["runs"] for e in correct] == [
        [True, True, False],
        [True, False, None],
        [False, None, False],
        [True, None, True],
    ]
    s = summarize(rows, RUNS)["correct"]
    assert s["value"] == pytest.approx((2 / 3 + 0.5 + 0.0 + 1.0) / 4)
    assert (s["records"], s["errors"], s["missing"]) == (4, 1, 2)
    assert s["per_run"] == pytest.approx([3 / 4, 1 / 2, 1 / 3])


def test_boolean_mode_ties_to_false() -> None:
    table = {"ok": {i: [True, MISSING, False] for i in range(4)}}  # r2 has no run 2 row
    records = summarize_records(experiment_rows(table), RUNS)
    assert [r["evaluations"]["ok"]["mode"] for r in records] == [False] * 4
    assert [r["evaluations"]["ok"]["value"] for r in records] == [0.5] * 4


def test_json_is_not_aggregated(rows: list[RowRecord]) -> None:
    s = summarize(rows, RUNS)["details"]
    assert s["value"] is None
    assert s["per_run"] == [None, None, None]
    assert (s["records"], s["errors"], s["missing"]) == (2, 1, 7)
    details = summarize_records(rows, RUNS)[1]["evaluations"]["details"]
    assert details["value"] is None
    assert details["runs"] == [None, {"b": 1}, None]


def test_booleans_mixed_with_numbers_are_one_and_zero(rows: list[RowRecord]) -> None:
    records = summarize_records(rows, RUNS)
    mixed = [r["evaluations"]["mixed"] for r in records]
    assert mixed[0]["runs"] == [1, 0.5, 0]
    assert mixed[1]["runs"] == [2, 1, 0]
    assert [e["value"] for e in mixed] == pytest.approx([0.5, 1.0, None, None])
    s = summarize(rows, RUNS)["mixed"]
    assert s["value"] == pytest.approx(0.75)
    assert s["per_run"] == pytest.approx([1.5, 0.75, 0.0])


def test_other_mixes_are_categorical_text(rows: list[RowRecord]) -> None:
    records = summarize_records(rows, RUNS)
    odd = [r["evaluations"]["odd"] for r in records]
    assert odd[0]["runs"] == ["yes", "1", "yes"]
    assert odd[1]["runs"] == ["True", "1", "1"]
    assert [e["value"] for e in odd] == ["yes", "1", "{'k': 1}", "1"]
    s = summarize(rows, RUNS)["odd"]
    assert s["value"] == "1"
    # run 1: yes True {'k': 1} 1.0 -> four-way tie; run 2: 1 1 - 1; run 3: yes 1 {'k': 1}
    assert s["per_run"] == ["1.0", "1", "1"]


def test_label_present_only_in_some_rows(rows: list[RowRecord]) -> None:
    s = summarize(rows, RUNS)["judge"]
    assert s["value"] == 0.25
    assert (s["records"], s["errors"], s["missing"]) == (1, 0, 11)
    assert s["per_run"] == [0.25, None, None]
    judge = summarize_records(rows, RUNS)[3]["evaluations"]["judge"]
    assert judge == {
        "metric_type": "score",
        "value": None,
        "runs": [None, None, None],
        "errors": 0,
        "missing": 3,
        "mode": None,
        "sd": None,
        "min": None,
        "max": None,
        "agreement": None,
        "flaky": None,
    }


def test_every_pair_is_usable_failed_or_missing(rows: list[RowRecord]) -> None:
    records = summarize_records(rows, RUNS)
    for label, s in summarize(rows, RUNS).items():
        usable = sum(v is not None for r in records for v in r["evaluations"][label]["runs"])
        assert usable + s["errors"] + s["missing"] == 4 * 3, label


def test_nan_counts_as_missing() -> None:
    table = {"score": {0: [1.0, math.nan, 0.0], 1: [math.nan] * 3, 2: [0.5] * 3, 3: [0.5] * 3}}
    s = summarize(experiment_rows(table), RUNS)["score"]
    assert s["value"] == pytest.approx(0.5)
    assert (s["records"], s["missing"]) == (3, 5)


def test_label_with_nothing_usable_keeps_its_recorded_type() -> None:
    failing = {"judge": {i: [FAILED, FAILED, FAILED] for i in range(4)}}
    s = summarize(experiment_rows(failing), RUNS)["judge"]
    assert s == {
        "metric_type": "categorical",
        "value": None,
        "records": 0,
        "errors": 11,
        "missing": 1,
        "per_run": [None, None, None],
        "stderr": None,
        "ci95": None,
        "run_sd": None,
        "pass_at_k": None,
        "pass_hat_k": None,
    }
    nans = {"score": {i: [math.nan] * 3 for i in range(4)}}
    assert summarize(experiment_rows(nans), RUNS)["score"]["metric_type"] == "score"


def test_runs_outside_the_experiment_are_ignored_and_order_follows_run_iterations() -> None:
    rows = [row(0, run, {"s": float(run)}) for run in (1, 2, 3, 9)]
    s = summarize(rows, [3, 1, 2])["s"]
    assert s["per_run"] == [3.0, 1.0, 2.0]
    assert s["value"] == pytest.approx(2.0)
    assert summarize_records(rows, [3, 1, 2])[0]["evaluations"]["s"]["runs"] == [3.0, 1.0, 2.0]


def test_the_last_duplicate_wins() -> None:
    rows = [row(0, 1, {"s": 0.0}), row(0, 1, {"s": 1.0}), row(0, 2, {"s": FAILED})]
    s = summarize(rows, [1, 2])["s"]
    assert (s["value"], s["errors"], s["missing"]) == (1.0, 1, 0)


def test_records_sorted_by_idx_and_no_rows() -> None:
    rows = [row(5, 1, {}), row(2, 1, {}), row(9, 1, {})]
    assert [r["record_id"] for r in summarize_records(rows, [1])] == ["r2", "r5", "r9"]
    assert summarize([], RUNS) == {}
    assert summarize_records([], RUNS) == []


def test_repeated_run_iterations_are_rejected() -> None:
    with pytest.raises(ValueError, match="repeats a run"):
        summarize([], [1, 1])


def test_summary_evaluations_by_label_in_run_order() -> None:
    items = [
        SummaryEvaluationRecord(run_iteration=2, evaluation=evaluation("matches", 7)),
        SummaryEvaluationRecord(run_iteration=1, evaluation=evaluation("matches", 5)),
        SummaryEvaluationRecord(run_iteration=3, evaluation=evaluation("matches", FAILED)),
        SummaryEvaluationRecord(run_iteration=1, evaluation=evaluation("best", "gpt")),
        SummaryEvaluationRecord(run_iteration=4, evaluation=evaluation("best", "other")),
    ]
    assert summarize_summary_evaluations(items, RUNS) == {
        "best": {"metric_type": "categorical", "per_run": ["gpt", None, None], "errors": 0},
        "matches": {"metric_type": "score", "per_run": [5, 7, None], "errors": 1},
    }


# --- a random experiment against independent implementations --------------------------

CATEGORIES = ["bad", "fair", "good"]


def random_experiment(
    seed: int, records: int = 200, runs: int = 5
) -> tuple[list[RowRecord], dict[str, dict[int, list[JSON]]]]:
    """Rows with errors, None values, absent rows and absent labels; and the truth table."""
    rng = random.Random(seed)
    table: dict[str, dict[int, list[JSON]]] = {"score": {}, "verdict": {}, "passed": {}}
    draw = {
        "score": lambda: rng.random(),
        "verdict": lambda: rng.choice(CATEGORIES),
        "passed": lambda: rng.random() < 0.6,
    }
    rows = []
    for record in range(records):
        for label in table:
            table[label][record] = []
        for run in range(1, runs + 1):
            row_stored = rng.random() > 0.05
            values: dict[str, JSON] = {}
            for label, by_record in table.items():
                roll = rng.random()
                if not row_stored or roll < 0.05:
                    value: JSON = MISSING
                elif roll < 0.10:
                    value = FAILED
                elif roll < 0.15:
                    value = None
                else:
                    value = draw[label]()
                by_record[record].append(value)
                if value is not MISSING:
                    values[label] = value
            if row_stored:
                rows.append(row(record, run, values))
    rng.shuffle(rows)
    return rows, table


def usable(values: list[JSON]) -> list[JSON]:
    return [v for v in values if v is not MISSING and v is not FAILED and v is not None]


def counter_mode(values: list[JSON]) -> JSON:
    counts = Counter(values).most_common()
    best = counts[0][1]
    return min((value for value, count in counts if count == best), key=str)


def scipy_mode(values: list[str]) -> str:
    # scipy returns the smallest value of a tie; codes in alphabetical order make that
    # the alphabetically first label.
    order = sorted(set(values))
    codes = np.array([order.index(v) for v in values])
    return order[int(stats.mode(codes).mode)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_experiment_matches_independent_implementations(seed: int) -> None:
    runs = 5
    rows, table = random_experiment(seed, runs=runs)
    summary = summarize(rows, list(range(1, runs + 1)))
    records = summarize_records(rows, list(range(1, runs + 1)))
    assert [r["idx"] for r in records] == sorted({r.idx for r in rows})
    stored = {r["idx"]: r for r in records}

    score_means = {}
    for record, values in table["score"].items():
        if usable(values) and record in stored:
            score_means[record] = float(np.mean(usable(values)))
            assert stored[record]["evaluations"]["score"]["value"] == pytest.approx(
                score_means[record]
            )
    assert summary["score"]["value"] == pytest.approx(np.mean(list(score_means.values())))
    assert summary["score"]["records"] == len(score_means)

    verdict_modes = {}
    for record, values in table["verdict"].items():
        if usable(values) and record in stored:
            verdict_modes[record] = scipy_mode(usable(values))
            assert verdict_modes[record] == counter_mode(usable(values))
            assert stored[record]["evaluations"]["verdict"]["value"] == verdict_modes[record]
    assert summary["verdict"]["value"] == scipy_mode(list(verdict_modes.values()))

    shares = {}
    for record, values in table["passed"].items():
        if usable(values) and record in stored:
            shares[record] = float(np.mean(np.array(usable(values), dtype=float)))
            evaluation = stored[record]["evaluations"]["passed"]
            assert evaluation["value"] == pytest.approx(shares[record])
            assert evaluation["mode"] == counter_mode(usable(values))
            assert evaluation["mode"] == bool(stats.mode(np.array(usable(values), dtype=int)).mode)
    assert summary["passed"]["value"] == pytest.approx(np.mean(list(shares.values())))

    for label, by_record in table.items():
        cells = [v for record in stored for v in by_record[record]]
        assert summary[label]["errors"] == sum(v is FAILED for v in cells)
        assert summary[label]["missing"] == sum(v is None or v is MISSING for v in cells)
        for position in range(runs):
            in_run = usable([by_record[record][position] for record in stored])
            expected: JSON
            if not in_run:
                expected = None
            elif label == "verdict":
                expected = counter_mode(in_run)
            else:
                expected = pytest.approx(float(np.mean(np.array(in_run, dtype=float))))
            assert summary[label]["per_run"][position] == expected
