"""Saying a query in plain English, for the UI: the query is also a sentence.

Examples::

    @multi_run_avg.@evaluations.custom.random_evaluator:>=0.5
    @multi_run_mode.@evaluations.custom.sentiment_evaluator:positive
    → records whose average random_evaluator across runs is at least 0.5 and whose most
      common sentiment_evaluator is positive

    run_iteration:1 @trace.total_tokens:>1000
    → rows of run 1 with more than 1000 total tokens

    paris -@status:error @duration:[100ms TO 2s]
    → rows containing "paris" and whose status is not error and taking between 100ms and 2s
"""

from __future__ import annotations

from typing import Final

from assay.query.ast import (
    And,
    Attribute,
    Comparison,
    Exists,
    Expr,
    Leaf,
    Node,
    Not,
    Or,
    Range,
    Term,
    Value,
    Wildcard,
    glob_has_wildcard,
    glob_literal,
    walk,
)
from assay.query.facets import (
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
    multi_run_parts,
    plain_facet,
)
from assay.query.resolve import ResolvedQuery

_Any = Expr[Facet] | Expr[Attribute]

_COMPARING: Final = {
    "=": "is",
    ">": "is more than",
    ">=": "is at least",
    "<": "is less than",
    "<=": "is at most",
}
_COUNTING: Final = {
    "=": "with exactly",
    ">": "with more than",
    ">=": "with at least",
    "<": "with fewer than",
    "<=": "with at most",
}
_TAKING: Final = {
    "=": "taking exactly",
    ">": "taking more than",
    ">=": "taking at least",
    "<": "taking less than",
    "<=": "taking at most",
}
_METRIC_NOUNS: Final = {
    "total_tokens": "total tokens",
    "input_tokens": "input tokens",
    "output_tokens": "output tokens",
    "estimated_total_cost": "estimated cost",
    "duration": "duration",
}
_UNITS: Final = {"estimated_total_cost": " nanodollars", "duration": " ns"}


def describe(query: ResolvedQuery | Node | None) -> str:
    """The query as an English phrase naming what it selects ("rows ..." / "records ...").

    A parsed tree is described without a catalog: evaluation types are then unknown and
    any tag key is taken as a tag.
    """
    if isinstance(query, ResolvedQuery):
        node: _Any | None = query.node
        multi_run = query.multi_run
    else:
        node = query
        multi_run = node is not None and any(
            isinstance(_facet(part.attribute), MultiRunFacet)
            for part in walk(node)
            if isinstance(part, Comparison | Range | Wildcard | Exists)
        )
    subject = "records" if multi_run else "rows"
    if node is None:
        return f"all {subject}"
    operands = node.operands if isinstance(node, And) else (node,)
    run: str | None = None
    clauses: list[_Any] = []
    for operand in operands:
        if run is None and _is_run(operand):
            assert isinstance(operand, Comparison)
            run = f"of run {_shown(operand.value)}"
        else:
            clauses.append(operand)
    words = [subject] + ([run] if run else [])
    grouped = len(clauses) > 1 or run is not None
    if clauses:
        words.append(" and ".join(_phrase(clause, grouped=grouped) for clause in clauses))
    return " ".join(words)


def _is_run(node: _Any) -> bool:
    return (
        isinstance(node, Comparison)
        and node.operator == "="
        and isinstance(_facet(node.attribute), RunFacet)
        and node.attribute.name == "run_iteration"
    )


def _phrase(node: _Any, *, grouped: bool = True, negated: bool = False) -> str:
    if isinstance(node, Not):
        return _phrase(node.operand, grouped=grouped, negated=not negated)
    if isinstance(node, And | Or):
        text = _compound(node)
        if negated:
            return f"not ({text})"
        # An And is only ever nested here (the top level is split into clauses).
        return f"({text})" if isinstance(node, And) or grouped else text
    if isinstance(node, Term):
        return _text_search(node, negated)
    return _leaf(node, negated)


def _compound(node: And[Facet] | And[Attribute] | Or[Facet] | Or[Attribute]) -> str:
    if isinstance(node, Or):
        listed = _value_list(node)
        if listed is not None:
            return listed
        return " or ".join(_phrase(operand) for operand in node.operands)
    return " and ".join(_phrase(operand) for operand in node.operands)


def _value_list(node: Or[Facet] | Or[Attribute]) -> str | None:
    """``whose sentiment is positive, neutral or negative`` for a value list."""
    operands = node.operands
    if not all(isinstance(o, Comparison) and o.operator == "=" for o in operands):
        return None
    comparisons = [o for o in operands if isinstance(o, Comparison)]
    names = {comparison.attribute.name for comparison in comparisons}
    facet = _facet(comparisons[0].attribute)
    if len(names) != 1 or isinstance(facet, TagFacet | RecordIdFacet | RunFacet):
        return None
    values = [_shown(comparison.value) for comparison in comparisons]
    listed = ", ".join(values[:-1]) + " or " + values[-1]
    return f"whose {_noun(facet, comparisons[0].attribute)} is {listed}"


