"""The backends the SDK can hold, for tests that run one scenario on each.

``store_url`` (see conftest) is the URL of an empty store: a SQLite file, a PostgreSQL
database, or, for ``"http"``, an Assay server (``assay serve`` in a thread, over a SQLite
file of its own) that ``LLMObs.enable(site=...)`` talks to through ``HttpBackend``. The
``http`` flavour is opt-in, test by test, with ``@on_every_backend``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

STORES = ["sqlite", "postgresql"]
EVERY_BACKEND = [*STORES, "http"]

on_every_backend = pytest.mark.parametrize("store_url", EVERY_BACKEND, indirect=True)
"""Runs a test that uses ``store_url`` (or ``llmobs``, ``backend``) on every backend."""

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
_template: list[str] = []
"""The migrated database that new test databases are copied from, made once a session."""


def _admin() -> Any:
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    try:
        return psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN} ({error})")


def _url(name: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def migrated_template() -> str:
    """A database migrated to the newest revision, once a session (``drop_template`` at
    its end): a copy of it takes a fifth of the time of migrating a new database, and
    nearly every PostgreSQL test wants one. The migrations still run from nothing, here."""
    if not _template:
        from psycopg import sql
        from sqlalchemy import create_engine

        from assay.store.sql.engine import migrate

        name = f"assay_template_{uuid.uuid4().hex[:12]}"
        with _admin() as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        engine = create_engine(_url(name))
        try:
            migrate(engine)
        finally:
            engine.dispose()  # a template must have no connections to be copied
        _template.append(name)
    return _template[0]


def drop_template() -> None:
    if _template:
        from psycopg import sql

        with _admin() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(_template.pop())
                )
            )


@contextmanager
def postgres_database(*, empty: bool = False) -> Iterator[str]:
    """The URL of a new PostgreSQL database at the newest schema (with no schema at all if
    ``empty``), dropped afterwards."""
    from psycopg import sql

    admin = _admin()
    template = "template1" if empty else migrated_template()
    name = f"assay_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
        try:
            yield _url(name)
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
