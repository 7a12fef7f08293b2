"""Assay's own routes for its SDK's remote backend (``/sdk/...``), in the JSON:API style.

``LLMObs.enable(site="http://host:port")`` gives the SDK an ``HttpBackend``
(``assay.store.http``) that must return exactly what a local ``SqlBackend`` returns. The
Datadog-shaped routes carry most of that; these carry the rest, losslessly: whole rows
with their evaluations, child spans and token roll-ups, summary evaluations, per-record
aggregates, experiments with the fields that resuming checks (task, evaluators, sample,
runner) and the run ids the SDK chose, and datasets by id alone (deleted ones included,
as experiments pinned to them stay readable).

Each route calls the ``SqlBackend`` method of the same name, so a store error here is the
one the SDK would get locally (a 404 for a missing id, a 422 carrying the store's message
for a refused dataset change). The bodies are in ``assay.server.sdk_wire``; they may be
gzip-compressed (``Content-Encoding: gzip``), and large answers are compressed for
clients that accept it.

A batch of rows is written in one transaction; the store's unique (experiment, span id)
index makes a batch sent twice a 409, which is how a client that lost the first answer
knows it was written.

The ``sdk`` segment comes before every parameterised route: ``/sdk/datasets/...`` is not
the datasets of a project with id ``sdk`` (project ids are UUIDs).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from assay.errors import ExperimentNotFoundError
from assay.server.api.datasets import dataset_resource as datadog_dataset_resource
from assay.server.api.datasets import record_resource
from assay.server.auth import Access, Caller
from assay.server.dependencies import Store
from assay.server.jsonapi import MEDIA_TYPE, bad_parameter, invalid, not_found, pointer
from assay.server.sdk_wire import (
    BaselineBody,
    DatasetChangesBody,
    ExperimentSpecBody,
    ExperimentStateBody,
    RowsBody,
    SummaryEvaluationsBody,
)
from assay.server.wire import INT64, MAX_RUN_COUNT
from assay.store.http import encoding
from assay.store.records import (
    DatasetInfo,
    ExperimentFilter,
    ExperimentInfo,
    ExperimentStatus,
    PinnedBaseline,
)
from assay.store.sql.backend import SqlBackend
from assay.store.sql.bulk import encode_json
from assay.store.sql.lookups import get_project

MAX_INFLATED_BYTES = 512 * 1024 * 1024
"""The most a gzip body may inflate to; the client sends a few MiB per request."""
GZIP_ABOVE = 16 * 1024


# Gzip request bodies -------------------------------------------------------------------------


class _InflatingRequest(Request):
    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            raw = await super().body()
            coding = self.headers.get("content-encoding", "").strip().lower()
            if coding == "gzip":
                raw = _inflate(raw)
            elif coding not in ("", "identity"):
                raise HTTPException(
                    415, f"Content-Encoding {coding!r} is not supported; send gzip or identity"
                )
            self._body = raw
        return self._body


def _inflate(raw: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(raw, MAX_INFLATED_BYTES + 1)
    except zlib.error as error:
        raise HTTPException(400, f"The body is not valid gzip ({error})") from error
    if len(data) > MAX_INFLATED_BYTES:
        raise HTTPException(
            413, f"The body inflates to more than {MAX_INFLATED_BYTES} bytes; send less at once"
        )
    if not inflater.eof:
        raise HTTPException(400, "The gzip body is truncated")
    return data


class _InflatingRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def inflating(request: Request) -> Response:
            return await handle(_InflatingRequest(request.scope, request.receive))

        return inflating


router = APIRouter(prefix="/sdk", tags=["remote SDK"], route_class=_InflatingRoute)


def _answer(request: Request, document: Any) -> Response:
    """A JSON:API document, gzip-compressed when large and the client accepts it."""
    body = (encode_json(document) or "null").encode("utf-8")
    headers = {"Vary": "Accept-Encoding"}
    if len(body) > GZIP_ABOVE and "gzip" in request.headers.get("accept-encoding", ""):
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=MEDIA_TYPE, headers=headers)


# Experiments ---------------------------------------------------------------------------------

RunFilter = Annotated[int | None, Query(alias="filter[run_iteration]", ge=1, le=MAX_RUN_COUNT)]


def _experiment(store: SqlBackend, experiment_id: str, caller: Access) -> ExperimentInfo:
    caller.check_experiment(store, experiment_id, parameter="experiment_id")
    try:
        return store.get_experiment(experiment_id)
    except ExperimentNotFoundError as error:
        raise not_found(str(error), parameter="experiment_id") from error


def _experiment_resource(info: ExperimentInfo) -> dict[str, Any]:
    return encoding.resource("experiments", info.id, encoding.experiment_json(info))


@router.post("/experiments", summary="Create an experiment with its runs (remote SDK)")
def create_experiment(
    request: Request, body: ExperimentSpecBody, store: Store, caller: Caller
) -> Response:
    attributes = body.data.attributes
    where = "/data/attributes"
    project_id = attributes.project_id
    if not caller.sees(project_id) or get_project(store.engine, project_id) is None:
        raise not_found(f"No project with id {project_id!r}", pointer=f"{where}/project_id")
    caller.check_dataset(store, attributes.dataset_id, pointer=f"{where}/dataset_id")
    # Deleted datasets too: a re-scored experiment may be pinned to one.
    store.dataset_versions(attributes.dataset_id)
    if attributes.parent_experiment_id is not None:
        parent = f"{where}/parent_experiment_id"
        caller.check_experiment(store, attributes.parent_experiment_id, pointer=parent)
        try:
            store.get_experiment(attributes.parent_experiment_id)
        except ExperimentNotFoundError as error:
            raise not_found(str(error), pointer=parent) from error
    iterations = [run.run_iteration for run in attributes.runs]
    if len(set(iterations)) != len(iterations):
        raise invalid(f"runs: run iterations {iterations} repeat", pointer=f"{where}/runs")
    created = store.create_experiment(attributes.spec(), attributes.run_infos())
    return _answer(request, {"data": _experiment_resource(created)})


def _tags_filter(text: str | None) -> dict[str, str]:
    if text is None:
        return {}
    try:
        tags = json.loads(text)
    except ValueError:
        tags = None
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise bad_parameter(
            f"filter[tags] {text[:60]!r} is not a JSON object of strings such as "
            '{"team":"evals"}',
            parameter="filter[tags]",
        )
    return tags


@router.get("/experiments", summary="List experiments, newest first, in full (remote SDK)")
def list_experiments(
    request: Request,
    store: Store,
    caller: Caller,
    name: Annotated[str | None, Query(alias="filter[name]")] = None,
    project_id: Annotated[str | None, Query(alias="filter[project_id]")] = None,
    dataset_id: Annotated[str | None, Query(alias="filter[dataset_id]")] = None,
    status: Annotated[ExperimentStatus | None, Query(alias="filter[status]")] = None,
    parents: Annotated[list[str], Query(alias="filter[parent_experiment_id]")] = [],  # noqa: B006
    tags: Annotated[str | None, Query(alias="filter[tags]")] = None,
    limit: Annotated[int | None, Query(alias="page[limit]", ge=0, le=INT64)] = None,
) -> Response:
    where = ExperimentFilter(
        name=name,
        project_id=project_id,
        dataset_id=dataset_id,
        status=status,
        parent_experiment_ids=tuple(parents),
        tags=_tags_filter(tags),
        limit=None if caller.limited else limit,
    )
    found = store.list_experiments(where)
    if caller.limited:
        found = [info for info in found if caller.sees(info.project_id)][:limit]
    return _answer(request, {"data": [_experiment_resource(info) for info in found]})


@router.get("/experiments/resolve", summary="An experiment by id, id prefix or name")
def resolve_experiment(
    request: Request,
    store: Store,
    caller: Caller,
    reference: Annotated[str, Query(alias="filter[reference]")],
) -> Response:
    info = store.resolve_experiment(reference)
    if not caller.sees(info.project_id):
        raise not_found(
            f"No experiment with id, id prefix or name {reference.strip()!r}",
            parameter="filter[reference]",
        )
    return _answer(request, {"data": _experiment_resource(info)})


@router.get("/experiments/{experiment_id}", summary="An experiment in full (remote SDK)")
def get_experiment(request: Request, experiment_id: str, store: Store, caller: Caller) -> Response:
    return _answer(
        request, {"data": _experiment_resource(_experiment(store, experiment_id, caller))}
    )


@router.patch("/experiments/{experiment_id}", summary="Set status, error and runner")
def set_experiment_state(
    request: Request,
    experiment_id: str,
    body: ExperimentStateBody,
    store: Store,
    caller: Caller,
) -> Response:
    caller.check_experiment(store, experiment_id, parameter="experiment_id")
    state = body.data.attributes
    store.set_experiment_status(experiment_id, state.status, state.error, runner=state.runner)
    return _answer(request, {"data": _experiment_resource(store.get_experiment(experiment_id))})


# Rows ----------------------------------------------------------------------------------------


@router.post("/experiments/{experiment_id}/rows", summary="Store rows in one transaction")
def write_rows(
    request: Request, experiment_id: str, body: RowsBody, store: Store, caller: Caller
) -> Response:
    info = _experiment(store, experiment_id, caller)
    iterations = {run.run_iteration for run in info.runs}
    for index, item in enumerate(body.data):
        if item.attributes.run_iteration not in iterations:
            raise invalid(
                f"run_iteration {item.attributes.run_iteration} is not a run of experiment "
                f"{info.name!r} (runs {sorted(iterations)})",
                pointer=pointer("data", index, "attributes", "run_iteration"),
            )
    store.write_rows([item.attributes.record(experiment_id) for item in body.data])
    return _answer(
        request,
        {"data": encoding.resource("experiment_row_batches", None, {"rows": len(body.data)})},
    )


@router.get("/experiments/{experiment_id}/rows", summary="Stored rows, in full")
def experiment_rows(
    request: Request,
    experiment_id: str,
    store: Store,
    caller: Caller,
    run: RunFilter = None,
    include: Annotated[Literal["spans"] | None, Query()] = None,
) -> Response:
    _experiment(store, experiment_id, caller)
    rows = store.experiment_rows(experiment_id, run_iteration=run, with_spans=include == "spans")
    data = [encoding.resource("experiment_rows", r.span_id, encoding.row_json(r)) for r in rows]
    return _answer(request, {"data": data})


@router.get(
    "/experiments/{experiment_id}/comparison_values",
    summary="Each record's value of each evaluation label, as comparisons pair them",
)
def comparison_values(
    request: Request, experiment_id: str, store: Store, caller: Caller, run: RunFilter = None
) -> Response:
    _experiment(store, experiment_id, caller)
    values = store.comparison_values(experiment_id, run=run)
    return _answer(
        request,
        {"data": encoding.resource("comparison_values", experiment_id, values.to_json())},
    )


@router.get("/experiments/{experiment_id}/rows/count", summary="How many rows are stored")
def count_rows(request: Request, experiment_id: str, store: Store, caller: Caller) -> Response:
    _experiment(store, experiment_id, caller)
    count = store.count_rows(experiment_id)
    return _answer(
        request, {"data": encoding.resource("row_counts", experiment_id, {"rows": count})}
    )


@router.post(
    "/experiments/{experiment_id}/summary_evaluations",
    summary="Store one run's summary evaluations",
)
def write_summary_evaluations(
    request: Request,
    experiment_id: str,
    body: SummaryEvaluationsBody,
    store: Store,
    caller: Caller,
) -> Response:
    _experiment(store, experiment_id, caller)
    attributes = body.data.attributes
    evaluations = [evaluation.record() for evaluation in attributes.evaluations]
    store.write_summary_evaluations(experiment_id, attributes.run_iteration, evaluations)
    document = {"summary_evaluations": len(evaluations)}
    return _answer(request, {"data": encoding.resource("summary_evaluations", None, document)})


@router.get("/experiments/{experiment_id}/summary_evaluations", summary="Summary evaluations")
def summary_evaluations(
    request: Request, experiment_id: str, store: Store, caller: Caller
) -> Response:
    _experiment(store, experiment_id, caller)
    data = [
        encoding.resource("summary_evaluations", None, encoding.summary_evaluation_json(item))
        for item in store.summary_evaluations(experiment_id)
    ]
    return _answer(request, {"data": data})


@router.post(
    "/experiments/{experiment_id}/record_aggregates/refresh",
    summary="Rebuild the per-record aggregates multi-run search reads",
)
def refresh_aggregates(
    request: Request,
    experiment_id: str,
    store: Store,
    caller: Caller,
    only_if_stale: Annotated[bool, Query()] = False,
) -> Response:
    _experiment(store, experiment_id, caller)  # the store's aggregates need one that exists
    store.refresh_aggregates(experiment_id, only_if_stale=only_if_stale)
    return _answer(
        request, {"data": encoding.resource("record_aggregate_refreshes", experiment_id, {})}
    )


@router.get("/experiments/{experiment_id}/record_aggregates", summary="Per-record aggregates")
def record_aggregates(
    request: Request, experiment_id: str, store: Store, caller: Caller
) -> Response:
    _experiment(store, experiment_id, caller)
    data = [
        encoding.resource("record_aggregates", None, encoding.aggregate_json(item))
        for item in store.record_aggregates(experiment_id)
    ]
    return _answer(request, {"data": data})


# Baselines -----------------------------------------------------------------------------------


@router.post("/baselines", summary="Pin an experiment as its project and dataset's baseline")
def set_baseline(request: Request, body: BaselineBody, store: Store, caller: Caller) -> Response:
    experiment_id = body.data.attributes.experiment_id
    where = "/data/attributes/experiment_id"
    caller.check_experiment(store, experiment_id, pointer=where)
    try:
        pinned = store.set_baseline(experiment_id)
    except ExperimentNotFoundError as error:
        raise not_found(str(error), pointer=where) from error
    return _answer(request, {"data": _baseline_resource(pinned)})


@router.get("/baselines", summary="The pinned baselines, one per project and dataset")
def list_baselines(
    request: Request,
    store: Store,
    caller: Caller,
    project_id: Annotated[str | None, Query(alias="filter[project_id]")] = None,
    dataset_id: Annotated[str | None, Query(alias="filter[dataset_id]")] = None,
) -> Response:
    found = store.list_baselines(project_id=project_id, dataset_id=dataset_id)
    data = [_baseline_resource(item) for item in found if caller.sees(item.project_id)]
    return _answer(request, {"data": data})


def _baseline_resource(item: PinnedBaseline) -> dict[str, Any]:
    return encoding.resource("baselines", item.dataset_id, encoding.baseline_json(item))


# Datasets ------------------------------------------------------------------------------------


def dataset_resource(info: DatasetInfo) -> dict[str, Any]:
    """A dataset as the Datadog-shaped routes give it, its times as ISO 8601 text."""
    found = datadog_dataset_resource(info)
    attributes = found["attributes"]
    for key in ("created_at", "updated_at"):
        attributes[key] = attributes[key].isoformat()
    return found


@router.get("/datasets", summary="Live datasets, of one project or of all")
def list_datasets(
    request: Request,
    store: Store,
    caller: Caller,
    project_id: Annotated[str | None, Query(alias="filter[project_id]")] = None,
) -> Response:
    found = [info for info in store.list_datasets(project_id) if caller.sees(info.project_id)]
    return _answer(request, {"data": [dataset_resource(info) for info in found]})


@router.get("/datasets/{dataset_id}", summary="A live dataset by id")
def get_dataset(request: Request, dataset_id: str, store: Store, caller: Caller) -> Response:
    caller.check_dataset(store, dataset_id, parameter="dataset_id")
    return _answer(request, {"data": dataset_resource(store.get_dataset(dataset_id))})


@router.get("/datasets/{dataset_id}/records", summary="The records of one version, in full")
def dataset_records(
    request: Request,
    dataset_id: str,
    store: Store,
    caller: Caller,
    version: Annotated[int | None, Query(alias="filter[version]")] = None,
    tags: Annotated[list[str], Query(alias="filter[tags]")] = [],  # noqa: B006
) -> Response:
    caller.check_dataset(store, dataset_id, parameter="dataset_id")
    records = store.dataset_records(dataset_id, version=version, tags=tags)
    chosen = version if version is not None else store.dataset_versions(dataset_id)[-1].version
    data = [record_resource(r, dataset_id=dataset_id, version=chosen) for r in records]
    return _answer(request, {"data": data})


@router.get("/datasets/{dataset_id}/versions", summary="Every version, with its record count")
def dataset_versions(request: Request, dataset_id: str, store: Store, caller: Caller) -> Response:
    caller.check_dataset(store, dataset_id, parameter="dataset_id")
    data = [
        encoding.resource(
            "dataset_versions",
            str(item.version),
            {
                "dataset_id": dataset_id,
                "version": item.version,
                "records": item.records,
                "created_at": item.created_at.isoformat() if item.created_at else None,
            },
        )
        for item in store.dataset_versions(dataset_id)
    ]
    return _answer(request, {"data": data})


@router.post("/datasets/{dataset_id}/changes", summary="Apply one delta of record changes")
def update_dataset_records(
    request: Request, dataset_id: str, body: DatasetChangesBody, store: Store, caller: Caller
) -> Response:
    caller.check_dataset(store, dataset_id, parameter="dataset_id")
    changes = body.data.attributes
    version = store.update_dataset_records(
        dataset_id,
        inserts=[item.record() for item in changes.inserts],
        updates=[item.record() for item in changes.updates],
        deletes=changes.deletes,
        deduplicate=changes.deduplicate,
        create_new_version=changes.create_new_version,
    )
    attributes = {"current_version": version}
    return _answer(request, {"data": encoding.resource("datasets", dataset_id, attributes)})
