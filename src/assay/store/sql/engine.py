"""Opening the store: an engine with the right settings, migrated to the newest schema."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.pool import StaticPool

from assay.errors import StoreError

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD_REVISION = "0016"
"""The newest migration; a test checks it against the migrations folder. Knowing it here
lets an up-to-date store open without importing Alembic at all."""
_migrated: set[str] = set()
_migrate_lock = threading.Lock()


def in_memory(url: URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database: one connection holds it, and each
    one opened (``sqlite://``, ``sqlite:///:memory:``) starts empty."""
    return url.get_backend_name() == "sqlite" and (url.database or "") in ("", ":memory:")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers (assay show, assay serve) never block the experiment's one writer.
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable across process crashes in WAL mode, which is what resume needs.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # 16 MiB of page cache a connection, not SQLite's 2 MB: a count over one run's index
    # range of a 100,000-record experiment (a few MB) then reads from memory, not through
    # a read call per page, and takes half the time. The cache is kept across
    # transactions while no other connection writes, and filled only as pages are read.
    cursor.execute("PRAGMA cache_size=-16384")
    cursor.close()


def open_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL mode and their folder is created."""
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise StoreError(
            f"Cannot read the store URL {url!r}: {error}. Use a SQLAlchemy URL such as "
            "sqlite:///path/to/assay.db or postgresql+psycopg://user@host/database"
        ) from error
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        memory = in_memory(parsed)
        if not memory:
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreError(
                    f"Cannot create the folder of the store {database!r}: {error}. "
                    "Set ASSAY_HOME or ASSAY_DATABASE_URL to a writable place."
                ) from error
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False},
            # One shared connection is the only way an in-memory database outlives a call.
            poolclass=StaticPool if memory else None,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except (ImportError, NoSuchModuleError) as error:
        driver = parsed.get_backend_name()
        hint = "pip install 'assay[postgres]'" if driver == "postgresql" else "install its driver"
        raise StoreError(f"No database driver for {parsed.drivername!r}: {hint}") from error


def _alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest revision in the migrations folder (what HEAD_REVISION must equal)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The store's schema revision, or None for an empty database."""
    with engine.connect() as connection:
        if not engine.dialect.has_table(connection, "alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


@contextmanager
def _exclusive_migration(engine: Engine) -> Iterator[None]:
    """Hold a lock that other processes migrating the same store also take.

    Two processes opening a new store at once (an experiment, and `assay show` in another
    terminal) must not both create its tables. SQLite gets a lock file beside the
    database; PostgreSQL an advisory lock held for the migration's transaction.
    """
    database = engine.url.database or ""
    if engine.dialect.name == "sqlite" and not in_memory(engine.url):
        import fcntl

        with open(f"{Path(database).expanduser()}.migrate-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    else:
        yield


def _upgrade(engine: Engine) -> None:
    from alembic import command

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Transaction-scoped: released at commit, also if this process dies.
            connection.execute(text("SELECT pg_advisory_xact_lock(7311520441)"))
        current = (
            connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            if connection.dialect.has_table(connection, "alembic_version")
            else None
        )
        if current == HEAD_REVISION:
            return  # another process migrated while this one waited for the lock
        config = _alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (checked once per engine URL per process)."""
    key = engine.url.render_as_string(hide_password=False)
    if key in _migrated and not in_memory(engine.url):
        return
    with _migrate_lock:
        try:
            revision = current_revision(engine)
        except OperationalError as error:
            raise StoreError(
                f"Cannot open the store at {engine.url.render_as_string()}: "
                f"{str(error.orig).strip()}"
            ) from error
        if revision != HEAD_REVISION:
            try:
                with _exclusive_migration(engine):
                    _upgrade(engine)
            except Exception as error:  # any driver error; say which store failed
                raise StoreError(
                    f"Cannot migrate the store at {engine.url.render_as_string()}: {error}"
                ) from error
    _migrated.add(key)
