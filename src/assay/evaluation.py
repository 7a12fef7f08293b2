"""What evaluators are and what they return.

Function evaluators are plain callables ``(input_data, output_data, expected_output)``;
class evaluators subclass :class:`BaseEvaluator` (or :class:`BaseAsyncEvaluator`) and
receive an :class:`EvaluatorContext`. Either may return a bare value, an
:class:`EvaluatorResult` or a :class:`MultiEvaluatorResult`. Summary evaluators see a whole
run, row-aligned. The names and shapes are those of ``ddtrace.llmobs``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from assay.store.records import JSON, MetricType

_LABEL = re.compile(r"^[A-Za-z0-9_-]+$")


def validate_label(name: str, *, what: str = "evaluator name") -> str:
    """Return ``name`` if it is a valid evaluation label, else raise ``ValueError``."""
    if not isinstance(name, str) or not _LABEL.match(name):
        raise ValueError(
            f"Invalid {what} {name!r}: use only letters, digits, '_' and '-' "
            "(it becomes the evaluation label)"
        )
    return name


def metric_type_of(value: object) -> MetricType:
    """The metric type a value is stored as: bool before int, as ddtrace decides.

    ``bool`` → boolean, ``int``/``float`` → score, ``dict`` → json, anything else
    (including ``None``) → categorical.
    """
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "score"
    if isinstance(value, dict):
        return "json"
    return "categorical"


@dataclass(frozen=True)
class EvaluatorResult:
    """An evaluation value with its explanation.

    ``assessment`` is conventionally ``"pass"`` or ``"fail"``; ``tags`` become ``k:v``
    tags on the stored evaluation.
    """

    value: JSON
    reasoning: str | None = None
    assessment: str | None = None
    metadata: dict[str, JSON] | None = None
    tags: dict[str, str] | None = None


@dataclass(frozen=True)
class MultiEvaluatorResult:
    """Several evaluations from one evaluator call, one per key.

    Each key becomes the label ``"<evaluator>-<key>"`` (or the bare key with
    ``prefix=False``).
    """

    values: Mapping[str, JSON | EvaluatorResult]
    prefix: bool = True

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("MultiEvaluatorResult needs at least one value")
        for key in self.values:
            validate_label(key, what="MultiEvaluatorResult key")


@dataclass(frozen=True)
class EvaluatorContext:
    """What a class evaluator sees of one row.

    ``metadata`` is the record's metadata with ``experiment_config`` added.
    """

    input_data: JSON
    output_data: JSON
    expected_output: JSON = None
    metadata: dict[str, JSON] = field(default_factory=dict)
    span_id: str | None = None
    trace_id: str | None = None


@dataclass(frozen=True)
class SummaryEvaluatorContext:
    """What a class summary evaluator sees of one run, every list row-aligned."""

    inputs: list[JSON]
    outputs: list[JSON]
    expected_outputs: list[JSON]
    evaluation_results: dict[str, list[JSON]]
    metadata: list[dict[str, JSON]] = field(default_factory=list)


class _Named:
    name: str

    def __init__(self, name: str | None = None) -> None:
        self.name = validate_label(name if name is not None else type(self).__name__)


class BaseEvaluator(_Named, ABC):
    """A class-based evaluator. ``evaluate`` may be called from several threads at once."""

    @abstractmethod
    def evaluate(self, context: EvaluatorContext) -> Any:
        """Score one row: a value, an EvaluatorResult or a MultiEvaluatorResult."""


class BaseAsyncEvaluator(_Named, ABC):
    """A class-based evaluator whose ``evaluate`` is a coroutine."""

    @abstractmethod
    async def evaluate(self, context: EvaluatorContext) -> Any:
        """Score one row."""


class BaseSummaryEvaluator(_Named, ABC):
    """A class-based summary evaluator, run once per run."""

    @abstractmethod
    def evaluate(self, context: SummaryEvaluatorContext) -> Any:
        """Summarise one run."""


class BaseAsyncSummaryEvaluator(_Named, ABC):
    """A class-based summary evaluator whose ``evaluate`` is a coroutine."""

    @abstractmethod
    async def evaluate(self, context: SummaryEvaluatorContext) -> Any:
        """Summarise one run."""
