"""The journal of posts answered before they are written (``IngestWriter`` with a queue).

A small post costs the database far more written alone than written with hundreds of
others: each one touches a page of every index whose keys are random (span ids), and a
few hundred posts share most of those pages. While a server answers each post only once
its rows are committed, it never holds more posts than it has clients waiting. With a
queue, each checked post is stored here as the client sent it (one row, in one
statement or transaction for every post waiting), and answered; another thread later
writes many posts at once and deletes their journal rows. A row a killed server leaves behind is
written when the server starts again (``IngestWriter.recover``), and writing a post twice
stores it once (``assay.store.sql.ingest``: every span and metric has a unique key).

Where the journal is (``open_journal``): on PostgreSQL, the store's own table
``ingest_journal``, and a post's rows and the deletion of its journal row commit
together. On SQLite, a database file beside the store's (``assay.db-ingest``): SQLite
has one writer at a time, and in the store itself every journal entry would wait for the
write of the hundreds before it. There, the journal row goes after the post's rows are
committed, so a crash between the two leaves a post written and still in the journal,
and the next start writes it again, which stores nothing twice.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import DBAPIError

from assay.store.sql.bulk import chunks
from assay.store.sql.engine import in_memory, open_engine
from assay.store.sql.ingest.model import EventBatch
from assay.store.sql.tables import ingest_journal

SUFFIX = "-ingest"
"""What a SQLite store's journal file adds to the store's file name."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A post as its client sent it: enough to check and write it again after a restart."""

    kind: str
    """``"events"`` (an experiment events post) or ``"spans"`` (the span intake)."""
    key: str
    """The events post's experiment id; empty for the span intake."""
    body: bytes


@dataclass(frozen=True, slots=True)
class Decoded:
    """A journal entry made into what ``IngestWriter.submit`` takes."""

    batches: Mapping[str, EventBatch]
    skip_unknown: bool


class Decoder(Protocol):
    """Makes a journal entry into batches again; the server's, which parsed it first."""

    def __call__(self, entry: JournalEntry) -> Decoded: ...


_ROWS_A_STATEMENT = 300
"""Three values a row: within the 999 variables of a statement older SQLite allows."""


def append(connection: Connection, entries: Sequence[JournalEntry]) -> list[int]:
    """Store these entries; returns their sequence numbers, in order."""
    if not entries:
        return []
    if connection.dialect.name == "sqlite":
        return _insert(connection.connection.driver_connection, entries)
    rows = connection.execute(
        insert(ingest_journal).returning(ingest_journal.c.seq, sort_by_parameter_order=True),
        [{"kind": entry.kind, "key": entry.key, "body": entry.body} for entry in entries],
    )
    return [row.seq for row in rows]


def _insert(driver_connection: Any, entries: Sequence[JournalEntry]) -> list[int]:
    """SQLite: one multi-row insert, numbered from the driver's last row id.

    A statement, not one a row nor one returning its numbers: each call into SQLite lets
    the process's other threads take Python's lock, and getting it back may wait for up
    to 5 ms. SQLite numbers the rows of one insert consecutively: each new row gets the
    largest number plus one, and the statement holds the write lock throughout."""
    cursor = driver_connection.cursor()
    seqs: list[int] = []
    for chunk in chunks(entries, _ROWS_A_STATEMENT):
        values = ", ".join(["(?, ?, ?)"] * len(chunk))
        parameters = [value for entry in chunk for value in (entry.kind, entry.key, entry.body)]
        cursor.execute(f"INSERT INTO ingest_journal (kind, key, body) VALUES {values}", parameters)
        last: int = cursor.lastrowid
        seqs.extend(range(last - len(chunk) + 1, last + 1))
    return seqs


def remove(connection: Connection, seqs: Sequence[int]) -> None:
    """Delete the entries just written (in the transaction that wrote them)."""
    for chunk in chunks(sorted(seqs)):
        connection.execute(delete(ingest_journal).where(ingest_journal.c.seq.in_(list(chunk))))


def note_failure(connection: Connection, seq: int, error: BaseException) -> None:
    """Keep an entry that could not be written, with why: the next start tries it again."""
    message = f"{type(error).__name__}: {error}"
    connection.execute(
        update(ingest_journal).where(ingest_journal.c.seq == seq).values(error=message)
    )


def entries(connection: Connection) -> Iterator[tuple[int, JournalEntry]]:
    """Every entry, oldest first."""
    query = select(
        ingest_journal.c.seq, ingest_journal.c.kind, ingest_journal.c.key, ingest_journal.c.body
    ).order_by(ingest_journal.c.seq)
    for row in connection.execute(query):
        yield row.seq, JournalEntry(row.kind, row.key, bytes(row.body))


def journal_file(store: Engine) -> Path | None:
    """The file of a SQLite store's journal; None on PostgreSQL (a table of the store) and
    for an in-memory store (which has no journal: its writer writes every post at once)."""
    if store.dialect.name != "sqlite" or in_memory(store.url):
        return None
    return Path(f"{store.url.database}{SUFFIX}")


def open_journal(store: Engine, *, create: bool) -> Engine | None:
    """The engine that holds the store's journal: the store's own on PostgreSQL; on SQLite,
    one on the file beside the store, made if ``create``. None: no journal (an in-memory
    store, or a SQLite store whose journal file does not exist and ``create`` is False)."""
    if store.dialect.name != "sqlite":
        return store
    path = journal_file(store)
    if path is None or not (create or path.exists()):
        return None
    engine = open_engine(store.url.set(database=str(path)).render_as_string(hide_password=False))
    ingest_journal.create(engine, checkfirst=True)
    return engine


class JournalFile:
    """A SQLite journal file, appended to by the thread that answers requests (the event
    loop's: ``IngestWriter.accept``), on a connection of its own.

    Each append is one statement that commits by itself: no ``BEGIN`` or ``COMMIT`` of its
    own, each of which would be another call into SQLite (see ``_insert``). It never
    checkpoints the file's write-ahead log, which would stop the event loop for its
    fsyncs: the applier's deletions, on the journal engine's connections, do.
    """

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("synchronous=NORMAL", "busy_timeout=30000", "wal_autocheckpoint=0"):
            self._connection.execute(f"PRAGMA {pragma}")
        self._lock = threading.Lock()

    def append(self, entries: Sequence[JournalEntry]) -> list[int]:
        """Store these entries; returns their sequence numbers, in order. A database error
        is SQLAlchemy's, as from the engine (the server answers it 503, retry)."""
        if not entries:
            return []
        with self._lock:
            try:
                return _insert(self._connection, entries)
            except sqlite3.Error as error:
                raise DBAPIError.instance(
                    "INSERT INTO ingest_journal", None, error, sqlite3.Error
                ) from error

    def close(self) -> None:
        with self._lock:
            self._connection.close()
