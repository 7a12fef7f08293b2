"""The facets a query can name, and how an attribute's spelling maps to one.

A facet is a typed attribute of what a query selects: a *row* (one record in one run) or,
for multi-run queries, a *record* with its aggregates across runs. Every facet says

- ``name``: its canonical spelling, e.g. ``@evaluations.custom.accuracy``;
- ``value_type``: ``number``, ``text``, ``boolean`` or ``json`` (a JSON value whose type
  decides how it compares);
- ``ordered``: whether ``>``, ``<`` and ranges apply (numbers; JSON values and tag values
  that are numbers);
- ``scope``: ``row`` (may differ between the runs of a record), ``record`` (the same in
  every run), ``run`` (identifies the run) or ``aggregate`` (across the runs);
- ``multi_run``: whether it is an across-run aggregate (``scope == "aggregate"``).

Which facets exist depends on the experiment, described by a :class:`Catalog`: its
evaluation labels with their metric types, and the tag keys of its records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Final, Literal, TypeAlias, get_args

from assay.query.ast import Value

if TYPE_CHECKING:
    from assay.store.records import MetricType

ValueType = Literal["number", "text", "boolean", "json"]
Scope = Literal["row", "record", "run", "aggregate"]
MetricName = Literal[
    "total_tokens", "input_tokens", "output_tokens", "estimated_total_cost", "duration"
]
JsonField = Literal["input", "output", "expected_output", "metadata"]
Aggregate = Literal["avg", "mode"]

TRACE_METRICS: Final[tuple[MetricName, ...]] = (
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "estimated_total_cost",
)
JSON_FIELDS: Final[tuple[JsonField, ...]] = get_args(JsonField)
STATUSES: Final = ("ok", "error")


@dataclass(frozen=True, slots=True)
class Catalog:
    """What one experiment offers to search: evaluation labels and record tag keys."""

    evaluations: Mapping[str, MetricType] = field(default_factory=dict, hash=False)
    """Each evaluation label with its metric type (as the aggregation decides it)."""
    tag_keys: frozenset[str] = frozenset()
    """The keys of the records' ``key:value`` tags."""


