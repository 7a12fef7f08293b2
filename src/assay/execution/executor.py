"""Which executor computes the rows: threads in this process (the default) or a Ray cluster.

The choice is made per ``run()`` (``executor=``), else by ``ASSAY_EXECUTOR`` (what
``assay run --executor`` sets), so a script runs on a cluster without being edited.
"""

from __future__ import annotations

from typing import Literal

from assay.config import EXECUTOR

ExecutorName = Literal["threads", "ray"]

EXECUTORS: tuple[ExecutorName, ...] = ("threads", "ray")


def choose_executor(name: str | None) -> ExecutorName:
    """``name``, or the ``ASSAY_EXECUTOR`` setting when None; checked."""
    chosen = EXECUTOR.value() if name is None else name
    for known in EXECUTORS:
        if chosen == known:
            return known
    source = f"{EXECUTOR.env}={chosen!r}" if name is None else f"executor={chosen!r}"
    raise ValueError(f"Unknown executor in {source}: use one of {', '.join(EXECUTORS)}")
