"""Re-scoring stored outputs: new evaluators on an experiment's rows, without the task.

``rerun_evaluators`` makes a child experiment linked to its parent
(``parent_experiment_id``), named ``<name>-rerun-<ms>`` as ddtrace names it, whose rows
are copies of the parent's rows (same outputs, errors and durations; fresh span ids)
scored by the given evaluators. Unlike ddtrace, every run of the parent is re-scored, not
only the first.

With ``repeats=K`` each stored output is scored K times: the child's run
``(r - 1) * K + k`` is repeat k of the parent's run r. How much those K scores of one
output disagree is the evaluator's own noise (an LLM judge is not deterministic either);
how much a record's outputs differ across the parent's runs is the task's. See
:func:`assay.variance.judge_variance`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from assay.errors import ExperimentError
from assay.execution.callables import Task
from assay.execution.engine import Engine, RunPlan, default_retry_delay
from assay.execution.progress import default_display
from assay.execution.writer import ResultWriter
from assay.resume import this_runner
from assay.store.records import ExperimentSpec, RowRecord, RunInfo

if TYPE_CHECKING:
    from assay.experiment import SyncExperiment, _ExperimentBase

MissingTaskStrategy = Literal["raise", "skip", "retry"]


def _no_task(input_data: Any, config: Any) -> Any:  # pragma: no cover - never called
    raise ExperimentError("re-scoring does not call the task")


def rerun_evaluators(
    source: _ExperimentBase,
    evaluators: Sequence[Any],
    *,
    task: Callable[..., Any] | None = None,
    missing_task_strategy: MissingTaskStrategy = "raise",
    jobs: int = 1,
    raise_errors: bool = False,
    max_retries: int = 0,
    retry_delay: Callable[[int], float] | None = None,
    summary_evaluators: Sequence[Any] | None = None,
    repeats: int = 1,
) -> SyncExperiment:
    """Score the stored outputs of ``source`` with ``evaluators`` into a child experiment.

    Rows whose task failed (or never ran) have no output to score; ``missing_task_strategy``
    decides: ``"raise"`` refuses before anything runs, ``"skip"`` leaves them out of the
    child, ``"retry"`` runs ``task`` for them.
    """
    from assay.experiment import SyncExperiment, _check_int

    info = source.info
    if info is None:
        raise ExperimentError(
            f"Experiment {source.name!r} has not run yet: there are no outputs to re-score"
        )
    if missing_task_strategy not in ("raise", "skip", "retry"):
        raise ValueError(
            f"missing_task_strategy must be 'raise', 'skip' or 'retry', "
            f"got {missing_task_strategy!r}"
        )
    repeats = _check_int("repeats", repeats, 1)
    if missing_task_strategy == "retry" and task is None:
        raise ValueError("missing_task_strategy='retry' needs task= to run the missing rows")
    backend = source._backend
    records = backend.dataset_records(info.dataset_id, version=info.dataset_version)
    if info.sample_size is not None:
        records = records[: info.sample_size]
    stored: dict[tuple[int, str], RowRecord] = {
        (row.run_iteration, row.record_id): row for row in source._stored_rows()
    }
    source_runs = [run.run_iteration for run in info.runs]
    missing = [
        (run, record.record_id)
        for run in source_runs
        for record in records
        if (row := stored.get((run, record.record_id))) is None or row.error is not None
    ]
    if missing and missing_task_strategy == "raise":
        raise ExperimentError(
            f"{len(missing)} rows of experiment {info.name!r} have no output to re-score "
            "(the task failed or never ran); pass missing_task_strategy='skip' to leave them "
            "out, or 'retry' with task= to run them"
        )
    child = SyncExperiment(
        f"{info.name}-rerun-{time.time_ns() // 1_000_000}",
        task=task or _no_task,
        dataset=None,
        evaluators=evaluators,
        description=f"Evaluators re-run on the outputs of {info.name} ({info.id})",
        tags={**info.tags, "parent_experiment_id": info.id},
        config={
            "evaluators": [],
            "repeats": repeats,
            "source_runs": len(source_runs),
        },
        summary_evaluators=summary_evaluators,
        runs=len(source_runs) * repeats,
        backend=backend,
    )
    child._config["evaluators"] = [e.label for e in child._evaluators]
    runs = [RunInfo(run_id=str(uuid.uuid4()), run_iteration=n + 1) for n in range(child._runs)]
    # Child run n (0-based) is repeat n % K of the parent's run n // K.
    replay: list[list[RowRecord | None]] = []
    skip: set[tuple[int, int]] = set()
    for run_index in range(len(runs)):
        source_run = source_runs[run_index // repeats]
        row_replay: list[RowRecord | None] = []
        for record_index, record in enumerate(records):
            row = stored.get((source_run, record.record_id))
            if row is None or row.error is not None:
                row_replay.append(None)  # the task runs ("retry") or the pair is skipped
                if missing_task_strategy == "skip":
                    skip.add((run_index, record_index))
            else:
                row_replay.append(row)
        replay.append(row_replay)
    child_task = (
        Task.check(task) if task is not None else Task(_no_task, info.task_name, False, False)
    )
    child._info = backend.create_experiment(
        ExperimentSpec(
            project_id=info.project_id,
            dataset_id=info.dataset_id,
            dataset_version=info.dataset_version,
            name=child.name,
            description=child._description,
            config=child._config,
            tags=child._tags,
            run_count=child._runs,
            parent_experiment_id=info.id,
            task_name=child_task.name,
            evaluator_names=tuple(e.label for e in child._evaluators),
            summary_evaluator_names=tuple(e.label for e in child._summary_evaluators),
            sample_size=info.sample_size,
        ),
        runs,
    )
    backend.set_experiment_status(child._info.id, "running", runner=this_runner())
    writer = ResultWriter(backend, child._info.id)
    engine = Engine(
        RunPlan(
            experiment_id=child._info.id,
            config=info.config,
            records=records,
            runs=runs,
            task=child_task,
            evaluators=child._evaluators,
            summary_evaluators=child._summary_evaluators,
            jobs=_check_int("jobs", jobs, 1),
            raise_errors=raise_errors,
            max_retries=_check_int("max_retries", max_retries, 0),
            retry_delay=retry_delay or default_retry_delay,
            replay=replay,
            skip=frozenset(skip),
        ),
        writer,
        display=default_display(),
        description=f"{child.name} ({len(records)} records x {child._runs} runs)",
    )
    child._execute_blocking(engine, writer)
    return child
