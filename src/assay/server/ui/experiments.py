"""The experiments list and an experiment's page: header, run selector, records view.

``/llm/experiments?project=&dataset=&name=&status=&page=`` lists experiments, newest
first, with each evaluation's summary value read from the per-record aggregates.

``/llm/experiments/{id}?run=&q=&sort=&page=`` shows one experiment. ``run`` absent is the
all-runs view, where records are listed by their aggregates across runs; ``run=N`` shows
run N's rows. ``q`` is the query of the search bar, the only filter: the facet form sends
its state (``facets=1`` and ``f.<key>`` fields), which is written into ``q``
(:mod:`.facets`) and answered with a redirect to the canonical URL, so every view is a
link. The table is one page of ``store.search`` (never every row). The summary is a
fragment of its own (``.../summary``), loaded after the page.

Requests from htmx (``HX-Request``) get only the part they replace: ``HX-Target:
results`` the table, ``records`` the search bar, facets and table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from assay.errors import QueryError
from assay.server.dependencies import Store
from assay.server.ui import facets as facet_rules
from assay.server.ui import memo
from assay.server.ui.access import Viewer, experiment_for
from assay.server.ui.rendering import PREFIX, PageError, preview, render
from assay.store.records import ExperimentInfo, ExperimentStatus, SearchPage
from assay.store.sql import browse
from assay.store.sql.all_records import all_records_page
from assay.store.sql.lookups import list_projects
from assay.store.sql.narrowed_facets import narrowed_counts
from assay.store.sql.rows_by_evaluation import (
    EVALUATION_SORT,
    row_items,
    span_ids_by_evaluation,
)

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 25
ALL_RECORDS = "@multi_run_mode.@status:*"
"""What the all-runs view searches for an empty query: every record, by its aggregates."""
STATUSES: tuple[str, ...] = get_args(ExperimentStatus)
PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]


# The list ----------------------------------------------------------------------------------


@router.get("/llm/experiments")
def experiments_list(
    request: Request,
    store: Store,
    viewer: Viewer,
    project: str = "",
    dataset: str = "",
    name: str = "",
    status: str = "",
    page: PageNumber = 1,
) -> Response:
    visible = viewer.project_ids
    projects = [p for p in list_projects(store.engine) if viewer.sees(p.id)]
    datasets = [d for d in store.list_datasets(project or None) if viewer.sees(d.project_id)]
    total, ids = browse.experiment_page(
        store.engine,
        project_id=project or None,
        dataset_id=dataset or None,
        name_contains=name.strip() or None,
        status=status if status in STATUSES else None,  # type: ignore[arg-type]
        project_ids=visible,
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )
    infos = [store.get_experiment(experiment_id) for experiment_id in ids]
    for info in infos:
        store.refresh_aggregates(info.id, only_if_stale=True)
    totals = browse.experiment_totals(store.engine, ids)
    labels = sorted({label for item in totals.values() for label in item.evaluations})
    filters = {"project": project, "dataset": dataset, "name": name, "status": status}
    return render(
        request,
        "experiments.html",
        {
            "title": "Experiments",
            "experiments": infos,
            "totals": totals,
            "labels": labels,
            "projects": projects,
            "datasets": datasets,
            "statuses": STATUSES,
            "filters": filters,
            "total": total,
            "page": page,
            "pages": max(1, -(-total // PAGE_SIZE)),
        },
    )


# One experiment ----------------------------------------------------------------------------


def experiment_url(experiment_id: str, **parameters: Any) -> str:
    kept = {
        key: value
        for key, value in parameters.items()
        if value not in (None, "") and not (key == "page" and value == 1)
    }
    query = urlencode(kept)
    return f"{PREFIX}/experiments/{experiment_id}" + (f"?{query}" if query else "")


@dataclass
class Column:
    """A column of the records table: its title and the sort key it links to, if any."""

    title: str
    sort: str | None = None
    numeric: bool = False


@dataclass
class Cell:
    text: str
    css: str = ""
    title: str = ""


@dataclass
class TableRow:
    record_id: str
    idx: int
    run: int | None
    status: str
    error: str
    input: str
    expected: str
    output: str | None
    evaluations: list[Cell]
    duration: Any
    tokens: Any
    cost: Any
    runs: int = 0
    failed_runs: int = 0
    flaky: bool = False
    labels: list[str] = field(default_factory=list)


def _row_cell(metric_type: str, value: Any) -> Cell:
    if value is None:
        return Cell("–", "missing", "no value (the evaluator failed or returned nothing)")
    if metric_type == "boolean" or isinstance(value, bool):
        return Cell("✓ true" if value else "✗ false", "pass" if value else "fail")
    if isinstance(value, float):
        return Cell(f"{value:.3g}", "score")
    return Cell(preview(value, 60), "label")


def _record_cell(metric_type: str, label: str, aggregates: dict[str, Any]) -> Cell:
    name = f"@evaluations.custom.{label}"
    if metric_type == "boolean":
        share = aggregates.get(f"@multi_run_avg.{name}")
        if share is None:
            return Cell("–", "missing")
        css = "pass" if share >= 1 else "fail" if share <= 0 else "mixed"
        return Cell(f"{share * 100:.0f}%", css, "share of runs that are true")
    if metric_type == "score":
        mean = aggregates.get(f"@multi_run_avg.{name}")
        return Cell("–", "missing") if mean is None else Cell(f"{mean:.3g}", "score", "mean")
    mode = aggregates.get(f"@multi_run_mode.{name}")
    return Cell("–", "missing") if mode is None else Cell(preview(mode, 60), "label", "mode")


def table_rows(result: SearchPage, catalog: Mapping[str, str]) -> list[TableRow]:
    labels = sorted(catalog)
    rows = []
    for item in result.items:
        if result.multi_run:
            aggregates = item.get("aggregates") or {}
            shares = [
                aggregates.get(f"@multi_run_avg.@evaluations.custom.{label}")
                for label, kind in catalog.items()
                if kind == "boolean"
            ]
            rows.append(
                TableRow(
                    record_id=str(item["record_id"]),
                    idx=int(item["idx"]),
                    run=None,
                    status=str(aggregates.get("@multi_run_mode.@status") or ""),
                    error="",
                    input=preview(item.get("input")),
                    expected=preview(item.get("expected_output")),
                    output=None,
                    evaluations=[
                        _record_cell(catalog[label], label, aggregates) for label in labels
                    ],
                    duration=aggregates.get("@multi_run_avg.@duration"),
                    tokens=aggregates.get("@multi_run_avg.@trace.total_tokens"),
                    cost=aggregates.get("@multi_run_avg.@trace.estimated_total_cost"),
                    runs=int(item.get("runs") or 0),
                    failed_runs=int(item.get("failed_runs") or 0),
                    flaky=any(share is not None and 0 < share < 1 for share in shares),
                    labels=labels,
                )
            )
        else:
            values = item.get("evaluations") or {}
            error = item.get("error") or {}
            rows.append(
                TableRow(
                    record_id=str(item["record_id"]),
                    idx=int(item["idx"]),
                    run=int(item["run_iteration"]),
                    status=str(item.get("status") or ""),
                    error=f"{error.get('type', '')}: {error.get('message', '')}" if error else "",
                    input=preview(item.get("input")),
                    expected=preview(item.get("expected_output")),
                    output=preview(item.get("output")),
                    evaluations=[_row_cell(catalog[label], values.get(label)) for label in labels],
                    duration=item.get("duration"),
                    tokens=item.get("total_tokens"),
                    cost=item.get("estimated_total_cost"),
                    labels=labels,
                )
            )
    return rows


def columns(catalog: Mapping[str, str], *, multi_run: bool) -> list[Column]:
    """The table's columns; sort keys are those ``store.search`` accepts for the view."""
    found = [Column("#", "idx"), Column("Input"), Column("Expected output"), Column("Output")]
    for label in sorted(catalog):
        kind = catalog[label]
        if multi_run and kind in ("score", "boolean"):
            sort: str | None = f"@multi_run_avg.@evaluations.custom.{label}"
        elif multi_run and kind == "categorical":
            sort = f"@multi_run_mode.@evaluations.custom.{label}"
        elif not multi_run and kind in ("score", "boolean", "categorical"):
            sort = f"{EVALUATION_SORT}{label}"
        else:
            sort = None
        found.append(Column(label, sort, kind in ("score", "boolean")))
    if multi_run:
        found += [
            Column("Duration", "@multi_run_avg.@duration", True),
            Column("Tokens", "@multi_run_avg.@trace.total_tokens", True),
            Column("Est. cost", "@multi_run_avg.@trace.estimated_total_cost", True),
        ]
    else:
        found += [
            Column("Duration", "duration", True),
            Column("Tokens", "total_tokens", True),
            Column("Est. cost", "estimated_total_cost", True),
        ]
    return found


