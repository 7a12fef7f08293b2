"""The ingest lane: the two posts of a running experiment, served past FastAPI's machinery.

ddtrace sends an experiment's results as many small posts, an events post of about 18
metrics and a span intake post of about 6 spans every few records. For such a post,
FastAPI's own work (the middleware layers, trying the routes, solving the dependencies,
decoding the JSON and then validating the decoded objects) cost about as much as storing
it. This ASGI middleware recognises the two posts by their paths, validates the body
straight from its bytes (``model_validate_json``), checks the caller as ``authenticate``
does and hands the post to the same function the route calls (``accept_events``,
``accept_spans``), so the answer is the route's.

With a queue (``assay serve --ingest-queue``), the lane hands the writer each post as it
was sent (a ``JournalEntry``), so that the writer may answer it from its journal before
writing it; ``decode`` reads such an entry again after a restart. Every other request
waits until the posts answered before it are written (``IngestWriter.flush``), so that
what the API reads, and what it changes, comes after them.

Whatever the lane does not serve itself goes to the app with the body it read, unchanged:
a body that does not validate (FastAPI then answers the 400 or 422 that names the field,
as for every other route), another content type, a store replaced by a dependency
override (tests), a mounted app (``root_path``). An exception is answered by the app's
own exception handlers, as FastAPI would have.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assay.server.api.events import accept_events, events_batch
from assay.server.api.intake import accept_spans, span_batches, span_groups
from assay.server.auth import request_access
from assay.server.dependencies import get_backend, ingest_writer
from assay.server.wire import EventsBody, IntakeEvent
from assay.store.sql.ingest import Decoded, JournalEntry

_PROXY = r"(?:/evp_proxy/v2)?"
_EVENTS = re.compile(
    rf"{_PROXY}/api/(?:v2|unstable)/llm-obs/v1/experiments/(?P<experiment_id>[^/]+)/events"
)
_INTAKE = re.compile(rf"{_PROXY}/api/v2/llmobs")
_SPAN_EVENTS: TypeAdapter[list[IntakeEvent]] = TypeAdapter(list[IntakeEvent])

Handler = Callable[[Request, Any], Response | Awaitable[Response]]


class IngestLane:
    """ASGI middleware in front of the app's routes (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app: FastAPI = scope["app"]
        if scope["method"] != "POST" or scope.get("root_path"):
            await _after_queued(app)
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        events = _EVENTS.fullmatch(path)
        if (
            (events is None and _INTAKE.fullmatch(path) is None)
            or get_backend in app.dependency_overrides
            or not _is_json(scope)
        ):
            await _after_queued(app)
            await self.app(scope, receive, send)
            return
        body = await _body(receive)
        if body is None:
            return  # the client went away
        replay = _replaying(body, receive)
        try:
            parsed: EventsBody | list[IntakeEvent] = (
                EventsBody.model_validate_json(body)
                if events is not None
                else _SPAN_EVENTS.validate_json(body)
            )
        except ValidationError:
            await self.app(scope, replay, send)
            return
        request = Request(scope, replay)
        try:
            store = app.state.backend
            caller = await request_access(request, store)
            writer = ingest_writer(store)
            if isinstance(parsed, EventsBody):
                assert events is not None
                experiment_id = events["experiment_id"]
                entry = JournalEntry("events", experiment_id, body)
                response: Response = await accept_events(
                    experiment_id, parsed, store, caller, writer, entry=entry
                )
            else:
                entry = JournalEntry("spans", "", body)
                response = await accept_spans(parsed, store, caller, writer, entry=entry)
        except Exception as error:
            handler = _handler(app, error)
            if handler is None:
                raise
            answer = handler(request, error)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, replay, send)


def decode(entry: JournalEntry) -> Decoded:
    """A journaled post made into batches again, as the lane made it when it came.

    An experiment gone since is skipped, whichever post names it: there is nothing left
    to write it to (``IngestWriter.recover`` logs it)."""
    if entry.kind == "events":
        batch = events_batch(EventsBody.model_validate_json(entry.body))
        return Decoded({entry.key: batch}, skip_unknown=True)
    if entry.kind == "spans":
        groups, _ = span_groups(_SPAN_EVENTS.validate_json(entry.body))
        return Decoded(span_batches(groups), skip_unknown=True)
    raise ValueError(f"a journal entry of unknown kind {entry.kind!r}")


async def _after_queued(app: FastAPI) -> None:
    """Wait until every post answered so far is written (at once, without a queue)."""
    store = getattr(app.state, "backend", None)
    if store is None:
        return
    writer = ingest_writer(store)
    if writer.queued:
        await asyncio.wrap_future(writer.flush())


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI would decode this body as JSON: no content type, or a JSON one."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media = bytes(value).decode("latin-1").partition(";")[0].strip().lower()
            kind, _, subtype = media.partition("/")
            return kind == "application" and (subtype == "json" or subtype.endswith("+json"))
    return True


async def _body(receive: Receive) -> bytes | None:
    """The whole body, or None if the client disconnected first."""
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read, then what the client sends next."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _handler(app: FastAPI, error: Exception) -> Handler | None:
    """The app's exception handler for this error, found as Starlette finds it."""
    handlers: dict[Any, Handler] = app.exception_handlers
    for kind in type(error).__mro__:
        if kind in handlers:
            return handlers[kind]
    return None
