"""The reference evaluator: the semantics the SQL compiler must reproduce."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.aggregation import summarize_records
from assay.query import (
    Catalog,
    RecordAggregate,
    Row,
    aggregate_records,
    evaluate,
    filter_records,
    filter_rows,
    resolve,
    search_text,
)
from assay.store.records import EvaluationRecord, RowRecord

CATALOG = Catalog(
    {"accuracy": "score", "exact": "boolean", "tone": "categorical", "blob": "json"},
    frozenset({"difficulty", "size"}),
)


def row(record_id: str, run: int = 1, **fields: Any) -> Row:
    base: dict[str, Any] = {
        "record_id": record_id,
        "run_iteration": run,
        "run_id": f"run-{run}",
        "input": {"question": f"What is {record_id}?"},
        "output": None,
        "expected_output": None,
        "metadata": {},
        "tags": [],
        "status": "ok",
        "error_type": None,
        "duration": None,
        "total_tokens": None,
        "input_tokens": None,
        "output_tokens": None,
        "estimated_total_cost": None,
        "evaluations": {},
    }
    base.update(fields)
    return Row(**base)  # type: ignore[typeddict-item]


def selected(text: str, rows: list[Row]) -> list[str]:
    return [
        f"{r['record_id']}/{r['run_iteration']}" for r in filter_rows(resolve(text, CATALOG), rows)
    ]


ROWS = [
    row(
        "a",
        input={"question": "Capital of France?", "tags": ["geo", "easy"], "n": 3},
        output="Paris",
        expected_output="Paris",
        metadata={"source": {"kind": "web"}},
        tags=["difficulty:easy", "size:10", "flagged"],
        duration=1.2e9,
        total_tokens=1200,
        estimated_total_cost=50_000,
        evaluations={"accuracy": 1.0, "exact": True, "tone": "positive", "blob": {"k": [1, 2]}},
    ),
    row(
        "b",
        input="plain text INPUT with ÉCLAIR",
        output={"answer": "Berlin", "list": [["nested"]]},
        expected_output={"answer": "Bonn"},
        tags=["difficulty:hard", "size:9.5"],
        status="error",
        error_type="TimeoutError",
        duration=200e6,
        total_tokens=800,
        evaluations={"accuracy": 0.25, "exact": False, "tone": "negative"},
    ),
    row("c", input={"n": "3"}, evaluations={"accuracy": float("nan"), "exact": None}),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["a/1", "b/1", "c/1"]),
        # Free text: case-insensitive substring of input, output, expected, metadata, tags.
        ("paris", ["a/1"]),
        ("PARIS", ["a/1"]),
        ("berlin", ["b/1"]),
        ('"capital of"', ["a/1"]),
        ("éclair", ["b/1"]),
        ("web", ["a/1"]),
        ("flagged", ["a/1"]),
        ("difficulty:h*", ["b/1"]),  # a tag facet, not text: the whole value matches
        ('"difficulty:hard"', ["b/1"]),
        ("cap*france", ["a/1"]),
        ("b?rlin", ["b/1"]),
        ('"b?rlin"', []),
        ("question", ["a/1"]),  # JSON text includes the keys
        ("null", []),  # None is no text
        # Evaluations.
        ("@evaluations.custom.accuracy:>0.5", ["a/1"]),
        ("@evaluations.custom.accuracy:[0 TO 0.25]", ["b/1"]),
        ("@evaluations.custom.accuracy:1", ["a/1"]),
        ("-@evaluations.custom.accuracy:>0.5", ["b/1", "c/1"]),  # NaN is missing
        ("@evaluations.custom.accuracy:*", ["a/1", "b/1"]),
        ("@evaluations.custom.exact:true", ["a/1"]),
        ("@evaluations.custom.exact:FALSE", ["b/1"]),
        ("-@evaluations.custom.exact:*", ["c/1"]),
        ("@evaluations.custom.tone:positive", ["a/1"]),
        ("@evaluations.custom.tone:Positive", []),  # values are case-sensitive
        ("@evaluations.custom.tone:(positive OR negative)", ["a/1", "b/1"]),
        ("@evaluations.custom.tone:*tive", ["a/1", "b/1"]),
        ("@evaluations.custom.blob:*", ["a/1"]),
        # Metrics.
        ("@duration:>1s", ["a/1"]),
        ("@duration:<=200ms", ["b/1"]),
        ("@duration:200000000", ["b/1"]),
        ("@trace.total_tokens:>1000", ["a/1"]),
        ("@trace.total_tokens:[* TO 1000]", ["b/1"]),
        ("-@trace.total_tokens:*", ["c/1"]),
        ("@trace.estimated_total_cost:>=50000", ["a/1"]),
        ("@status:error", ["b/1"]),
        ("@meta.error.type:Timeout*", ["b/1"]),
        ("-@meta.error.type:*", ["a/1", "c/1"]),
        # JSON paths.
        ("@meta.input.question:*France*", ["a/1"]),
        ("@meta.input.tags:geo", ["a/1"]),  # an array matches any element
        ("@meta.input.n:3", ["a/1", "c/1"]),  # the number 3 and the string "3"
        ("@meta.input.n:>2", ["a/1"]),  # only numbers compare
        ("@meta.input.n:3.0", ["a/1"]),
        ("@meta.input:*INPUT*", ["b/1"]),
        ("@meta.input:*", ["a/1", "b/1", "c/1"]),
        ("@meta.output:Paris", ["a/1"]),
        ("@meta.output.answer:Berlin", ["b/1"]),
        ("@meta.output.list:nested", []),  # nested arrays are not searched
        ("@meta.expected_output.answer:Bonn", ["b/1"]),
        ("@meta.metadata.source.kind:web", ["a/1"]),
        ("@meta.metadata.source.kind.deeper:web", []),
        ("-@meta.metadata.source:*", ["b/1", "c/1"]),
        # Tags and ids.
        ("difficulty:easy", ["a/1"]),
        ("-difficulty:easy", ["b/1", "c/1"]),
        ("difficulty:*", ["a/1", "b/1"]),
        ("size:>9", ["a/1", "b/1"]),
        ("size:[9 TO 9.9]", ["b/1"]),
        ("size:10", ["a/1"]),
        ("size:10.0", []),  # tag values are text: equality is exact
        ("dataset_record_id:b", ["b/1"]),
        ("dataset_record_id:?", ["a/1", "b/1", "c/1"]),
        ("run_iteration:1", ["a/1", "b/1", "c/1"]),
        ("run_id:run-1 -run_iteration:2", ["a/1", "b/1", "c/1"]),
        # Structure.
        ("paris OR berlin", ["a/1", "b/1"]),
        ("-(paris OR berlin)", ["c/1"]),
        ("@status:ok -paris", ["c/1"]),
    ],
)
def test_row_semantics(text: str, expected: list[str]) -> None:
    assert selected(text, ROWS) == expected


def test_search_text() -> None:
    assert search_text(None) == ""
    assert search_text("Paris") == "Paris"
    assert search_text({"a": "é", "b": [1, True, None]}) == '{"a": "é", "b": [1, true, null]}'
    assert search_text(3.5) == "3.5"


RUNS = [
    row(
        "a",
        1,
        tags=["difficulty:easy"],
        duration=1e9,
        total_tokens=100,
        status="ok",
        evaluations={"accuracy": 1.0, "exact": True, "tone": "good"},
    ),
    row(
        "a",
        2,
        tags=["difficulty:easy"],
        duration=3e9,
        total_tokens=300,
        status="error",
        evaluations={"accuracy": 0.5, "exact": False, "tone": "bad"},
    ),
    row(
        "a",
        3,
        tags=["difficulty:easy"],
        duration=None,
        total_tokens=200,
        status="error",
        evaluations={"accuracy": None, "exact": True, "tone": "good"},
    ),
    row("b", 2, evaluations={"accuracy": 0.0, "exact": False, "tone": "bad"}),
    row("b", 1, status="ok", evaluations={"exact": True, "tone": "good"}),
]


def test_aggregates() -> None:
    records = aggregate_records(RUNS, CATALOG)
    assert [record["record_id"] for record in records] == ["a", "b"]
    a, b = (record["aggregates"] for record in records)
    assert a["@multi_run_avg.@evaluations.custom.accuracy"] == 0.75
    assert a["@multi_run_avg.@evaluations.custom.exact"] == pytest.approx(2 / 3)
    assert a["@multi_run_mode.@evaluations.custom.exact"] is True
    assert a["@multi_run_mode.@evaluations.custom.tone"] == "good"
    assert a["@multi_run_avg.@duration"] == 2e9
    assert a["@multi_run_avg.@trace.total_tokens"] == 200
    assert a["@multi_run_avg.@trace.input_tokens"] is None
    assert a["@multi_run_mode.@status"] == "error"
    # Ties: False for booleans, the text that sorts first otherwise.
    assert b["@multi_run_mode.@evaluations.custom.exact"] is False
    assert b["@multi_run_mode.@evaluations.custom.tone"] == "bad"
    assert b["@multi_run_avg.@evaluations.custom.exact"] == 0.5
    assert b["@multi_run_mode.@status"] == "ok"
    # The record's own fields come from its first run.
    assert records[1]["input"] == {"question": "What is b?"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@multi_run_avg.@evaluations.custom.accuracy:>=0.5", ["a"]),
        ("@multi_run_avg.@evaluations.custom.exact:>0.6", ["a"]),
        ("@multi_run_mode.@evaluations.custom.exact:false", ["b"]),
        ("@multi_run_mode.@evaluations.custom.tone:(good OR meh)", ["a"]),
        ("@multi_run_avg.@duration:>=2s", ["a"]),
        ("-@multi_run_avg.@duration:*", ["b"]),
        ("@multi_run_mode.@status:error difficulty:easy", ["a"]),
        ("@multi_run_avg.@trace.total_tokens:>150 OR b", ["a", "b"]),
    ],
)
def test_multi_run_semantics(text: str, expected: list[str]) -> None:
    query = resolve(text, CATALOG)
    assert query.multi_run
    result = evaluate(query, RUNS)
    assert [item["record_id"] for item in result] == expected


def test_the_wrong_kind_of_item_is_refused() -> None:
    with pytest.raises(ValueError, match="selects records"):
        filter_rows(resolve("@multi_run_mode.@status:ok", CATALOG), RUNS)
    records = aggregate_records(RUNS, CATALOG)
    with pytest.raises(ValueError, match="differs between runs"):
        filter_records(resolve("@status:ok", CATALOG), records)
    # Record-level terms work on both.
    assert len(filter_records(resolve("difficulty:easy", CATALOG), records)) == 1


# --- The aggregates are assay.aggregation's --------------------------------------------


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.tuples(
            st.lists(
                st.none() | st.floats(-1e6, 1e6) | st.just(math.nan) | st.integers(-5, 5),
                min_size=3,
                max_size=3,
            ),
            st.lists(st.none() | st.booleans(), min_size=3, max_size=3),
            st.lists(st.none() | st.sampled_from(["x", "y", "z"]), min_size=3, max_size=3),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_aggregates_agree_with_the_aggregation_module(
    records: list[tuple[list[float | int | None], list[bool | None], list[str | None]]],
) -> None:
    catalog = Catalog({"score": "score", "flag": "boolean", "label": "categorical"})
    rows: list[Row] = []
    records_for_aggregation: list[RowRecord] = []
    for index, (scores, flags, labels) in enumerate(records):
        for run in range(3):
            values = {"score": scores[run], "flag": flags[run], "label": labels[run]}
            rows.append(row(f"r{index}", run + 1, evaluations=values))
            records_for_aggregation.append(_row_record(f"r{index}", index, run + 1, values))
    ours = aggregate_records(rows, catalog)
    theirs = summarize_records(records_for_aggregation, [1, 2, 3])
    for mine, summary in zip(ours, theirs, strict=True):
        aggregates = mine["aggregates"]
        evaluations = summary["evaluations"]
        _same(aggregates["@multi_run_avg.@evaluations.custom.score"], evaluations["score"]["value"])
        _same(aggregates["@multi_run_avg.@evaluations.custom.flag"], evaluations["flag"]["value"])
        assert aggregates["@multi_run_mode.@evaluations.custom.flag"] == evaluations["flag"]["mode"]
        assert (
            aggregates["@multi_run_mode.@evaluations.custom.label"] == evaluations["label"]["value"]
        )


def _same(mine: object, theirs: object) -> None:
    if isinstance(mine, float) and isinstance(theirs, float):
        assert math.isclose(mine, theirs, rel_tol=1e-9, abs_tol=1e-9)
    else:
        assert mine == theirs


def _row_record(record_id: str, idx: int, run: int, values: dict[str, Any]) -> RowRecord:
    metric_types = {"score": "score", "flag": "boolean", "label": "categorical"}
    evaluations = [
        EvaluationRecord(label, metric_types[label], value, timestamp_ms=0)  # type: ignore[arg-type]
        for label, value in values.items()
    ]
    return RowRecord(
        experiment_id="e",
        run_iteration=run,
        record_id=record_id,
        idx=idx,
        span_id="s",
        trace_id="t",
        span_name="task",
        start_ns=0,
        duration_ns=0,
        input_data=None,
        output=None,
        expected_output=None,
        record_metadata={},
        tags=[],
        error=None,
        retries=0,
        evaluations=evaluations,
    )


def test_records_keep_their_fields() -> None:
    record: RecordAggregate = aggregate_records(ROWS[:1], CATALOG)[0]
    assert record["tags"] == ["difficulty:easy", "size:10", "flagged"]
    assert record["metadata"] == {"source": {"kind": "web"}}