def _iterations(info: ExperimentInfo) -> list[int]:
    return [run.run_iteration for run in info.runs]


@router.get("/llm/experiments/{experiment_id}")
def experiment_page(
    request: Request,
    experiment_id: str,
    store: Store,
    viewer: Viewer,
    run: Annotated[int | None, Query(ge=1)] = None,
    q: str = "",
    sort: str = "",
    page: PageNumber = 1,
) -> Response:
    info = experiment_for(store, experiment_id, viewer)
    iterations = _iterations(info)
    if run is not None and run not in iterations:
        have = f"runs 1..{len(iterations)}" if iterations else "no runs yet"
        raise PageError(404, "No such run", f"Experiment {info.name!r} has {have}, not run {run}")
    multi_run = run is None
    store.refresh_aggregates(info.id, only_if_stale=True)
    version = browse.data_version(store.engine, info.id)
    counts = memo.figures.get(
        ("facets", info.id, run),
        version,
        lambda: browse.facet_counts(store.engine, info.id, run=run),
    )
    specs = facet_rules.specs(counts.catalog)
    parameters = request.query_params
    htmx = request.headers.get("HX-Request") == "true"
    if parameters.get("facets"):
        chosen = {
            spec.key: facet_rules.FacetState(
                checked=set(parameters.getlist(spec.name)),
                low=parameters.get(spec.name + ".min", ""),
                high=parameters.get(spec.name + ".max", ""),
            )
            for spec in specs
        }
        q = facet_rules.compose(q, specs, chosen, multi_run=multi_run)
        canonical = experiment_url(info.id, run=run, q=q, sort=sort)
        if not htmx:
            return RedirectResponse(canonical, status_code=303)
        page = 1
    canonical = experiment_url(info.id, run=run, q=q, sort=sort, page=page)
    counts = memo.figures.get(
        ("narrowed", info.id, run, q),
        version,
        lambda: _narrowed(store, info, counts, specs, q=q, run=run),
    )
    context = records_context(store, info, counts, specs, run=run, q=q, sort=sort, page=page)
    context.update(
        {
            "title": info.name,
            "info": info,
            "iterations": iterations,
            "run": run,
            "run_links": _run_links(info, specs, q=q, run=run),
            "canonical": canonical,
        }
    )
    target = request.headers.get("HX-Target", "") if htmx else ""
    if target in ("results", "records"):
        template = "_results.html" if target == "results" else "_records.html"
        context["oob"] = target == "results"
        return render(request, template, context, headers={"HX-Push-Url": canonical})
    return render(request, "experiment.html", context)


