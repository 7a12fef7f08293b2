"""JSON:API documents as the Datadog Experiments API writes them, and its one error shape.

Every response is ``application/vnd.api+json``. A resource is ``{"id", "type",
"attributes"}``; a document ``{"data": ...}`` with, for lists, ``{"meta": {"after":
cursor}}`` when there is a next page (``page[cursor]``, ``page[limit]``). Every error,
whatever raised it, is::

    {"errors": [{"status": "422", "title": "Invalid value",
                 "detail": "run_count: Input should be greater than or equal to 1",
                 "source": {"pointer": "/data/attributes/run_count"}}]}

``source.pointer`` is a JSON pointer into the request body (``""`` for the body as a
whole, e.g. malformed JSON); an error about a query or path parameter has
``source.parameter`` (``"page[cursor]"``, ``"experiment_id"``) instead, and an error about
a request header (a missing API key) ``source.header``, as JSON:API says.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from assay.store.sql.bulk import encode_json

MEDIA_TYPE = "application/vnd.api+json"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _leaf(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


# The encoder of ``encode_json`` (same spacing, real characters), told about datetimes:
# a document is encoded as it is, where copying it through ``_plain`` first took most of
# the time of a big one (3 s of a comparison of 100,000 records).
_DOCUMENT_ENCODER = json.JSONEncoder(ensure_ascii=False, default=_leaf, allow_nan=False)


def render(content: Any) -> bytes:
    """A document as UTF-8 JSON; NaN and infinities (an empty aggregate) are written as null."""
    try:
        text = _DOCUMENT_ENCODER.encode(content)
    except (TypeError, ValueError):
        # NaN or infinity, a key that is no string, a value of another type: the copy that
        # spells each of them.
        text = encode_json(_plain(content)) or "null"
    return text.encode("utf-8")


class JsonApiResponse(JSONResponse):
    """A JSON:API document (``render``)."""

    media_type = MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return render(content)


class ApiError(Exception):
    """An error answered with the one JSON:API error shape."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        pointer: str | None = None,
        parameter: str | None = None,
        header: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.pointer = pointer
        self.parameter = parameter
        self.header = header
        self.headers = dict(headers or {})
        """Response headers, such as the ``WWW-Authenticate`` of a 401."""

    def as_error(self) -> dict[str, Any]:
        source: dict[str, str] = {}
        if self.header is not None:
            source["header"] = self.header
        elif self.parameter is not None:
            source["parameter"] = self.parameter
        else:
            source["pointer"] = self.pointer or ""
        return {
            "status": str(self.status),
            "title": self.title,
            "detail": self.detail,
            "source": source,
        }


def not_found(detail: str, *, parameter: str | None = None, pointer: str | None = None) -> ApiError:
    return ApiError(404, "Not found", detail, parameter=parameter, pointer=pointer)


def invalid(detail: str, *, pointer: str) -> ApiError:
    return ApiError(422, "Invalid value", detail, pointer=pointer)


def bad_parameter(detail: str, *, parameter: str) -> ApiError:
    return ApiError(400, "Invalid parameter", detail, parameter=parameter)


def error_response(errors: Sequence[ApiError]) -> JsonApiResponse:
    """One response for these errors; its status (and headers) are the first error's."""
    return JsonApiResponse(
        {"errors": [error.as_error() for error in errors]},
        status_code=errors[0].status,
        headers=errors[0].headers or None,
    )


# The error shape, for the OpenAPI document ------------------------------------------------


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PointerSource(_Source):
    pointer: str = Field(description="A JSON pointer into the request body; '' for all of it")


class ParameterSource(_Source):
    parameter: str = Field(description="The query or path parameter at fault")


class HeaderSource(_Source):
    header: str = Field(description="The request header at fault, such as DD-API-KEY")


class ErrorObject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str = Field(description="The HTTP status, as a string")
    title: str
    detail: str = Field(description="What is wrong, naming the bad value, and the fix")
    source: PointerSource | ParameterSource | HeaderSource


class ErrorDocument(BaseModel):
    """Every error response: one or more errors, the first one's status the response's."""

    model_config = ConfigDict(extra="forbid")

    errors: list[ErrorObject] = Field(min_length=1)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorDocument, "description": "A refused request; nothing was written"},
    "5XX": {"model": ErrorDocument, "description": "The store is busy (503: retry) or failed"},
}
"""The error responses every API route documents, for ``APIRouter(responses=...)``."""


def resource(kind: str, identifier: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": identifier, "type": kind, "attributes": dict(attributes)}


def document(
    data: Any, *, meta: Mapping[str, Any] | None = None, status: int = 200
) -> JsonApiResponse:
    body: dict[str, Any] = {"data": data}
    if meta:
        body["meta"] = dict(meta)
    return JsonApiResponse(body, status_code=status)


def pointer(*parts: str | int) -> str:
    """A JSON pointer from its parts, escaped as RFC 6901 says."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


# Cursors -----------------------------------------------------------------------------------

CURSOR_PARAMETER = "page[cursor]"


def encode_cursor(state: Mapping[str, Any]) -> str:
    """An opaque cursor: the state to resume from, as URL-safe base64 of JSON."""
    text = json.dumps(dict(state), separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str | None, *, fields: Mapping[str, type]) -> dict[str, Any] | None:
    """The state a cursor of ours holds, checked against ``fields`` (name to type).

    None for no cursor; a cursor we did not make is a 400 error naming ``page[cursor]``.
    """
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        state = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        state = None
    valid = isinstance(state, dict) and set(state) == set(fields)
    if valid:
        assert isinstance(state, dict)
        for name, kind in fields.items():
            value = state[name]
            wrong_type = isinstance(value, bool) or not isinstance(value, kind)
            if wrong_type or (isinstance(value, int) and value < 0):
                valid = False
    if not valid:
        raise bad_parameter(
            f"page[cursor] {cursor[:40]!r} is not a cursor of this list; use the "
            "meta.after value of the previous page, or leave it out for the first page",
            parameter=CURSOR_PARAMETER,
        )
    assert isinstance(state, dict)
    return state


def page_of(
    items: Sequence[Any], *, cursor: str | None, limit: int
) -> tuple[Sequence[Any], str | None]:
    """An offset page of ``items``: (the page, the next cursor or None)."""
    state = decode_cursor(cursor, fields={"offset": int})
    return slice_page(items, offset=state["offset"] if state else 0, limit=limit)


def slice_page(
    items: Sequence[Any], *, offset: int, limit: int, state: Mapping[str, Any] | None = None
) -> tuple[Sequence[Any], str | None]:
    """``items[offset:offset + limit]`` and the cursor of the rest (carrying ``state``)."""
    after = None
    if offset + limit < len(items):
        after = encode_cursor({**(state or {}), "offset": offset + limit})
    return items[offset : offset + limit], after