@dataclass(frozen=True, slots=True)
class EvaluationFacet:
    """An evaluation label's value in a row: ``@evaluations.custom.<label>``.

    Also spelled ``@evaluation.<label>.value`` and ``@evaluation.external.<label>.value``.
    Scores are numbers (a boolean among them counts as 1 or 0), categorical labels text,
    booleans ``true``/``false``, json evaluations JSON values.
    """

    label: str
    metric_type: MetricType | None
    """``None`` only when described without a catalog: then compared as JSON."""

    @property
    def name(self) -> str:
        return f"@evaluations.custom.{self.label}"

    @property
    def value_type(self) -> ValueType:
        if self.metric_type == "score":
            return "number"
        if self.metric_type == "categorical":
            return "text"
        if self.metric_type == "boolean":
            return "boolean"
        return "json"

    @property
    def ordered(self) -> bool:
        return self.value_type in ("number", "json")

    scope: ClassVar[Scope] = "row"
    multi_run: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class MetricFacet:
    """A number measured per row: ``@trace.total_tokens``, ``@trace.input_tokens``,
    ``@trace.output_tokens``, ``@trace.estimated_total_cost`` (nanodollars) and
    ``@duration`` (nanoseconds; values may carry a unit, ``@duration:>1.5s``)."""

    metric: MetricName

    @property
    def name(self) -> str:
        return "@duration" if self.metric == "duration" else f"@trace.{self.metric}"

    @property
    def unit(self) -> str:
        if self.metric == "duration":
            return "nanoseconds"
        if self.metric == "estimated_total_cost":
            return "nanodollars"
        return "tokens"

    value_type: ClassVar[ValueType] = "number"
    ordered: ClassVar[bool] = True
    scope: ClassVar[Scope] = "row"
    multi_run: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class StatusFacet:
    """Whether the row's task succeeded: ``@status:ok`` or ``@status:error``."""

    name: ClassVar[str] = "@status"
    value_type: ClassVar[ValueType] = "text"
    ordered: ClassVar[bool] = False
    scope: ClassVar[Scope] = "row"
    multi_run: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class ErrorTypeFacet:
    """The type of the row's task error: ``@meta.error.type:TimeoutError``."""

    name: ClassVar[str] = "@meta.error.type"
    value_type: ClassVar[ValueType] = "text"
    ordered: ClassVar[bool] = False
    scope: ClassVar[Scope] = "row"
    multi_run: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class JsonFacet:
    """A value inside a record's input, expected output or metadata, or a row's output:
    ``@meta.input.question``, ``@meta.metadata.source.url``; an empty path is the whole
    value (``@meta.output``). Each path segment is an object key."""

    field: JsonField
    path: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return ".".join(("@meta", self.field, *self.path))

    @property
    def scope(self) -> Scope:
        return "row" if self.field == "output" else "record"

    value_type: ClassVar[ValueType] = "json"
    ordered: ClassVar[bool] = True
    multi_run: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class TagFacet:
    """A record's ``key:value`` tag, written without ``@``: ``difficulty:hard``."""

    key: str

    @property
    def name(self) -> str:
        return self.key

    value_type: ClassVar[ValueType] = "text"
    ordered: ClassVar[bool] = True
    scope: ClassVar[Scope] = "record"
    multi_run: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class RecordIdFacet:
    """The dataset record's id: ``dataset_record_id:<id>``."""

    name: ClassVar[str] = "dataset_record_id"
    value_type: ClassVar[ValueType] = "text"
    ordered: ClassVar[bool] = False
    scope: ClassVar[Scope] = "record"
    multi_run: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class RunFacet:
    """Which run a row belongs to: ``run_iteration:1`` (from 1) or ``run_id:<uuid>``."""

    key: Literal["run_iteration", "run_id"]

    @property
    def name(self) -> str:
        return self.key

    @property
    def value_type(self) -> ValueType:
        return "number" if self.key == "run_iteration" else "text"

    @property
    def ordered(self) -> bool:
        return self.key == "run_iteration"

    scope: ClassVar[Scope] = "run"
    multi_run: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class MultiRunFacet:
    """A record's aggregate of a per-row facet across its runs.

    ``@multi_run_avg.<facet>``: the mean of a score evaluation, the share of ``True`` of a
    boolean evaluation, the mean of a ``@trace.*`` metric or of ``@duration``.
    ``@multi_run_mode.<facet>``: the most common label of a categorical evaluation, the
    most common value of a boolean evaluation (``true``/``false``) or of ``@status``.
    """

    aggregate: Aggregate
    of: EvaluationFacet | MetricFacet | StatusFacet

    @property
    def name(self) -> str:
        return f"@multi_run_{self.aggregate}.{self.of.name}"

    @property
    def value_type(self) -> ValueType:
        return "number" if self.aggregate == "avg" else self.of.value_type

    @property
    def ordered(self) -> bool:
        return self.aggregate == "avg"

    scope: ClassVar[Scope] = "aggregate"
    multi_run: ClassVar[bool] = True


Facet: TypeAlias = (
    EvaluationFacet
    | MetricFacet
    | StatusFacet
    | ErrorTypeFacet
    | JsonFacet
    | TagFacet
    | RecordIdFacet
    | RunFacet
    | MultiRunFacet
)


def is_duration(facet: Facet) -> bool:
    """Whether the facet counts nanoseconds (``@duration``, also averaged)."""
    if isinstance(facet, MultiRunFacet):
        facet = facet.of
    return isinstance(facet, MetricFacet) and facet.metric == "duration"


def number_operand(facet: Facet, value: Value) -> float | None:
    """The number a value stands for against ``facet``: durations in nanoseconds for
    :func:`is_duration` facets, else the plain number; ``None`` when it is no number."""
    if is_duration(facet) and value.duration is not None:
        return float(value.duration)
    return value.number


