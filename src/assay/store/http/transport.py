"""Requests to an Assay server: one keep-alive client, retries, and errors in Assay's terms.

Every request goes through :meth:`ServerConnection.request`. A request that never reached
the server (connection refused, connect timeout) or that the server refused with 503 (the
store was busy; nothing was written) is retried with backoff. A request whose answer was
lost (a read timeout, a dropped connection) is retried only when repeating it is harmless:
reads, create-or-get, status changes, and row batches (a batch is one transaction, and
the store's unique span ids turn a repeated batch into a 409 that means "already written").

A failure becomes one of Assay's own errors (see ``assay.errors``) whose message names the
server and what to do: a 404 the caller's not-found error, a 401 a ``ConfigurationError``
about the API key, an unreachable server a ``StoreError`` asking whether ``assay serve``
runs there.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from assay._version import __version__
from assay.errors import AssayError, ConfigurationError, NotFoundError, StoreError

API_PREFIX = "/api/v2/llm-obs/v1"
MEDIA_TYPE = "application/vnd.api+json"
GZIP_ABOVE = 16 * 1024
"""Bodies larger than this many bytes are sent gzip-compressed."""

Method = Literal["GET", "POST", "PATCH"]
Retry = Literal["unsent", "always", "written_once"]
"""When a failed request may be sent again.

``unsent``: only when it cannot have reached the store (no connection, or a 503).
``always``: also when its answer was lost; repeating it changes nothing.
``written_once``: as ``always``, and a 409 after a lost answer means the first attempt
was written (a batch of rows whose span ids are now taken)."""


@dataclass(frozen=True, slots=True)
class Failures:
    """Which Assay errors a call's 404 and 400/422 answers become."""

    not_found: Callable[[str], AssayError] = NotFoundError
    invalid: Callable[[str], AssayError] = StoreError


