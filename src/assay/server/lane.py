"""The ingest lane: the two posts of a running experiment, served past FastAPI's machinery.

ddtrace sends an experiment's results as many small posts, an events post of about 18
metrics and a span intake post of about 6 spans every few records. For such a post,
FastAPI's own work (the middleware layers, trying the routes, solving the dependencies,
decoding the JSON and then validating the decoded objects, making the response) cost
about as much as storing it. So the lane is the app's front door (``AssayApp`` calls it
before FastAPI's middleware stack): it recognises the two posts by their paths,
validates the body straight from its bytes (``model_validate_json``), checks the caller
as ``authenticate`` does, hands the post to the same function the route calls
(``accept_events``, ``accept_spans``), so the answer is the route's, and sends the
answer itself. It applies the limits the stack's ``ErrorBoundary`` applies (body size,
an unexpected error: ``assay.server.boundary``), and logs as the app's access log does
(``assay.server.access``).

With a queue (what ``assay serve`` runs by default), the lane hands the writer each post as it
was sent (a ``JournalEntry``), so that the writer may answer it from its journal before
writing it; ``decode`` reads such an entry again after a restart. Every other request
waits until the posts answered before it are written (``IngestWriter.flush``), so that
what the API reads, and what it changes, comes after them.

Whatever the lane does not serve itself goes to the app (``IngestLane.forward``) with the
body it read, unchanged: a body that does not validate (FastAPI then answers the 400 or
422 that names the field, as for every other route), another content type, a store
replaced by a dependency override (tests), a mounted app (``root_path``), what the
boundary refuses before reading. An exception is answered by the app's own exception
handlers, as FastAPI would have.
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

from assay.server.access import AccessLog
from assay.server.api.events import accept_events, events_batch
from assay.server.api.intake import accept_spans, span_batches, span_groups
from assay.server.auth import request_access
from assay.server.boundary import declared_too_large, internal_error, nul_parameter, too_large
from assay.server.dependencies import get_backend, ingest_writer
from assay.server.jsonapi import MEDIA_TYPE, render
from assay.server.wire import EventsBody, IntakeEvent
from assay.store.sql.ingest import Decoded, JournalEntry

_PROXY = r"(?:/evp_proxy/v2)?"
_EVENTS = re.compile(
    rf"{_PROXY}/api/(?:v2|unstable)/llm-obs/v1/experiments/(?P<experiment_id>[^/]+)/events"
)
_INTAKE = re.compile(rf"{_PROXY}/api/v2/llmobs")
_SPAN_EVENTS: TypeAdapter[list[IntakeEvent]] = TypeAdapter(list[IntakeEvent])
_MEDIA_TYPE = MEDIA_TYPE.encode("latin-1")

Handler = Callable[[Request, Any], Response | Awaitable[Response]]


class IngestLane:
    """The app's front door (see the module docstring): ``inner`` is the app as FastAPI
    serves it, middleware stack and all."""

    def __init__(
        self,
        app: FastAPI,
        inner: ASGIApp,
        *,
        max_body_bytes: int,
        access: AccessLog | None = None,
    ) -> None:
        self.app = app
        self.inner = inner
        self.max_body_bytes = max_body_bytes
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self._lane_post(scope)
        if key is None:
            await self.forward(scope, receive, send)
            return
        app = self.app
        body = await _body(receive, self.max_body_bytes)
        if body is None:
            return  # the client went away
        if body is _TOO_LARGE:
            await self._answer(scope, receive, send, too_large(self.max_body_bytes))
            return
        replay = _replaying(body, receive)
        try:
            parsed: EventsBody | list[IntakeEvent] = (
                EventsBody.model_validate_json(body) if key else _SPAN_EVENTS.validate_json(body)
            )
        except ValidationError:
            await self.forward(scope, replay, send)
            return
        scope["app"] = app
        request = Request(scope, replay)
        try:
            store = app.state.backend
            caller = await request_access(request, store)
            writer = ingest_writer(store)
            if isinstance(parsed, EventsBody):
                entry = JournalEntry("events", key, body)
                answer = await accept_events(key, parsed, store, caller, writer, entry=entry)
            else:
                entry = JournalEntry("spans", "", body)
                answer = await accept_spans(parsed, store, caller, writer, entry=entry)
        except Exception as error:
            handler = _handler(app, error)
            if handler is None:
                response = internal_error(scope, error)
            else:
                answered = handler(request, error)
                response = await answered if inspect.isawaitable(answered) else answered
            await self._answer(scope, replay, send, response)
            return
        await _send_document(send, 202, answer)
        if self.access is not None:
            self.access.ingested(**_brought(parsed))

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand a request to the app, once the posts answered before it are written."""
        await _after_queued(self.app)
        if self.access is not None:
            send = self.access.wrap(send, scope)
        await self.inner(scope, receive, send)

    def _lane_post(self, scope: Scope) -> str | None:
        """The experiment of an events post the lane serves, ``""`` for a span intake post
        it serves, None for a request it hands on."""
        if scope["method"] != "POST" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        events = _EVENTS.fullmatch(path)
        if events is not None:
            key: str = events["experiment_id"]
        elif _INTAKE.fullmatch(path) is not None:
            key = ""
        else:
            return None
        if (
            get_backend in self.app.dependency_overrides
            or not _is_json(scope)
            # What the boundary refuses, it answers (``assay.server.boundary``).
            or nul_parameter(scope) is not None
            or declared_too_large(scope, self.max_body_bytes)
        ):
            return None
        return key

    async def _answer(self, scope: Scope, receive: Receive, send: Send, response: Response) -> None:
        if self.access is not None:
            self.access.request(scope, response.status_code)
        await response(scope, receive, send)


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


_TOO_LARGE = b"<too large>"
"""What ``_body`` returns for a body over the limit (compared by identity)."""


async def _body(receive: Receive, limit: int) -> bytes | None:
    """The whole body (``_TOO_LARGE`` once it is over ``limit`` bytes), or None if the
    client disconnected first."""
    parts = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        part: bytes = message.get("body", b"")
        size += len(part)
        if size > limit:
            return _TOO_LARGE
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _send_document(send: Send, status: int, content: dict[str, Any]) -> None:
    """Answer with a JSON:API document, as ``JsonApiResponse`` would, without making one."""
    body = render(content)
    headers = [(b"content-type", _MEDIA_TYPE), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _brought(parsed: EventsBody | list[IntakeEvent]) -> dict[str, int]:
    """The spans and metrics of a post, for the access log's summary."""
    if isinstance(parsed, EventsBody):
        attributes = parsed.data.attributes
        return {"spans": len(attributes.spans or ()), "metrics": len(attributes.metrics or ())}
    return {"spans": sum(len(event.spans or ()) for event in parsed), "metrics": 0}


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
