"""The comparison of two or more experiments, each with all its runs or one chosen run.

``/llm/experiments/compare?a=ID&run_a=1&b=ID&run_b=4[&c=ID&run_c=2...]``: the first
experiment is the baseline and every other is compared with it by
:func:`assay.compare.compare_values` — each metric's value on every side, the paired
difference with its 95% interval and verdict, a bar chart — and the records side by side
(input, expected output, each side's output and evaluations) marked improved, regressed,
changed or unchanged, and records that some side lacks marked with the sides that have
them; ``show=changed|improved|regressed|one-sided`` keeps only those, ``page=`` pages
them. The comparison reads each side's per-record values (computed in the database); the
inputs and outputs are read for the records on the page only. Each side's value carries
its own 95% interval (from :mod:`assay.store.sql.summary_figures`), drawn as a whisker on
its bar. ``?e=ID&e=ID``
(the list's checkboxes) is redirected to ``a=..&b=..``.
"""

from __future__ import annotations

import functools
import string
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from assay.aggregation import EvaluationSummary
from assay.compare import Comparison, compare_values, select_runs
from assay.errors import ExperimentError
from assay.server.dependencies import Store
from assay.server.ui import charts, memo
from assay.server.ui.access import Viewer, experiment_for
from assay.server.ui.rendering import PREFIX, PageError, preview, render
from assay.server.ui.summary import summary_of
from assay.store.collector import collector_paused
from assay.store.comparison_values import ComparisonValues
from assay.store.records import ExperimentFilter, ExperimentInfo, RowRecord
from assay.store.sql import browse
from assay.store.sql.page_rows import page_rows

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
    # Each side is its records' values per label, computed in the database; rows (inputs,
    # outputs) are read below for the records on the page only.
    values: dict[tuple[str, int | None], ComparisonValues] = {}
    baseline, baseline_run = sides[0]
    comparisons: list[Comparison] = []
    try:
        for index, (info, run) in enumerate(sides):
            select_runs(info, run, "a" if index == 0 else "b")  # before reading anything
        # Each experiment's data version, read once: what the kept values and comparisons
        # of this page are valid for. Read after the aggregates are brought up to date, as
        # the across-run values are about to (which moves the version's row mark): read
        # before, it would be stale by the next page, which would compare all over again.
        # The summaries below read them too.
        for experiment_id in {info.id for info, _ in sides}:
            store.refresh_aggregates(experiment_id, only_if_stale=True)
        versions = {info.id: browse.data_version(store.engine, info.id) for info, _ in sides}
        for info, run in sides:
            if (info.id, run) not in values:
                values[(info.id, run)] = SIDE_VALUES.get(
                    (info.id, run),
                    versions[info.id],
                    functools.partial(store.comparison_values, info.id, run=run),
                )
        changes: list[dict[str, str]] = []
        for info, run in sides[1:]:
            comparison, changed = _compared((baseline, baseline_run), (info, run), values, versions)
            comparisons.append(comparison)
            changes.append(changed)
    except ExperimentError as error:
        raise PageError(400, "Cannot compare", str(error)) from error
    metrics = _metrics(sides, comparisons, _side_summaries(store, sides))
    # Records: every record of any side, marked by every comparison (``changes``); a
    # record some side lacks is listed too, marked with the sides that have it.
    side_values = [values[(info.id, run)] for info, run in sides]
    positions = [
        {record_id: n for n, record_id in enumerate(found.record_ids)} for found in side_values
    ]
    first_idx: dict[str, int] = {}
    for found in side_values:
        for record_id, idx in zip(found.record_ids, found.idx, strict=True):
            first_idx.setdefault(record_id, idx)
    record_ids = sorted(first_idx, key=lambda record_id: (first_idx[record_id], record_id))
    one_sided = {
        record_id
        for record_id in record_ids
        if not all(record_id in position for position in positions)
    }
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
    by_side = _page_rows(store, sides, record_ids)
    records = []
    for record_id in record_ids:
        first = next(found[record_id][0] for found in by_side if found.get(record_id))
        records.append(
            {
                "record_id": record_id,
                "idx": first_idx[record_id],
                "input": preview(first.input_data),
                "expected": preview(first.expected_output),
                "changes": [change.get(record_id, "missing") for change in changes],
                "only_in": [
                    SIDES[index].upper()
                    for index, position in enumerate(positions)
                    if record_id in position
                ]
                if record_id in one_sided
                else [],
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


SIDE_VALUES = memo.VersionedMemo(size=6)
"""The per-record values of the sides compared last, until their rows change: paging or
filtering a comparison reads none again. Few, as each holds every record's values (a few
MB at 100,000 records)."""


COMPARISONS = memo.VersionedMemo(size=6)
"""The comparisons shown last, with each record's change, until either side's rows
change: paging or filtering a comparison of 100,000 records compares none again."""


def _compared(
    a: tuple[ExperimentInfo, int | None],
    b: tuple[ExperimentInfo, int | None],
    values: dict[tuple[str, int | None], ComparisonValues],
    versions: dict[str, tuple[int, int, int]],
) -> tuple[Comparison, dict[str, str]]:
    """Side b compared with the baseline a, and each shared record's change."""
    (info_a, run_a), (info_b, run_b) = a, b

    def compute() -> tuple[Comparison, dict[str, str]]:
        comparison = compare_values(
            (info_a, values[(info_a.id, run_a)]),
            (info_b, values[(info_b.id, run_b)]),
            run_a=run_a,
            run_b=run_b,
        )
        with collector_paused():
            return comparison, {record.record_id: record.change for record in comparison.records}

    version = (*versions[info_a.id], *versions[info_b.id])
    return COMPARISONS.get(((info_a.id, run_a), (info_b.id, run_b)), version, compute)


def _page_rows(
    store: Store, sides: list[tuple[ExperimentInfo, int | None]], record_ids: list[str]
) -> list[dict[str, list[RowRecord]]]:
    """Each side's rows of the page's records, by record, in run order."""
    read: dict[tuple[str, int | None], dict[str, list[RowRecord]]] = {}
    for info, run in sides:
        if (info.id, run) in read:
            continue
        runs = [run] if run is not None else [item.run_iteration for item in info.runs]
        found: dict[str, list[RowRecord]] = {}
        for row in page_rows(store.engine, info.id, record_ids, runs=runs):
            found.setdefault(row.record_id, []).append(row)
        read[(info.id, run)] = found
    return [read[(info.id, run)] for info, run in sides]


def _side_summaries(
    store: Store, sides: list[tuple[ExperimentInfo, int | None]]
) -> list[dict[str, EvaluationSummary]]:
    """Each side's summary (for its interval), computed in the database from aggregates
    that the page has brought up to date."""
    found: dict[tuple[str, int | None], dict[str, EvaluationSummary]] = {}
    for info, run in sides:
        if (info.id, run) in found:
            continue
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
