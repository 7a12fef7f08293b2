"""The facets of the records view, and the one query they are written into.

The query in the search bar is the view's only filter: a facet is a way to edit it. Each
facet owns the simple top-level terms on its attribute — ``@status:error`` or
``@evaluations.custom.tone:(positive OR neutral)`` for a list of values,
``@duration:[10ms TO 2s]``, ``@trace.total_tokens:>=400`` for a range — so reading the
query gives the facets' state (:func:`read`), and a change of the facets removes the terms
they own and appends the new ones, leaving everything else as the user typed it
(:func:`compose`). In the all-runs view the same facets spell the across-run aggregates
(``@multi_run_mode.@status``, ``@multi_run_avg.@duration``); :func:`retarget` rewrites a
query when the view moves between all runs and one run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from assay.errors import QueryError
from assay.query import (
    And,
    Attribute,
    Catalog,
    Comparison,
    Exists,
    Expr,
    Not,
    Or,
    Range,
    Term,
    Value,
    Wildcard,
    parse,
    to_text,
)
from assay.query.ast import Node

Unit = Literal["", "ms", "usd"]


@dataclass(frozen=True)
class FacetSpec:
    """One facet: which attribute it filters and how it is shown."""

    key: str
    """``status``, ``evaluation:<label>``, ``duration``, ``total_tokens`` or
    ``estimated_total_cost``: the key of its counts and ranges in ``FacetCounts``."""
    title: str
    kind: Literal["values", "range"]
    row_attribute: str
    """The attribute of one run's rows: ``@status``, ``@evaluations.custom.tone``."""
    aggregate: Literal["avg", "mode"]
    """How the all-runs view aggregates it."""
    unit: Unit = ""
    """The unit of the range inputs: milliseconds for durations, dollars for cost."""
    metric_type: str = ""

    def attribute(self, multi_run: bool) -> str:
        if not multi_run:
            return self.row_attribute
        return f"@multi_run_{self.aggregate}.{self.row_attribute}"

    @property
    def name(self) -> str:
        """The form field name of the facet."""
        return "f." + self.key


@dataclass
class FacetState:
    """What the query says of one facet."""

    checked: set[str] = field(default_factory=set)
    low: str = ""
    high: str = ""


def specs(catalog: Catalog) -> list[FacetSpec]:
    """The facets of an experiment, in sidebar order."""
    found = [FacetSpec("status", "Status", "values", "@status", "mode")]
    labels = sorted(catalog.evaluations.items())
    for label, metric_type in labels:
        if metric_type in ("categorical", "boolean"):
            found.append(
                FacetSpec(
                    f"evaluation:{label}",
                    label,
                    "values",
                    f"@evaluations.custom.{label}",
                    "mode",
                    metric_type=metric_type,
                )
            )
    for label, metric_type in labels:
        if metric_type == "score":
            found.append(
                FacetSpec(
                    f"evaluation:{label}",
                    label,
                    "range",
                    f"@evaluations.custom.{label}",
                    "avg",
                    metric_type=metric_type,
                )
            )
    found += [
        FacetSpec("duration", "Duration (ms)", "range", "@duration", "avg", "ms"),
        FacetSpec("total_tokens", "Total tokens", "range", "@trace.total_tokens", "avg"),
        FacetSpec(
            "estimated_total_cost",
            "Estimated cost ($)",
            "range",
            "@trace.estimated_total_cost",
            "avg",
            "usd",
        ),
    ]
    return found


# Reading -----------------------------------------------------------------------------------


def _conjuncts(node: Node | None) -> list[Expr[Attribute]]:
    if node is None:
        return []
    return list(node.operands) if isinstance(node, And) else [node]


def _owned(
    node: Expr[Attribute], by_attribute: Mapping[str, FacetSpec]
) -> tuple[FacetSpec, FacetState] | None:
    """The facet a top-level term belongs to and what it says, or None if it is not one
    a facet can show (a wildcard, a negation, a mix of attributes...)."""
    if isinstance(node, Or):
        values: set[str] = set()
        spec: FacetSpec | None = None
        for operand in node.operands:
            if not isinstance(operand, Comparison) or operand.operator != "=":
                return None
            found = by_attribute.get(operand.attribute.name)
            if found is None or found.kind != "values" or (spec and found is not spec):
                return None
            spec = found
            values.add(_value_key(operand.value))
        return (spec, FacetState(checked=values)) if spec else None
    if isinstance(node, Comparison):
        spec = by_attribute.get(node.attribute.name)
        if spec is None:
            return None
        if spec.kind == "values":
            if node.operator != "=":
                return None
            return spec, FacetState(checked={_value_key(node.value)})
        if node.operator == ">=":
            return spec, FacetState(low=_shown(node.value, spec.unit))
        if node.operator == "<=":
            return spec, FacetState(high=_shown(node.value, spec.unit))
        return None
    if isinstance(node, Range):
        spec = by_attribute.get(node.attribute.name)
        if spec is None or spec.kind != "range":
            return None
        return spec, FacetState(
            low=_shown(node.low, spec.unit) if node.low else "",
            high=_shown(node.high, spec.unit) if node.high else "",
        )
    return None


def _value_key(value: Value) -> str:
    return value.text.lower() if value.boolean is not None else value.text


