"""Counting a search's matches beside its page.

A row query's total is a walk of an index range: `run_iteration:1
@trace.total_tokens:>1000` over 100,000 rows a run steps through 52,712 entries, about
2.5 ms in SQLite's C code, which holds no GIL. The page's items are mostly Python work
(decoding JSON, building dicts). Counted on a second connection, in a thread, the two
overlap on a machine with a second core, and a search costs the longer of the two instead
of their sum.

The counts run on an engine of their own, with a connection for each counting thread: a
count never waits for a connection of the main pool, which the searches waiting on it may
hold all of. An in-memory SQLite store has one connection and counts inline.

A count beside the page reads a snapshot of its own: while an experiment is being
written, its total may include rows committed a moment after the page was read, as a
search run a moment later would.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sqlalchemy import Connection, Engine

from assay.store.sql.engine import in_memory, open_engine

Total = int | Future[int]
"""A search's total: counted, or being counted beside the page."""


def settled(total: Total) -> int:
    """The total, once its count has finished."""
    return total if isinstance(total, int) else total.result()


class SideCounter:
    """Threads and connections for the counts of one store's searches (see the module
    docstring); made on first use, released by ``close``."""

    def __init__(self, threads: int | None = None) -> None:
        # More threads than cores would only queue; with one core, counts run inline.
        self.threads = threads if threads is not None else min(4, os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        self._closed = False

    def count(self, connection: Connection, statement: Any) -> Total:
        """``statement``'s one number: being counted beside (a ``Future``), or counted on
        ``connection`` where no second connection can see the same data."""
        opened = self._open(connection)
        if opened is None:
            return int(connection.execute(statement).scalar_one())
        executor, engine = opened
        started = threading.Event()

        def count() -> int:
            started.set()
            with engine.connect() as own:
                return int(own.execute(statement).scalar_one())

        try:
            future = executor.submit(count)
        except RuntimeError:  # closed meanwhile (``close``): count here, as once closed
            return int(connection.execute(statement).scalar_one())
        # Until the thread has started, this one holds the GIL for its Python work and the
        # count would wait up to the interpreter's switch interval (5 ms) to begin.
        started.wait()
        return future

    def _open(self, connection: Connection) -> tuple[ThreadPoolExecutor, Engine] | None:
        executor, engine = self._executor, self._engine
        if executor is not None and engine is not None and self._pid == os.getpid():
            return executor, engine
        if self.threads < 2 or in_memory(connection.engine.url):
            return None
        with self._lock:
            if self._closed:
                return None
            if self._executor is not None and self._pid != os.getpid():
                # A forked child has the parent's executor but none of its threads: a
                # count submitted there would never start. Its connections stay open
                # for the parent (closing them here would close the parent's).
                assert self._engine is not None
                self._engine.dispose(close=False)
                self._executor = self._engine = None
            if self._executor is None or self._engine is None:
                self._pid = os.getpid()
                url = connection.engine.url.render_as_string(hide_password=False)
                self._engine = open_engine(url)
                self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="assay-count")
            return self._executor, self._engine

    def close(self) -> None:
        with self._lock:
            self._closed = True
            executor, engine = self._executor, self._engine
            self._executor = self._engine = None
        if executor is not None:
            executor.shutdown(wait=True)
        if engine is not None:
            engine.dispose()
