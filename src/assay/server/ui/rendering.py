"""Templates, the filters they format values with, and the HTML error page.

Numbers are shown the way people read them: durations with a unit (``1.2 s``), costs in
dollars (stored as nanodollars), shares as percentages, long JSON cut to a preview (the
record page shows it whole). Every page extends ``base.html``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.responses import HTMLResponse

from assay._version import __version__
from assay.server.ui import csrf

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
PREFIX = "/llm"
KEY_COOKIE = "assay_api_key"
"""The cookie that keeps a page's API key (see :mod:`.access`)."""


class PageError(Exception):
    """A page that cannot be shown: answered with the HTML error page, not JSON."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


def page_not_found(detail: str) -> PageError:
    return PageError(404, "Not found", detail)


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """The template rendered with ``context`` (plus ``request``, the version and the
    form token of :mod:`.csrf`, whose cookie is set when the browser has none yet)."""
    token, new = csrf.token_for(request)
    response = templates.TemplateResponse(
        request,
        template,
        {
            "version": __version__,
            "prefix": PREFIX,
            "csrf_token": token,
            "signed_in": KEY_COOKIE in request.cookies,
            **context,
        },
        status_code=status,
        headers=headers,
    )
    assert isinstance(response, HTMLResponse)
    if new:
        csrf.remember(request, response, token)
    return response


def error_page(request: Request, error: PageError) -> HTMLResponse:
    return render(
        request,
        "error.html",
        {"title": error.title, "detail": error.detail, "status": error.status},
        status=error.status,
    )


# Filters -----------------------------------------------------------------------------------


def duration(nanoseconds: Any) -> str:
    """``1.23 s``, ``45 ms``, ``800 µs``; ``–`` when unknown."""
    if nanoseconds is None:
        return "–"
    value = float(nanoseconds)
    if value >= 60e9:
        return f"{value / 60e9:.1f} min"
    if value >= 1e9:
        return f"{value / 1e9:.2f} s"
    if value >= 1e6:
        return f"{value / 1e6:.1f} ms"
    if value >= 1e3:
        return f"{value / 1e3:.0f} µs"
    return f"{value:.0f} ns"


def cost(nanodollars: Any) -> str:
    """``$0.000064`` from 64000 nanodollars; ``–`` when unknown."""
    if nanodollars is None:
        return "–"
    dollars = float(nanodollars) / 1e9
    if dollars == 0:
        return "$0"
    if dollars >= 1:
        return f"${dollars:,.2f}"
    return f"${dollars:.6f}".rstrip("0")


def number(value: Any, digits: int = 3) -> str:
    """A value as a short string: numbers rounded, booleans as true/false."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:,.{digits}f}".rstrip("0")
    return str(value)


def share(value: Any) -> str:
    """``67%`` from 0.667."""
    if value is None:
        return "–"
    return f"{float(value) * 100:.0f}%"


def preview(value: Any, limit: int = 140) -> str:
    """A JSON value in one line, cut to ``limit`` characters; a string as it is."""
    if value is None:
        return ""
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pretty(value: Any) -> str:
    """A JSON value indented, or a string as it is."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=False)


def when(moment: Any) -> str:
    if not isinstance(moment, datetime):
        return "–"
    return moment.strftime("%Y-%m-%d %H:%M")


def short_id(identifier: Any) -> str:
    return str(identifier)[:8]


def query_string(parameters: dict[str, Any]) -> str:
    """``?a=1&b=2`` from the non-empty parameters ("" when none)."""
    kept = [
        (key, str(value)) for key, value in parameters.items() if value not in (None, "", False)
    ]
    return "?" + urlencode(kept) if kept else ""


def svg(markup: str) -> Markup:
    """SVG built by ``assay.server.ui.charts`` (which escapes every text it puts in)."""
    return Markup(markup)


for name, function in {
    "duration": duration,
    "cost": cost,
    "number": number,
    "share": share,
    "preview": preview,
    "pretty": pretty,
    "when": when,
    "short_id": short_id,
    "svg": svg,
}.items():
    templates.env.filters[name] = function
templates.env.globals["query_string"] = query_string
