"""What the HTTP ingestion takes: spans and metrics as the client sent them, checked."""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assay.errors import AssayError
from assay.evaluation import metric_type_of
from assay.store.records import JSON, ErrorInfo, EvaluationRecord, MetricType

ROOT_PARENT_IDS = frozenset({"", "undefined", "0"})
"""What ddtrace (and HTTP clients) put in ``parent_id`` for a root span."""
MODEL_KINDS = frozenset({"llm", "embedding"})
"""Span kinds whose tokens count towards the trace, as in ``assay.tracing``."""
_TOKEN_METRICS = ("input_tokens", "output_tokens", "total_tokens")
_TOKEN_ALIASES = {"input_tokens": "prompt_tokens", "output_tokens": "completion_tokens"}
TOKEN_METRIC_NAMES = frozenset((*_TOKEN_METRICS, *_TOKEN_ALIASES.values()))
_RUN_NAMESPACE = uuid.UUID("6c1e3c52-5f0a-4a53-9a43-8d0c2a1b7e11")


class IngestError(AssayError, ValueError):
    """A span or metric that cannot be stored as sent; nothing of its request is written.

    ``collection`` is ``"spans"``, ``"metrics"`` or ``"tags"`` (the event's own tags),
    ``index`` the item's position in what was passed (None for the event's tags), and
    ``field`` the offending field of that item (``"tags"``, ``"meta/metadata"``...), and
    ``experiment_id`` the experiment whose batch it is in.
    """

    def __init__(self, message: str, *, collection: str, index: int | None, field: str) -> None:
        super().__init__(message)
        self.collection = collection
        self.index = index
        self.field = field
        self.experiment_id: str | None = None


# Not frozen, though nothing changes them: a frozen dataclass sets each field through
# ``object.__setattr__``, and making them (3.4 against 1.1 microseconds a metric) was the
# server's largest cost of a post after validating it.
@dataclass(slots=True)
class IncomingSpan:
    """One span as ddtrace's span writer (or an HTTP client) sends it."""

    span_id: str
    trace_id: str
    name: str
    start_ns: int
    duration_ns: int
    parent_id: str | None = None
    """Absent, ``""`` or ``"undefined"`` on a root (task) span."""
    status: str = "ok"
    kind: str | None = None
    """``meta["span.kind"]``: ``experiment`` on task spans; ``llm``, ``tool``... below."""
    input: JSON = None
    output: JSON = None
    expected_output: JSON = None
    metadata: JSON = None
    error: ErrorInfo | None = None
    tags: tuple[str, ...] = ()
    """``key:value`` strings: ``dataset_record_id``, ``run_iteration``, ``run_id``..."""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    """Token counts (``input_tokens``, ``output_tokens``, ``total_tokens``) and others."""
    model_name: str | None = None
    model_provider: str | None = None

    @property
    def is_root(self) -> bool:
        return self.parent_id is None or self.parent_id in ROOT_PARENT_IDS


@dataclass(slots=True)
class IncomingMetric:
    """One evaluation metric of an experiment events post."""

    label: str
    metric_type: MetricType
    value: JSON
    """The ``<metric_type>_value`` field."""
    timestamp_ms: int
    span_id: str = ""
    trace_id: str = ""
    summary: bool = False
    """``metric_source == "summary"``: a summary evaluation of the event's run."""
    error: ErrorInfo | None = None
    reasoning: str | None = None
    assessment: str | None = None
    metadata: dict[str, JSON] | None = None
    tags: tuple[str, ...] = ()

    def evaluation(self) -> EvaluationRecord:
        value = self.value
        # A value of another type than declared would not fit the typed columns; the
        # SDK's own rule (bool before int, None is categorical) decides instead.
        metric_type = self.metric_type if _fits(self.metric_type, value) else metric_type_of(value)
        return EvaluationRecord(
            label=self.label,
            metric_type=metric_type,
            value=value,
            timestamp_ms=self.timestamp_ms,
            reasoning=self.reasoning,
            assessment=self.assessment,
            metadata=self.metadata,
            tags=tag_dict(self.tags) if self.tags else None,
            error=self.error,
        )


@dataclass(frozen=True, slots=True)
class EventBatch:
    """What one request brings for one experiment."""

    spans: Sequence[IncomingSpan] = ()
    metrics: Sequence[IncomingMetric] = ()
    tags: tuple[str, ...] = ()
    """The event's own tags: ``run_iteration`` and ``run_id`` of its summary metrics."""


@dataclass(slots=True)
class IngestResult:
    """What one call stored. ``pending`` metrics wait for their span; duplicates were
    already stored; ``updated`` metrics replaced an earlier post of the same key;
    ``queued`` items wait in the journal."""

    spans: int = 0
    duplicate_spans: int = 0
    evaluations: int = 0
    summary_evaluations: int = 0
    pending: int = 0
    updated: int = 0
    duplicate_metrics: int = 0
    queued: int = 0
    """Spans and metrics answered from the journal (``IngestWriter`` with a queue): none of
    the counts above is known until they are written."""

    def counts(self) -> dict[str, int]:
        """Every count by its name (``dataclasses.asdict``, without its deep copy)."""
        return {name: getattr(self, name) for name in _RESULT_COUNTS}


_RESULT_COUNTS = tuple(item.name for item in dataclasses.fields(IngestResult))


@functools.lru_cache(maxsize=4096)
def placeholder_run_id(experiment_id: str, run_iteration: int) -> str:
    """The id a run has until a client names it: derived, so that it is recognisable.

    Kept: every post compares its runs with their placeholders, and a UUID of a name
    hashes it with SHA-1 (about 4% of the ingestion writer's time)."""
    return str(uuid.uuid5(_RUN_NAMESPACE, f"{experiment_id}/{run_iteration}"))


def tag_dict(tags: Iterable[str]) -> dict[str, str]:
    """``["k:v", ...]`` as a dict, split on the first colon (a later key wins)."""
    pairs = (tag.partition(":") for tag in tags)
    return {key: value for key, _, value in pairs}


_INT32 = 2**31 - 1
_INT64 = 2**63 - 1


def whole_number(text: str | None) -> int | None:
    """A tag's value as a count (``run_iteration:3``); None if it is not one that fits."""
    if text is None or not text.strip().isdigit() or len(text.strip()) > 10:
        return None
    value = int(text)
    return value if value <= _INT32 else None


def token_counts(metrics: Mapping[str, Any]) -> tuple[int | None, int | None, int | None]:
    """(input, output, total) tokens; total is input + output when not given.

    The rule of ``assay.tracing``, with ``prompt_tokens`` / ``completion_tokens`` as
    other names of the first two.
    """
    if not metrics:
        return None, None, None

    def count(name: str) -> int | None:
        value = metrics.get(name, metrics.get(_TOKEN_ALIASES.get(name, name)))
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            return None
        if not -_INT64 <= value <= _INT64:  # also infinities: a count the store cannot hold
            return None
        return round(value)

    input_tokens, output_tokens, total_tokens = (count(name) for name in _TOKEN_METRICS)
    if total_tokens is None and (input_tokens is not None or output_tokens is not None):
        total_tokens = (input_tokens or 0) + (output_tokens or 0)
    return input_tokens, output_tokens, total_tokens


def known_sum(values: Iterable[int | None]) -> int | None:
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def _fits(metric_type: str, value: JSON) -> bool:
    if value is None:
        return metric_type == "categorical"
    return metric_type_of(value) == metric_type
