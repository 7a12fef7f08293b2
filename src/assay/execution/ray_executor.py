"""The Ray executor: (record, run) pairs computed as Ray tasks, rows written by the driver.

Everything the thread executor decides stays on the driver, in the
:class:`~assay.execution.engine.Engine`: which pairs are missing, counting, budgets,
``raise_errors``, summary evaluators and the one batching writer. Ray only computes rows:
each Ray task takes a chunk of pairs and runs them one after another with the same
per-row code as a worker thread (task, trace, evaluators), so rows, evaluations, errors,
traces and costs are the same whichever executor made them.

- **Concurrency.** At most ``jobs`` Ray tasks are in flight and each runs one pair at a
  time, so ``jobs`` bounds the pairs running at once, as with threads. The resources a
  Ray task asks for (``ray_options``: ``num_cpus``, ``num_gpus``, ``memory``...) are what
  one pair needs; Ray runs as many at once as the cluster has room for.
- **Chunks.** A Ray task costs about a millisecond of scheduling; a pair may take less
  than that. The first pairs go one per task; from then on a chunk holds about
  :data:`CHUNK_SECONDS` of work (measured in the workers), fewer as the end nears so
  that no worker is left with a long tail (guided self-scheduling).
- **Faults.** A worker or node that dies takes its chunks with it; Ray runs them again
  elsewhere (``max_retries``, default :data:`DEFAULT_MAX_RETRIES`). Only the driver
  writes, and it receives one result per chunk, so each pair is stored exactly once even
  though a retried pair's task may have *run* twice. A chunk that still fails, or a bug
  that escapes the row code, stops the experiment like a crash of the thread executor:
  what finished is stored and ``run(resume=True)`` runs the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import io
import logging
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from assay.errors import ExperimentError
from assay.execution.callables import Evaluator, Task
from assay.execution.calls import RetryDelay
from assay.execution.plan import RunPlan
from assay.execution.ray_worker import Pair, ShippedPlan, compute_rows
from assay.store.records import RowRecord

logger = logging.getLogger("assay")

CHUNK_SECONDS = 0.5
"""Work, in seconds, one Ray task is given once pair durations are known."""

MAX_CHUNK = 256
"""Most pairs in one Ray task, however fast they are: bounds what a lost node takes."""

DEFAULT_MAX_RETRIES = 3
"""How many times Ray runs a chunk again after its worker or node died (Ray's default)."""

INSTALL_HINT = "pip install 'assay[ray]'"


def import_ray() -> ModuleType:
    """The ``ray`` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ExperimentError(
            f"executor='ray' needs Ray, which is not installed here ({error}): "
            f"{INSTALL_HINT}, or run with executor='threads'"
        ) from error
    return ray


@dataclass(frozen=True)
class Collected:
    """What :meth:`RayRows.collect` found finished."""

    rows: list[tuple[int, int, RowRecord]]
    """(run index, record index, row) of every pair whose chunk came back."""
    failure: BaseException | None = None
    """A chunk that failed for good; the engine stops and raises it."""


class RayRows:
    """Computes rows on a Ray cluster for an :class:`~assay.execution.engine.Engine`.

    Made by :meth:`connect` before the experiment is stored, so that a missing Ray, bad
    options or a task that cannot be shipped fail before anything starts; then
    :meth:`start` ships the plan.
    """

    def __init__(self, ray: ModuleType, remote: Any, options: Mapping[str, Any]) -> None:
        self._ray = ray
        self._remote = remote
        self.options = dict(options)
        self._jobs = 1
        self._key = ""
        self._boxed: list[Any] = []
        self._pending: dict[Any, list[Pair]] = {}
        self._seconds_per_pair: float | None = None

    @classmethod
    def connect(
        cls,
        *,
        task: Task,
        evaluators: Sequence[Evaluator],
        retry_delay: RetryDelay,
        ray_options: Mapping[str, Any] | None,
    ) -> RayRows:
        """Check everything that will travel, then join the cluster (or start a local one).

        Joins the cluster of an earlier ``ray.init(...)``; else ``ray.init()``, which
        connects to ``RAY_ADDRESS`` when set (``assay run --address``) and otherwise
        starts a local Ray.
        """
        ray = import_ray()
        options = {"max_retries": DEFAULT_MAX_RETRIES, **_checked_options(ray_options)}
        try:
            remote = _remote_function(ray).options(**options)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"ray_options {dict(ray_options or {})!r} are not valid: {error}"
            ) from error
        shipped: list[tuple[str, object]] = [(f"Task {task.name!r}", task.function)]
        shipped += [(f"Evaluator {e.label!r}", e) for e in evaluators]
        shipped.append(("retry_delay", retry_delay))
        for what, value in shipped:
            check_serializable(ray, what, value)
        if not ray.is_initialized():
            ray.init()
        return cls(ray, remote, options)

    def start(self, plan: RunPlan) -> None:
        """Ship ``plan`` to the object store; workers fetch it once each."""
        self._jobs = plan.jobs
        self._key = uuid.uuid4().hex
        worker_plan = dataclasses.replace(
            plan,
            # The driver places stored rows and runs summary evaluators; workers need
            # neither, and summary evaluators need not be picklable.
            stored_rows=(),
            summary_evaluators=(),
            summarized_runs=frozenset(),
            skip=frozenset(),
        )
        shipped = ShippedPlan(self._key, worker_plan, integrations=_integrations_enabled())
        self._boxed = [self._ray.put(shipped)]

    # What the engine calls ----------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Ray tasks submitted and not yet collected."""
        return len(self._pending)

    def room(self, remaining: int) -> int:
        """How many of ``remaining`` pairs the next Ray task should take; 0: none now."""
        if remaining <= 0 or len(self._pending) >= self._jobs:
            return 0
        if self._seconds_per_pair is None:
            return 1  # nothing measured yet: one pair per task until the first comes back
        by_time = int(CHUNK_SECONDS / max(self._seconds_per_pair, 1e-6))
        guided = -(-remaining // (2 * self._jobs))  # ceil: leave two chunks per slot
        return max(1, min(by_time, guided, MAX_CHUNK, remaining))

    def submit(self, pairs: list[Pair]) -> None:
        ref = self._remote.remote(self._boxed, self._key, pairs)
        self._pending[ref] = pairs

    def collect(self, timeout: float) -> Collected:
        """Rows of the chunks that finished, waiting up to ``timeout`` s for the first."""
        if not self._pending:
            return Collected([])
        refs = list(self._pending)
        ready, _ = self._ray.wait(refs, num_returns=1, timeout=timeout)
        if not ready:
            return Collected([])
        ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
        rows: list[tuple[int, int, RowRecord]] = []
        failure: BaseException | None = None
        for ref in ready:
            pairs = self._pending.pop(ref)
            try:
                computed, seconds = self._ray.get(ref)
            except self._ray.exceptions.RayTaskError as error:
                failure = failure or _task_failure(error)
                continue
            except self._ray.exceptions.RayError as error:
                failure = failure or _lost_chunk(error, len(pairs), self.options["max_retries"])
                continue
            self._measure(seconds / max(len(pairs), 1))
            finished = zip(pairs, computed, strict=True)
            rows.extend((run, record, row) for (run, record), row in finished)
        return Collected(rows, failure)

    def cancel(self) -> None:
        """Stop the chunks in flight (a second Ctrl-C): their pairs stay missing."""
        for ref in self._pending:
            with contextlib.suppress(Exception):
                self._ray.cancel(ref)
        self._pending.clear()

    def close(self) -> None:
        """Forget the shipped plan, freeing it in the object store. Ray stays connected."""
        self._boxed = []
        self._pending.clear()

    def _measure(self, seconds: float) -> None:
        previous = self._seconds_per_pair
        # A moving average: durations drift (a provider slows down) and chunks follow.
        self._seconds_per_pair = seconds if previous is None else 0.7 * previous + 0.3 * seconds


# Checks made before anything starts -------------------------------------------------------


def _checked_options(ray_options: Mapping[str, Any] | None) -> dict[str, Any]:
    if ray_options is None:
        return {}
    if not isinstance(ray_options, Mapping) or not all(isinstance(k, str) for k in ray_options):
        raise TypeError(
            "ray_options must be a dict of Ray task options, e.g. "
            f"{{'num_cpus': 1, 'num_gpus': 1, 'memory': 2**30}}; got {ray_options!r}"
        )
    if "num_returns" in ray_options:
        raise ValueError("ray_options cannot set num_returns: Assay decides what a task returns")
    return dict(ray_options)


@functools.cache
def _remote_function(ray: ModuleType) -> Any:
    # Made once per process: Ray exports a remote function's code to the cluster when it
    # is first called, and again for every new ray.remote() of the same function.
    return ray.remote(compute_rows)


def check_serializable(ray: ModuleType, what: str, value: object) -> None:
    """Raise a clear :class:`ExperimentError` when ``value`` cannot be pickled for Ray."""
    try:
        ray.cloudpickle.dumps(value)
    except Exception as error:
        culprit = _unpicklable_part(value)
        where = f" (it holds {culprit}, which cannot be pickled)" if culprit else ""
        raise ExperimentError(
            f"{what} cannot be sent to Ray workers: {type(error).__name__}: {error}{where}. "
            "Ray pickles tasks and evaluators with everything they reference; create "
            "objects such as clients, locks, open files or connections inside the function "
            "(or once per worker process, in a module-level cache) instead of capturing "
            "them from the driver, or run with executor='threads'"
        ) from error


def _unpicklable_part(value: object) -> str | None:
    """The path to what cannot be pickled (``task -> client -> lock``), if Ray can tell."""
    try:
        from ray.util.check_serialize import inspect_serializability

        # It prints its whole search; only the answer is wanted.
        with contextlib.redirect_stdout(io.StringIO()):
            _ok, failures = inspect_serializability(value, name="task")
    except Exception:  # a diagnostic only: never hide the real error behind its failure
        return None
    paths = []
    for failure in failures:
        path = getattr(failure, "path", None) or (getattr(failure, "name", None),)
        paths.append(" -> ".join(str(part) for part in path if part is not None))
    named = sorted(path for path in paths if path)
    return repr(named[0]) if named else None


def _integrations_enabled() -> bool:
    """Whether this process instruments client libraries (``LLMObs.enable()`` does)."""
    if "assay.integrations" not in sys.modules:
        return False  # never imported, so nothing was patched
    from assay import integrations

    # patch_all() patches a library that is imported and watches for the others' import.
    if getattr(integrations, "_watcher", None) in sys.meta_path:
        return True
    return any(
        importlib.import_module(f"assay.integrations.{name}").is_patched()
        for name in integrations.INTEGRATIONS
    )


# Failures ----------------------------------------------------------------------------


def _task_failure(error: BaseException) -> ExperimentError:
    """A Ray task raised: the row code catches task and evaluator errors, so this is a
    plan that does not unpickle on the worker, or a bug."""
    cause = getattr(error, "cause", None) or error
    hint = ""
    if isinstance(cause, ImportError):
        hint = (
            ". Workers import the modules your task and evaluators come from: install them "
            "on the cluster, or ship them with ray.init(runtime_env={'working_dir': '.'}) "
            "or runtime_env={'py_modules': [...]}"
        )
    message = f"A Ray task computing rows failed: {type(cause).__name__}: {cause}{hint}"
    failure = ExperimentError(message)
    failure.__cause__ = error
    return failure


def _lost_chunk(error: BaseException, pairs: int, retries: int) -> ExperimentError:
    failure = ExperimentError(
        f"Ray lost a task of {pairs} (record, run) pairs after {retries} retries: "
        f"{type(error).__name__}: {error}. The rows that finished are stored; run again with "
        "resume=True (assay run --resume) to compute the missing ones, or raise "
        "ray_options={'max_retries': ...}"
    )
    failure.__cause__ = error
    return failure
