"""One record of an experiment: every run's output, evaluations and trace.

``/llm/experiments/{id}/records/{record_id}`` shows the input, the expected output and
metadata, the record's aggregate of each evaluation across runs, and for each run the
output, the evaluations with reasoning and assessment, the error with its stack, and the
trace tree (durations, tokens, cost, errors). ``.../runs`` is the same runs as the rows
the all-runs table opens under a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from assay.aggregation import summarize_records
from assay.server.dependencies import Store
from assay.server.ui.access import Viewer, experiment_for
from assay.server.ui.rendering import page_not_found, render
from assay.store.records import RowRecord, SpanRecord
from assay.store.sql import browse

router = APIRouter(include_in_schema=False)


@dataclass
class TraceLine:
    """One span of a trace tree, with its depth and its place on the time axis."""

    span: SpanRecord
    depth: int
    offset: float
    """Start, as a share of the root's duration (0..1)."""
    width: float
    """Duration, as a share of the root's duration."""


def trace_tree(row: RowRecord) -> list[TraceLine]:
    """The row's child spans, parents before children, in start order."""
    total = max(row.duration_ns, 1)
    children: dict[str, list[SpanRecord]] = {}
    for span in row.spans:
        children.setdefault(span.parent_id, []).append(span)
    lines: list[TraceLine] = []
    seen: set[str] = set()

    def visit(parent: str, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_ns):
            if span.span_id in seen:
                continue
            seen.add(span.span_id)
            offset = min(max((span.start_ns - row.start_ns) / total, 0.0), 1.0)
            width = min(max(span.duration_ns / total, 0.005), 1.0 - offset or 0.005)
            lines.append(TraceLine(span, depth, offset, width))
            visit(span.span_id, depth + 1)

    visit(row.span_id, 1)
    # Spans whose parent is not in the trace (an intake that lost it) still show.
    for span in row.spans:
        if span.span_id not in seen:
            seen.add(span.span_id)
            lines.append(TraceLine(span, 1, 0.0, 0.005))
    return lines


def _rows_or_404(store: Store, viewer: Any, experiment_id: str, record_id: str) -> Any:
    info = experiment_for(store, experiment_id, viewer)
    rows = browse.record_rows(store.engine, info, record_id)
    if not rows:
        raise page_not_found(f"Experiment {info.name!r} has no record with id {record_id!r}")
    return info, rows


@router.get("/llm/experiments/{experiment_id}/records/{record_id}/runs")
def record_runs(
    request: Request, experiment_id: str, record_id: str, store: Store, viewer: Viewer
) -> Response:
    info, rows = _rows_or_404(store, viewer, experiment_id, record_id)
    return render(request, "_record_runs.html", {"info": info, "rows": rows})


@router.get("/llm/experiments/{experiment_id}/records/{record_id}")
def record_page(
    request: Request, experiment_id: str, record_id: str, store: Store, viewer: Viewer
) -> Response:
    info, rows = _rows_or_404(store, viewer, experiment_id, record_id)
    iterations = [run.run_iteration for run in info.runs]
    aggregates = summarize_records(rows, iterations)
    first = rows[0]
    return render(
        request,
        "record.html",
        {
            "title": f"{info.name} · record {first.idx}",
            "info": info,
            "rows": rows,
            "first": first,
            "aggregate": aggregates[0] if aggregates else None,
            "trees": {row.span_id: trace_tree(row) for row in rows},
        },
    )
