"""Shared fixtures: an isolated Assay home for every test, and real stores to test on.

Stores are real: SQLite files under ``tmp_path`` and, when it is reachable, a fresh
PostgreSQL database on 127.0.0.1:5432 created for the test (a copy of one migrated once a
session) and dropped after it. Tests marked ``@on_every_backend`` (see ``backends.py``) also
run against a real Assay server over HTTP, on a random loopback port.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from assay import LLMObs
from assay.store import open_backend
from assay.store.sql.backend import SqlBackend
from backends import STORES, drop_template, postgres_database


@pytest.fixture(autouse=True)
def assay_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Every test gets its own ASSAY_HOME, so no test touches the user's store."""
    home = tmp_path_factory.mktemp("assay-home")
    monkeypatch.setenv("ASSAY_HOME", str(home))
    monkeypatch.delenv("ASSAY_DATABASE_URL", raising=False)
    monkeypatch.setenv("ASSAY_PROGRESS", "0")
    for variable in (
        "DD_SITE",
        "DD_API_KEY",
        "DD_APP_KEY",
        "DD_LLMOBS_PROJECT_NAME",
        "DD_LLMOBS_ENABLED",
        "ASSAY_URL",
        "ASSAY_API_KEY",
        "ASSAY_SERVER_URL",
    ):
        monkeypatch.delenv(variable, raising=False)
    yield home
    LLMObs.disable()


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL to a new PostgreSQL database (at the newest schema, or with none for a test
    marked ``empty_database``), dropped after the test."""
    empty = request.node.get_closest_marker("empty_database") is not None
    with postgres_database(empty=empty) as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def _postgres_template() -> Iterator[None]:
    yield
    drop_template()


@dataclass
class AssayServer:
    """``assay serve`` running in this process, over a store of its own."""

    url: str
    """``http://127.0.0.1:PORT``"""
    backend: SqlBackend
    """The server's store, to look behind the API."""


@pytest.fixture
def assay_server(tmp_path: Path) -> Iterator[AssayServer]:
    """A real Assay server (uvicorn, the app of `assay serve`) on a random loopback port,
    over a fresh SQLite file."""
    from assay.server import create_app
    from live_server import serving

    backend = SqlBackend(f"sqlite:///{tmp_path}/server.db")
    try:
        with serving(create_app(backend=backend)) as url:
            yield AssayServer(url, backend)
    finally:
        backend.close()


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store: a SQLite file, a fresh PostgreSQL database, or (for the
    ``http`` flavour of ``@on_every_backend``) an empty Assay server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/assay.db"
    if request.param == "http":
        server: AssayServer = request.getfixturevalue("assay_server")
        return server.url
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def backend(store_url: str) -> Iterator[Any]:
    """The backend of ``store_url``: a ``SqlBackend``, or an ``HttpBackend`` for a server."""
    opened = open_backend(store_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def llmobs(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[LLMObs]]:
    """LLMObs enabled on a fresh store (every SDK scenario runs on SQLite and PostgreSQL).

    On a server, ``LLMObs.enable(site=URL)``, and ``ASSAY_URL`` points other readers of the
    store (``open_backend()``, the CLI) at the same server.
    """
    if store_url.startswith("http"):
        monkeypatch.setenv("ASSAY_URL", store_url)
        LLMObs.enable(project_name="test-project", site=store_url)
    else:
        monkeypatch.setenv("ASSAY_DATABASE_URL", store_url)
        LLMObs.enable(project_name="test-project")
    yield LLMObs
    LLMObs.disable()