def _narrowed(
    store: Store,
    info: ExperimentInfo,
    counts: browse.FacetCounts,
    specs: list[facet_rules.FacetSpec],
    *,
    q: str,
    run: int | None,
) -> browse.FacetCounts:
    """The checkbox counts among what the rest of the query matches (each facet's own
    terms left out, so that its other values keep their counts and stay choosable).

    Values keep the experiment-wide order, so boxes do not move as the query changes; a
    value nothing matches any more shows 0.
    """
    if not q.strip():
        return counts
    rests = {
        spec.key: facet_rules.compose(
            q, [spec], {spec.key: facet_rules.FacetState()}, multi_run=run is None
        )
        for spec in specs
        if spec.kind == "values"
    }
    with store.engine.connect() as connection:
        narrowed = narrowed_counts(connection, info, counts.catalog, rests, run=run)
    values = dict(counts.values)
    for key, items in narrowed.items():
        found = dict(items)
        order = [value for value, _ in counts.values.get(key, [])]
        order += [value for value, _ in items if value not in order]
        values[key] = [(value, found.get(value, 0)) for value in order]
    return replace(counts, values=values)


def _run_links(
    info: ExperimentInfo, specs: list[facet_rules.FacetSpec], *, q: str, run: int | None
) -> list[tuple[str, str, bool]]:
    """(label, URL, selected) for "All runs" and each run, the query carried across."""
    links = [
        (
            "All runs",
            experiment_url(
                info.id,
                q=q if run is None else facet_rules.retarget(q, specs, to_multi_run=True),
            ),
            run is None,
        )
    ]
    for iteration in _iterations(info):
        carried = q if run is not None else facet_rules.retarget(q, specs, to_multi_run=False)
        links.append(
            (
                f"Run {iteration}",
                experiment_url(info.id, run=iteration, q=carried),
                run == iteration,
            )
        )
    return links


