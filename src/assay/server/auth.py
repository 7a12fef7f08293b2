"""API keys on the server: who is calling, and which projects the caller may see.

A key (made with ``assay keys create NAME``; see :mod:`assay.store.sql.keys`) comes in the
``DD-API-KEY`` header, where ddtrace and Assay's SDK send ``DD_API_KEY``, or as
``Authorization: Bearer KEY``. ``DD-APPLICATION-KEY``, which ddtrace sends too, is
accepted and not needed.

Whether a key is **required** is decided per app (``create_app(require_auth=...)``):

- required: every API route answers 401 to a request without a live key;
- optional: a request without a key, or with a string that is not a key of this store
  (ddtrace's placeholder keys), may use every project. A live key still limits the
  request to its projects, and a revoked key is refused: it is a key someone meant to
  stop.

A key limited to some projects (``--project``) sees only those: lists leave the others
out, reading or writing one of them by id answers 404 exactly as for an id that does not
exist, and creating a project outside the list is a 403.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from assay.server.dependencies import Store
from assay.server.jsonapi import ApiError, not_found
from assay.store.sql.backend import SqlBackend
from assay.store.sql.keys import KEY_PREFIX, ApiKeyInfo
from assay.store.sql.lookups import dataset_projects, experiment_projects, list_projects

logger = logging.getLogger("assay.server")

API_KEY_HEADER = "DD-API-KEY"
APP_KEY_HEADER = "DD-APPLICATION-KEY"
USE_INTERVAL = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per key (and server process)."""
_CREATE = "create one on the server's machine with `assay keys create NAME`"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="assay"'}

