"""Experiments: a task over every record of a dataset, ``runs`` times, scored and stored.

:class:`SyncExperiment` (from ``LLMObs.experiment``) and :class:`Experiment` (from
``LLMObs.async_experiment``, whose ``run`` is a coroutine) share everything but ``run``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assay._version import __version__
from assay.aggregation import (
    EvaluationSummary,
    RecordSummary,
    summarize,
    summarize_records,
)
from assay.config import RESUME, server_url
from assay.dataset import Dataset
from assay.errors import BudgetExceededError, ExperimentError
from assay.execution.callables import (
    Evaluator,
    SummaryEvaluator,
    Task,
    check_unique_labels,
)
from assay.execution.engine import (
    Engine,
    Outcome,
    RunPlan,
    default_retry_delay,
    run_coroutine,
)
from assay.execution.executor import ExecutorName, choose_executor
from assay.execution.progress import ProgressDisplay, default_display
from assay.execution.ray_executor import RayRows
from assay.execution.writer import ResultWriter
from assay.gitinfo import git_tags
from assay.rerun import MissingTaskStrategy, rerun_evaluators
from assay.results import ExperimentResult, ExperimentRun, build_result, rows_dataframe
from assay.resume import check_resumable, find_resumable, this_runner
from assay.store.backend import Backend
from assay.store.records import (
    JSON,
    EvaluationRecord,
    ExperimentInfo,
    ExperimentSpec,
    RowRecord,
    RunInfo,
    SearchPage,
    StoredRecord,
)
from assay.trace_metrics import TraceMetric, summarize_trace_metrics
from assay.variance import JudgeVariance, judge_variance

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger("assay")


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _error_summary(errors: Sequence[str]) -> str | None:
    # ddtrace's rule: each distinct "Type: message" once, in order of first appearance.
    unique = list(dict.fromkeys(errors))
    return "; ".join(unique) if unique else None


@dataclass(frozen=True)
class RunOptions:
    """How ``run()`` was asked to run, checked once."""

    jobs: int
    raise_errors: bool = False
    sample_size: int | None = None
    max_retries: int = 0
    retry_delay: Callable[[int], float] | None = None
    timeout: float | None = None
    budget: float | None = None
    """US dollars of estimated cost after which no new call starts."""
    resume: bool | None = None
    display: ProgressDisplay | None = None
    executor: ExecutorName = "threads"
    ray_options: Mapping[str, Any] | None = None
    """Ray task options (``num_cpus``, ``num_gpus``, ``memory``, ``max_retries``...)."""

    def __post_init__(self) -> None:
        _check_int("jobs", self.jobs, 1)
        _check_int("max_retries", self.max_retries, 0)
        if self.sample_size is not None:
            _check_int("sample_size", self.sample_size, 1)
        if self.retry_delay is not None and not callable(self.retry_delay):
            raise TypeError("retry_delay must be a function of the attempt number, or None")
        for name in ("timeout", "budget"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            ):
                unit = "seconds" if name == "timeout" else "US dollars"
                raise ValueError(f"{name} must be a positive number of {unit}, got {value!r}")
        if self.ray_options is not None and self.executor != "ray":
            raise ValueError("ray_options apply to executor='ray' only; add executor='ray'")


class _ExperimentBase:
    """What sync and async experiments share: definition, storage, results and summaries."""

    _require_async_task = False

    def __init__(
        self,
        name: str,
        task: Callable[..., Any] | None,
        dataset: Dataset | None,
        evaluators: Sequence[Any] | None,
        description: str = "",
        project_name: str | None = None,
        tags: dict[str, str] | None = None,
        config: dict[str, JSON] | None = None,
        summary_evaluators: Sequence[Any] | None = None,
        runs: int = 1,
        *,
        backend: Backend,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Experiment name must be a non-empty string, got {name!r}")
        if dataset is not None and not isinstance(dataset, Dataset):
            raise TypeError(
                f"dataset must be a Dataset (from LLMObs.create_dataset or pull_dataset), "
                f"got {type(dataset).__name__}"
            )
        if evaluators is not None and (
            not isinstance(evaluators, list | tuple) or len(evaluators) == 0
        ):
            raise TypeError("evaluators must be a non-empty list of evaluator functions or objects")
        if tags is not None and not (
            isinstance(tags, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
        ):
            raise TypeError(f"tags must be a dict of str to str, got {tags!r}")
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        if project_name is not None and not project_name.strip():
            raise ValueError("project_name must be a non-empty string when given")
        self.name = name
        self._task = (
            Task.check(task, require_async=self._require_async_task) if task is not None else None
        )
        self._dataset = dataset
        self._evaluators = [Evaluator.check(e) for e in evaluators or []]
        check_unique_labels([e.label for e in self._evaluators], what="evaluators")
        self._summary_evaluators = [SummaryEvaluator.check(e) for e in summary_evaluators or []]
        check_unique_labels([e.label for e in self._summary_evaluators], what="summary evaluators")
        self._description = description
        self._project_name = project_name
        self._tags = dict(tags or {})
        self._config: dict[str, JSON] = dict(config or {})
        self._runs = _check_int("runs", runs, 1)
        self._backend = backend
        self._info: ExperimentInfo | None = None
        self._rows: list[RowRecord] | None = None
        self._summaries: dict[int, list[EvaluationRecord]] = {}
        self.result: ExperimentResult | None = None

    # Identity ---------------------------------------------------------------------------

    @property
    def id(self) -> str | None:
        """The stored experiment's id (what ``assay show`` and the API take); None before run."""
        return self._info.id if self._info else None

    @property
    def url(self) -> str:
        """The experiment's page on ``assay serve``."""
        base = server_url(self._backend.location)
        if self._info is None:
            return f"{base}/llm/experiments"
        return f"{base}/llm/experiments/{self._info.id}"

    @property
    def info(self) -> ExperimentInfo | None:
        """What the store holds about this experiment (status, runs, tags...)."""
        return self._info

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, id={self.id!r}, runs={self._runs})"

    # Running ----------------------------------------------------------------------------

    def _prepare(self, options: RunOptions) -> tuple[Engine, ResultWriter]:
        if self._task is None or self._dataset is None:
            raise ExperimentError(
                f"Experiment {self.name!r} was pulled from the store and has no task or "
                "dataset to run; create one with LLMObs.experiment(...)"
            )
        sample_size = options.sample_size
        resume = options.resume
        dataset = self._dataset
        if dataset.has_unpushed_changes:
            raise ExperimentError(
                f"Dataset {dataset.name!r} has local changes that are not pushed; call "
                "dataset.push() first so the experiment runs on a stored version"
            )
        remote = self._connect(options) if options.executor == "ray" else None
        records = [
            StoredRecord(
                record_id=record["record_id"],
                input_data=record["input_data"],
                expected_output=record.get("expected_output"),
                metadata=record.get("metadata") or {},
                tags=list(record.get("tags") or []),
                canonical_id=record.get("canonical_id"),
            )
            for record in dataset
        ]
        if sample_size is not None:
            records = records[:sample_size]  # the first N, as ddtrace does
        project = self._backend.ensure_project(self._project_name or dataset.project["name"])
        tags = {
            **git_tags(),
            "assay.version": __version__,
            "project_name": project.name,
            "dataset_name": dataset.name,
            "experiment_name": self.name,
            **self._tags,
        }
        spec = ExperimentSpec(
            project_id=project.id,
            dataset_id=dataset.id,
            dataset_version=dataset.version,
            name=self.name,
            description=self._description,
            config=self._config,
            tags=tags,
            run_count=self._runs,
            task_name=self._task.name,
            evaluator_names=tuple(e.label for e in self._evaluators),
            summary_evaluator_names=tuple(e.label for e in self._summary_evaluators),
            sample_size=sample_size,
        )
        if resume is None:
            resume = RESUME.value().lower() in ("1", "true", "yes", "on")
        resumed = find_resumable(self._backend, project.id, self.name) if resume else None
        stored_rows: list[RowRecord] = []
        summarized: frozenset[int] = frozenset()
        if resumed is not None:
            check_resumable(resumed, spec)
            self._info = resumed
            runs = list(resumed.runs)
            stored_rows = self._backend.experiment_rows(resumed.id)
            summarized = frozenset(
                item.run_iteration for item in self._backend.summary_evaluations(resumed.id)
            )
            logger.info(
                "resuming experiment %s (%s): %d of %d rows already stored",
                self.name,
                resumed.id,
                len(stored_rows),
                len(records) * len(runs),
            )
        else:
            runs = [
                RunInfo(run_id=str(uuid.uuid4()), run_iteration=n + 1) for n in range(self._runs)
            ]
            self._info = self._backend.create_experiment(spec, runs)
        self._backend.set_experiment_status(self._info.id, "running", runner=this_runner())
        writer = ResultWriter(self._backend, self._info.id)
        plan = RunPlan(
            experiment_id=self._info.id,
            config=self._config,
            records=records,
            runs=runs,
            task=self._task,
            evaluators=self._evaluators,
            summary_evaluators=self._summary_evaluators,
            jobs=options.jobs,
            raise_errors=options.raise_errors,
            max_retries=options.max_retries,
            retry_delay=options.retry_delay or default_retry_delay,
            timeout=options.timeout,
            budget=round(options.budget * 1e9) if options.budget is not None else None,
            stored_rows=stored_rows,
            summarized_runs=summarized,
        )
        if remote is not None:
            remote.start(plan)
        engine = Engine(
            plan,
            writer,
            display=options.display if options.display is not None else default_display(),
            description=f"{self.name} ({len(records)} records x {self._runs} runs)",
            remote=remote,
        )
        return engine, writer

    def _connect(self, options: RunOptions) -> RayRows:
        """Join the Ray cluster, having checked that the task and evaluators can travel."""
        assert self._task is not None
        return RayRows.connect(
            task=self._task,
            evaluators=self._evaluators,
            retry_delay=options.retry_delay or default_retry_delay,
            ray_options=options.ray_options,
        )

    def _conclude(self, engine: Engine, writer: ResultWriter, outcome: Outcome | None) -> None:
        """Flush, set the final status, build the result; raise what must be raised."""
        assert self._info is not None
        outcome = outcome or engine.outcome
        if engine.plan.summarized_runs:
            for item in self._backend.summary_evaluations(self._info.id):
                outcome.summaries.setdefault(item.run_iteration, []).append(item.evaluation)
        # Built while the writer drains: SQLite releases the GIL as it writes, so this
        # Python work overlaps the last batches instead of following them.
        self._rows = [row for run in outcome.rows for row in run if row is not None]
        self._summaries = dict(outcome.summaries)
        self.result = self._build_result(self._rows, self._summaries)
        write_error: BaseException | None = None
        try:
            writer.close()
        except BaseException as error:
            write_error = error
        budget_error = self._budget_error(engine, outcome)
        message: str | None
        if budget_error is not None:
            status, message = "interrupted", str(budget_error)
        elif outcome.raised is not None or outcome.interrupted or write_error is not None:
            status = "interrupted"
            reason = outcome.raised or write_error
            message = _error_summary(outcome.errors) or (str(reason) if reason else None)
        elif outcome.errors:
            status, message = "failed", _error_summary(outcome.errors)
        else:
            status, message = "completed", None
        self._backend.set_experiment_status(self._info.id, status, message)  # type: ignore[arg-type]
        self._info = self._backend.get_experiment(self._info.id)
        logger.info(
            "experiment %s %s: %d rows, %d errors, %d rate-limited calls retried",
            self.name,
            status,
            len(self._rows),
            len(outcome.errors),
            outcome.rate_limited,
        )
        if write_error is not None:
            raise ExperimentError(
                f"Results of experiment {self.name!r} could not be stored: {write_error}"
            ) from write_error
        if outcome.raised is not None:
            raise outcome.raised
        if budget_error is not None:
            raise budget_error

    @staticmethod
    def _budget_error(engine: Engine, outcome: Outcome) -> BudgetExceededError | None:
        budget = engine.plan.budget
        if not outcome.budget_exhausted or budget is None:
            return None
        return BudgetExceededError(
            f"Estimated cost reached the budget of ${budget / 1e9:.4f} "
            f"(${outcome.spent / 1e9:.4f} spent): no new calls were started. Finish it with "
            "run(resume=True, budget=...) and a larger budget"
        )

    def _execute_blocking(self, engine: Engine, writer: ResultWriter) -> ExperimentResult:
        """Run the engine to the end from sync code, conclude, re-raise a Ctrl-C."""
        outcome: Outcome | None = None
        try:
            if engine.remote is not None:
                outcome = engine.run_remote()
            elif engine.plan.task.is_async:
                outcome = run_coroutine(engine.run_async())
            else:
                outcome = engine.run_threads()
        finally:
            self._conclude(engine, writer, outcome)
        if outcome.interrupted and outcome.raised is None:
            raise KeyboardInterrupt
        assert self.result is not None
        return self.result

    def _build_result(
        self, rows: Sequence[RowRecord], summaries: dict[int, list[EvaluationRecord]]
    ) -> ExperimentResult:
        assert self._info is not None
        info = self._info
        by_run: dict[int, list[RowRecord]] = defaultdict(list)
        for row in rows:
            by_run[row.run_iteration].append(row)
        context: dict[str, JSON] = {
            "tags": [f"{k}:{v}" for k, v in info.tags.items()] + [f"experiment_id:{info.id}"],
            "experiment_name": info.name,
            "dataset_name": info.dataset_name,
        }
        return build_result(
            [(run.run_id, run.run_iteration) for run in info.runs],
            by_run,
            summaries,
            context,
            pulled=self._task is None,
        )

    # Reading ------------------------------------------------------------------------------

    def _stored_rows(self) -> list[RowRecord]:
        if self._rows is None:
            if self._info is None:
                raise ExperimentError(f"Experiment {self.name!r} has not run yet: call run() first")
            self._rows = self._backend.experiment_rows(self._info.id)
        return self._rows

    def _run_iterations(self) -> list[int]:
        assert self._info is not None
        return [run.run_iteration for run in self._info.runs]

    def summary(self, *, run: int | None = None) -> dict[str, EvaluationSummary]:
        """Per evaluation label: the experiment-level aggregate, by the seed's rules.

        Score → mean of the record means; categorical → mode of the record modes; boolean
        → mean of the records' shares of True. ``per_run`` gives the same for each run
        alone; ``run=N`` restricts everything to run N.
        """
        rows = self._stored_rows()
        iterations = self._run_iterations()
        if run is not None:
            self._check_run(run)
            rows = [row for row in rows if row.run_iteration == run]
            iterations = [run]
        return summarize(rows, iterations)

    def record_summaries(self, *, run: int | None = None) -> list[RecordSummary]:
        """One entry per record: each evaluation aggregated across the record's runs."""
        rows = self._stored_rows()
        iterations = self._run_iterations()
        if run is not None:
            self._check_run(run)
            rows = [row for row in rows if row.run_iteration == run]
            iterations = [run]
        return summarize_records(rows, iterations)

    def search(
        self,
        query: str = "",
        *,
        run: int | None = None,
        limit: int = 50,
        offset: int = 0,
        sort: str | None = None,
    ) -> SearchPage:
        """Rows (or records) matching a Datadog-style search query, with the total count.

        ``@multi_run_avg.@evaluations.custom.accuracy:>=0.5`` selects records by their
        average across runs (items are records with their ``aggregates``);
        ``run_iteration:1 @trace.total_tokens:>1000`` selects rows. ``run=N`` restricts a
        row query to run N. ``sort`` names a column (``duration``, ``-total_tokens``...)
        or, for records, a multi-run facet. Raises :class:`~assay.errors.QueryError`
        with the position of what is wrong. See the search docs for the whole syntax.
        """
        if self._info is None:
            raise ExperimentError(f"Experiment {self.name!r} has not run yet: nothing to search")
        return self._backend.search(
            self._info.id, query, run=run, limit=limit, offset=offset, sort=sort
        )

    def trace_metrics(self, *, run: int | None = None) -> dict[str, TraceMetric]:
        """Duration, tokens and estimated cost: per-row mean by record, totals, percentiles."""
        rows = self._stored_rows()
        if run is not None:
            self._check_run(run)
            rows = [row for row in rows if row.run_iteration == run]
        return summarize_trace_metrics(rows)

    def _check_run(self, run: int) -> None:
        iterations = self._run_iterations()
        if run not in iterations:
            have = f"runs {iterations[0]}..{iterations[-1]}" if iterations else "no runs"
            raise ValueError(f"Experiment {self.name!r} has {have}; there is no run {run}")

    def as_dataframe(self) -> pandas.DataFrame:
        """All runs stacked, one row per (record, run), with run_id and run_iteration first."""
        if self.result is None:
            raise ExperimentError(f"Experiment {self.name!r} has no results yet: call run()")
        return rows_dataframe(self.result["runs"])

    def rerun_evaluators(
        self,
        evaluators: Sequence[Any],
        task: Callable[..., Any] | None = None,
        missing_task_strategy: MissingTaskStrategy = "raise",
        jobs: int = 1,
        raise_errors: bool = False,
        max_retries: int = 0,
        retry_delay: Callable[[int], float] | None = None,
        summary_evaluators: Sequence[Any] | None = None,
        *,
        repeats: int = 1,
    ) -> SyncExperiment:
        """Score this experiment's stored outputs with ``evaluators``, into a child experiment.

        The task is not run again (except, with ``missing_task_strategy="retry"``, for rows
        whose task failed). ``repeats=K`` scores each output K times, so that
        :meth:`judge_variance` on the child can tell the evaluator's own noise from the
        task's. See :mod:`assay.rerun`.
        """
        return rerun_evaluators(
            self,
            evaluators,
            task=task,
            missing_task_strategy=missing_task_strategy,
            jobs=jobs,
            raise_errors=raise_errors,
            max_retries=max_retries,
            retry_delay=retry_delay,
            summary_evaluators=summary_evaluators,
            repeats=repeats,
        )

    def judge_variance(self) -> dict[str, JudgeVariance]:
        """For a ``rerun_evaluators(..., repeats=K)`` child: evaluator noise vs task variation."""
        repeats = self._info.config.get("repeats") if self._info else None
        if not isinstance(repeats, int) or repeats < 2 or self._info is None:
            raise ExperimentError(
                f"Experiment {self.name!r} does not score each output several times; make "
                "one with experiment.rerun_evaluators(evaluators, repeats=3)"
            )
        return judge_variance(self._stored_rows(), repeats=repeats)

    @property
    def runs(self) -> list[ExperimentRun]:
        """The result's runs (empty before ``run()``)."""
        return self.result["runs"] if self.result else []


