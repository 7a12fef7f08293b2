"""Resuming: which stored experiment an interrupted run continues, and whether it may.

An experiment can be continued only with the same setup: the same dataset version, task,
evaluators, config, number of runs and sample. Anything else would mix results of two
different experiments under one id, so it is refused, naming what changed.
"""

from __future__ import annotations

import json
import os
import socket

from assay.errors import ExperimentError
from assay.store.backend import Backend
from assay.store.records import JSON, ExperimentFilter, ExperimentInfo, ExperimentSpec

UNFINISHED = ("created", "running", "interrupted")


def this_runner() -> str:
    """``host:pid`` of this process, as stored on the experiments it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive_here(runner: str | None) -> bool:
    """Whether ``runner`` is another live process on this machine."""
    if not runner:
        return False
    host, _, pid = runner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def find_resumable(backend: Backend, project_id: str, name: str) -> ExperimentInfo | None:
    """The newest experiment of that name in the project, when it did not finish.

    One still ``running`` in a live process on this machine is not resumable: both would
    run the same pairs. (A ``running`` experiment of another machine cannot be checked;
    it is taken as dead, as after a killed CI job.)
    """
    newest = backend.list_experiments(ExperimentFilter(name=name, project_id=project_id, limit=1))
    # Only the newest of that name: an older unfinished one that a later run replaced is
    # history, not work to finish.
    for info in newest:
        if info.status not in UNFINISHED:
            continue
        if info.status == "running" and _alive_here(info.runner):
            raise ExperimentError(
                f"Experiment {info.name!r} ({info.id}) is still running in process "
                f"{info.runner}; wait for it to finish, or stop it, then resume"
            )
        return info
    return None


def _shown(value: JSON) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def check_resumable(info: ExperimentInfo, spec: ExperimentSpec) -> None:
    """Raise ``ExperimentError`` naming every difference that forbids resuming ``info``."""
    changes: list[str] = []
    if info.dataset_id != spec.dataset_id:
        changes.append("the dataset is a different one")
    elif info.dataset_version != spec.dataset_version:
        changes.append(
            f"the dataset version changed ({info.dataset_version} -> {spec.dataset_version})"
        )
    if info.task_name != spec.task_name:
        changes.append(f"the task changed ({info.task_name!r} -> {spec.task_name!r})")
    if tuple(info.evaluator_names) != tuple(spec.evaluator_names):
        changes.append(
            f"the evaluators changed ({list(info.evaluator_names)} -> {list(spec.evaluator_names)})"
        )
    if tuple(info.summary_evaluator_names) != tuple(spec.summary_evaluator_names):
        changes.append(
            f"the summary evaluators changed ({list(info.summary_evaluator_names)} -> "
            f"{list(spec.summary_evaluator_names)})"
        )
    if _shown(info.config) != _shown(spec.config):
        changes.append(f"the config changed ({_shown(info.config)} -> {_shown(spec.config)})")
    if info.run_count != spec.run_count:
        changes.append(f"runs changed ({info.run_count} -> {spec.run_count})")
    if info.sample_size != spec.sample_size:
        changes.append(f"sample_size changed ({info.sample_size} -> {spec.sample_size})")
    if changes:
        raise ExperimentError(
            f"Cannot resume experiment {info.name!r} ({info.id}): " + "; ".join(changes) + ". "
            "Restore the original setup to resume it, or run without resume=True to start "
            "a new experiment"
        )
