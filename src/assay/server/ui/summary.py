"""An experiment's summary, as a fragment the experiment page loads after itself.

``/llm/experiments/{id}/summary?run=`` gives each evaluation's aggregate by the seed's
rules (those of ``assay.aggregation.summarize``) with its 95% interval, its value in each
run as a small chart, the spread of record values, pass@k and pass^k for booleans; the
summary evaluators of each run; duration, tokens and cost. With ``run=N``, run N alone.
The numbers are computed in the database (:mod:`assay.store.sql.summary_figures`): a big
experiment's rows are never loaded to show them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from assay.aggregation import summarize_summary_evaluations
from assay.server.dependencies import Store
from assay.server.ui import charts, memo
from assay.server.ui.access import Viewer, experiment_for
from assay.server.ui.rendering import PageError, render
from assay.store.records import ExperimentInfo
from assay.store.sql import browse
from assay.store.sql.summary_figures import SummaryFigures, summary_figures

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
    store.refresh_aggregates(info.id, only_if_stale=True)
    figures = summary_of(store, info, run=run)
    cards: list[dict[str, Any]] = []
    for label, summary in figures.evaluations.items():
        kind = summary["metric_type"]
        numeric = kind in ("score", "boolean")
        value = summary["value"]
        per_run = [v if isinstance(v, float | int) else None for v in summary["per_run"]]
        spread = figures.histograms.get(label)
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
                        low=spread.low if spread else 0.0,
                        high=spread.high if spread else 1.0,
                    )
                    if numeric and isinstance(value, float | int)
                    else ""
                ),
                "histogram": (
                    charts.histogram_of_counts(spread.counts, low=spread.low, high=spread.high)
                    if spread is not None
                    else ""
                ),
                "flaky": figures.flaky.get(label, 0),
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
            "trace": figures.trace,
            "rows": figures.rows,
            "records": figures.records,
        },
    )


def summary_of(store: Store, info: ExperimentInfo, *, run: int | None) -> SummaryFigures:
    """The summary figures of every run or of one, kept until the experiment's rows change
    (:mod:`.memo`); the aggregates must be fresh."""

    def compute() -> SummaryFigures:
        with store.engine.connect() as connection:
            return summary_figures(connection, info, run=run)

    version = browse.data_version(store.engine, info.id)
    return memo.figures.get(("summary", info.id, run), version, compute)
