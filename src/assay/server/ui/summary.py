"""An experiment's summary, as a fragment the experiment page loads after itself.

``/llm/experiments/{id}/summary?run=`` gives each evaluation's aggregate by the seed's
rules (``assay.aggregation.summarize``) with its 95% interval, its value in each run as a
small chart, the spread of record values, pass@k and pass^k for booleans; the summary
evaluators of each run; duration, tokens and cost. With ``run=N``, run N alone.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from assay.aggregation import summarize, summarize_records, summarize_summary_evaluations
from assay.server.dependencies import Store
from assay.server.ui import charts
from assay.server.ui.access import Viewer, experiment_for
from assay.server.ui.rendering import PageError, render
from assay.trace_metrics import summarize_trace_metrics

router = APIRouter(include_in_schema=False)


@router.get("/llm/experiments/{experiment_id}/summary")
def experiment_summary(
    request: Request,
    experiment_id: str,
    store: Store,
    viewer: Viewer,
    run: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    info = experiment_for(store, experiment_id, viewer)
    iterations = [item.run_iteration for item in info.runs]
    if run is not None:
        if run not in iterations:
            raise PageError(404, "No such run", f"Experiment {info.name!r} has no run {run}")
        iterations = [run]
    rows = store.experiment_rows(info.id, run_iteration=run)
    evaluations = summarize(rows, iterations)
    records = summarize_records(rows, iterations)
    cards: list[dict[str, Any]] = []
    for label, summary in evaluations.items():
        kind = summary["metric_type"]
        numeric = kind in ("score", "boolean")
        value = summary["value"]
        per_run = [v if isinstance(v, float | int) else None for v in summary["per_run"]]
        record_values = [
            float(found)
            for item in records
            if isinstance(found := item["evaluations"][label]["value"], float | int)
        ]
        cards.append(
            {
                "label": label,
                "summary": summary,
                "runs_chart": (
                    charts.run_values(
                        per_run,
                        value=value if isinstance(value, float) else None,
                        ci95=summary["ci95"],
                        unit_interval=kind == "boolean",
                    )
                    if numeric and len(iterations) > 1
                    else ""
                ),
                "interval_chart": (
                    charts.interval(
                        float(value),
                        summary["ci95"],
                        low=0.0 if kind == "boolean" else min(record_values, default=0.0),
                        high=1.0 if kind == "boolean" else max(record_values, default=1.0),
                    )
                    if numeric and isinstance(value, float | int)
                    else ""
                ),
                "histogram": (
                    charts.histogram(record_values, unit_interval=kind == "boolean")
                    if numeric
                    else ""
                ),
                "flaky": sum(
                    1 for item in records if item["evaluations"][label].get("flaky") is True
                ),
            }
        )
    return render(
        request,
        "_summary.html",
        {
            "info": info,
            "run": run,
            "iterations": iterations,
            "cards": cards,
            "summary_evaluations": summarize_summary_evaluations(
                store.summary_evaluations(info.id), iterations
            ),
            "trace": summarize_trace_metrics(rows),
            "rows": len(rows),
            "records": len(records),
        },
    )
