"""When the ingestion writer copies SQLite's write-ahead log into the database.

SQLite checkpoints by itself inside the commit that takes the log past 1,000 pages, while
that commit's requests wait. The writer checkpoints instead between groups, after their
requests are answered (``checkpoint_wal``), as often as ``CheckpointPace`` lets it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

logger = logging.getLogger("assay")

CHECKPOINT_SPACING = 2.0
"""A checkpoint waits until twice the last one's duration has passed since it ended: at
most a third of the writer's time goes to checkpoints (see ``CheckpointPace``)."""


class CheckpointPace:
    """Whether the writer checkpoints after a group: unless the last checkpoint ended less
    than ``CHECKPOINT_SPACING`` times its own duration ago.

    A checkpoint ends with two fsyncs. Where an fsync is cheap (0.14 ms on the disk of
    the measurements in docs/server.md), this lets the writer checkpoint after nearly
    every group, which keeps the log short. Where an fsync is slow, checkpoints space out
    by themselves instead of taking most of the writer's time: with fsyncs delayed to
    10 ms, a checkpoint after every group halved the rate of small posts, and this pace
    took it back to 1.55 times that (SQLite's own checkpoints, every 1,000 pages inside
    a commit: 1.72 times). Between two checkpoints, SQLite's own still bounds the log.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._ended = -float("inf")
        self._took = 0.0

    def due_in(self) -> float:
        """Seconds until the next checkpoint is due (0 if it is)."""
        return max(0.0, self._ended + CHECKPOINT_SPACING * self._took - self._clock())

    def run(self, checkpoint: Callable[[], None], *, due: bool = False) -> bool:
        """Run ``checkpoint`` if it is due (or ``due``); returns whether it ran."""
        started = self._clock()
        if not due and started - self._ended < CHECKPOINT_SPACING * self._took:
            return False
        checkpoint()
        self._ended = self._clock()
        self._took = self._ended - started
        return True


def checkpoint_wal(engine: Engine) -> None:
    """Copy the groups' pages from SQLite's write-ahead log into the database, now that
    their requests are answered.

    Left to SQLite, the commit that takes the log past 1,000 pages does it, while its
    requests wait: one group in eight or so then took 8 ms instead of 0.5. Done here, in
    the writer's pause between groups (SQLite does not hold the GIL meanwhile), it costs
    no request its answer, and the requests that arrive in the meantime make the next
    group larger. A passive checkpoint waits for no reader or writer (another process's
    included); what it cannot copy yet, a later one will, or SQLite's own."""
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
    except SQLAlchemyError as error:
        # Housekeeping: the writer thread must live on to answer the next requests.
        logger.warning("could not checkpoint the store's write-ahead log: %s", error)
