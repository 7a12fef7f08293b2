"""A plain-Python evaluator of resolved queries: the reference the SQL compiler must match.

It runs a :class:`ResolvedQuery` over plain dicts, slowly and obviously. Property tests
check that the store selects exactly what this module selects.

**Input.** A row query (``multi_run`` false) selects :class:`Row` dicts, one per record
and run. A multi-run query selects :class:`RecordAggregate` dicts, one per record, which
:func:`aggregate_records` builds from rows. Field by field, see the two TypedDicts.

**What each facet reads** (its *values*; an empty list means the attribute is missing):

- ``@evaluations.custom.<label>``: ``row["evaluations"][label]``. Missing when absent,
  ``None`` or NaN (an evaluation whose evaluator raised is stored as ``None``). A score
  label reads numbers, a boolean counting as 1/0 (other values are missing); a boolean
  label reads booleans only; a categorical label reads text (``str(value)`` for a
  non-string, as :mod:`assay.aggregation` does); a json label reads like ``@meta.*``.
- ``@trace.*`` / ``@duration``: the row's number (``None`` or NaN: missing).
- ``@status``: ``"ok"`` or ``"error"``; ``@meta.error.type``: the text, ``None`` missing.
- ``@meta.<field>.<path>``: each path segment is an object key (an array on the way, or a
  missing key, makes the attribute missing). At the end, ``null`` is missing, an array
  gives its non-null scalar elements (so an array matches if any element does; nested
  arrays and objects inside it are ignored), a scalar gives itself, an object gives no
  comparable value.
- a tag ``key``: the ``v`` of every tag ``key:v`` of the record (split at the first
  ``:``); any of them may match.
- ``dataset_record_id``, ``run_iteration``, ``run_id``: the row's own.
- ``@multi_run_avg.<f>`` / ``@multi_run_mode.<f>``: ``record["aggregates"][name]``, where
  ``name`` is the facet's canonical name (e.g.
  ``@multi_run_avg.@evaluations.custom.accuracy``); ``None`` or NaN is missing.

**How values match.** A term matches when *any* value matches; a missing attribute
matches no comparison, range, wildcard or existence test, so ``-@attr:x`` (and
``-@attr:*``) match it, as Datadog's exclusion does.

- ``@attr:v``: a boolean value equals ``v``'s boolean form (``true``/``false``, any case);
  a number equals ``v``'s number (for ``@duration``, a value with a unit in
  nanoseconds); a string equals ``v``'s text exactly (case-sensitive). JSON strings are
  text even when they look like numbers; ``@meta.input.zip:01234`` matches the string
  ``"01234"`` and the number ``1234``.
- ``>``, ``>=``, ``<``, ``<=`` and ``[low TO high]`` (inclusive; ``*`` open) compare
  numbers only: number values, and tag values whose text reads as a number. Strings,
  booleans and objects never match.
- ``@attr:pa*rn``: the whole value, a string, matches the glob (``*`` any run of
  characters, ``?`` exactly one), case-sensitive. Numbers and booleans never match.
- ``@attr:*``: the attribute is present; for ``@meta.*`` present means any non-null JSON
  value, an empty array or object included.
- Free text (``word``, ``par*s``, ``"a phrase"``): a case-insensitive substring (for a
  word with wildcards, a glob anywhere in the text) of :func:`search_text` of the input,
  output, expected output or metadata, or of any tag's text (``key:value``). Case is
  folded with ``str.lower``. A record aggregate has no output, so free text in a
  multi-run query searches input, expected output, metadata and tags.

**Aggregates** (:func:`aggregate_records`), over the usable values of a record's runs as
read above: score mean, boolean share of ``True`` (``@multi_run_avg.``) and boolean mode
(``True`` only if more than half, a tie is ``False``), categorical mode (a tie goes to the
text that sorts first), means of ``@trace.*`` and ``@duration``, mode of ``@status`` (a tie
is ``error``). ``None`` when no run has a usable value. These are
:mod:`assay.aggregation`'s record-level rules.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any, TypedDict

from assay.query.ast import (
    And,
    Comparison,
    Exists,
    Not,
    Or,
    Range,
    Term,
    Value,
    Wildcard,
    glob_regex,
    parse_number,
)
from assay.query.facets import (
    Catalog,
    ErrorTypeFacet,
    EvaluationFacet,
    Facet,
    JsonFacet,
    MetricFacet,
    MultiRunFacet,
    RecordIdFacet,
    RunFacet,
    StatusFacet,
    TagFacet,
    multi_run_facets,
    number_operand,
)
from assay.query.resolve import ResolvedNode, ResolvedQuery

JSON = Any


class Row(TypedDict):
    """One record in one run, as a row query sees it."""

    record_id: str
    """The dataset record's id (``dataset_record_id``)."""
    run_iteration: int
    """The run, from 1."""
    run_id: str
    input: JSON
    """The record's input (the same in every run)."""
    output: JSON
    """The task's output in this run."""
    expected_output: JSON
    metadata: JSON
    tags: list[str]
    """The record's tags, each ``"key:value"`` (or a bare text)."""
    status: str
    """``"ok"`` or ``"error"``."""
    error_type: str | None
    duration: float | None
    """Nanoseconds."""
    total_tokens: float | None
    input_tokens: float | None
    output_tokens: float | None
    estimated_total_cost: float | None
    """Nanodollars."""
    evaluations: dict[str, JSON]
    """Label to value; a failed evaluation is ``None`` (or left out)."""


