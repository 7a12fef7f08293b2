"""Fast bulk inserts: one compiled statement, rows as tuples, JSON encoded once.

SQLAlchemy's per-row parameter processing costs more than SQLite's own insert; results
are written by the thousand, so the writer hands the driver plain tuples instead.
"""

from __future__ import annotations

import json
import math
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, insert


def _fallback(value: Any) -> Any:
    # A task may return anything; storing its text beats losing the row.
    return repr(value)


# json.dumps' own spacing and real characters (not \u escapes): free-text search looks for
# words in this text, as a person would type them.
_encoder = json.JSONEncoder(ensure_ascii=False, default=_fallback, allow_nan=False)


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
    try:
        return _encoder.encode(value)
    except ValueError:  # NaN or infinity somewhere inside: strict JSON has no spelling for it
        return _encoder.encode(_sanitize(value))


class BulkInsert:
    """``INSERT INTO table (columns...)`` compiled once for an engine's dialect."""

    def __init__(self, engine: Engine, table: Table, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        compiled = insert(table).compile(dialect=engine.dialect, column_keys=list(columns))
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        if self.positional:
            order = tuple(compiled.positiontup or ())
            if order != self.columns:
                raise AssertionError(f"unexpected parameter order {order} for {self.columns}")

    def execute(self, connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.positional:
            connection.exec_driver_sql(self.sql, list(rows))
        else:
            columns = self.columns
            connection.exec_driver_sql(
                self.sql, [dict(zip(columns, row, strict=True)) for row in rows]
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