def _text_search(term: Term, negated: bool) -> str:
    verb = "not containing" if negated else "containing"
    if not term.phrase and glob_has_wildcard(term.text):
        return f"{verb} text matching {term.text}"
    text = term.text if term.phrase else glob_literal(term.text)
    return f'{verb} "{text}"'


def _leaf(node: Leaf[Facet] | Leaf[Attribute], negated: bool) -> str:
    facet = _facet(node.attribute)
    noun = _noun(facet, node.attribute)
    not_ = " not" if negated else ""
    if isinstance(node, Exists):
        return f"whose {noun} is{not_} set"
    if isinstance(node, Wildcard):
        return f"whose {noun} {'does not match' if negated else 'matches'} {node.pattern}"
    special = None if negated else _special(node, facet)
    if special is not None:
        return special
    if isinstance(node, Range):
        return f"whose {noun} is{not_} {_between(node, facet)}"
    verb = _COMPARING[node.operator]
    if negated:
        verb = verb.replace("is", "is not", 1)
    if isinstance(facet, TagFacet) and node.operator == "=":
        return f"{'not ' if negated else ''}tagged {facet.key}:{_shown(node.value)}"
    return f"whose {noun} {verb} {_amount(node.value, facet)}"


def _special(
    node: Comparison[Facet] | Comparison[Attribute] | Range[Facet] | Range[Attribute],
    facet: Facet | None,
) -> str | None:
    """The idiomatic phrases: "with more than 1000 total tokens", "taking at least 1s",
    "of record abc"."""
    if isinstance(facet, MetricFacet) and facet.metric.endswith("tokens"):
        noun = _METRIC_NOUNS[facet.metric]
        if isinstance(node, Range):
            return f"with {_between(node, facet, joiner='to')} {noun}"
        return f"{_COUNTING[node.operator]} {_shown(node.value)} {noun}"
    if isinstance(facet, MetricFacet) and facet.metric == "duration":
        if isinstance(node, Range):
            return f"taking {_between(node, facet)}"
        return f"{_TAKING[node.operator]} {_amount(node.value, facet)}"
    if isinstance(facet, RecordIdFacet) and isinstance(node, Comparison) and node.operator == "=":
        return f"of record {_shown(node.value)}"
    return None


def _between(
    node: Range[Facet] | Range[Attribute], facet: Facet | None, joiner: str = "and"
) -> str:
    if node.low is not None and node.high is not None:
        low, high = _amount(node.low, facet), _amount(node.high, facet)
        return f"{low} to {high}" if joiner == "to" else f"between {low} and {high}"
    if node.low is not None:
        return f"at least {_amount(node.low, facet)}"
    if node.high is not None:
        return f"at most {_amount(node.high, facet)}"
    return "any number"


def _amount(value: Value, facet: Facet | None) -> str:
    """A value as shown: with its unit for costs and unit-less durations."""
    shown = _shown(value)
    inner = facet.of if isinstance(facet, MultiRunFacet) else facet
    if isinstance(inner, MetricFacet) and value.number is not None:
        return shown + _UNITS.get(inner.metric, "")
    return shown


def _shown(value: Value) -> str:
    text = value.text
    return f'"{text}"' if not text or any(c.isspace() for c in text) else text


def _noun(facet: Facet | None, attribute: Facet | Attribute) -> str:
    if facet is None:
        return attribute.name
    if isinstance(facet, EvaluationFacet):
        return facet.label
    if isinstance(facet, MetricFacet):
        noun = _METRIC_NOUNS[facet.metric]
        return noun.replace("tokens", "token count")
    if isinstance(facet, StatusFacet):
        return "status"
    if isinstance(facet, ErrorTypeFacet):
        return "error type"
    if isinstance(facet, JsonFacet):
        return ".".join((facet.field, *facet.path)) if facet.path else facet.field.replace("_", " ")
    if isinstance(facet, TagFacet):
        return f"{facet.key} tag"
    if isinstance(facet, RecordIdFacet):
        return "record id"
    if isinstance(facet, RunFacet):
        return "run" if facet.key == "run_iteration" else "run id"
    of = facet.of
    if facet.aggregate == "mode":
        return f"most common {_noun(of, of)}"
    if isinstance(of, EvaluationFacet) and of.metric_type == "boolean":
        return f"share of runs where {of.label} is true"
    if isinstance(of, EvaluationFacet):
        return f"average {of.label} across runs"
    return f"average {_noun(of, of)} across runs"


def _facet(attribute: Facet | Attribute) -> Facet | None:
    """The facet itself, or for a parsed attribute the facet its name spells, if any."""
    if not isinstance(attribute, Attribute):
        return attribute
    parts = multi_run_parts(attribute.name)
    if parts is None:
        return plain_facet(attribute.name, None)
    aggregate, inner_name = parts
    inner = plain_facet(inner_name, None)
    if isinstance(inner, EvaluationFacet | MetricFacet | StatusFacet):
        return MultiRunFacet(aggregate, inner)
    return None
