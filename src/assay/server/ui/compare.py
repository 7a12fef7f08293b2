"""The comparison of two or more experiments, each with all its runs or one chosen run.

``/llm/experiments/compare?a=ID&run_a=1&b=ID&run_b=4[&c=ID&run_c=2...]``: the first
experiment is the baseline and every other is compared with it by
:func:`assay.compare.compare_rows` — each metric's value on every side, the paired
difference with its 95% interval and verdict, a bar chart — and the records side by side
(input, expected output, each side's output and evaluations) marked improved, regressed,
changed or unchanged; ``show=changed|improved|regressed`` keeps only those, ``page=``
pages them. ``?e=ID&e=ID`` (the list's checkboxes) is redirected to ``a=..&b=..``.
"""

from __future__ import annotations

import string
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from assay.compare import Comparison, compare_rows
from assay.errors import ExperimentError
from assay.server.dependencies import Store
from assay.server.ui import charts
from assay.server.ui.access import Viewer, experiment_for
from assay.server.ui.rendering import PREFIX, PageError, preview, render
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
    rows: dict[str, list[RowRecord]] = {}
    for info, _ in sides:
        if info.id not in rows:
            rows[info.id] = store.experiment_rows(info.id)
    baseline, baseline_run = sides[0]
    comparisons: list[Comparison] = []
    try:
        for info, run in sides[1:]:
            comparisons.append(
                compare_rows(
                    (baseline, rows[baseline.id]),
                    (info, rows[info.id]),
                    run_a=baseline_run,
                    run_b=run,
                )
            )
    except ExperimentError as error:
        raise PageError(400, "Cannot compare", str(error)) from error
    metrics = _metrics(sides, comparisons)
    shown = SHOWN.get(show)
    # Records: those of the first comparison, marked by every comparison.
    changes = [
        {record.record_id: record.change for record in comparison.records}
        for comparison in comparisons
    ]
    record_ids = [record.record_id for record in comparisons[0].records]
    if shown is not None:
        record_ids = [
            record_id
            for record_id in record_ids
            if any(change.get(record_id) in shown for change in changes)
        ]
    total = len(record_ids)
    record_ids = record_ids[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    by_side = [_rows_by_record(rows[info.id], run) for info, run in sides]
    records = []
    for record_id in record_ids:
        first = next((found[record_id][0] for found in by_side if record_id in found), None)
        records.append(
            {
                "record_id": record_id,
                "idx": first.idx if first else 0,
                "input": preview(first.input_data) if first else "",
                "expected": preview(first.expected_output) if first else "",
                "changes": [change.get(record_id, "missing") for change in changes],
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
            "show": show if show in SHOWN else "all",
            "shows": list(SHOWN),
            "total": total,
            "page": page,
            "pages": max(1, -(-total // PAGE_SIZE)),
            "choices": {
                key: [item for item in items if viewer.sees(item.project_id)]
                for key, items in choices.items()
            },
            "url_for_show": {
                name: compare_url([(info.id, run) for info, run in sides], show=name)
                for name in SHOWN
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


def _metrics(
    sides: list[tuple[ExperimentInfo, int | None]], comparisons: list[Comparison]
) -> list[dict[str, Any]]:
    """Per label: each side's value, and each candidate's difference with the baseline."""
    labels = sorted({label for comparison in comparisons for label in comparison.labels})
    metrics = []
    for label in labels:
        items = [comparison.labels.get(label) for comparison in comparisons]
        present = next(item for item in items if item is not None)
        values = [present.a] + [item.b if item is not None else None for item in items]
        numeric = present.metric_type in ("score", "boolean")
        chart = ""
        if numeric:
            chart = charts.bars(
                [
                    (
                        SIDES[index].upper(),
                        float(value) if isinstance(value, int | float) else None,
                        None,
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
                "comparisons": items,
                "chart": chart,
            }
        )
    return metrics
