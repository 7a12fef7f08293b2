"""The server's access log: a line per request, as uvicorn writes it, and ddtrace's posts summed up.

A running experiment sends an events post and a span intake post every few records, so
uvicorn's access log wrote hundreds of lines a second of them, and writing them cost the
server a twentieth of its time. ``assay serve`` turns uvicorn's access log off and logs
through this one (``create_app(access_log=True)``): every request has its line, in
uvicorn's form::

    127.0.0.1:50312 - "GET /api/v2/llm-obs/v1/projects HTTP/1.1" 200

except an ingest post that is answered 202. Those are counted, and one line at most every
``SUMMARY_SECONDS`` tells how many came and what they brought::

    ingest: 1,670 posts in 5.0 s (5,010 spans, 15,030 metrics); 212 queued, not written yet

A refused post (4xx) has its own line, as every other request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from urllib.parse import quote

from starlette.types import Message, Scope, Send

logger = logging.getLogger("assay.server.access")

SUMMARY_SECONDS = 5.0


class AccessLog:
    """The lines of one app (see the module docstring). ``queued`` tells how many answered
    posts wait to be written, with an ingest queue."""

    def __init__(
        self, *, queued: Callable[[], int] | None = None, interval: float = SUMMARY_SECONDS
    ) -> None:
        self.interval = interval
        self._queued = queued
        self._posts = self._spans = self._metrics = 0
        self._since = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def request(self, scope: Scope, status: int) -> None:
        """The line of one request."""
        logger.info(
            '%s - "%s %s HTTP/%s" %d',
            _client(scope),
            scope["method"],
            _target(scope),
            scope["http_version"],
            status,
        )

    def wrap(self, send: Send, scope: Scope) -> Send:
        """``send``, logging the request's line as its answer starts."""

        async def logging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.request(scope, message["status"])
            await send(message)

        return logging_send

    def ingested(self, *, spans: int, metrics: int) -> None:
        """Count an answered ingest post; the first of a while sets the summary's time."""
        self._posts += 1
        self._spans += spans
        self._metrics += metrics
        if self._timer is None:
            self._since = time.monotonic()
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.summarize)

    def summarize(self) -> None:
        """Log the posts counted since the last summary (the timer's, or at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._posts:
            return
        queued = self._queued() if self._queued is not None else 0
        logger.info(
            "ingest: %s in %.1f s (%s, %s)%s",
            _counted(self._posts, "post"),
            time.monotonic() - self._since,
            _counted(self._spans, "span"),
            _counted(self._metrics, "metric"),
            f"; {queued:,} queued, not written yet" if queued else "",
        )
        self._posts = self._spans = self._metrics = 0


def _counted(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


def _target(scope: Scope) -> str:
    """The path and query as the client asked, as uvicorn's access log writes them."""
    path = quote(scope.get("root_path", "") + scope["path"])
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('ascii', 'replace')}" if query else path
