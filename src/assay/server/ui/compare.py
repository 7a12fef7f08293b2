"""The comparison of two or more experiments, each with all its runs or one chosen run.

``/llm/experiments/compare?a=ID&run_a=1&b=ID&run_b=4[&c=ID&run_c=2...]``: the first
experiment is the baseline and every other is compared with it by
:func:`assay.compare.compare_rows` — each metric's value on every side, the paired
difference with its 95% interval and verdict, a bar chart — and the records side by side
(input, expected output, each side's output and evaluations) marked improved, regressed,
changed or unchanged, and records that some side lacks marked with the sides that have
them; ``show=changed|improved|regressed|one-sided`` keeps only those, ``page=`` pages
them. Each side's value carries its own 95% interval (from
:mod:`assay.store.sql.summary_figures`), drawn as a whisker on its bar. ``?e=ID&e=ID``
(the list's checkboxes) is redirected to ``a=..&b=..``.
"""

from __future__ import annotations

import string
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from assay.aggregation import EvaluationSummary
from assay.compare import Comparison, compare_rows
from assay.errors import ExperimentError
from assay.server.dependencies import Store
from assay.server.ui import charts
from assay.server.ui.access import Viewer, experiment_for
from assay.server.ui.rendering import PREFIX, PageError, preview, render
from assay.server.ui.summary import summary_of
from assay.store.records import ExperimentFilter, ExperimentInfo, RowRecord

router = APIRouter(include_in_schema=False)
SIDES = string.ascii_lowercase[:8]
PAGE_SIZE = 25
SHOWN = {
    "all": None,
    "changed": {"improved", "regressed", "mixed", "changed"},
    "improved": {"improved", "mixed"},
    "regressed": {"regressed", "mixed"},
}
SHOWS = [*SHOWN, "one-sided"]
"""The record filters: by change, or ``one-sided`` for records some side does not have."""


def compare_url(sides: list[tuple[str, int | None]], **extra: Any) -> str:
    parameters: list[tuple[str, str]] = []
    for letter, (experiment_id, run) in zip(SIDES, sides, strict=False):
        parameters.append((letter, experiment_id))
        if run is not None:
            parameters.append((f"run_{letter}", str(run)))
    parameters += [(key, str(value)) for key, value in extra.items() if value not in (None, "")]
    return f"{PREFIX}/experiments/compare?{urlencode(parameters)}"


