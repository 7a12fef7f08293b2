"""A dataset's page: its records in a version, its versions, and the experiments on each.

``/llm/datasets/{id}?version=N&page=`` lists the records of version N (default: the
current one), every version with its record count, and which experiments ran on which
version, newest first. Only the shown page of records is read (``browse.dataset_page``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from assay.server.dependencies import Store
from assay.server.ui.access import Viewer, dataset_for
from assay.server.ui.rendering import PageError, render
from assay.store.records import ExperimentFilter, ExperimentInfo
from assay.store.sql import browse

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50


@router.get("/llm/datasets/{dataset_id}")
def dataset_page(
    request: Request,
    dataset_id: str,
    store: Store,
    viewer: Viewer,
    version: Annotated[int | None, Query(ge=0)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    info = dataset_for(store, dataset_id, viewer)
    versions = store.dataset_versions(info.id)
    shown = version or info.current_version
    if versions and shown not in {item.version for item in versions}:
        raise PageError(404, "No such version", f"Dataset {info.name!r} has no version {shown}")
    total, records = browse.dataset_page(
        store.engine, info.id, version=shown, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    experiments = store.list_experiments(ExperimentFilter(dataset_id=info.id))
    by_version: dict[int, list[ExperimentInfo]] = {}
    for experiment in experiments:
        by_version.setdefault(experiment.dataset_version, []).append(experiment)
    return render(
        request,
        "dataset.html",
        {
            "title": info.name,
            "info": info,
            "versions": sorted(versions, key=lambda item: -item.version),
            "version": shown,
            "records": records,
            "total": total,
            "page": page,
            "page_size": PAGE_SIZE,
            "pages": max(1, -(-total // PAGE_SIZE)),
            "by_version": by_version,
            "experiments": experiments,
        },
    )
