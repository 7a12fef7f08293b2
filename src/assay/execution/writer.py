"""One writer thread between the workers and the store.

Workers hand finished rows to :meth:`ResultWriter.put` and move on; the writer commits
them in batches, so a process killed mid-run loses at most the batch in flight, and the
store sees one transaction per batch instead of one per row.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence

from assay.store.backend import Backend
from assay.store.records import EvaluationRecord, RowRecord

_STOP = object()


class ResultWriter:
    """Batches rows and summary evaluations into the backend from a background thread."""

    def __init__(
        self,
        backend: Backend,
        experiment_id: str,
        *,
        batch_size: int = 2000,
        max_delay: float = 0.5,
    ) -> None:
        self._backend = backend
        self._experiment_id = experiment_id
        self._batch_size = batch_size
        self._max_delay = max_delay
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self.rows_written = 0
        self._thread = threading.Thread(target=self._loop, name="assay-writer", daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        """True once a write has failed; later rows would be lost, so workers should stop."""
        return self._error is not None

    def put(self, row: RowRecord) -> None:
        self._queue.put(row)

    def put_summary(self, run_iteration: int, evaluations: Sequence[EvaluationRecord]) -> None:
        self._queue.put((run_iteration, list(evaluations)))

    def close(self) -> None:
        """Write everything still queued, stop the thread, and raise what writing raised."""
        self._queue.put(_STOP)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            batch: list[object] = [item]
            deadline = time.monotonic() + self._max_delay
            # Gather what arrives within max_delay, up to a batch: few large transactions.
            while item is not _STOP and len(batch) < self._batch_size:
                remaining = deadline - time.monotonic()
                try:
                    entry = self._queue.get(timeout=max(remaining, 0))
                except queue.Empty:
                    break
                batch.append(entry)
                if entry is _STOP:
                    break
            if batch[-1] is _STOP or item is _STOP:
                stopping = True
                batch = [entry for entry in batch if entry is not _STOP]
                # Drain anything queued after the stop marker was taken.
                while True:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
            self._write(batch)

    def _write(self, batch: list[object]) -> None:
        if self._error is not None or not batch:
            return
        rows = [entry for entry in batch if isinstance(entry, RowRecord)]
        try:
            if rows:
                self._backend.write_rows(rows)
                self.rows_written += len(rows)
            for entry in batch:
                if isinstance(entry, tuple):
                    run_iteration, evaluations = entry
                    self._backend.write_summary_evaluations(
                        self._experiment_id, run_iteration, evaluations
                    )
        except BaseException as error:  # kept and raised by close(), in the caller's thread
            self._error = error
