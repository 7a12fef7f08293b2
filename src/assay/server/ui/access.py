"""Who may see the pages: the API's key check, with the key kept in a cookie.

A browser cannot send the ``DD-API-KEY`` header, so where the server requires a key (see
:mod:`assay.server.auth`) a page without one answers with a form asking for it once;
``POST /llm/login`` checks it and keeps it in the ``assay_api_key`` cookie (HttpOnly,
SameSite=Lax, Secure over HTTPS), which every page then presents as the key. A key limited
to some projects sees only their experiments and datasets, as in the API. ``POST
/llm/logout`` forgets it. Both posts must carry the page's form token (:mod:`.csrf`), or
they answer 403 with the form again. Where no key is required (loopback), nothing is asked.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from assay.errors import DatasetNotFoundError, ExperimentNotFoundError
from assay.server.auth import Access, Authenticator
from assay.server.dependencies import Store
from assay.server.jsonapi import ApiError
from assay.server.ui import csrf
from assay.server.ui.rendering import KEY_COOKIE, PREFIX, PageError, page_not_found, render
from assay.store.records import DatasetInfo, ExperimentInfo
from assay.store.sql.backend import SqlBackend

COOKIE = KEY_COOKIE
router = APIRouter(include_in_schema=False)


class LoginRequired(PageError):
    """A page needs a key the browser has not given (or gave a wrong one)."""

    def __init__(self, detail: str, *, next_url: str) -> None:
        super().__init__(401, "API key required", detail)
        self.next_url = next_url


def page_access(request: Request, store: Store) -> Access:
    """The dependency of every page: the caller's access, or the key form (401)."""
    authenticator: Authenticator = request.app.state.authenticator
    key = request.cookies.get(COOKIE) or request.headers.get("DD-API-KEY")
    try:
        return authenticator.access(request, store, api_key=key, bearer=None)
    except ApiError as error:
        if error.status != 401:
            raise
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(error.detail, next_url=target) from error


Viewer = Annotated[Access, Depends(page_access)]


def login_page(request: Request, error: LoginRequired) -> HTMLResponse:
    detail = error.detail if request.cookies.get(COOKIE) else ""
    return render(
        request,
        "login.html",
        {"title": "API key required", "next_url": error.next_url, "detail": detail},
        status=401,
    )


def _safe_next(target: str) -> str:
    """Only a path of this server: never a redirect elsewhere."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return f"{PREFIX}/experiments"
    return target


def _forged(request: Request, next_url: str) -> HTMLResponse:
    """The login form again (with a fresh token cookie if need be): the post's token was
    missing or not the cookie's, e.g. a form posted from another site."""
    return render(
        request,
        "login.html",
        {
            "title": "API key required",
            "next_url": _safe_next(next_url),
            "detail": "This form expired or came from another site; submit it again.",
        },
        status=403,
    )


@router.post("/llm/login")
def login(
    request: Request,
    store: Store,
    key: Annotated[str, Form()],
    next_url: Annotated[str, Form(alias="next")] = f"{PREFIX}/experiments",
    token: Annotated[str, Form(alias=csrf.FIELD)] = "",
) -> Response:
    if not csrf.is_valid(request, token):
        return _forged(request, next_url)
    authenticator: Authenticator = request.app.state.authenticator
    try:
        authenticator.access(request, store, api_key=key.strip(), bearer=None)
    except ApiError as error:
        failed = LoginRequired(error.detail, next_url=_safe_next(next_url))
        return render(
            request,
            "login.html",
            {"title": "API key required", "next_url": failed.next_url, "detail": error.detail},
            status=401,
        )
    response = RedirectResponse(_safe_next(next_url), status_code=303)
    response.set_cookie(
        COOKIE,
        key.strip(),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/llm/logout")
def logout(request: Request, token: Annotated[str, Form(alias=csrf.FIELD)] = "") -> Response:
    if not csrf.is_valid(request, token):
        return _forged(request, f"{PREFIX}/experiments")
    response = RedirectResponse(f"{PREFIX}/experiments", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def experiment_for(store: SqlBackend, experiment_id: str, viewer: Access) -> ExperimentInfo:
    """The experiment, if it exists and the viewer may see it; else the 404 page."""
    detail = f"No experiment with id {experiment_id!r}"
    try:
        viewer.check_experiment(store, experiment_id)
        return store.get_experiment(experiment_id)
    except (ApiError, ExperimentNotFoundError) as error:
        raise page_not_found(detail) from error


def dataset_for(store: SqlBackend, dataset_id: str, viewer: Access) -> DatasetInfo:
    """The dataset, if it exists and the viewer may see it; else the 404 page."""
    detail = f"No dataset with id {dataset_id!r}"
    try:
        viewer.check_dataset(store, dataset_id)
        return store.get_dataset(dataset_id)
    except (ApiError, DatasetNotFoundError) as error:
        raise page_not_found(detail) from error
