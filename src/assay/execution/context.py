"""Which row is running: the experiment, record and run of the current task call.

Set by the engine around each task and evaluator call, in a context variable, so it is
right on worker threads and in concurrent coroutines alike.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RowContext:
    """The row a task or evaluator call belongs to."""

    experiment_id: str
    record_id: str
    idx: int
    """Index of the record in the dataset (or its sampled subset)."""
    run_id: str
    run_iteration: int
    """1-based number of the run."""


_current: ContextVar[RowContext | None] = ContextVar("assay_current_row", default=None)


def current_row() -> RowContext | None:
    """The row being computed, when called from inside a task or evaluator; else None.

    Useful to seed a simulation per run, or to log which row a call belongs to::

        def task(input_data, config):
            row = current_row()
            rng = random.Random(f"{row.record_id}:{row.run_iteration}")
            ...
    """
    return _current.get()


def set_current_row(row: RowContext | None) -> None:
    _current.set(row)
