"""Comparisons over HTTP: the same ``assay.compare`` as the SDK and the CLI, as JSON:API.

``GET /experiments/compare?a=BASELINE&b=CANDIDATE[&run_a=1&run_b=4]`` gives each
evaluation's values, paired difference, interval, p-value and verdict, and each shared
record's changes (the attributes are ``Comparison.to_dict()``). ``max_drop=LABEL=0.02`` and
``lower_is_better=LABEL`` may repeat.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from assay.compare import compare_values, select_runs
from assay.errors import ExperimentError
from assay.server.api.experiments import experiment_or_404
from assay.server.auth import Caller
from assay.server.dependencies import Store
from assay.server.jsonapi import JsonApiResponse, bad_parameter, document, resource

router = APIRouter(tags=["comparisons"])
Run = Annotated[int | None, Query(ge=1)]


def _drops(items: list[str]) -> dict[str, float]:
    drops: dict[str, float] = {}
    for item in items:
        label, _, number = item.rpartition("=")
        try:
            drops[label] = float(number)
        except ValueError:
            label = ""
        if not label or drops.get(label, -1.0) < 0:
            raise bad_parameter(
                f"max_drop {item!r} is not LABEL=DROP with a non-negative number, as in "
                "max_drop=correct=0.02",
                parameter="max_drop",
            )
    return drops


@router.get(
    "/experiments/compare",
    summary="Compare an experiment (b) with a baseline (a), or one run of each",
)
def compare_experiments(
    store: Store,
    caller: Caller,
    a: Annotated[str, Query(description="The baseline experiment's id")],
    b: Annotated[str, Query(description="The candidate experiment's id")],
    run_a: Run = None,
    run_b: Run = None,
    max_drop: Annotated[list[str] | None, Query()] = None,
    lower_is_better: Annotated[list[str] | None, Query()] = None,
) -> JsonApiResponse:
    baseline = experiment_or_404(store, a, caller)
    candidate = experiment_or_404(store, b, caller)
    for info, run, parameter in ((baseline, run_a, "run_a"), (candidate, run_b, "run_b")):
        try:
            select_runs(info, run, parameter[-1])
        except ExperimentError as error:
            raise bad_parameter(str(error), parameter=parameter) from error
    try:
        # Each side's per-record values, computed in the database: never the rows.
        comparison = compare_values(
            (baseline, store.comparison_values(baseline.id, run=run_a)),
            (candidate, store.comparison_values(candidate.id, run=run_b)),
            run_a=run_a,
            run_b=run_b,
            max_drop=_drops(max_drop or []),
            lower_is_better=lower_is_better or (),
        )
    except ExperimentError as error:  # a max_drop label neither side evaluates
        raise bad_parameter(str(error), parameter="max_drop") from error
    return document(resource("comparisons", f"{baseline.id}..{candidate.id}", comparison.to_dict()))