def public_url(url: str) -> str:
    """``url`` without a trailing slash and without any user or password in it."""
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class ServerConnection:
    """A keep-alive HTTP client for one Assay server, shared by every thread of the SDK.

    ``retries`` is how many times a retryable failure is tried again, waiting ``backoff``
    seconds, then twice that, and so on (at most 8 s; a ``Retry-After`` answer is obeyed up
    to 30 s).
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str = "",
        app_key: str = "",
        timeout: float = 120.0,
        retries: int = 4,
        backoff: float = 0.25,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = public_url(url)
        self.retries = retries
        self.backoff = backoff
        self._has_key = bool(api_key)
        headers = {"Accept": MEDIA_TYPE, "User-Agent": f"assay-sdk/{__version__}"}
        if api_key:
            headers["DD-API-KEY"] = api_key
            headers["Authorization"] = f"Bearer {api_key}"
        if app_key:
            headers["DD-APPLICATION-KEY"] = app_key
        self._client = httpx.Client(
            base_url=url.rstrip("/") + API_PREFIX,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            # Shorter than uvicorn's 5 s keep-alive: a pooled connection is not reused
            # just as the server closes it.
            limits=httpx.Limits(max_connections=32, keepalive_expiry=2.0),
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: Method,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        retry: Retry = "unsent",
        failures: Failures = Failures(),
    ) -> Any:
        """The JSON document the server answers, or an Assay error naming the server."""
        headers = {}
        content = body
        if body is not None:
            headers["Content-Type"] = MEDIA_TYPE
            if len(body) > GZIP_ABOVE:
                content = gzip.compress(body, compresslevel=1)
                headers["Content-Encoding"] = "gzip"
        answer_lost = False
        attempt = 0
        while True:
            try:
                response = self._client.request(
                    method, path, params=params, content=content, headers=headers
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
                if attempt < self.retries:
                    attempt = self._wait(attempt, None)
                    continue
                raise self._unreachable(error) from error
            except httpx.TransportError as error:  # sent, but the answer was lost
                if retry != "unsent" and attempt < self.retries:
                    answer_lost = True
                    attempt = self._wait(attempt, None)
                    continue
                raise self._lost(method, path, error) from error
            status = response.status_code
            if status < 300:
                return self._document(method, path, response)
            if status == 409 and answer_lost and retry == "written_once":
                return None  # the attempt whose answer was lost was written
            retry_now = status == 503 or (status in (502, 504) and retry != "unsent")
            if retry_now and attempt < self.retries:
                attempt = self._wait(attempt, response.headers.get("retry-after"))
                continue
            raise self._failure(method, path, response, failures, attempts=attempt + 1)

    def _document(self, method: str, path: str, response: httpx.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as error:
            raise StoreError(
                f"The server at {self.url} answered {method} {API_PREFIX}{path} with "
                f"{response.status_code} but no JSON ({response.headers.get('content-type')}):"
                " it is not an Assay server. Check ASSAY_URL or the site given to "
                "LLMObs.enable"
            ) from error

    # Retries ------------------------------------------------------------------------------

    def _wait(self, attempt: int, retry_after: str | None) -> int:
        delay = min(self.backoff * 2**attempt, 8.0)
        if retry_after is not None and retry_after.strip().isdigit():
            delay = min(float(retry_after), 30.0)
        time.sleep(delay)
        return attempt + 1

    # Errors -------------------------------------------------------------------------------

    def _unreachable(self, error: Exception) -> StoreError:
        return StoreError(
            f"Cannot reach the Assay server at {self.url} ({_reason(error)}) after "
            f"{self.retries + 1} attempts: is `assay serve` running at {self.url}? Start it "
            "there, or unset ASSAY_URL (and give LLMObs.enable no http site) to use the "
            "local store"
        )

    def _lost(self, method: str, path: str, error: Exception) -> StoreError:
        return StoreError(
            f"The Assay server at {self.url} did not answer {method} {API_PREFIX}{path} "
            f"({_reason(error)}); it may be overloaded or have restarted. Check its log; "
            "an interrupted experiment can be finished with run(resume=True)"
        )

    def _failure(
        self,
        method: str,
        path: str,
        response: httpx.Response,
        failures: Failures,
        *,
        attempts: int,
    ) -> AssayError:
        status = response.status_code
        detail = _detail(response)
        server = f"The Assay server at {self.url}"
        route = f"{method} {API_PREFIX}{path}"
        if status in (401, 403):
            problem = (
                "the API key is not valid there"
                if self._has_key
                else "no API key was sent (pass api_key= to LLMObs.enable, or set ASSAY_API_KEY)"
            )
            return ConfigurationError(
                f"{server} refused {route} with {status} ({detail}): "
                f"{problem}. Create a key on the server with `assay keys create NAME` and "
                "use it as api_key= or ASSAY_API_KEY"
            )
        if status == 404:
            if detail is None or detail.startswith("No route "):
                return StoreError(
                    f"{server} has no route {route}: it is not an Assay "
                    "server, or one too old for the remote SDK. Upgrade Assay there and "
                    "restart `assay serve`"
                )
            return failures.not_found(f"{detail} (on the Assay server at {self.url})")
        if status in (400, 422) and detail is not None:
            return failures.invalid(detail)
        if status == 413:
            return StoreError(
                f"{server} refused {route} as too large ({detail}); "
                "raise its body limit or send less at once"
            )
        if status == 503:
            return StoreError(
                f"{server} answered {route} with 503 ({detail}) "
                f"{attempts} times: its store is unavailable or busy. Check the server's "
                "log and retry"
            )
        return StoreError(
            f"{server} failed on {route} with {status} "
            f"({detail or response.reason_phrase}); the server's log has the details"
        )


def _detail(response: httpx.Response) -> str | None:
    """The first JSON:API error's detail, or None when the body is not Assay's error shape."""
    try:
        document = response.json()
    except ValueError:
        return None
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None
    detail = errors[0].get("detail")
    return detail if isinstance(detail, str) and detail else None


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
