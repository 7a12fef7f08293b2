"""Experiments: create (with ``run_count``), status, get, and list with ``aggregate_data``."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from assay.aggregation import EvaluationSummary, summarize
from assay.errors import DatasetNotFoundError, ExperimentNotFoundError
from assay.server.auth import Access, Caller
from assay.server.dependencies import Store
from assay.server.jsonapi import (
    JsonApiResponse,
    bad_parameter,
    decode_cursor,
    document,
    encode_cursor,
    invalid,
    not_found,
    resource,
)
from assay.server.wire import ExperimentBody, ExperimentUpdateBody
from assay.store.records import ExperimentFilter, ExperimentInfo, ExperimentSpec
from assay.store.sql.backend import SqlBackend
from assay.store.sql.ingest import ensure_runs
from assay.store.sql.lookups import get_project

router = APIRouter(tags=["experiments"])
logger = logging.getLogger("assay.server")
_ATTRIBUTES = "/data/attributes"


def experiment_resource(
    info: ExperimentInfo, *, aggregate_data: dict[str, EvaluationSummary] | None = None
) -> dict[str, Any]:
    """An experiment with ddtrace's attribute names (``metadata.tags`` as ``k:v``)."""
    attributes: dict[str, Any] = {
        "name": info.name,
        "experiment": info.name,
        "description": info.description,
        "project_id": info.project_id,
        "project_name": info.project_name,
        "dataset_id": info.dataset_id,
        "dataset_name": info.dataset_name,
        "dataset_version": info.dataset_version,
        "config": info.config,
        "run_count": info.run_count,
        "metadata": {"tags": [f"{key}:{value}" for key, value in info.tags.items()]},
        "status": info.status,
        "error": info.error,
        "parent_experiment_id": info.parent_experiment_id,
        "runs": [{"run_id": r.run_id, "run_iteration": r.run_iteration} for r in info.runs],
        "created_at": info.created_at,
        "updated_at": info.updated_at,
    }
    if aggregate_data is not None:
        attributes["aggregate_data"] = aggregate_data
    return resource("experiments", info.id, attributes)


def aggregate_data(store: SqlBackend, info: ExperimentInfo) -> dict[str, EvaluationSummary]:
    """The summary of every evaluation, by the seed's rules (as the SDK's ``summary()``)."""
    rows = store.experiment_rows(info.id)
    return summarize(rows, [run.run_iteration for run in info.runs])


def experiment_or_404(store: SqlBackend, experiment_id: str, caller: Access) -> ExperimentInfo:
    caller.check_experiment(store, experiment_id, parameter="experiment_id")
    try:
        return store.get_experiment(experiment_id)
    except ExperimentNotFoundError as error:
        raise not_found(str(error), parameter="experiment_id") from error


def _tags(metadata: dict[str, Any] | None) -> dict[str, str]:
    """``metadata.tags`` (``k:v`` strings) as a dict; other metadata keys become tags too."""
    if not metadata:
        return {}
    listed = metadata.get("tags") or []
    if not isinstance(listed, list) or not all(isinstance(tag, str) for tag in listed):
        raise invalid(
            f"metadata.tags {listed!r} is not a list of 'key:value' strings",
            pointer=f"{_ATTRIBUTES}/metadata/tags",
        )
    tags = {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in metadata.items()
        if key != "tags"
    }
    for tag in listed:
        key, _, value = tag.partition(":")
        tags[key] = value
    return tags


@router.post("/experiments", summary="Create an experiment with run_count runs")
def create_experiment(body: ExperimentBody, store: Store, caller: Caller) -> JsonApiResponse:
    attributes = body.data.attributes
    project_id = attributes.project_id
    if not caller.sees(project_id) or get_project(store.engine, project_id) is None:
        raise not_found(f"No project with id {project_id!r}", pointer=f"{_ATTRIBUTES}/project_id")
    caller.check_dataset(store, attributes.dataset_id, pointer=f"{_ATTRIBUTES}/dataset_id")
    try:
        dataset = store.get_dataset(attributes.dataset_id)
    except DatasetNotFoundError as error:
        raise not_found(str(error), pointer=f"{_ATTRIBUTES}/dataset_id") from error
    version = attributes.dataset_version
    if version is None:
        version = dataset.current_version
    elif version > dataset.current_version:
        raise invalid(
            f"Dataset {dataset.name!r} has no version {version}; its versions are 0 to "
            f"{dataset.current_version}",
            pointer=f"{_ATTRIBUTES}/dataset_version",
        )
    parent = attributes.parent_experiment_id
    if parent is not None:
        caller.check_experiment(store, parent, pointer=f"{_ATTRIBUTES}/parent_experiment_id")
        try:
            store.get_experiment(parent)
        except ExperimentNotFoundError as error:
            pointer = f"{_ATTRIBUTES}/parent_experiment_id"
            raise not_found(str(error), pointer=pointer) from error
    run_count = attributes.run_count or 1
    spec = ExperimentSpec(
        project_id=attributes.project_id,
        dataset_id=dataset.id,
        dataset_version=version,
        name=attributes.name,
        description=attributes.description or "",
        config=attributes.config or {},
        tags=_tags(attributes.metadata),
        run_count=run_count,
        parent_experiment_id=parent,
    )
    created = store.create_experiment(spec, runs=())
    # The client names its runs (run_id tags) only when it posts them: until then each
    # run has a placeholder id derived from the experiment's.
    with store.engine.begin() as connection:
        ensure_runs(connection, created.id, run_count)
    logger.info("experiment %r (%s) created with %d run(s)", spec.name, created.id, run_count)
    return document(experiment_resource(store.get_experiment(created.id)))


