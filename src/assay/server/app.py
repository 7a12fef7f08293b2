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
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
    in the store's journal, and write them hundreds at a time (``assay serve
    --ingest-queue``; see ``assay.store.sql.ingest.group``). Every other request waits
    until the posts answered before it are written.
    """
    owned = backend is None
    store = backend if backend is not None else SqlBackend(database_url or default_database_url())
    writer = ingest_writer(store)
    writer.queue = ingest_queue

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
            if owned:
                store.close()

    app = FastAPI(
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
    # The two posts a running experiment sends many times a second skip FastAPI's routing
    # and dependencies (``assay.server.lane``); inside the boundary, which still limits
    # their bodies and answers their unexpected errors.
    app.add_middleware(IngestLane)
    app.add_middleware(_ErrorBoundary, max_body_bytes=max_body_bytes)
    return app


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
            logger.error("store error: %s", _one_line(error))
        else:
            status, title = 422, "Invalid value"
        return error_response([ApiError(status, title, str(error), pointer="/data/attributes")])

    async def on_database(request: Request, error: Exception) -> Response:
        if isinstance(error, OperationalError):
            logger.error(
                "%s %s: store unavailable: %s", request.method, request.url.path, _one_line(error)
            )
            detail = "The store is unavailable or busy; retry the request"
            return error_response([ApiError(503, "Store unavailable", detail, pointer="")])
        if isinstance(error, IntegrityError):
            detail = "A concurrent request changed the same data; retry the request"
            return error_response([ApiError(409, "Conflict", detail, pointer="")])
        detail = f"A value does not fit the store: {_one_line(error)}"
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


def _one_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class _BodyTooLarge(Exception):
    pass


class _ErrorBoundary:
    """Refuses bodies over the limit (413) and turns an unexpected exception into a
    JSON:API 500, logged in one line (the traceback at debug level)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = too_large = False
        received = 0
        limit = self.max_body_bytes

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if too_large:
                # FastAPI answers a body it could not read with a 400: the answer is our 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._answer(scope, receive, send, _too_large(limit))
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await self._answer(scope, receive, send, _too_large(limit))
            return
        nul = _nul_parameter(scope)
        if nul is not None:
            detail = f"{nul} contains a NUL (%00) character, which no name or id can hold"
            response = error_response([ApiError(400, "Invalid parameter", detail, parameter=nul)])
            await self._answer(scope, receive, send, response)
            return
        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._answer(scope, receive, send, _too_large(limit))
        except Exception as error:
            logger.error(
                "%s %s failed: %s: %s",
                scope.get("method", ""),
                scope.get("path", ""),
                type(error).__name__,
                _one_line(error),
            )
            logger.debug("traceback", exc_info=True)
            if not started:
                detail = f"Internal error ({type(error).__name__}); the server log has the details"
                response = error_response(
                    [ApiError(500, "Internal server error", detail, pointer="")]
                )
                await self._answer(scope, receive, send, response)

    @staticmethod
    async def _answer(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
        await response(scope, receive, send)


def _nul_parameter(scope: Scope) -> str | None:
    """The query parameter (or ``"path"``) holding a NUL: PostgreSQL cannot compare it."""
    if "\x00" in scope.get("path", ""):
        return "path"
    query: str = scope.get("query_string", b"").decode("latin-1")
    if "%00" not in query and "\x00" not in query:
        return None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if "\x00" in key or "\x00" in value:
            return key.replace("\x00", "")
    return None


def _too_large(limit: int) -> Response:
    detail = f"The body is larger than {limit} bytes; send it in smaller parts"
    return error_response([ApiError(413, "Body too large", detail, pointer="")])