class RecordAggregate(TypedDict):
    """One record with its across-run aggregates, as a multi-run query sees it."""

    record_id: str
    input: JSON
    expected_output: JSON
    metadata: JSON
    tags: list[str]
    aggregates: dict[str, JSON]
    """Multi-run facet name (``@multi_run_avg.@trace.total_tokens``) to its value."""


def search_text(value: JSON) -> str:
    """The text free-text search looks in: a string itself, ``None`` nothing, any other
    JSON value its JSON text (``json.dumps`` with ``ensure_ascii=False``)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def matches_row(query: ResolvedQuery, row: Row) -> bool:
    """Whether a row query selects ``row``."""
    return query.node is None or _matches(query.node, row, record=False)


def matches_record(query: ResolvedQuery, record: RecordAggregate) -> bool:
    """Whether a query without per-run terms selects ``record``."""
    return query.node is None or _matches(query.node, record, record=True)


def filter_rows(query: ResolvedQuery, rows: Iterable[Row]) -> list[Row]:
    """The rows a row query selects, in the given order."""
    if query.multi_run:
        raise ValueError("A multi-run query selects records; use filter_records")
    return [row for row in rows if matches_row(query, row)]


def filter_records(
    query: ResolvedQuery, records: Iterable[RecordAggregate]
) -> list[RecordAggregate]:
    """The record aggregates a query selects, in the given order."""
    return [record for record in records if matches_record(query, record)]


def evaluate(query: ResolvedQuery, rows: Iterable[Row]) -> list[Row] | list[RecordAggregate]:
    """What a query selects from an experiment's rows: rows, or for a multi-run query the
    aggregates (:func:`aggregate_records`) of the records it selects."""
    if query.multi_run:
        return filter_records(query, aggregate_records(rows, query.catalog))
    return filter_rows(query, rows)


def aggregate_records(rows: Iterable[Row], catalog: Catalog) -> list[RecordAggregate]:
    """One aggregate per record, in order of first appearance; the record's own fields
    come from its row with the lowest ``run_iteration``."""
    by_record: dict[str, list[Row]] = {}
    for row in rows:
        by_record.setdefault(row["record_id"], []).append(row)
    facets = multi_run_facets(catalog)
    result: list[RecordAggregate] = []
    for record_id, record_rows in by_record.items():
        first = min(record_rows, key=lambda row: row["run_iteration"])
        result.append(
            RecordAggregate(
                record_id=record_id,
                input=first["input"],
                expected_output=first["expected_output"],
                metadata=first["metadata"],
                tags=list(first["tags"]),
                aggregates={facet.name: _aggregate(facet, record_rows) for facet in facets},
            )
        )
    return result


def _aggregate(facet: MultiRunFacet, rows: list[Row]) -> JSON:
    values = [value for row in rows for value in _values(facet.of, row, record=False)]
    if not values:
        return None
    if facet.aggregate == "avg":
        return _mean([float(value) for value in values])
    if facet.value_type == "boolean":
        return 2 * values.count(True) > len(values)
    counts = Counter(str(value) for value in values)
    best = max(counts.values())
    return min(text for text, count in counts.items() if count == best)


def _mean(values: list[float]) -> float:
    try:
        return math.fsum(values) / len(values)
    except (OverflowError, ValueError):
        return sum(values) / len(values)


# --- matching ------------------------------------------------------------------------

Item = Row | RecordAggregate


def _matches(node: ResolvedNode, item: Item, *, record: bool) -> bool:
    if isinstance(node, And):
        return all(_matches(operand, item, record=record) for operand in node.operands)
    if isinstance(node, Or):
        return any(_matches(operand, item, record=record) for operand in node.operands)
    if isinstance(node, Not):
        return not _matches(node.operand, item, record=record)
    if isinstance(node, Term):
        return _matches_text(node, item, record=record)
    facet = node.attribute
    if isinstance(node, Exists):
        return _exists(facet, item, record=record)
    values = _values(facet, item, record=record)
    if isinstance(node, Wildcard):
        pattern = re.compile(glob_regex(node.pattern), re.DOTALL)
        return any(isinstance(v, str) and pattern.fullmatch(v) is not None for v in values)
    if isinstance(node, Range):
        low = None if node.low is None else number_operand(facet, node.low)
        high = None if node.high is None else number_operand(facet, node.high)
        numbers = (_number(facet, value) for value in values)
        return any(
            n is not None and (low is None or low <= n) and (high is None or n <= high)
            for n in numbers
        )
    return any(_compare(node, facet, value) for value in values)


def _compare(node: Comparison[Facet], facet: Facet, value: JSON) -> bool:
    if node.operator == "=":
        return _equals(facet, value, node.value)
    number = _number(facet, value)
    operand = number_operand(facet, node.value)
    if number is None or operand is None:
        return False
    if node.operator == ">":
        return number > operand
    if node.operator == ">=":
        return number >= operand
    if node.operator == "<":
        return number < operand
    return number <= operand


def _equals(facet: Facet, value: JSON, query: Value) -> bool:
    if isinstance(value, bool):
        return query.boolean is value
    if isinstance(value, int | float):
        operand = number_operand(facet, query)
        return operand is not None and value == operand
    if isinstance(value, str):
        return value == query.text
    return False


def _number(facet: Facet, value: JSON) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(facet, TagFacet) and isinstance(value, str):
        return parse_number(value)
    return None


def _matches_text(term: Term, item: Item, *, record: bool) -> bool:
    fields = [item["input"], item["expected_output"], item["metadata"]]
    if not record:
        fields.append(item.get("output"))
    texts = [search_text(value).lower() for value in fields]
    texts.extend(tag.lower() for tag in item["tags"])
    if term.phrase:
        needle = term.text.lower()
        return any(needle in text for text in texts)
    pattern = re.compile(glob_regex(term.text.lower()), re.DOTALL)
    return any(pattern.search(text) is not None for text in texts)


def _exists(facet: Facet, item: Item, *, record: bool) -> bool:
    if isinstance(facet, JsonFacet):
        return _at_path(facet, item, record=record) is not None
    if isinstance(facet, EvaluationFacet) and facet.value_type == "json":
        raw = _row(item, facet, record)["evaluations"].get(facet.label)
        return raw is not None and not _is_nan(raw)
    return bool(_values(facet, item, record=record))


def _values(facet: Facet, item: Item, *, record: bool) -> list[JSON]:
    """Every value of the facet in the item; empty when it is missing."""
    if isinstance(facet, MultiRunFacet):
        if not record:
            raise ValueError(f"{facet.name} is an aggregate; evaluate it on records")
        aggregate = item["aggregates"].get(facet.name)  # type: ignore[typeddict-item]
        return [] if aggregate is None or _is_nan(aggregate) else [aggregate]
    if isinstance(facet, TagFacet):
        values: list[JSON] = []
        for tag in item["tags"]:
            key, separator, value = tag.partition(":")
            if separator and key == facet.key:
                values.append(value)
        return values
    if isinstance(facet, RecordIdFacet):
        return [item["record_id"]]
    if isinstance(facet, JsonFacet):
        return _scalars(_at_path(facet, item, record=record))
    row = _row(item, facet, record)
    if isinstance(facet, EvaluationFacet):
        return _evaluation_values(facet, row["evaluations"].get(facet.label))
    if isinstance(facet, MetricFacet):
        number = row[facet.metric]
        return [] if number is None or _is_nan(number) else [number]
    if isinstance(facet, StatusFacet):
        return [row["status"]]
    if isinstance(facet, ErrorTypeFacet):
        return [] if row["error_type"] is None else [row["error_type"]]
    assert isinstance(facet, RunFacet)
    return [row[facet.key]]


def _row(item: Item, facet: Facet, record: bool) -> Row:
    if record:
        raise ValueError(f"{facet.name} differs between runs; evaluate it on rows")
    return item  # type: ignore[return-value]


def _evaluation_values(facet: EvaluationFacet, raw: JSON) -> list[JSON]:
    if raw is None or _is_nan(raw):
        return []
    if facet.metric_type == "score":
        if isinstance(raw, bool):
            return [int(raw)]
        return [raw] if isinstance(raw, int | float) else []
    if facet.metric_type == "boolean":
        return [raw] if isinstance(raw, bool) else []
    if facet.metric_type == "categorical":
        return [raw if isinstance(raw, str) else str(raw)]
    return _scalars(raw)


def _at_path(facet: JsonFacet, item: Item, *, record: bool) -> JSON:
    # The output is the one JSON field that differs between runs.
    if facet.field == "output":
        return _walk(_row(item, facet, record)["output"], facet.path)
    return _walk(item[facet.field], facet.path)


def _walk(current: JSON, path: tuple[str, ...]) -> JSON:
    for key in path:
        if not isinstance(current, dict) or key not in current:
            return None
        current = current[key]
    return current


def _scalars(value: JSON) -> list[JSON]:
    if value is None or isinstance(value, dict):
        return []
    if isinstance(value, list):
        return [v for v in value if v is not None and not isinstance(v, list | dict)]
    return [value]


def _is_nan(value: JSON) -> bool:
    return isinstance(value, float) and math.isnan(value)