@router.get("/llm/experiments/compare")
def comparison_page(
    request: Request,
    store: Store,
    viewer: Viewer,
    e: Annotated[list[str] | None, Query()] = None,
    show: str = "all",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    if e:
        # The oldest experiment is the baseline, whatever order they were ticked in.
        chosen = sorted(
            (experiment_for(store, item, viewer) for item in dict.fromkeys(e)),
            key=lambda info: info.created_at,
        )
        return RedirectResponse(compare_url([(info.id, None) for info in chosen]), status_code=303)
    parameters = request.query_params
    sides: list[tuple[ExperimentInfo, int | None]] = []
    for letter in SIDES:
        experiment_id = parameters.get(letter)
        if not experiment_id:
            break
        run_text = parameters.get(f"run_{letter}", "")
        try:
            run = int(run_text) if run_text else None
        except ValueError as error:
            raise PageError(400, "Bad run", f"run_{letter}={run_text!r} is not a number") from error
        sides.append((experiment_for(store, experiment_id, viewer), run))
    if len(sides) < 2:
        raise PageError(
            400,
            "Choose two experiments",
            "A comparison needs two experiments or more: ?a=ID&b=ID (add run_a=N to compare "
            "one run); select them on the experiments list",
        )
    # Only the compared runs' rows: a side with one run chosen does not load the others.
    rows: dict[tuple[str, int | None], list[RowRecord]] = {}
    for info, run in sides:
        if (info.id, run) not in rows:
            rows[(info.id, run)] = store.experiment_rows(info.id, run_iteration=run)
    baseline, baseline_run = sides[0]
    comparisons: list[Comparison] = []
    try:
        for info, run in sides[1:]:
            comparisons.append(
                compare_rows(
                    (baseline, rows[(baseline.id, baseline_run)]),
                    (info, rows[(info.id, run)]),
                    run_a=baseline_run,
                    run_b=run,
                )
            )
    except ExperimentError as error:
        raise PageError(400, "Cannot compare", str(error)) from error
    metrics = _metrics(sides, comparisons, _side_summaries(store, sides))
    # Records: every record of any side, marked by every comparison; a record some side
    # lacks is listed too, marked with the sides that have it.
    changes = [
        {record.record_id: record.change for record in comparison.records}
        for comparison in comparisons
    ]
    by_side = [_rows_by_record(rows[(info.id, run)], run) for info, run in sides]
    first_rows: dict[str, RowRecord] = {}
    for found in by_side:
        for record_id, items in found.items():
            first_rows.setdefault(record_id, items[0])
    record_ids = sorted(first_rows, key=lambda record_id: (first_rows[record_id].idx, record_id))
    present = {
        record_id: [
            SIDES[index].upper() for index, found in enumerate(by_side) if record_id in found
        ]
        for record_id in record_ids
    }
    one_sided = {record_id for record_id, where in present.items() if len(where) < len(sides)}
    if show == "one-sided":
        record_ids = [record_id for record_id in record_ids if record_id in one_sided]
    elif (shown := SHOWN.get(show)) is not None:
        record_ids = [
            record_id
            for record_id in record_ids
            if any(change.get(record_id) in shown for change in changes)
        ]
    total = len(record_ids)
    record_ids = record_ids[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    records = []
    for record_id in record_ids:
        first = first_rows[record_id]
        records.append(
            {
                "record_id": record_id,
                "idx": first.idx,
                "input": preview(first.input_data),
                "expected": preview(first.expected_output),
                "changes": [change.get(record_id, "missing") for change in changes],
                "only_in": present[record_id] if record_id in one_sided else [],
                "sides": [
                    [
                        {
                            "run": row.run_iteration,
                            "output": preview(row.output, 100),
                            "error": row.error.message if row.error else "",
                            "evaluations": {
                                evaluation.label: evaluation.value
                                for evaluation in row.evaluations
                                if evaluation.error is None
                            },
                        }
                        for row in found.get(record_id, [])
                    ]
                    for found in by_side
                ],
            }
        )
    choices = {
        info.id: store.list_experiments(ExperimentFilter(dataset_id=info.dataset_id, limit=50))
        for info, _ in sides
    }
    side_urls = [(info, run) for info, run in sides]
    return render(
        request,
        "compare.html",
        {
            "title": "Compare " + " · ".join(info.name for info, _ in sides),
            "sides": side_urls,
            "letters": SIDES,
            "comparisons": comparisons,
            "metrics": metrics,
            "records": records,
            "labels": sorted({label for comparison in comparisons for label in comparison.labels}),
            "show": show if show in SHOWS else "all",
            "shows": SHOWS,
            "one_sided": len(one_sided),
            "total": total,
            "page": page,
            "pages": max(1, -(-total // PAGE_SIZE)),
            "choices": {
                key: [item for item in items if viewer.sees(item.project_id)]
                for key, items in choices.items()
            },
            "url_for_show": {
                name: compare_url([(info.id, run) for info, run in sides], show=name)
                for name in SHOWS
            },
            "page_url": lambda number: compare_url(
                [(info.id, run) for info, run in sides], show=show, page=number
            ),
        },
    )


def _rows_by_record(rows: list[RowRecord], run: int | None) -> dict[str, list[RowRecord]]:
    found: dict[str, list[RowRecord]] = {}
    for row in rows:
        if run is None or row.run_iteration == run:
            found.setdefault(row.record_id, []).append(row)
    for items in found.values():
        items.sort(key=lambda row: row.run_iteration)
    return found


def _side_summaries(
    store: Store, sides: list[tuple[ExperimentInfo, int | None]]
) -> list[dict[str, EvaluationSummary]]:
    """Each side's summary (for its interval), computed in the database."""
    found: dict[tuple[str, int | None], dict[str, EvaluationSummary]] = {}
    for info, run in sides:
        if (info.id, run) in found:
            continue
        store.refresh_aggregates(info.id, only_if_stale=True)
        found[(info.id, run)] = summary_of(store, info, run=run).evaluations
    return [found[(info.id, run)] for info, run in sides]


def _metrics(
    sides: list[tuple[ExperimentInfo, int | None]],
    comparisons: list[Comparison],
    summaries: list[dict[str, EvaluationSummary]],
) -> list[dict[str, Any]]:
    """Per label: each side's value and 95% interval, and each candidate's difference with
    the baseline."""
    labels = sorted({label for comparison in comparisons for label in comparison.labels})
    metrics = []
    for label in labels:
        items = [comparison.labels.get(label) for comparison in comparisons]
        present = next(item for item in items if item is not None)
        values = [present.a] + [item.b if item is not None else None for item in items]
        intervals = [summary[label]["ci95"] if label in summary else None for summary in summaries]
        numeric = present.metric_type in ("score", "boolean")
        chart = ""
        if numeric:
            chart = charts.bars(
                [
                    (
                        SIDES[index].upper(),
                        float(value) if isinstance(value, int | float) else None,
                        intervals[index],
                    )
                    for index, value in enumerate(values)
                ],
                unit_interval=present.metric_type == "boolean",
            )
        metrics.append(
            {
                "label": label,
                "metric_type": present.metric_type,
                "values": values,
                "intervals": intervals if numeric else [None] * len(values),
                "comparisons": items,
                "chart": chart,
            }
        )
    return metrics