_api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="DD-API-KEY",
    description="An Assay API key (`assay keys create NAME`), as ddtrace sends DD_API_KEY.",
    auto_error=False,
)
_bearer = HTTPBearer(
    scheme_name="Bearer",
    description="An Assay API key (`assay keys create NAME`) as a bearer token.",
    auto_error=False,
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only: ``localhost``, 127.0.0.0/8 or ``::1``."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


@dataclass(frozen=True)
class Access:
    """What the caller of one request may see: every project, or a key's projects."""

    key: ApiKeyInfo | None = None
    """The live key the request came with, if any."""
    project_ids: frozenset[str] | None = None
    """The ids of the existing projects the key may use; None for every project."""

    @property
    def limited(self) -> bool:
        """Whether the caller may see only some projects."""
        return self.project_ids is not None

    def sees(self, project_id: str) -> bool:
        """Whether the project with this id is visible (to read and to write)."""
        return self.project_ids is None or project_id in self.project_ids

    def check_dataset(
        self,
        store: SqlBackend,
        dataset_id: str,
        *,
        parameter: str | None = None,
        pointer: str | None = None,
    ) -> None:
        """A 404 for a limited caller unless the dataset (deleted or not) is in one of its
        projects: the same answer whether it is hidden or does not exist."""
        if self.limited:
            owner = dataset_projects(store.engine, [dataset_id]).get(dataset_id)
            if owner is None or not self.sees(owner):
                detail = f"No dataset with id {dataset_id!r}"
                raise not_found(detail, parameter=parameter, pointer=pointer)

    def check_experiment(
        self,
        store: SqlBackend,
        experiment_id: str,
        *,
        parameter: str | None = None,
        pointer: str | None = None,
    ) -> None:
        """A 404 for a limited caller unless the experiment is in one of its projects."""
        if self.limited:
            owner = experiment_projects(store.engine, [experiment_id]).get(experiment_id)
            if owner is None or not self.sees(owner):
                detail = f"No experiment with id {experiment_id!r}"
                raise not_found(detail, parameter=parameter, pointer=pointer)

    def may_create(self, project_name: str) -> bool:
        """Whether the caller may create (or get) the project of this name."""
        return self.key is None or self.key.projects is None or project_name in self.key.projects

    def forbidden_project(self, project_name: str) -> ApiError:
        """The 403 for creating a project outside the key's list."""
        assert self.key is not None and self.key.projects is not None
        allowed = ", ".join(repr(name) for name in self.key.projects)
        return ApiError(
            403,
            "Forbidden",
            f"The API key {self.key.name!r} may use only the projects {allowed}, not "
            f"{project_name!r}; use one of them, or a key made for it "
            "(`assay keys create NAME --project PROJECT`)",
            pointer="/data/attributes/name",
        )


EVERY_PROJECT = Access()


class Authenticator:
    """The key check of one app, with its memory of when each key was last recorded."""

    def __init__(self, *, required: bool | None) -> None:
        self.required = required
        self._recorded: dict[str, float] = {}
        self._lock = threading.Lock()

    def required_for(self, request: Request) -> bool:
        """``required``, or when None: whether the request reached a non-loopback address.

        A client in the same process (no socket, as FastAPI's ``TestClient``) or on a Unix
        socket counts as local.
        """
        if self.required is not None:
            return self.required
        server = request.scope.get("server")
        if not server:
            return False
        try:
            ipaddress.ip_address(str(server[0]))
        except ValueError:
            return False
        return not is_loopback(str(server[0]))

    def access(
        self, request: Request, store: SqlBackend, *, api_key: str | None, bearer: str | None
    ) -> Access:
        presented = [
            (header, value.strip())
            for header, value in ((API_KEY_HEADER, api_key), ("Authorization", bearer))
            if value and value.strip()
        ]
        required = self.required_for(request)
        if not presented:
            if required:
                raise _refused(_missing_detail(request), header=API_KEY_HEADER)
            return EVERY_PROJECT
        # A client may send the same key in both headers (Assay's SDK does): look it up once.
        unique = dict.fromkeys(value for _, value in presented)
        looked_up = {value: store.find_api_key(value) for value in unique}
        found = [(header, looked_up[value]) for header, value in presented]
        known = [(header, key) for header, key in found if key is not None]
        live = [key for _, key in known if not key.revoked]
        if live:
            key = live[0]
            self._note_use(store, key)
            return Access(key=key, project_ids=_project_ids(store, key))
        if known:
            header, revoked = known[0]
            assert revoked.revoked_at is not None
            raise _refused(
                f"The API key {revoked.name!r} ({revoked.prefix}...) in {header} was revoked "
                f"on {revoked.revoked_at:%Y-%m-%d %H:%M} UTC; {_CREATE}",
                header=header,
            )
        if required:
            header, value = presented[0]
            raise _refused(_unknown_detail(request, header, value), header=header)
        return EVERY_PROJECT

    def _note_use(self, store: SqlBackend, key: ApiKeyInfo) -> None:
        """Record ``last_used_at``, at most once per ``USE_INTERVAL`` per key."""
        now = datetime.now(UTC)
        if key.last_used_at is not None and now - key.last_used_at < USE_INTERVAL:
            return  # another process (or this one) recorded it a moment ago
        tick = time.monotonic()
        with self._lock:
            last = self._recorded.get(key.id)
            if last is not None and tick - last < USE_INTERVAL.total_seconds():
                return
            self._recorded[key.id] = tick
        try:
            store.record_api_key_use(key.id, now)
        except OperationalError as error:
            # A busy store must not refuse a request over bookkeeping.
            logger.warning("could not record the use of API key %r: %s", key.name, error.orig)


def _project_ids(store: SqlBackend, key: ApiKeyInfo) -> frozenset[str] | None:
    if key.projects is None:
        return None
    return frozenset(project.id for project in list_projects(store.engine, names=key.projects))


def _refused(detail: str, *, header: str) -> ApiError:
    return ApiError(401, "Unauthorized", detail, header=header, headers=_CHALLENGE)


def _app_key_hint(request: Request) -> str:
    if request.headers.get(APP_KEY_HEADER, "").strip().startswith(KEY_PREFIX):
        return (
            f" ({APP_KEY_HEADER} holds an Assay key: send it as {API_KEY_HEADER}, "
            "that is DD_API_KEY, instead)"
        )
    return ""


def _missing_detail(request: Request) -> str:
    return (
        f"This server requires an API key{_app_key_hint(request)}: send it in the "
        f"{API_KEY_HEADER} header (DD_API_KEY for ddtrace) or as Authorization: Bearer KEY; "
        f"{_CREATE}"
    )


def _unknown_detail(request: Request, header: str, value: str) -> str:
    if value.startswith(KEY_PREFIX):
        what = f"The API key {value[: len(KEY_PREFIX) + 6]}... in {header} is not a key of "
        what += "this server (mistyped, or made for another store)"
    else:
        what = f"{header} holds no Assay key (they start with {KEY_PREFIX!r})"
    return f"{what}{_app_key_hint(request)}; `assay keys list` shows the keys, or {_CREATE}"


async def authenticate(
    request: Request,
    store: Store,
    api_key: Annotated[str | None, Security(_api_key)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Access:
    """The dependency of every API route: the caller's access, or a 401.

    Async: a request without a key (a server on loopback, as ddtrace posts to it) is
    answered here, where a plain function would cost every request a thread-pool hop, a
    third of the event loop's work for a small post; a key is looked up in the store on
    a worker thread."""
    authenticator: Authenticator = request.app.state.authenticator
    token = bearer.credentials if bearer else None
    if not (api_key and api_key.strip()) and not (token and token.strip()):
        # Nothing presented: ``access`` reads no store, it refuses or lets through.
        return authenticator.access(request, store, api_key=None, bearer=None)
    return await run_in_threadpool(
        authenticator.access, request, store, api_key=api_key, bearer=token
    )


async def request_access(request: Request, store: SqlBackend) -> Access:
    """``authenticate`` for a request served outside FastAPI's dependency injection (the
    ingest lane, ``assay.server.lane``): the same headers, read by the same schemes."""
    return await authenticate(request, store, await _api_key(request), await _bearer(request))


Caller = Annotated[Access, Depends(authenticate)]
"""What a route function declares to learn which projects the caller may see."""
