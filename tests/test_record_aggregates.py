"""The store's per-record aggregates agree with record_summaries(), on SQLite and PostgreSQL."""

from __future__ import annotations

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