def records_context(
    store: Store,
    info: ExperimentInfo,
    counts: browse.FacetCounts,
    specs: list[facet_rules.FacetSpec],
    *,
    run: int | None,
    q: str,
    sort: str,
    page: int,
) -> dict[str, Any]:
    """What the search bar, the facets and the table show."""
    multi_run_view = run is None
    searched = q if q.strip() or not multi_run_view else ALL_RECORDS
    error: QueryError | None = None
    result: SearchPage | None = None
    by_evaluation = run is not None and sort.lstrip("-+").startswith(EVALUATION_SORT)
    try:
        if searched == ALL_RECORDS and not sort:
            # The view everyone opens first: a range of an index, not a search of everything.
            with store.engine.connect() as connection:
                result = all_records_page(
                    connection, info, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
                )
        else:
            result = store.search(
                info.id,
                searched,
                run=run,
                # Sorted by an evaluation: search gives the count, the page comes below.
                limit=0 if by_evaluation else PAGE_SIZE,
                offset=0 if by_evaluation else (page - 1) * PAGE_SIZE,
                sort=None if by_evaluation else sort or None,
            )
        if by_evaluation and run is not None:
            result = replace(
                result, items=_sorted_rows(store, info, searched, run=run, sort=sort, page=page)
            )
    except QueryError as failure:
        error = failure
    catalog = dict(counts.catalog.evaluations)
    catalog = {label: kind for label, kind in catalog.items() if kind != "json"}
    states = facet_rules.read(q, specs, multi_run=multi_run_view)
    table_multi_run = result.multi_run if result is not None else multi_run_view
    return {
        "q": q,
        "sort": sort,
        "page": page,
        "error": error,
        "result": result,
        "description": (
            "all records"
            if searched == ALL_RECORDS
            else (result.description if result is not None else "")
        ),
        "rows": table_rows(result, catalog) if result is not None else [],
        "columns": columns(catalog, multi_run=table_multi_run),
        "table_multi_run": table_multi_run,
        "specs": specs,
        "states": states,
        "counts": counts,
        "pages": max(1, -(-result.total // PAGE_SIZE)) if result is not None else 1,
        "unit": "records" if table_multi_run or run is not None else "rows",
        "placeholders": _placeholders(specs, counts),
        "link": lambda **changes: experiment_url(
            info.id, **{"run": run, "q": q, "sort": sort, "page": page, **changes}
        ),
    }


SORT_WINDOW = 1000
"""Rows of an evaluation sort kept in order (40 pages): sorting costs the same for a page
or a thousand rows, so the first pages are sorted once per data version, not per page."""


def _sorted_rows(
    store: Store, info: ExperimentInfo, query: str, *, run: int, sort: str, page: int
) -> list[dict[str, Any]]:
    """One page of a run's rows sorted by an evaluation (which ``store.search`` cannot)."""
    offset = (page - 1) * PAGE_SIZE
    with store.engine.connect() as connection:
        if offset + PAGE_SIZE <= SORT_WINDOW:

            def window() -> list[str]:
                return span_ids_by_evaluation(
                    connection, info, query, run=run, sort=sort, limit=SORT_WINDOW, offset=0
                )

            version = browse.data_version(store.engine, info.id)
            ordered = memo.figures.get(("sorted", info.id, run, query, sort), version, window)
            ids = ordered[offset : offset + PAGE_SIZE]
        else:
            ids = span_ids_by_evaluation(
                connection, info, query, run=run, sort=sort, limit=PAGE_SIZE, offset=offset
            )
        return row_items(connection, info.id, ids)


def _placeholders(
    specs: list[facet_rules.FacetSpec], counts: browse.FacetCounts
) -> dict[str, tuple[str, str]]:
    """The smallest and largest value of each range facet, in its input's unit."""
    scale = {"ms": 1e-6, "usd": 1e-9, "": 1.0}
    found = {}
    for spec in specs:
        low, high = counts.ranges.get(spec.key, (None, None))
        found[spec.key] = tuple(
            "" if bound is None else f"{bound * scale[spec.unit]:.4g}" for bound in (low, high)
        )
    return found  # type: ignore[return-value]
