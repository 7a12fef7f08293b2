"""The store's per-record aggregates agree with record_summaries(), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from assay import LLMObs, current_row
from assay.store import open_backend


def noisy_task(input_data: int, config: Any) -> Any:
    row = current_row()
    assert row is not None
    rng = random.Random(f"{input_data}:{row.run_iteration}")
    if rng.random() < 0.1:
        raise RuntimeError("flaky provider")
    with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai"):
        if rng.random() < 0.8:
            LLMObs.annotate(metrics={"input_tokens": rng.randint(1, 500), "output_tokens": 7})
    return rng.random()


def score(input_data: Any, output_data: Any, expected_output: Any) -> Any:
    if output_data is None:
        return None
    if output_data > 0.93:
        raise ValueError("judge broke")
    return round(output_data, 3)


def passed(input_data: Any, output_data: Any, expected_output: Any) -> Any:
    return output_data is not None and output_data > 0.5


def label(input_data: Any, output_data: Any, expected_output: Any) -> Any:
    if output_data is None:
        return None
    # Few labels, so that ties between modes happen.
    return ["positive", "negative", "neutral"][int(output_data * 3) % 3]


@pytest.mark.parametrize("runs", [1, 4])
def test_store_aggregates_match_record_summaries(llmobs: type[LLMObs], runs: int) -> None:
    dataset = llmobs.create_dataset(
        dataset_name="numbers", records=[{"input_data": i} for i in range(60)]
    )
    experiment = llmobs.experiment(
        "aggregated", noisy_task, dataset, [score, passed, label], runs=runs
    )
    experiment.run(jobs=4)
    backend = open_backend()
    try:
        aggregates = {
            (a.facet, a.record_id): a for a in backend.record_aggregates(experiment.id or "")
        }
        rows = backend.experiment_rows(experiment.id or "")
    finally:
        backend.close()
    summaries = experiment.record_summaries()
    assert len({record for _, record in aggregates}) == 60
    for summary in summaries:
        record = summary["record_id"]
        for name, evaluation in summary["evaluations"].items():
            stored = aggregates.get((f"evaluation:{name}", record))
            if evaluation["value"] is None:
                assert stored is None or stored.n == 0
                continue
            assert stored is not None, (name, record)
            assert stored.idx == summary["idx"]
            assert stored.errors == evaluation["errors"]
            if evaluation["metric_type"] == "score":
                assert stored.mean == pytest.approx(evaluation["value"])
            elif evaluation["metric_type"] == "boolean":
                assert stored.mean == pytest.approx(evaluation["value"])
                assert stored.mode == ("true" if evaluation["mode"] else "false")
            else:
                assert stored.mode == evaluation["value"]
        mine = [row for row in rows if row.record_id == record]
        status = aggregates[("status", record)]
        assert status.n == len(mine)
        assert status.errors == sum(row.error is not None for row in mine)
        tokens = [row.rollup.total_tokens for row in mine if row.rollup and row.rollup.total_tokens]
        stored_tokens = aggregates.get(("total_tokens", record))
        if tokens:
            assert stored_tokens is not None
            assert stored_tokens.mean == pytest.approx(sum(tokens) / len(tokens))
        else:
            assert stored_tokens is None
        duration = aggregates[("duration", record)]
        assert duration.mean == pytest.approx(sum(row.duration_ns for row in mine) / len(mine))


# Incremental refresh: after new rows and evaluations, the same aggregates as a rebuild ----

LABELS = ["positive", "negative", "neutral"]


def _row(info: Any, record_id: str, idx: int, run: int, rng: random.Random, **extra: Any) -> Any:
    from assay.store.records import ErrorInfo, EvaluationRecord, RowRecord, TraceRollup

    failed = rng.random() < 0.15
    tokens = rng.choice([None, rng.randint(1, 900)])
    broken = ErrorInfo("ValueError", "judge broke", "") if rng.random() < 0.1 else None
    return RowRecord(
        experiment_id=info.id,
        run_iteration=run,
        record_id=record_id,
        idx=idx,
        span_id=f"{rng.getrandbits(63)}",
        trace_id=f"{rng.getrandbits(128):032x}",
        span_name="task",
        start_ns=1,
        duration_ns=rng.randint(1, 10**9),
        input_data={"n": idx},
        output=None if failed else f"answer {idx}",
        expected_output=None,
        record_metadata={},
        tags=extra.get("tags", [f"team:{rng.choice(['red', 'blue'])}"]),
        error=ErrorInfo("RuntimeError", "flaky", "") if failed else None,
        retries=0,
        evaluations=[
            # A failed evaluator stores no value, so its type is categorical, as the SDK's.
            EvaluationRecord("score", "categorical", None, 0, error=broken)
            if broken
            else EvaluationRecord("score", "score", rng.random(), 0),
            EvaluationRecord("label", "categorical", rng.choice(LABELS), 0),
            EvaluationRecord("passed", "boolean", rng.random() < 0.5, 0),
        ],
        rollup=TraceRollup(total_tokens=tokens) if tokens else None,
    )


def _state(backend: Any, experiment_id: str) -> tuple[Any, ...]:
    """Everything a refresh keeps for the experiment, comparable across refreshes."""
    from sqlalchemy import select

    from assay.store.sql.tables import (
        aggregate_state,
        experiment_facets,
        record_aggregates,
        record_tallies,
        run_aggregates,
        run_score_counts,
        run_token_counts,
    )

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 6)

    with backend.engine.connect() as connection:
        per_run = sorted(
            (
                *(row.run_iteration, row.facet, row.value or "", row.n, row.errors),
                *(row.numbers, row.booleans, row.trues),
                *(rounded(row.total), rounded(row.low), rounded(row.high)),
            )
            for row in connection.execute(
                select(run_aggregates).where(run_aggregates.c.experiment_id == experiment_id)
            )
        )
        aggregates = sorted(
            (
                *(row.facet, row.record_id, row.idx, row.n, row.errors, row.mode, row.kinds),
                None if row.mean is None else round(row.mean, 9),
            )
            for row in connection.execute(
                select(record_aggregates).where(record_aggregates.c.experiment_id == experiment_id)
            )
        )
        counted = sorted(
            (row.facet, row.runs or 0, row.passes or 0, row.mode or "", row.records)
            for row in connection.execute(
                select(record_tallies).where(record_tallies.c.experiment_id == experiment_id)
            )
        )
        facets = sorted(
            (row.kind, row.name, row.metric_type, sorted((row.record_kinds or {}).items()))
            for row in connection.execute(
                select(experiment_facets).where(experiment_facets.c.experiment_id == experiment_id)
            )
        )
        records = connection.execute(
            select(aggregate_state.c.records).where(
                aggregate_state.c.experiment_id == experiment_id
            )
        ).scalar_one()
        tokens = sorted(
            (row.facet, row.run_iteration, row.tokens, row.n)
            for row in connection.execute(
                select(run_token_counts).where(run_token_counts.c.experiment_id == experiment_id)
            )
        )
        scores = sorted(
            (row.label, row.run_iteration, row.bucket, row.n)
            for row in connection.execute(
                select(run_score_counts).where(run_score_counts.c.experiment_id == experiment_id)
            )
        )
    return aggregates, facets, records, per_run, counted, tokens, scores


def _rebuilt_state(backend: Any, experiment_id: str) -> tuple[Any, ...]:
    """The state after a rebuild from scratch (as if the aggregates had never been built)."""
    from sqlalchemy import delete

    from assay.store.sql.tables import aggregate_state

    with backend.engine.begin() as connection:
        connection.execute(
            delete(aggregate_state).where(aggregate_state.c.experiment_id == experiment_id)
        )
    backend.refresh_aggregates(experiment_id)
    return _state(backend, experiment_id)


@pytest.fixture
def rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The experiments each refresh rebuilt from scratch, in order."""
    from assay.store.sql import aggregates

    calls: list[str] = []
    rebuild = aggregates._rebuild

    def counted(connection: Any, experiment_id: str, dialect: str) -> None:
        calls.append(experiment_id)
        rebuild(connection, experiment_id, dialect)

    monkeypatch.setattr(aggregates, "_rebuild", counted)
    return calls


