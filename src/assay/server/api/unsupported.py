"""Routes of the Datadog API that Assay does not implement: a clear 501, not a 404."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request

from assay.server.jsonapi import ApiError, JsonApiResponse

router = APIRouter(tags=["not supported"])

_UNSUPPORTED = (
    ("POST", "/evaluators/{eval_name}/infer", "Remote evaluators (LLM judges hosted by Datadog)"),
    ("PUT", "/config/evaluators/custom", "Publishing evaluators"),
    ("POST", "/experiments/delete", "Deleting experiments"),
    ("POST", "/projects/delete", "Deleting projects"),
    ("PATCH", "/projects/{project_id}", "Renaming projects"),
    ("PATCH", "/{project_id}/datasets/{dataset_id}", "Renaming datasets"),
    ("GET", "/{project_id}/datasets/{dataset_id}/export", "Exporting datasets"),
    ("POST", "/experimentation/analytics", "Experiment analytics"),
    ("GET", "/spans/events", "Searching production spans"),
)


def _answer(what: str) -> Callable[[Request], JsonApiResponse]:
    def unsupported(request: Request) -> JsonApiResponse:
        raise ApiError(
            501,
            "Not implemented",
            f"{what} ({request.method} {request.url.path}) is not supported by Assay",
            pointer="",
        )

    return unsupported


for _method, _path, _what in _UNSUPPORTED:
    router.add_api_route(
        _path,
        _answer(_what),
        methods=[_method],
        summary=f"{_what}: not supported",
        status_code=501,
        response_description="Not implemented: Assay does not support this route",
    )