class SyncExperiment(_ExperimentBase):
    """An experiment whose ``run()`` blocks until every row is stored (``LLMObs.experiment``)."""

    def run(
        self,
        jobs: int = 1,
        raise_errors: bool = False,
        sample_size: int | None = None,
        max_retries: int = 0,
        retry_delay: Callable[[int], float] | None = None,
        *,
        timeout: float | None = None,
        budget: float | None = None,
        resume: bool | None = None,
        display: ProgressDisplay | None = None,
        executor: ExecutorName | None = None,
        ray_options: Mapping[str, Any] | None = None,
    ) -> ExperimentResult:
        """Run the task over every record ``runs`` times, evaluate, store, return the rows.

        ``jobs`` bounds how many task and evaluator calls run at once. With
        ``raise_errors=True`` the first task or evaluator error stops the experiment
        (after storing what finished) and is raised.

        ``resume=True`` continues the newest experiment of this name, if unfinished, in the
        project (killed, interrupted): only the missing (record, run) pairs run, and
        summary evaluators run for the runs that are then complete. It refuses, naming
        what changed, when the dataset version, task, evaluators, config, runs or
        sample differ. With nothing to resume it starts a new experiment. Default: the
        ``ASSAY_RESUME`` setting (``assay run --resume`` sets it).

        Rate limits (HTTP 429, a provider's rate-limit error) are waited out, honouring
        ``Retry-After``, and lower how many calls run at once until the provider keeps up;
        they do not count against ``max_retries``. ``timeout`` fails a task or evaluator
        call that takes longer (seconds). ``budget`` (US dollars of estimated cost) stops
        starting new calls once passed; the experiment is then ``interrupted`` and can be
        resumed.

        ``executor="ray"`` computes the (record, run) pairs as Ray tasks on the cluster of
        ``ray.init(...)`` (else ``RAY_ADDRESS``, else a local Ray), with ``ray_options``
        (``num_cpus``, ``num_gpus``, ``memory``, ``max_retries``...) for each task; rows
        are the same as with threads. Default: the ``ASSAY_EXECUTOR`` setting, else
        ``"threads"``. See the Ray docs page.
        """
        engine, writer = self._prepare(
            RunOptions(
                jobs=jobs,
                raise_errors=raise_errors,
                sample_size=sample_size,
                max_retries=max_retries,
                retry_delay=retry_delay,
                timeout=timeout,
                budget=budget,
                resume=resume,
                display=display,
                executor=choose_executor(executor),
                ray_options=ray_options,
            )
        )
        return self._execute_blocking(engine, writer)


