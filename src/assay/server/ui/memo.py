"""Figures the pages compute from every row of an experiment, kept until its rows change.

An experiment's summary and its facets' counts need a pass over its rows (or its records'
aggregates) that a big experiment cannot afford on every page view: at 100,000 records x
5 runs the summary takes seconds in SQLite. They depend only on the stored rows, so they
are kept per experiment (and run, and query) with the *data version* they were computed
from — the writers' row and evaluation counters and the aggregates' row mark
(``browse.data_version``), the freshness rule of the per-record aggregates — and computed
again when a writer has added or changed anything since. A finished experiment pays once
per server process; a running one pays whenever it has new rows, as it must.

The memo is per process and bounded (least recently used entries go first); it holds
small results (a summary, a few counts), never rows.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")
Version = tuple[int, ...]


class VersionedMemo:
    """Results by key, each valid for the data version it was computed from."""

    def __init__(self, *, size: int = 256) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, tuple[Version, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, version: Version, compute: Callable[[], T]) -> T:
        """The value kept for ``key`` at ``version``, or ``compute()`` (then kept)."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found[0] == version:
                self._entries.move_to_end(key)
                value: T = found[1]
                return value
        # Computed outside the lock: two requests may both compute a cold entry, but a
        # slow summary never blocks pages of other experiments.
        value = compute()
        with self._lock:
            self._entries[key] = (version, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


figures = VersionedMemo()
"""The one memo of the pages (summaries, facet counts), shared by every request."""
