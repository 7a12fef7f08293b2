"""Shared fixtures: an isolated Assay home for every test, and real stores to test on.

Stores are real: SQLite files under ``tmp_path`` and, when it is reachable, a fresh
PostgreSQL database on 127.0.0.1:5432 created for the test and dropped after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from assay import LLMObs
from assay.store.sql.backend import SqlBackend

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
STORES = ["sqlite", "postgresql"]


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
    ):
        monkeypatch.delenv(variable, raising=False)
    yield home
    LLMObs.disable()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL to a new, empty PostgreSQL database, dropped after the test."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    from psycopg import sql

    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN} ({error})")
    name = f"assay_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/assay.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def backend(store_url: str) -> Iterator[SqlBackend]:
    opened = SqlBackend(store_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def llmobs(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[LLMObs]]:
    """LLMObs enabled on a fresh store (every SDK scenario runs on SQLite and PostgreSQL)."""
    monkeypatch.setenv("ASSAY_DATABASE_URL", store_url)
    LLMObs.enable(project_name="test-project")
    yield LLMObs
    LLMObs.disable()
