"""Fast bulk inserts: one compiled statement, rows as tuples, JSON encoded once.

SQLAlchemy's per-row parameter processing costs more than SQLite's own insert; results
are written by the thousand, so the writer hands the driver plain tuples instead. Also
``chunks``, for the look-ups that name many keys at once.
"""

from __future__ import annotations

import json
import math
import threading
import weakref
from collections.abc import Iterator, Sequence
from functools import partial
from itertools import chain, compress
from operator import is_not, or_
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table, insert

# Parameters per multi-row statement: large enough that per-statement costs vanish, well
# under SQLite's limit of 32,766.
_MAX_PARAMETERS = 2000

T = TypeVar("T")
KEYS_AT_ONCE = 500
"""Keys a look-up names in one ``IN`` list: a statement takes at most 32,766 parameters on
SQLite and 65,535 on PostgreSQL, and a page or a batch may name more keys than that."""


def chunks(items: Sequence[T], size: int = KEYS_AT_ONCE) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ``_present(value)`` is ``value is not None``, called from C by ``map``.
_present = partial(is_not, None)


def _fallback(value: Any) -> Any:
    # A task may return anything; storing its text beats losing the row.
    return repr(value)


# json.dumps' own spacing and real characters (not \u escapes): free-text search looks for
# words in this text, as a person would type them.
_encoder = json.JSONEncoder(ensure_ascii=False, default=_fallback, allow_nan=False)
_encode_string = json.encoder.encode_basestring  # what _encoder does with a str


def _sanitize(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sanitize(v) for v in value]
    return value


def encode_json(value: Any) -> str | None:
    """JSON text for a JSON column; None stays SQL NULL. NaN and infinities become null/text."""
    if value is None:
        return None
    if type(value) is str:  # most outputs: skip the encoder's own dispatch
        return _encode_string(value)
    try:
        return _encoder.encode(value)
    except ValueError:  # NaN or infinity somewhere inside: strict JSON has no spelling for it
        return _encoder.encode(_sanitize(value))


class BulkInsert:
    """``INSERT INTO table (columns...)`` compiled once for an engine's dialect.

    On a driver with positional parameters (SQLite), the columns that are NULL in every row
    are left out, and many rows go in one statement. Both cut the driver's per-value work,
    which is most of an insert's cost for the wide, mostly-empty rows of spans and
    evaluations; and a statement of many rows releases the GIL once, where
    ``executemany`` releases it per row and must win it back from busy worker threads
    each time. Rows keep their order: it is the order they are read back in.
    """

    def __init__(self, engine: Engine, table: Table, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        self._table = table
        self._engine = engine
        compiled = insert(table).compile(dialect=engine.dialect, column_keys=list(columns))
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        # A column left out would take its default instead of the NULL it was given.
        kept = tuple(
            table.c[name].default is not None or table.c[name].server_default is not None
            for name in self.columns
        )
        self._kept = kept if any(kept) else None
        self._by_shape: dict[tuple[bool, ...], _Statement] = {}

    def execute(self, connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if not self.positional:
            columns = self.columns
            connection.exec_driver_sql(
                self.sql, [dict(zip(columns, row, strict=True)) for row in rows]
            )
            return
        # Leave out the columns that are NULL in every row; keep the rows in their order,
        # since the order they are read back in (by primary key) is the order they came in.
        shape = tuple(map(any, zip(*(map(_present, row) for row in rows), strict=True)))
        if self._kept is not None:
            shape = tuple(map(or_, shape, self._kept))
        if not all(shape):
            rows = [tuple(compress(row, shape)) for row in rows]
        self._statement(shape).execute(connection, rows)

    def _statement(self, shape: tuple[bool, ...]) -> _Statement:
        statement = self._by_shape.get(shape)
        if statement is None:
            columns = list(compress(self.columns, shape))
            compiled = insert(self._table).compile(
                dialect=self._engine.dialect, column_keys=columns
            )
            order = tuple(compiled.positiontup or ())
            if order != tuple(columns):
                raise AssertionError(f"unexpected parameter order {order} for {columns}")
            statement = self._by_shape[shape] = _Statement(str(compiled), len(columns))
        return statement


class _Statement:
    """One positional ``INSERT ... VALUES (?, ...)``, run as many rows per statement."""

    def __init__(self, sql: str, width: int) -> None:
        head, _, group = sql.rpartition(" VALUES ")
        self._head = head + " VALUES "
        self._group = group
        self._chunk = max(1, _MAX_PARAMETERS // max(width, 1))
        self._chunk_sql = self._values_sql(self._chunk)

    def _values_sql(self, count: int) -> str:
        return self._head + ", ".join([self._group] * count)

    def execute(self, connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        chunk = self._chunk
        whole = len(rows) - len(rows) % chunk
        if whole:
            connection.exec_driver_sql(
                self._chunk_sql,
                [
                    tuple(chain.from_iterable(rows[start : start + chunk]))
                    for start in range(0, whole, chunk)
                ],
            )
        if whole < len(rows):
            rest = rows[whole:]
            connection.exec_driver_sql(
                self._values_sql(len(rest)), tuple(chain.from_iterable(rest))
            )


_inserts: weakref.WeakKeyDictionary[Engine, dict[str, BulkInsert]] = weakref.WeakKeyDictionary()
_inserts_lock = threading.Lock()


def bulk_insert(connection: Connection, table: Table, columns: Sequence[str]) -> BulkInsert:
    """The compiled insert of these columns, made once per engine."""
    engine = connection.engine
    name = f"{table.name}:{','.join(columns)}"
    with _inserts_lock:
        statements = _inserts.setdefault(engine, {})
        statement = statements.get(name)
        if statement is None:
            statement = statements[name] = BulkInsert(engine, table, columns)
    return statement