@router.patch("/experiments/{experiment_id}", summary="Set an experiment's status and error")
def update_experiment(
    experiment_id: str, body: ExperimentUpdateBody, store: Store, caller: Caller
) -> JsonApiResponse:
    info = experiment_or_404(store, experiment_id, caller)
    attributes = body.data.attributes
    if attributes.status is not None or attributes.error is not None:
        store.set_experiment_status(
            experiment_id, attributes.status or info.status, attributes.error
        )
        info = store.get_experiment(experiment_id)
        error = f": {_first_line(info.error)}" if info.error else ""
        logger.info("experiment %r (%s) %s%s", info.name, info.id, info.status, error)
    return document(experiment_resource(info))


@router.get("/experiments/{experiment_id}", summary="Get an experiment with its aggregates")
def get_experiment(experiment_id: str, store: Store, caller: Caller) -> JsonApiResponse:
    info = experiment_or_404(store, experiment_id, caller)
    return document(experiment_resource(info, aggregate_data=aggregate_data(store, info)))


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def _metadata_filter(text: str | None) -> dict[str, str]:
    """``filter[metadata]``: compact JSON such as ``{"tags": ["git.commit.sha:abc"]}``."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise bad_parameter(
            f"filter[metadata] {text[:60]!r} is not a JSON object such as "
            '{"tags":["git.commit.sha:abc123"]}',
            parameter="filter[metadata]",
        )
    try:
        return _tags(value)
    except Exception as error:
        raise bad_parameter(str(error), parameter="filter[metadata]") from error


@router.get("/experiments", summary="List experiments, newest first, with aggregate_data")
def list_experiments(
    store: Store,
    caller: Caller,
    ids: Annotated[list[str], Query(alias="filter[id]")] = [],  # noqa: B006 - FastAPI copies it
    name: Annotated[str | None, Query(alias="filter[experiment]")] = None,
    project_id: Annotated[str | None, Query(alias="filter[project_id]")] = None,
    dataset_id: Annotated[str | None, Query(alias="filter[dataset_id]")] = None,
    parents: Annotated[list[str], Query(alias="filter[parent_experiment_id]")] = [],  # noqa: B006
    metadata: Annotated[str | None, Query(alias="filter[metadata]")] = None,
    is_deleted: Annotated[bool, Query(alias="filter[is_deleted]")] = False,
    limit: Annotated[int, Query(alias="page[limit]", ge=1, le=5000)] = 100,
    cursor: Annotated[str | None, Query(alias="page[cursor]")] = None,
) -> JsonApiResponse:
    state = decode_cursor(cursor, fields={"created_at": str, "id": str})
    wanted_tags = _metadata_filter(metadata)
    where = ExperimentFilter(
        name=name,
        project_id=project_id,
        dataset_id=dataset_id,
        parent_experiment_ids=tuple(parents),
        tags=wanted_tags,
    )
    # Experiments are never deleted here: asking for deleted ones finds none.
    found = [] if is_deleted else store.list_experiments(where)
    if caller.limited:
        found = [info for info in found if caller.sees(info.project_id)]
    if ids:
        wanted = set(ids)
        found = [info for info in found if info.id in wanted]
    if state is not None:
        try:
            after_position = (datetime.fromisoformat(state["created_at"]), state["id"])
        except ValueError:
            after_position = (datetime.min, "")
        if after_position[0].tzinfo is None:
            raise bad_parameter(
                "page[cursor] is not a cursor of this list; use meta.after of the previous page",
                parameter="page[cursor]",
            )
        # Newest first, ties by id: the rest is what sorts after the cursor's experiment.
        found = [
            info
            for info in found
            if info.created_at < after_position[0]
            or (info.created_at == after_position[0] and info.id > after_position[1])
        ]
    page = found[:limit]
    after = None
    if len(found) > limit:
        last = page[-1]
        after = encode_cursor({"created_at": last.created_at.isoformat(), "id": last.id})
    return document(
        [experiment_resource(info, aggregate_data=aggregate_data(store, info)) for info in page],
        meta={"after": after} if after else None,
    )
