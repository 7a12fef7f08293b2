"""Bulk inserts: rows whose NULLs differ, in more rows than one statement holds."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, select, text

from assay.store.sql.backend import SqlBackend
from assay.store.sql.bulk import _MAX_PARAMETERS, bulk_insert, encode_json

metadata = MetaData()
samples = Table(
    "bulk_samples",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
    Column("note", String(50), nullable=True),
    Column("size", Integer, nullable=True),
    # Left out of a statement, these two would store their defaults instead of NULL.
    Column("python_default", Integer, nullable=True, default=7),
    Column("server_default", Integer, nullable=True, server_default=text("9")),
)
COLUMNS = ("pk", "name", "note", "size", "python_default", "server_default")
notes = Table(
    "bulk_notes",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("name", String(50), nullable=False),
    Column("note", String(50), nullable=True),
    Column("size", Integer, nullable=True),
    Column("server_default", Integer, nullable=True, server_default=text("9")),
)


def test_rows_of_mixed_nulls_are_stored_exactly(backend: SqlBackend) -> None:
    metadata.create_all(backend.engine)
    # Enough rows that the SQLite path splits them into several multi-row statements plus
    # a remainder, with NULLs in different places from row to row.
    count = 3 * (_MAX_PARAMETERS // len(COLUMNS)) + 7
    rows: list[tuple[Any, ...]] = [
        (
            n,
            f"row {n}",
            None if n % 2 else f"note {n}",
            None if n % 3 else n,
            None if n % 5 else n,
            None if n % 7 else n,
        )
        for n in range(count)
    ]
    with backend.engine.begin() as connection:
        insert = bulk_insert(connection, samples, COLUMNS)
        insert.execute(connection, rows)
        insert.execute(connection, [])  # nothing to do, and no error
    with backend.engine.connect() as connection:
        stored = connection.execute(select(samples).order_by(samples.c.pk)).all()
    assert [tuple(row) for row in stored] == rows


def test_rows_keep_their_order_whatever_their_nulls(backend: SqlBackend) -> None:
    # Read back by primary key, rows must come in the order they were given: a row's
    # evaluations are read in that order. Keys are assigned by the database here.
    metadata.create_all(backend.engine)
    columns = ("name", "note", "size")
    rows = [(f"row {n}", None if n % 2 else "note", None if n % 3 else n) for n in range(50)]
    rows += [(f"late {n}", None, None) for n in range(3)]  # note and size NULL throughout
    with backend.engine.begin() as connection:
        insert = bulk_insert(connection, notes, columns)
        insert.execute(connection, rows[:50])
        insert.execute(connection, rows[50:])
    with backend.engine.connect() as connection:
        stored = connection.execute(
            select(notes.c.name, notes.c.note, notes.c.size, notes.c.server_default).order_by(
                notes.c.pk
            )
        ).all()
    assert [tuple(row[:3]) for row in stored] == rows
    assert {row.server_default for row in stored} == {9}  # never given: its default


def test_strings_encode_as_json_does() -> None:
    for value in ["plain", 'quote " and \\ backslash', "é and 日本", "line\nbreak", "\x00", ""]:
        assert encode_json(value) == json.dumps(value, ensure_ascii=False)
    assert encode_json(None) is None
    assert encode_json(float("nan")) == "null"
    assert encode_json({"a": [1, 2.5, None]}) == '{"a": [1, 2.5, null]}'