def _shown(value: Value | None, unit: Unit) -> str:
    """A bound as the range input shows it (milliseconds, dollars)."""
    if value is None:
        return ""
    if unit == "ms":
        nanoseconds = value.duration if value.duration is not None else value.number
        return _plain(nanoseconds / 1e6) if nanoseconds is not None else value.text
    if unit == "usd" and value.number is not None:
        return _plain(value.number / 1e9)
    return value.text


def _plain(number: float) -> str:
    return f"{number:.9f}".rstrip("0").rstrip(".") if number != int(number) else str(int(number))


def _index(facets: Sequence[FacetSpec], multi_run: bool) -> dict[str, FacetSpec]:
    return {spec.attribute(multi_run): spec for spec in facets}


def read(query: str, facets: Sequence[FacetSpec], *, multi_run: bool) -> dict[str, FacetState]:
    """Each facet's state as the query gives it (empty for a query that does not parse)."""
    states = {spec.key: FacetState() for spec in facets}
    try:
        node = parse(query)
    except QueryError:
        return states
    by_attribute = _index(facets, multi_run)
    for conjunct in _conjuncts(node):
        owned = _owned(conjunct, by_attribute)
        if owned is None:
            continue
        spec, state = owned
        current = states[spec.key]
        current.checked |= state.checked
        current.low = state.low or current.low
        current.high = state.high or current.high
    return states


# Writing -----------------------------------------------------------------------------------


def _kept_text(query: str, facets: Sequence[FacetSpec], multi_run: bool) -> str:
    """The query without the terms the facets own, as the user wrote the rest."""
    try:
        node = parse(query)
    except QueryError:
        return query.strip()
    if node is None:
        return ""
    by_attribute = _index(facets, multi_run)
    kept: list[str] = []
    for conjunct in _conjuncts(node):
        if _owned(conjunct, by_attribute) is not None:
            continue
        text = query[conjunct.start : conjunct.end]
        if isinstance(conjunct, Or) and not text.startswith("("):
            text = f"({text})"
        kept.append(text)
    return " ".join(kept)


def _bound(text: str, unit: Unit) -> Value | None:
    text = text.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return Value(text)
    if unit == "ms":
        return Value(_plain(number) + "ms")
    if unit == "usd":
        return Value(str(round(number * 1e9)))
    return Value(_plain(number))


def terms(
    spec: FacetSpec,
    *,
    multi_run: bool,
    checked: Sequence[str] = (),
    low: str = "",
    high: str = "",
) -> str:
    """The query text of one facet's state ("" when it filters nothing)."""
    attribute = Attribute(spec.attribute(multi_run))
    node: Expr[Attribute] | None = None
    if spec.kind == "values":
        chosen = list(dict.fromkeys(value for value in checked if value))
        comparisons: list[Expr[Attribute]] = [
            Comparison(attribute, "=", Value(value)) for value in chosen
        ]
        if len(comparisons) == 1:
            node = comparisons[0]
        elif comparisons:
            node = Or(tuple(comparisons))
    else:
        first, last = _bound(low, spec.unit), _bound(high, spec.unit)
        if first is not None and last is not None:
            node = Range(attribute, first, last)
        elif first is not None:
            node = Comparison(attribute, ">=", first)
        elif last is not None:
            node = Comparison(attribute, "<=", last)
    return to_text(node) if node is not None else ""


def compose(
    query: str,
    facets: Sequence[FacetSpec],
    chosen: Mapping[str, FacetState],
    *,
    multi_run: bool,
) -> str:
    """``query`` with its facet terms replaced by those of ``chosen`` (facet key to state)."""
    parts = [_kept_text(query, facets, multi_run)]
    for spec in facets:
        state = chosen.get(spec.key)
        if state is None:
            continue
        parts.append(
            terms(
                spec,
                multi_run=multi_run,
                checked=sorted(state.checked),
                low=state.low,
                high=state.high,
            )
        )
    return " ".join(part for part in parts if part)


def retarget(query: str, facets: Sequence[FacetSpec], *, to_multi_run: bool) -> str:
    """The query for the other kind of view: ``@multi_run_avg.@duration:>1s`` in the
    all-runs view is ``@duration:>1s`` in one run's, and back. Only attributes of the
    facets are renamed; a query that does not parse is left as it is."""
    try:
        node = parse(query)
    except QueryError:
        return query
    if node is None:
        return query
    renames = {spec.attribute(not to_multi_run): spec.attribute(to_multi_run) for spec in facets}
    edits: list[tuple[int, int, str]] = []
    for leaf in _leaves(node):
        target = renames.get(leaf.attribute.name)
        if target is not None:
            edits.append((leaf.attribute.start, leaf.attribute.end, target))
    text = query
    for start, end, replacement in sorted(set(edits), reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _leaves(
    node: Expr[Attribute],
) -> list[Comparison[Attribute] | Range[Attribute] | Wildcard[Attribute] | Exists[Attribute]]:
    found: list[
        Comparison[Attribute] | Range[Attribute] | Wildcard[Attribute] | Exists[Attribute]
    ] = []
    stack: list[Expr[Attribute]] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Not):
            stack.append(current.operand)
        elif isinstance(current, And | Or):
            stack.extend(current.operands)
        elif not isinstance(current, Term):
            found.append(current)
    return found