@pytest.fixture
def run_rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The experiments whose per-run totals a refresh recomputed rather than added to."""
    from assay.store.sql import aggregates, run_aggregates

    calls: list[str] = []
    rebuild = run_aggregates.rebuild_run_aggregates

    def counted(connection: Any, experiment_id: str, *, upto: tuple[int, int]) -> None:
        calls.append(experiment_id)
        rebuild(connection, experiment_id, upto=upto)

    for module in (aggregates, run_aggregates):
        monkeypatch.setattr(module, "rebuild_run_aggregates", counted)
    return calls


def _experiment(llmobs: type[LLMObs], records: int, runs: int) -> tuple[Any, Any, list[str]]:
    from assay.store.records import ExperimentSpec, RunInfo

    backend = llmobs._backend
    assert backend is not None
    dataset = llmobs.create_dataset(
        dataset_name="grows", records=[{"input_data": {"n": i}} for i in range(records)]
    )
    project = backend.ensure_project("test-project")
    info = backend.create_experiment(
        ExperimentSpec(
            project_id=project.id,
            dataset_id=dataset.id,
            dataset_version=dataset.version,
            name="grows",
            run_count=runs,
        ),
        [RunInfo(f"run-{n}", n) for n in range(1, runs + 1)],
    )
    return backend, info, [record["record_id"] for record in dataset]


def _refreshed_like_a_rebuild(backend: Any, experiment_id: str) -> None:
    backend.refresh_aggregates(experiment_id, only_if_stale=True)
    refreshed = _state(backend, experiment_id)
    assert refreshed == _rebuilt_state(backend, experiment_id)


def test_new_records_and_new_runs_refresh_only_their_records(
    llmobs: type[LLMObs], rebuilds: list[str], run_rebuilds: list[str]
) -> None:
    backend, info, ids = _experiment(llmobs, records=30, runs=3)
    rng = random.Random(3)
    backend.write_rows([_row(info, ids[i], i, 1, rng) for i in range(20)])
    backend.refresh_aggregates(info.id, only_if_stale=True)
    assert rebuilds == [info.id]  # the first refresh builds everything
    # New runs of old records, new records, and a tag key nobody had before.
    backend.write_rows(
        [_row(info, ids[i], i, 2, rng) for i in range(6)]
        + [_row(info, ids[20], 20, 1, rng, tags=["owner:ann"])]
    )
    backend.refresh_aggregates(info.id, only_if_stale=True)
    assert rebuilds == [info.id]  # incremental: 7 of 21 records changed
    assert run_rebuilds == [info.id]  # and the runs' totals grew by the new rows alone
    refreshed = _state(backend, info.id)
    assert refreshed[2] == 21
    assert ("tag", "owner", None, []) in refreshed[1]
    assert refreshed == _rebuilt_state(backend, info.id)
    # Nothing new: a refresh finds nothing to do, and changes nothing.
    backend.refresh_aggregates(info.id)
    assert _state(backend, info.id) == refreshed


def test_evaluations_added_and_replaced_later_refresh_their_records(
    llmobs: type[LLMObs], rebuilds: list[str], run_rebuilds: list[str]
) -> None:
    from assay.store.sql.ingest import IncomingMetric, IncomingSpan, ingest_metrics, ingest_spans

    backend, info, ids = _experiment(llmobs, records=12, runs=2)
    rng = random.Random(5)
    rows = [_row(info, ids[i], i, run, rng) for run in (1, 2) for i in range(10)]
    backend.write_rows(rows)
    backend.refresh_aggregates(info.id, only_if_stale=True)
    engine = backend.engine

    def metric(span_id: str, value: Any, when: int, kind: Any = "score") -> IncomingMetric:
        return IncomingMetric(
            label="late", metric_type=kind, value=value, timestamp_ms=when, span_id=span_id
        )

    # A metric for an old row, and one that waits for its span (a new row of an old record).
    ingest_metrics(engine, info.id, [metric(rows[3].span_id, 0.25, 10)])
    assert ingest_metrics(engine, info.id, [metric("77", 0.5, 10)]).pending == 1
    _refreshed_like_a_rebuild(backend, info.id)
    span = IncomingSpan(
        span_id="77",
        trace_id=f"{7:032x}",
        name="task",
        start_ns=1,
        duration_ns=5,
        parent_id="undefined",
        tags=(f"dataset_record_id:{ids[10]}", "run_iteration:1"),
    )
    assert ingest_spans(engine, info.id, [span]).evaluations == 1
    _refreshed_like_a_rebuild(backend, info.id)
    # Re-posted later with a label instead of a number: the label turns categorical, and
    # back to a score when the number comes again, though no new record has it.
    ingest_metrics(engine, info.id, [metric(rows[3].span_id, "high", 20, "categorical")])
    _refreshed_like_a_rebuild(backend, info.id)
    assert ("evaluation", "late", "categorical") in [f[:3] for f in _state(backend, info.id)[1]]
    # Added to, twice (a new metric, a pending one that found its span), each followed by
    # _rebuilt_state's rebuild; recomputed once: the replaced number left the totals.
    assert len(run_rebuilds) == len(rebuilds) + 1
    assert len(rebuilds) == 1 + 3  # each refresh incremental; the rebuilds _rebuilt_state's
    ingest_metrics(engine, info.id, [metric(rows[3].span_id, 0.75, 30)])
    _refreshed_like_a_rebuild(backend, info.id)
    assert ("evaluation", "late", "score") in [f[:3] for f in _state(backend, info.id)[1]]
    # SQLite gives the new evaluation the key of the one it replaced, the newest, so it is
    # not past the mark: the counters tell, and that refresh rebuilds.
    assert len(rebuilds) == 1 + 4 + (engine.dialect.name == "sqlite")


def test_rows_written_behind_the_mark_make_a_full_rebuild(
    llmobs: type[LLMObs], rebuilds: list[str]
) -> None:
    """A writer that commits after a refresh rows whose keys are below the refresh's mark
    (PostgreSQL's concurrent writers can): the counters tell, and the refresh rebuilds."""
    from sqlalchemy import func, select, update

    from assay.store.sql.tables import aggregate_state, evaluations, spans

    backend, info, ids = _experiment(llmobs, records=10, runs=2)
    rng = random.Random(11)
    backend.write_rows([_row(info, ids[i], i, 1, rng) for i in range(8)])
    backend.refresh_aggregates(info.id, only_if_stale=True)
    backend.write_rows([_row(info, ids[i], i, 2, rng) for i in range(3)])
    # As if the new rows had been behind the marks: the refresh saw their keys, not them.
    with backend.engine.begin() as connection:
        connection.execute(
            update(aggregate_state)
            .where(aggregate_state.c.experiment_id == info.id)
            .values(
                row_mark=select(func.max(spans.c.pk)).scalar_subquery(),
                evaluation_mark=select(func.max(evaluations.c.pk)).scalar_subquery(),
            )
        )
    backend.refresh_aggregates(info.id, only_if_stale=True)
    assert rebuilds == [info.id, info.id]
    assert _state(backend, info.id)[0] == _rebuilt_state(backend, info.id)[0]


def test_tokens_rolled_up_onto_a_refreshed_row_refresh_its_record(
    llmobs: type[LLMObs], rebuilds: list[str]
) -> None:
    """The HTTP intake sums a late child span's tokens onto its root, a row already
    aggregated: no counter moves and no key passes the mark, yet searches see the sums."""
    from assay.store.sql.ingest import IncomingSpan, ingest_spans

    backend, info, ids = _experiment(llmobs, records=12, runs=2)
    rng = random.Random(9)
    rows = [_row(info, ids[i], i, run, rng) for run in (1, 2) for i in range(10)]
    backend.write_rows(rows)
    backend.refresh_aggregates(info.id, only_if_stale=True)
    # A late child of the second-to-last row: the refresh recomputes the records of the
    # rows from that one on, 2 of 10, rather than all.
    before = backend.search(info.id, "@multi_run_avg.@trace.total_tokens:>100000").total
    child = IncomingSpan(
        span_id="9001",
        trace_id=rows[18].trace_id,
        name="llm call",
        start_ns=1,
        duration_ns=5,
        parent_id=rows[18].span_id,
        kind="llm",
        metrics={"input_tokens": 400_000, "output_tokens": 100_000, "total_tokens": 500_000},
    )
    from assay.store.sql.browse import data_version

    shown = data_version(backend.engine, info.id)  # what the web UI keeps its figures by
    ingest_spans(backend.engine, info.id, [child])
    assert data_version(backend.engine, info.id) != shown  # no counter moved, the mark did
    _refreshed_like_a_rebuild(backend, info.id)
    assert len(rebuilds) == 1 + 1  # the refresh was incremental; one rebuild is the check's
    assert data_version(backend.engine, info.id) != shown
    after = backend.search(info.id, "@multi_run_avg.@trace.total_tokens:>100000")
    assert after.total == before + 1 and after.items[0]["record_id"] == ids[8]


def test_large_scores_refresh_like_a_rebuild(llmobs: type[LLMObs]) -> None:
    """A score label of large values (a latency in ns, a token count) has no passes to
    tally: its means once overflowed the tallies' integer column on PostgreSQL."""
    from assay.store.records import EvaluationRecord

    backend, info, ids = _experiment(llmobs, records=6, runs=2)
    rng = random.Random(11)
    rows = []
    for run in (1, 2):
        for i in range(6):
            row = _row(info, ids[i], i, run, rng)
            large = EvaluationRecord("latency", "score", rng.uniform(1e15, 3e16), 0)
            rows.append(dataclasses.replace(row, evaluations=[*row.evaluations, large]))
    backend.write_rows(rows[:6])
    backend.refresh_aggregates(info.id, only_if_stale=True)
    backend.write_rows(rows[6:])
    _refreshed_like_a_rebuild(backend, info.id)
    found = backend.search(info.id, "@multi_run_avg.@evaluations.custom.latency:>1e15")
    assert found.total == 6


TOKEN_QUERIES = [
    "@trace.total_tokens:>500",
    "-@trace.total_tokens:>500",
    "@trace.total_tokens:*",
    "-@trace.total_tokens:*",
    "@trace.total_tokens:[100 TO 400]",
    "@trace.total_tokens:300",
    "@trace.input_tokens:<50 OR @trace.input_tokens:>=400",
    "-@trace.output_tokens:7",
    "run_iteration:2 @trace.total_tokens:<=450",
    "run_iteration:1 -@trace.input_tokens:[10 TO 200]",
]


def _token_rows(info: Any, ids: list[str], runs: range, rng: random.Random) -> list[Any]:
    """Rows whose tokens repeat (few distinct counts) and are sometimes missing."""
    from assay.store.records import TraceRollup

    rows = []
    for run in runs:
        for i, record_id in enumerate(ids):
            row = _row(info, record_id, i, run, rng)
            given = rng.random() < 0.8
            inputs = rng.choice(range(0, 500, 25)) if given else None
            rollup = TraceRollup(
                input_tokens=inputs,
                output_tokens=rng.choice([None, 7, 8]) if given else None,
                total_tokens=rng.choice([None, inputs + 300]) if inputs is not None else None,
            )
            rows.append(dataclasses.replace(row, rollup=rollup))
    return rows


def _totals_counted_both_ways(
    backend: Any,
    experiment_id: str,
    monkeypatch: pytest.MonkeyPatch,
    counting: str,
    queries: list[str],
) -> tuple[list[int], list[int]]:
    """Each query's total (of every run, and of runs 1 and 2) counted by ``search``'s
    ``counting`` (``count_by_tokens``, ``count_by_scores``), and counted from the rows.
    Every query is counted that way but those that name a run other than run=."""
    from assay.store.sql import search

    def totals() -> list[int]:
        return [
            backend.search(experiment_id, query, run=run, limit=5).total
            for query in queries
            for run in (None, 1, 2)
        ]

    used: list[int | None] = []
    count = getattr(search, counting)

    def counted(*arguments: Any) -> int | None:
        used.append(count(*arguments))
        return used[-1]

    with monkeypatch.context() as patched:
        patched.setattr(search, counting, counted)
        by_counts = totals()
    runs_named = sum(query.startswith("run_iteration:") for query in queries)
    assert sum(found is not None for found in used) == len(used) - runs_named, used
    with monkeypatch.context() as patched:
        patched.setattr(search, counting, lambda *arguments: None)
        by_rows = totals()
    return by_counts, by_rows


def test_row_queries_on_tokens_count_by_token_counts_as_by_rows(
    llmobs: type[LLMObs], monkeypatch: pytest.MonkeyPatch, run_rebuilds: list[str]
) -> None:
    """A row query on one token facet is counted from the runs' counts of rows by token
    count: the same totals as counting the rows, missing tokens and negations included, as
    rows arrive (added to the counts), and after a late child span's tokens rolled onto
    an old row (the counts recomputed)."""
    from assay.store.sql.ingest import IncomingSpan, ingest_spans

    backend, info, ids = _experiment(llmobs, records=40, runs=3)
    rng = random.Random(17)
    rows = _token_rows(info, ids, range(1, 4), rng)
    backend.write_rows(rows[:100])
    by_tokens, by_rows = _totals_counted_both_ways(
        backend, info.id, monkeypatch, "count_by_tokens", TOKEN_QUERIES
    )
    assert by_tokens == by_rows
    # Counted by hand: rows of every run with more than 500 total tokens, and without any.
    assert by_tokens[0] == sum(
        1 for row in rows[:100] if row.rollup.total_tokens and row.rollup.total_tokens > 500
    )
    assert by_tokens[9] == sum(1 for row in rows[:100] if row.rollup.total_tokens is None)
    backend.write_rows(rows[100:])  # 10 of 40 records: a refresh adds them
    by_tokens, by_rows = _totals_counted_both_ways(
        backend, info.id, monkeypatch, "count_by_tokens", TOKEN_QUERIES
    )
    assert by_tokens == by_rows
    assert run_rebuilds == [info.id]  # the new rows were added to the counts
    assert _state(backend, info.id) == _rebuilt_state(backend, info.id)
    # A late child span of a row without tokens gives it some.
    bare = next(row for row in rows if row.rollup.total_tokens is None)
    child = IncomingSpan(
        span_id="9002",
        trace_id=bare.trace_id,
        name="llm call",
        start_ns=1,
        duration_ns=5,
        parent_id=bare.span_id,
        kind="llm",
        metrics={"input_tokens": 25, "output_tokens": 7, "total_tokens": 32},
    )
    ingest_spans(backend.engine, info.id, [child])
    before = by_tokens
    by_tokens, by_rows = _totals_counted_both_ways(
        backend, info.id, monkeypatch, "count_by_tokens", TOKEN_QUERIES
    )
    assert by_tokens == by_rows != before
    assert _state(backend, info.id) == _rebuilt_state(backend, info.id)


def test_an_upgraded_store_counts_the_tokens_of_rows_already_aggregated(
    llmobs: type[LLMObs], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 0015 fills the token counts of experiments aggregated before it, to the
    per-run totals' marks, so that searches count by them at once."""
    from alembic import command

    from assay.store.sql.engine import _alembic_config

    backend, info, ids = _experiment(llmobs, records=30, runs=2)
    backend.write_rows(_token_rows(info, ids, range(1, 3), random.Random(23)))
    backend.refresh_aggregates(info.id, only_if_stale=True)
    aggregated = _state(backend, info.id)
    config = _alembic_config()
    with backend.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0014")
    with backend.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    assert _state(backend, info.id) == aggregated
    by_tokens, by_rows = _totals_counted_both_ways(
        backend, info.id, monkeypatch, "count_by_tokens", TOKEN_QUERIES
    )
    assert by_tokens == by_rows


def _repost(
    backend: Any, experiment_id: str, span_id: str, label: str, kind: Any, value: Any
) -> None:
    """A later metric of the row's label, as the HTTP intake stores it: it replaces the
    evaluation the row had."""
    from assay.store.sql.ingest import IncomingMetric, ingest_metrics

    metric = IncomingMetric(
        label=label, metric_type=kind, value=value, timestamp_ms=10**13, span_id=span_id
    )
    ingest_metrics(backend.engine, experiment_id, [metric])


SCORE_QUERIES = [
    "@evaluations.custom.closeness:>0.5",
    "@evaluations.custom.closeness:>=0.5",
    "@evaluations.custom.closeness:<0.25",
    "@evaluations.custom.closeness:<=0.25",
    "@evaluations.custom.closeness:0.5",
    "@evaluations.custom.closeness:[0.25 TO 0.75]",
    "@evaluations.custom.closeness:[* TO 0.5]",
    "@evaluations.custom.closeness:*",
    "@evaluations.custom.closeness:>-1",
    "@evaluations.custom.closeness:<1e13",
    "@evaluations.custom.closeness:>=1e13",
    "@evaluations.custom.closeness:>=0.0009765625",
    "@evaluations.custom.closeness:>=1",
    "run_iteration:2 @evaluations.custom.closeness:>0.001",
]
# Scores on and beside bucket bounds (multiples of 1/1024), past the end buckets (4.4e12),
# negative and zero; booleans count as 1 and 0 in a score label.
SCORES = [0.5, 0.25, 1 / 1024, 513 / 1024, 0.5 - 1e-12, -0.75, 1e13, -1e13, 0.0, -0.0, 1.0]


def _score_rows(info: Any, ids: list[str], runs: range, rng: random.Random) -> list[Any]:
    from assay.store.records import ErrorInfo, EvaluationRecord

    rows = []
    for run in runs:
        for i, record_id in enumerate(ids):
            row = _row(info, record_id, i, run, rng)
            draw = rng.random()
            if draw < 0.1:
                closeness = EvaluationRecord("closeness", "boolean", rng.random() < 0.5, 0)
            elif draw < 0.15:
                broken = ErrorInfo("ValueError", "judge broke", "")
                closeness = EvaluationRecord("closeness", "categorical", None, 0, error=broken)
            else:
                score = rng.choice(SCORES) if draw < 0.6 else rng.random()
                closeness = EvaluationRecord("closeness", "score", score, 0)
            rows.append(dataclasses.replace(row, evaluations=[*row.evaluations, closeness]))
    return rows


def test_row_queries_on_a_score_count_by_buckets_as_by_rows(
    llmobs: type[LLMObs], monkeypatch: pytest.MonkeyPatch, run_rebuilds: list[str]
) -> None:
    """A row query on one score label is counted from the runs' scores by bucket, its end
    buckets score by score: the same totals as counting the evaluations, for scores on
    bucket bounds, past the end buckets, booleans among them and failed evaluations, as
    rows arrive (added to the buckets) and after a metric was replaced (recounted)."""
    backend, info, ids = _experiment(llmobs, records=40, runs=3)
    rows = _score_rows(info, ids, range(1, 4), random.Random(29))
    backend.write_rows(rows[:100])
    by_buckets, by_rows = _totals_counted_both_ways(
        backend, info.id, monkeypatch, "count_by_scores", SCORE_QUERIES
    )
    assert by_buckets == by_rows
    # Counted by hand: scores over 0.5 in every run, and True booleans (1 > 0.5).
    over = [
        row
        for row in rows[:100]
        for e in row.evaluations
        if e.label == "closeness" and e.metric_type in ("score", "boolean") and e.error is None
        if float(e.value) > 0.5
    ]
    assert by_buckets[0] == len(over)
    backend.write_rows(rows[100:])  # 10 of 40 records: a refresh adds them
    by_buckets, by_rows = _totals_counted_both_ways(
        backend, info.id, monkeypatch, "count_by_scores", SCORE_QUERIES
    )
    assert by_buckets == by_rows
    assert run_rebuilds == [info.id]
    # The buckets only: the runs' sums of scores of 1e13 and 0.3 depend on the order they
    # were added in, past the sixth decimal that ``_state`` compares.
    assert _state(backend, info.id)[-1] == _rebuilt_state(backend, info.id)[-1]
    # A re-posted metric replaces a score already counted: the refresh recounts.
    _repost(backend, info.id, rows[0].span_id, "closeness", "score", 0.9)
    by_buckets, by_rows = _totals_counted_both_ways(
        backend, info.id, monkeypatch, "count_by_scores", SCORE_QUERIES
    )
    assert by_buckets == by_rows
    assert _state(backend, info.id)[-1] == _rebuilt_state(backend, info.id)[-1]


def test_buckets_hold_exactly_the_scores_between_their_bounds() -> None:
    from assay.store.sql.score_counts import EDGE, SCALE, bucket_of

    rng = random.Random(31)
    scores = [rng.uniform(-3, 3) for _ in range(2000)] + [k / SCALE for k in range(-50, 50)]
    scores += [5e12, -5e12, 1e300, -1e300, float("inf"), -float("inf"), 0.0, -0.0, 2.5e-320]
    for score in scores:
        bucket = bucket_of(score)
        assert -EDGE <= bucket <= EDGE
        assert bucket == -EDGE or bucket / SCALE <= score
        assert bucket == EDGE or score < (bucket + 1) / SCALE
    assert bucket_of(float("nan")) == EDGE
    assert [bucket_of(s) for s in (0.5, 0.5 - 1e-12, 1 / SCALE, 1e13)] == [512, 511, 1, EDGE]


LABEL_QUERIES = [
    "@evaluations.custom.label:positive",
    "@evaluations.custom.label:neutral",
    "@evaluations.custom.label:unheard",
    "@evaluations.custom.passed:true",
    "@evaluations.custom.passed:false",
    "run_iteration:2 @evaluations.custom.label:negative",
]


def test_row_queries_on_a_label_value_count_by_run_totals_as_by_rows(
    llmobs: type[LLMObs], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row query for one categorical value or one boolean of a label is read off the
    runs' totals: the same totals as counting the evaluations, as rows arrive and after a
    metric was replaced by another value."""
    backend, info, ids = _experiment(llmobs, records=40, runs=3)
    rng = random.Random(37)
    rows = [_row(info, ids[i], i, run, rng) for run in (1, 2, 3) for i in range(40)]
    backend.write_rows(rows[:100])
    by_totals, by_rows = _totals_counted_both_ways(
        backend, info.id, monkeypatch, "count_labelled", LABEL_QUERIES
    )
    assert by_totals == by_rows
    # Counted by hand: True booleans in every run.
    assert by_totals[9] == sum(
        1 for row in rows[:100] for e in row.evaluations if e.label == "passed" and e.value
    )
    backend.write_rows(rows[100:])
    by_totals, by_rows = _totals_counted_both_ways(
        backend, info.id, monkeypatch, "count_labelled", LABEL_QUERIES
    )
    assert by_totals == by_rows
    _repost(backend, info.id, rows[0].span_id, "label", "categorical", "unheard")
    by_totals, by_rows = _totals_counted_both_ways(
        backend, info.id, monkeypatch, "count_labelled", LABEL_QUERIES
    )
    assert by_totals == by_rows
    assert by_totals[6] == 1  # the one "unheard" label


def test_counts_by_value_answer_only_while_they_include_every_row(
    llmobs: type[LLMObs],
) -> None:
    """Rows reopened (or written) since the last refresh: the token counts, the score
    buckets and the label totals answer nothing, and the search counts rows instead."""
    from sqlalchemy import select

    from assay.query import resolve
    from assay.store.sql.aggregates import reopen_rows
    from assay.store.sql.run_aggregates import count_labelled
    from assay.store.sql.score_counts import count_by_scores
    from assay.store.sql.search import load_catalog
    from assay.store.sql.search_compile import QueryCompiler
    from assay.store.sql.tables import spans
    from assay.store.sql.token_counts import count_by_tokens

    backend, info, ids = _experiment(llmobs, records=20, runs=2)
    backend.write_rows(_token_rows(info, ids, range(1, 3), random.Random(41)))
    backend.refresh_aggregates(info.id, only_if_stale=True)

    def counts() -> list[int | None]:
        with backend.engine.connect() as connection:
            catalog = load_catalog(connection, info.id)
            compiler = QueryCompiler(
                dialect=connection.dialect.name,
                experiment_id=info.id,
                runs={run.run_id: run.run_iteration for run in info.runs},
                query_text="",
            )
            score = resolve("@evaluations.custom.score:>0.5", catalog).node
            passed = resolve("@evaluations.custom.passed:true", catalog).node
            return [
                count_by_tokens(connection, info.id, spans.c.total_tokens > 400, None),
                count_by_scores(connection, compiler, score, None),
                count_labelled(connection, info.id, passed, 1),
            ]

    current = counts()
    assert None not in current
    with backend.engine.begin() as connection:
        first = connection.execute(
            select(spans.c.pk).where(spans.c.experiment_id == info.id).limit(1)
        ).scalar_one()
        reopen_rows(connection, info.id, first)
    assert counts() == [None, None, None]
    backend.refresh_aggregates(info.id, only_if_stale=True)
    assert counts() == current
