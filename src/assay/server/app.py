"""The FastAPI app: every route of the Experiments API under each prefix ddtrace uses.

ddtrace 4.16 mixes ``/api/unstable/llm-obs/v1/...`` and ``/api/v2/llm-obs/v1/...``; through
a Datadog Agent it prefixes everything with ``/evp_proxy/v2``. The same routes answer
under all four prefixes (only ``/api/v2/llm-obs/v1`` is in the OpenAPI document), and the
span intake at ``/api/v2/llmobs`` with and without the proxy prefix.

Errors leave in one JSON:API shape (see ``assay.server.jsonapi``): a request that does
not validate is a 4xx naming the field, a store that cannot be reached a 503 (which
ddtrace retries), and anything unexpected a 500 logged in one line, never a traceback
page.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from assay._version import __version__
from assay.config import database_url as default_database_url
from assay.errors import (
    AssayError,
    DatasetNotFoundError,
    ExperimentNotFoundError,
    NotFoundError,
    StoreError,
)
from assay.server import ui
from assay.server.access import AccessLog
from assay.server.api import (
    compare,
    datasets,
    events,
    experiments,
    intake,
    projects,
    sdk,
    summaries,
    unsupported,
)
from assay.server.auth import Authenticator, authenticate
from assay.server.boundary import ErrorBoundary, one_line
from assay.server.dependencies import ingest_writer
from assay.server.jsonapi import (
    ERROR_RESPONSES,
    ApiError,
    JsonApiResponse,
    error_response,
    not_found,
    pointer,
)
from assay.server.lane import IngestLane, decode
from assay.store.sql.backend import SqlBackend

logger = logging.getLogger("assay.server")

API_PREFIX = "/api/v2/llm-obs/v1"
API_PREFIXES = (API_PREFIX, "/api/unstable/llm-obs/v1")
PROXY_PREFIX = "/evp_proxy/v2"
MAX_BODY_BYTES = 64 * 1024 * 1024
"""ddtrace caps a span payload at about 5 MiB and a CSV upload is one file: far below."""


def create_app(
    *,
    database_url: str | None = None,
    backend: SqlBackend | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    require_auth: bool | None = None,
    ingest_queue: bool = False,
    access_log: bool = False,
) -> FastAPI:
    """The Assay server app over ``backend``, or over a store opened at ``database_url``.

    Default: the store the SDK uses (``ASSAY_DATABASE_URL``, else ``~/.assay/assay.db``).
    A store opened here is closed when the app shuts down; a ``backend`` passed in
    belongs to the caller.

    ``require_auth``: True, every API route needs an API key (``assay keys create``);
    False, keys are optional. None (the default) requires one on connections that reach
    a non-loopback address of this machine, and not from loopback or in-process clients.
    ``assay serve`` passes True when it listens beyond loopback or with ``--require-auth``.
    See ``assay.server.auth``.

    ``ingest_queue``: answer ddtrace's posts (experiment events, span intake) once they are
    in the store's journal, and write them hundreds at a time (what ``assay serve`` does
    unless ``--no-ingest-queue``; see ``assay.store.sql.ingest.group``). Every other
    request waits until the posts answered before it are written. Off here, so that a
    test posting in-process finds the rows in the store at once.

    ``access_log``: log a line per request on the logger ``assay.server.access``, and sum up
    ddtrace's posts in a line every few seconds (``assay serve``, which turns uvicorn's
    own access log off; see ``assay.server.access``).
    """
    owned = backend is None
    store = backend if backend is not None else SqlBackend(database_url or default_database_url())
    writer = ingest_writer(store)
    writer.queue = ingest_queue
    access = AccessLog(queued=lambda: writer.queued) if access_log else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Posts an earlier server answered from its journal and did not write.
        await run_in_threadpool(writer.recover, decode)
        try:
            yield
        finally:
            # Answer the ingest requests still queued, and write those queued, before
            # the store goes.
            writer.stop()
            if access is not None:
                access.summarize()
            if owned:
                store.close()

    app = AssayApp(
        title="Assay",
        version=__version__,
        summary="LLM experiments: Datadog's LLM Observability Experiments API, self-hosted.",
        lifespan=lifespan,
    )
    app.state.backend = store
    app.state.authenticator = Authenticator(required=require_auth)
    # Every API route checks the caller's key; the OpenAPI document and /docs do not.
    # The document says what every route answers: JSON:API documents, or the error shape.
    api = APIRouter(
        dependencies=[Depends(authenticate)],
        default_response_class=JsonApiResponse,
        responses=ERROR_RESPONSES,
    )
    # Fixed paths before parameterised ones: /experiments/events is not an experiment id.
    # /sdk/... first: /sdk/datasets is not the datasets of a project with id "sdk".
    # compare before experiments: /experiments/compare is not an experiment "compare".
    # The events post comes here, in the place the OpenAPI document has it (the ingest
    # lane serves it before any of these routes is tried).
    api.include_router(sdk.router)
    api.include_router(events.ingest_router)
    for module in (events, summaries, compare, unsupported, experiments, projects, datasets):
        api.include_router(module.router)
    for prefix in API_PREFIXES:
        for proxy in ("", PROXY_PREFIX):
            app.include_router(
                api, prefix=proxy + prefix, include_in_schema=not proxy and prefix == API_PREFIX
            )
    for proxy in ("", PROXY_PREFIX):
        app.include_router(
            intake.router,
            prefix=proxy,
            include_in_schema=not proxy,
            dependencies=[Depends(authenticate)],
            default_response_class=JsonApiResponse,
            responses=ERROR_RESPONSES,
        )
    _add_error_handlers(app)
    ui.install(app)  # the web UI's pages (not in the OpenAPI document)
    app.add_middleware(ErrorBoundary, max_body_bytes=max_body_bytes)
    # The two posts a running experiment sends many times a second are served before
    # FastAPI's middleware stack, routing and dependencies (``assay.server.lane``).
    app.lane = IngestLane(app, app.serve, max_body_bytes=max_body_bytes, access=access)
    return app


class AssayApp(FastAPI):
    """FastAPI, with the ingest lane at its front door: every HTTP request goes to the
    lane, which serves ddtrace's two posts itself and hands the others on (``serve``)."""

    lane: IngestLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.lane is not None:
            await self.lane(scope, receive, send)
        else:
            await self.serve(scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app as FastAPI serves it: its middleware stack, routes and dependencies."""
        await super().__call__(scope, receive, send)


# Errors ------------------------------------------------------------------------------------


def _validation_errors(errors: Sequence[Any]) -> list[ApiError]:
    found = []
    for error in errors:
        location = tuple(error.get("loc") or ())
        where, path = (location[0], location[1:]) if location else ("body", ())
        message = str(error.get("msg", "Invalid value"))
        if error.get("type") == "json_invalid":
            found.append(
                ApiError(
                    400, "Malformed JSON", f"The body is not valid JSON: {message}", pointer=""
                )
            )
        elif where == "body":
            field = ".".join(str(part) for part in path) or "body"
            found.append(
                ApiError(422, "Invalid value", f"{field}: {message}", pointer=pointer(*path))
            )
        else:
            name = str(path[0]) if path else str(where)
            found.append(ApiError(400, "Invalid parameter", f"{name}: {message}", parameter=name))
    return found or [ApiError(422, "Invalid value", "The request is not valid", pointer="")]


def _add_error_handlers(app: FastAPI) -> None:
    async def on_validation(_request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        found = _validation_errors(error.errors())
        # Malformed JSON and bad parameters first: their status is the response's.
        found.sort(key=lambda item: item.status != 400)
        return error_response(found)

    async def on_api_error(_request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return error_response([error])

    async def on_http(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        title = HTTPStatus(error.status_code).phrase
        detail = error.detail if isinstance(error.detail, str) else title
        if error.status_code == 404:
            detail = f"No route {request.method} {request.url.path}"
        return error_response([ApiError(error.status_code, title, detail, pointer="")])

    async def on_assay_error(request: Request, error: Exception) -> Response:
        if isinstance(error, NotFoundError):
            # An unknown id of the path is named by its parameter.
            for kind, name in _NOT_FOUND_PARAMETERS:
                if isinstance(error, kind) and name in request.path_params:
                    return error_response([not_found(str(error), parameter=name)])
            status, title = 404, "Not found"
        elif isinstance(error, StoreError):
            status, title = 503, "Store unavailable"
            logger.error("store error: %s", one_line(error))
        else:
            status, title = 422, "Invalid value"
        return error_response([ApiError(status, title, str(error), pointer="/data/attributes")])

    async def on_database(request: Request, error: Exception) -> Response:
        if isinstance(error, OperationalError):
            logger.error(
                "%s %s: store unavailable: %s", request.method, request.url.path, one_line(error)
            )
            detail = "The store is unavailable or busy; retry the request"
            return error_response([ApiError(503, "Store unavailable", detail, pointer="")])
        if isinstance(error, IntegrityError):
            detail = "A concurrent request changed the same data; retry the request"
            return error_response([ApiError(409, "Conflict", detail, pointer="")])
        detail = f"A value does not fit the store: {one_line(error)}"
        return error_response([ApiError(422, "Invalid value", detail, pointer="/data")])

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(AssayError, on_assay_error)
    for kind in (OperationalError, IntegrityError, DataError):
        app.add_exception_handler(kind, on_database)


_NOT_FOUND_PARAMETERS = (
    (DatasetNotFoundError, "dataset_id"),
    (ExperimentNotFoundError, "experiment_id"),
)
