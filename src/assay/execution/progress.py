"""Progress of a running experiment: (record, run) pairs done, errors so far, rate.

Workers only bump counters; a display reads them a few times a second, so showing
progress costs the hot path nothing.
"""

from __future__ import annotations

import sys
import threading
from typing import Protocol

from assay.config import PROGRESS


class ProgressCounter:
    """Counters the workers update under one lock."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.errors = 0
        self.lock = threading.Lock()


class ProgressDisplay(Protocol):
    def start(self, description: str, counter: ProgressCounter) -> None: ...

    def refresh(self) -> None: ...

    def stop(self) -> None: ...


class NoProgress:
    """Shows nothing."""

    def start(self, description: str, counter: ProgressCounter) -> None:
        pass

    def refresh(self) -> None:
        pass

    def stop(self) -> None:
        pass


class RichProgress:
    """A rich progress bar on stderr: done/total, errors, rate and time left."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("[red]{task.fields[errors]} errors"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task_id: object = None
        self._counter: ProgressCounter | None = None

    def start(self, description: str, counter: ProgressCounter) -> None:
        self._counter = counter
        self._task_id = self._progress.add_task(description, total=counter.total, errors=0, rate="")
        self._progress.start()

    def refresh(self) -> None:
        counter = self._counter
        if counter is None:
            return
        task = self._progress.tasks[0]
        elapsed = task.elapsed or 0.0
        rate = f"{counter.done / elapsed:,.1f} rows/s" if elapsed > 0 else ""
        self._progress.update(task.id, completed=counter.done, errors=counter.errors, rate=rate)

    def stop(self) -> None:
        self.refresh()
        self._progress.stop()


def default_display() -> ProgressDisplay:
    """A progress bar when stderr is a terminal (or ASSAY_PROGRESS=1), else nothing."""
    setting = PROGRESS.value().lower()
    if setting in ("1", "true", "yes", "on") or (setting == "auto" and sys.stderr.isatty()):
        return RichProgress()
    return NoProgress()
