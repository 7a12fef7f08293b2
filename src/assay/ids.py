"""Span and trace ids, in the formats ddtrace uses (a 64-bit decimal, 32 hex digits).

Drawn from a generator of Assay's own: drawing from the global ``random`` would change the
numbers a user's seeded task gets.
"""

from __future__ import annotations

import itertools
import random
import time

_IDS = random.Random()
_SPAN_SEQUENCE = itertools.count(_IDS.getrandbits(20))
_EPOCH_MS = 1_704_067_200_000  # 2024-01-01: 41 bits of milliseconds last until 2093


def new_span_id() -> str:
    """A 63-bit span id that grows with time: milliseconds, then a per-process sequence.

    Span ids are index keys; ids that grow make every insert land at the end of the index
    instead of at a random page. The sequence starts at a random point in each process, so
    two writers in the same millisecond still differ.
    """
    milliseconds = time.time_ns() // 1_000_000 - _EPOCH_MS
    return str((milliseconds << 22 | (next(_SPAN_SEQUENCE) & 0x3FFFFF)) or 1)


def new_trace_id() -> str:
    """A random 128-bit trace id as 32 hex digits."""
    return f"{_IDS.getrandbits(128):032x}"
