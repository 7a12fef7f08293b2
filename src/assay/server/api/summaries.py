"""Assay's own reads, in the same JSON:API style: an experiment's summary and its records'.

``GET /experiments/{id}/summary`` gives every evaluation aggregated by the seed's rules
(``assay.aggregation.summarize``), the summary evaluations run by run, and the automatic
metrics (duration, tokens, cost); ``GET /experiments/{id}/record_summaries`` each
record's evaluations across its runs. ``filter[run_iteration]=N`` restricts both to run N.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from assay.aggregation import summarize, summarize_records, summarize_summary_evaluations
from assay.errors import QueryError
from assay.server.api.experiments import experiment_or_404
from assay.server.auth import Caller
from assay.server.dependencies import Store
from assay.server.jsonapi import JsonApiResponse, bad_parameter, document, page_of, resource
from assay.server.wire import INT64
from assay.store.records import ExperimentInfo
from assay.trace_metrics import summarize_trace_metrics

router = APIRouter(tags=["summaries"])
RunFilter = Annotated[int | None, Query(alias="filter[run_iteration]", ge=1)]


def _iterations(info: ExperimentInfo, run: int | None) -> list[int]:
    iterations = [item.run_iteration for item in info.runs]
    if run is None:
        return iterations
    if run not in iterations:
        raise bad_parameter(
            f"Experiment {info.name!r} has runs {iterations}; there is no run {run}",
            parameter="filter[run_iteration]",
        )
    return [run]


@router.get("/experiments/{experiment_id}/summary", summary="An experiment's aggregates")
def experiment_summary(
    experiment_id: str, store: Store, caller: Caller, run: RunFilter = None
) -> JsonApiResponse:
    info = experiment_or_404(store, experiment_id, caller)
    iterations = _iterations(info, run)
    rows = store.experiment_rows(info.id, run_iteration=run)
    attributes = {
        "name": info.name,
        "status": info.status,
        "run_count": info.run_count,
        "run_iterations": iterations,
        "rows": len(rows),
        "records": len({row.record_id for row in rows}),
        "evaluations": summarize(rows, iterations),
        "summary_evaluations": summarize_summary_evaluations(
            store.summary_evaluations(info.id), iterations
        ),
        "trace_metrics": summarize_trace_metrics(rows),
    }
    return document(resource("experiment_summaries", info.id, attributes))


@router.get(
    "/experiments/{experiment_id}/record_summaries",
    summary="Each record's evaluations aggregated across its runs",
)
def record_summaries(
    experiment_id: str,
    store: Store,
    caller: Caller,
    run: RunFilter = None,
    limit: Annotated[int, Query(alias="page[limit]", ge=1, le=5000)] = 1000,
    cursor: Annotated[str | None, Query(alias="page[cursor]")] = None,
) -> JsonApiResponse:
    info = experiment_or_404(store, experiment_id, caller)
    iterations = _iterations(info, run)
    summaries = summarize_records(store.experiment_rows(info.id, run_iteration=run), iterations)
    page, after = page_of(summaries, cursor=cursor, limit=limit)
    return document(
        [
            resource(
                "record_summaries",
                item["record_id"],
                {"idx": item["idx"], "evaluations": item["evaluations"]},
            )
            for item in page
        ],
        meta={"after": after} if after else None,
    )


@router.get(
    "/experiments/{experiment_id}/records",
    summary="Search an experiment's rows, or its records with multi-run terms",
)
def search_records(
    experiment_id: str,
    store: Store,
    caller: Caller,
    query: Annotated[str, Query(alias="filter[query]")] = "",
    run: RunFilter = None,
    limit: Annotated[int, Query(alias="page[limit]", ge=0, le=5000)] = 50,
    offset: Annotated[int, Query(alias="page[offset]", ge=0, le=INT64)] = 0,
    sort: Annotated[str | None, Query()] = None,
) -> JsonApiResponse:
    """The query language of the experiment's records view: one page, with the total.

    Row items are ``search_rows`` resources identified by their span id; record items
    (a query with ``@multi_run_`` terms) are ``search_records`` identified by record id.
    ``meta`` carries ``total`` ("8 of 127": ``total`` of ``of``) and the query in words.
    """
    info = experiment_or_404(store, experiment_id, caller)
    _iterations(info, run)
    try:
        page = store.search(info.id, query, run=run, limit=limit, offset=offset, sort=sort)
    except QueryError as error:
        raise bad_parameter(str(error), parameter="filter[query]") from error
    kind = "search_records" if page.multi_run else "search_rows"
    key = "record_id" if page.multi_run else "span_id"
    return document(
        [resource(kind, str(item[key]), item) for item in page.items],
        meta={
            "total": page.total,
            "of": page.of,
            "multi_run": page.multi_run,
            "description": page.description,
        },
    )