class Experiment(_ExperimentBase):
    """An experiment whose ``run()`` is a coroutine (``LLMObs.async_experiment``)."""

    _require_async_task = True

    async def run(
        self,
        jobs: int = 10,
        raise_errors: bool = False,
        sample_size: int | None = None,
        max_retries: int = 0,
        retry_delay: Callable[[int], float] | None = None,
        *,
        timeout: float | None = None,
        budget: float | None = None,
        resume: bool | None = None,
        display: ProgressDisplay | None = None,
        executor: ExecutorName | None = None,
        ray_options: Mapping[str, Any] | None = None,
    ) -> ExperimentResult:
        """Run on the caller's event loop; see :meth:`SyncExperiment.run`."""
        engine, writer = self._prepare(
            RunOptions(
                jobs=jobs,
                raise_errors=raise_errors,
                sample_size=sample_size,
                max_retries=max_retries,
                retry_delay=retry_delay,
                timeout=timeout,
                budget=budget,
                resume=resume,
                display=display,
                executor=choose_executor(executor),
                ray_options=ray_options,
            )
        )
        outcome: Outcome | None = None
        try:
            if engine.remote is not None:
                # Waiting on Ray blocks: keep this loop free for the caller's other work.
                outcome = await asyncio.to_thread(engine.run_remote)
            else:
                outcome = await engine.run_async()
        finally:
            self._conclude(engine, writer, outcome)
        assert self.result is not None
        return self.result


def pulled_experiment(backend: Backend, info: ExperimentInfo) -> SyncExperiment:
    """A stored experiment as a ``SyncExperiment`` with its result filled in from the store."""
    experiment = SyncExperiment(
        info.name,
        task=None,
        dataset=None,
        evaluators=None,
        description=info.description,
        tags=info.tags,
        config=info.config,
        runs=max(info.run_count, 1),
        backend=backend,
    )
    experiment._info = info
    experiment._rows = backend.experiment_rows(info.id)
    summaries: dict[int, list[EvaluationRecord]] = defaultdict(list)
    for item in backend.summary_evaluations(info.id):
        summaries[item.run_iteration].append(item.evaluation)
    experiment._summaries = dict(summaries)
    experiment.result = experiment._build_result(experiment._rows, experiment._summaries)
    return experiment
