"""Reads that build many objects, with Python's cycle collector paused."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused"]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a read builds many objects.

    A comparison of 100,000 records, or the rows of a big experiment, make hundreds of
    thousands of small rows, dicts and lists, none of them in a cycle; each thousand new
    objects set off a collection, and every so often one that walks every object the
    process holds. At that size those passes cost as much as the work itself or more
    (1.7 s of a 1.9 s ``Comparison.to_dict``, 6.7 s of reading one side's comparison
    values over every run, 8 s of reading 500,000 rows). Nothing they build needs them;
    the collector is switched back on after, unless it was off before (other threads run
    without it meanwhile, as they would under ``gc.disable()``). Also a decorator:
    ``@collector_paused()``."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