def plain_facet(name: str, catalog: Catalog | None) -> Facet | None:
    """The facet a name (not a ``@multi_run_`` one) spells, or ``None`` if it spells none.

    Without a catalog, any evaluation label (type unknown) and any tag key is accepted.
    """
    if name == "@duration":
        return MetricFacet("duration")
    if name.startswith("@trace."):
        metric = name.removeprefix("@trace.")
        for known in TRACE_METRICS:
            if metric == known:
                return MetricFacet(known)
        return None
    if name == "@status":
        return StatusFacet()
    if name == "@meta.error.type":
        return ErrorTypeFacet()
    for json_field in JSON_FIELDS:
        prefix = f"@meta.{json_field}"
        if name == prefix:
            return JsonFacet(json_field)
        if name.startswith(prefix + "."):
            path = tuple(name[len(prefix) + 1 :].split("."))
            return JsonFacet(json_field, path) if all(path) else None
    label = evaluation_label(name)
    if label is not None:
        if catalog is None:
            return EvaluationFacet(label, None)
        metric_type = catalog.evaluations.get(label)
        return None if metric_type is None else EvaluationFacet(label, metric_type)
    if name == "run_iteration":
        return RunFacet("run_iteration")
    if name == "run_id":
        return RunFacet("run_id")
    if name == "dataset_record_id":
        return RecordIdFacet()
    if name and not name.startswith("@") and (catalog is None or name in catalog.tag_keys):
        return TagFacet(name)
    return None


def evaluation_label(name: str) -> str | None:
    """The label in ``@evaluations.custom.<label>``, ``@evaluation.<label>.value`` or
    ``@evaluation.external.<label>.value``; ``None`` for other names."""
    label: str | None = None
    if name.startswith("@evaluations.custom."):
        label = name.removeprefix("@evaluations.custom.")
    elif name.startswith("@evaluation.") and name.endswith(".value"):
        label = name.removeprefix("@evaluation.").removesuffix(".value")
        if "." in label:
            label = label.removeprefix("external.")
    return label if label and "." not in label else None


def multi_run_parts(name: str) -> tuple[Aggregate, str] | None:
    """``("avg", "@trace.total_tokens")`` for ``@multi_run_avg.@trace.total_tokens``."""
    for aggregate in get_args(Aggregate):
        prefix = f"@multi_run_{aggregate}."
        if name.startswith(prefix):
            return aggregate, name.removeprefix(prefix)
    return None


def aggregates_of(facet: Facet) -> tuple[Aggregate, ...]:
    """The across-run aggregates a per-row facet has: ``("avg",)``, ``("mode",)``, both
    (boolean evaluations) or none."""
    if isinstance(facet, MetricFacet):
        return ("avg",)
    if isinstance(facet, StatusFacet):
        return ("mode",)
    if isinstance(facet, EvaluationFacet):
        if facet.metric_type == "score":
            return ("avg",)
        if facet.metric_type == "boolean":
            return ("avg", "mode")
        if facet.metric_type == "categorical":
            return ("mode",)
        if facet.metric_type is None:  # unknown without a catalog: either may be meant
            return ("avg", "mode")
    return ()


def multi_run_facets(catalog: Catalog) -> list[MultiRunFacet]:
    """Every across-run aggregate the catalog allows, evaluations first (by label)."""
    result: list[MultiRunFacet] = []
    for label in sorted(catalog.evaluations):
        evaluation = EvaluationFacet(label, catalog.evaluations[label])
        result.extend(
            MultiRunFacet(aggregate, evaluation) for aggregate in aggregates_of(evaluation)
        )
    result.extend(MultiRunFacet("avg", MetricFacet(metric)) for metric in TRACE_METRICS)
    result.append(MultiRunFacet("avg", MetricFacet("duration")))
    result.append(MultiRunFacet("mode", StatusFacet()))
    return result


def known_names(catalog: Catalog) -> list[str]:
    """Every facet name the catalog allows (JSON facets by their bare field name)."""
    labels = sorted(catalog.evaluations)
    return [
        *(f"@evaluations.custom.{label}" for label in labels),
        *(f"@evaluation.{label}.value" for label in labels),
        *(f"@evaluation.external.{label}.value" for label in labels),
        *(f"@trace.{metric}" for metric in TRACE_METRICS),
        "@duration",
        "@status",
        "@meta.error.type",
        *(f"@meta.{json_field}" for json_field in JSON_FIELDS),
        "run_iteration",
        "run_id",
        "dataset_record_id",
        *sorted(catalog.tag_keys),
        *(facet.name for facet in multi_run_facets(catalog)),
    ]
