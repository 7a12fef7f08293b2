"""Cross-site request forgery protection for the pages' forms: a double-submit token.

The only forms that change anything are ``POST /llm/login`` and ``POST /llm/logout``. A
page from another site could post them (logging a visitor in with the attacker's key, so
that what they look at next is the attacker's view, or logging them out); SameSite=Lax on
the key cookie does not stop a top-level form post. So every page carries a random token
twice: in the ``assay_csrf`` cookie (SameSite=Strict, HttpOnly) and in a hidden ``csrf``
field of its forms. A post is accepted only when the two agree, which another site cannot
arrange: it can neither read the page nor set this site's cookie. No server-side state,
so it works across several server processes.
"""

from __future__ import annotations

import secrets

from fastapi import Request
from starlette.responses import Response

COOKIE = "assay_csrf"
FIELD = "csrf"


def token_for(request: Request) -> tuple[str, bool]:
    """The request's token, and whether it is new (and must be set as a cookie)."""
    found = request.cookies.get(COOKIE, "")
    if len(found) >= 32:
        return found, False
    return secrets.token_urlsafe(32), True


def remember(request: Request, response: Response, token: str) -> None:
    """Set the token's cookie on ``response``."""
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def is_valid(request: Request, submitted: str) -> bool:
    """Whether the form's token is the cookie's (compared in constant time)."""
    expected = request.cookies.get(COOKIE, "")
    return bool(expected) and secrets.compare_digest(expected, submitted)
