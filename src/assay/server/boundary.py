"""The server's outer limits: bodies over the limit (413), NUL in a parameter (400), and
an unexpected exception (a JSON:API 500, logged in one line, the traceback at debug level).

``ErrorBoundary`` applies them to every request the app's routes serve; the ingest lane
(``assay.server.lane``), which answers its two posts before that middleware is reached,
applies the same ones with the functions below.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assay.server.jsonapi import ApiError, error_response

logger = logging.getLogger("assay.server")


def one_line(error: BaseException) -> str:
    """An error's message, first line only (a database error's own, without SQL)."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def too_large(limit: int) -> Response:
    detail = f"The body is larger than {limit} bytes; send it in smaller parts"
    return error_response([ApiError(413, "Body too large", detail, pointer="")])


def declared_too_large(scope: Scope, limit: int) -> bool:
    """Whether the request's ``Content-Length`` is over the limit."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.isdigit() and int(value) > limit
    return False


def nul_parameter(scope: Scope) -> str | None:
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


def nul_response(parameter: str) -> Response:
    detail = f"{parameter} contains a NUL (%00) character, which no name or id can hold"
    return error_response([ApiError(400, "Invalid parameter", detail, parameter=parameter)])


def internal_error(scope: Scope, error: Exception) -> Response:
    """Log an unexpected exception in one line; the 500 that answers it."""
    logger.error(
        "%s %s failed: %s: %s",
        scope.get("method", ""),
        scope.get("path", ""),
        type(error).__name__,
        one_line(error),
    )
    logger.debug("traceback", exc_info=True)
    detail = f"Internal error ({type(error).__name__}); the server log has the details"
    return error_response([ApiError(500, "Internal server error", detail, pointer="")])


class _BodyTooLarge(Exception):
    pass


class ErrorBoundary:
    """Middleware: refuses bodies over the limit (413) and parameters holding NUL (400), and
    turns an unexpected exception into a JSON:API 500 (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = exceeded = False
        received = 0
        limit = self.max_body_bytes

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # FastAPI answers a body it could not read with a 400: the answer is our 413.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await too_large(limit)(scope, receive, send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        if declared_too_large(scope, limit):
            await too_large(limit)(scope, receive, send)
            return
        nul = nul_parameter(scope)
        if nul is not None:
            await nul_response(nul)(scope, receive, send)
            return
        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await too_large(limit)(scope, receive, send)
        except Exception as error:
            response = internal_error(scope, error)
            if not started:
                await response(scope, receive, send)
