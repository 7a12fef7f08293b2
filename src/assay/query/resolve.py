"""Resolving a parsed query against an experiment's facets.

:func:`resolve` replaces every attribute by its typed facet (see :mod:`.facets`) and
checks what the grammar cannot: that each facet exists, that its values have the right
type, and that a query does not mix across-run aggregates with per-run terms.

A multi-run term (``@multi_run_avg.`` / ``@multi_run_mode.``) selects *records* by an
aggregate over all of their runs; a plain evaluation, ``@trace.*``, ``@duration``,
``@status``, ``@meta.error.type`` or ``@meta.output`` term selects single *rows*. One
query cannot have both: "records whose average is X and one of whose runs has Y" needs
the rows and the aggregates at once, which the store does not answer in one pass. For the
same reason ``run_iteration`` and ``run_id`` cannot restrict a multi-run query: the
aggregates always span every run. Free text, ``dataset_record_id``, record tags and
``@meta.input`` / ``@meta.expected_output`` / ``@meta.metadata`` are the same in every run
of a record, so they combine with either kind.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

from assay.errors import QueryError
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
)
from assay.query.facets import (
    STATUSES,
    Catalog,
    EvaluationFacet,
    Facet,
    MetricFacet,
    MultiRunFacet,
    StatusFacet,
    aggregates_of,
    is_duration,
    known_names,
    multi_run_parts,
    plain_facet,
)
from assay.query.parse import parse
from assay.query.text import to_text

ResolvedNode = Expr[Facet]
"""A query tree whose attributes are facets."""


@dataclass(frozen=True, slots=True)
class ResolvedQuery:
    """A query checked against one experiment's facets, ready to compile or evaluate."""

    text: str
    """The query text (positions in the tree are offsets into it)."""
    node: ResolvedNode | None
    """The tree with facets for attributes; ``None`` for an empty query (all rows)."""
    multi_run: bool
    """Whether it selects records by across-run aggregates (else it selects rows)."""
    catalog: Catalog
    """The facets it was resolved against."""


def check_page(query: str, limit: int, offset: int) -> None:
    """The checks of a search's text and page that need no experiment: every store makes
    them before it looks anything up (a NUL cannot be stored, nor travel in a URL)."""
    if "\x00" in query:
        raise QueryError(
            "The query contains a NUL character, which no stored text can contain; remove it",
            query=query,
            position=query.index("\x00"),
        )
    if limit < 0 or offset < 0:
        raise QueryError(
            f"limit and offset must not be negative (got {limit}, {offset})", query=query
        )


def resolve(
    query: str | Node | None, catalog: Catalog, *, text: str | None = None
) -> ResolvedQuery:
    """Parse (if given text) and resolve a query against ``catalog``.

    Raises :class:`QueryError` for a syntax error, an unknown facet, a value of the wrong
    type or a mix of multi-run and per-run terms, pointing at the offending term. When a
    tree is passed, ``text`` should be the text it was parsed from, for the caret.

    Example::

        catalog = Catalog({"accuracy": "score"}, frozenset({"difficulty"}))
        resolve("@multi_run_avg.@evaluations.custom.accuracy:>=0.5 difficulty:hard", catalog)
    """
    if isinstance(query, str):
        text = query
        node = parse(query)
    else:
        node = query
    resolver = _Resolver(text, node, catalog)
    return resolver.run()


class _Resolver:
    def __init__(self, text: str | None, node: Node | None, catalog: Catalog) -> None:
        self.node = node
        self.catalog = catalog
        # Without the original text the offsets mean nothing; no caret then.
        self.text = text if text is not None else to_text(node)
        self.has_positions = text is not None

    def error(self, message: str, position: int) -> QueryError:
        return QueryError(
            message, query=self.text, position=position if self.has_positions else None
        )

    def run(self) -> ResolvedQuery:
        if self.node is None:
            return ResolvedQuery(self.text, None, False, self.catalog)
        facets: dict[int, Facet] = {}
        leaves: list[tuple[Leaf[Attribute], Facet]] = []
        for leaf in _leaves(self.node):
            facet = self.facet(leaf.attribute)
            self.check_values(leaf, facet)
            facets[id(leaf)] = facet
            leaves.append((leaf, facet))
        self.check_mix(leaves)
        resolved = _with_facets(self.node, facets)
        multi_run = any(facet.multi_run for _, facet in leaves)
        return ResolvedQuery(self.text, resolved, multi_run, self.catalog)

    # --- facets ---------------------------------------------------------------------

    def facet(self, attribute: Attribute) -> Facet:
        name = attribute.name
        parts = multi_run_parts(name)
        if parts is None:
            facet = plain_facet(name, self.catalog)
            if facet is None:
                raise self.unknown(attribute)
            return facet
        aggregate, inner_name = parts
        inner = plain_facet(inner_name, self.catalog)
        if inner is None:
            raise self.unknown(attribute)
        prefix = f"@multi_run_{aggregate}."
        possible = aggregates_of(inner)
        if aggregate in possible:
            assert isinstance(inner, EvaluationFacet | MetricFacet | StatusFacet)
            return MultiRunFacet(aggregate, inner)
        if possible:
            what = "averages numbers" if aggregate == "avg" else "takes the most common value"
            raise self.error(
                f"'{prefix}' {what}, but {_describe_type(inner)}; "
                f"use @multi_run_{possible[0]}.{inner.name}",
                attribute.start,
            )
        if inner.scope == "record":
            reason = (
                f"'{inner_name}' is the same in every run of a record, so it has no "
                f"across-run aggregate; use {inner_name} without '{prefix}'"
            )
        elif isinstance(inner, EvaluationFacet):
            reason = (
                f"'{inner.label}' is a json evaluation, and those are not aggregated across runs"
            )
        else:
            reason = (
                f"'{inner_name}' has no across-run aggregate (only evaluations, @trace.* "
                "metrics, @duration and @status do)"
            )
            if inner.scope == "row":
                reason += f"; to filter one run, write run_iteration:1 {inner_name}:..."
        raise self.error(reason[0].upper() + reason[1:], attribute.start)

    def unknown(self, attribute: Attribute) -> QueryError:
        name = attribute.name
        candidates = known_names(self.catalog)
        candidates.extend(_reshaped(name))
        candidates = [candidate for candidate in candidates if candidate != name]
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        message = f"Unknown facet '{name}'"
        if close:
            message += f" (did you mean '{close[0]}'?)"
        else:
            labels = ", ".join(sorted(self.catalog.evaluations)) or "none"
            tags = ", ".join(sorted(self.catalog.tag_keys)) or "none"
            message += (
                f"; facets are @evaluations.custom.<label> (labels: {labels}), "
                "@trace.total_tokens, @trace.input_tokens, @trace.output_tokens, "
                "@trace.estimated_total_cost, @duration, @status, @meta.error.type, "
                "@meta.input, @meta.output, @meta.expected_output and @meta.metadata "
                "(with .<path>), @multi_run_avg.<facet>, @multi_run_mode.<facet>, and the "
                f"tags run_iteration, run_id, dataset_record_id and the record tags ({tags})"
            )
        if not name.startswith("@"):
            message += f'; to search for the text, quote it: "{name}:..."'
        return self.error(message, attribute.start)

    # --- values ---------------------------------------------------------------------

    def check_values(self, leaf: Leaf[Attribute], facet: Facet) -> None:
        written = leaf.attribute.name
        if isinstance(leaf, Exists):
            return
        if isinstance(leaf, Wildcard):
            if facet.value_type in ("number", "boolean"):
                raise self.error(
                    f"Wildcards match text, but {_describe_type(facet)}; "
                    f"use {written}:<value>{' or a range' if facet.ordered else ''}",
                    leaf.start,
                )
            return
        if isinstance(leaf, Range) or leaf.operator != "=":
            what = "A range" if isinstance(leaf, Range) else f"'{leaf.operator}'"
            if not facet.ordered:
                if facet.value_type == "boolean":
                    example = f"{written}:true"
                elif isinstance(leaf, Comparison):
                    example = to_text(Comparison(Attribute(written), "=", leaf.value))
                else:
                    example = f"{written}:<value>"
                raise self.error(
                    f"{what} compares numbers, but {_describe_type(facet)}; use {example}",
                    leaf.start,
                )
            bounds = [leaf.low, leaf.high] if isinstance(leaf, Range) else [leaf.value]
            for bound in bounds:
                if bound is not None:
                    self.check_number(bound, facet, written, what)
            return
        value = leaf.value
        if facet.value_type == "number":
            self.check_number(value, facet, written, None)
        elif facet.value_type == "boolean" and value.boolean is None:
            raise self.error(
                f"'{value.text}' is not true or false; {_describe_type(facet)}",
                value.start,
            )
        elif _is_status(facet) and value.text not in STATUSES:
            raise self.error(f"{written} is 'ok' or 'error', not '{value.text}'", value.start)

    def check_number(self, value: Value, facet: Facet, written: str, what: str | None) -> None:
        if is_duration(facet):
            if value.number is None and value.duration is None:
                raise self.error(
                    f"'{value.text}' is not a duration; {written} takes nanoseconds or a "
                    "number with a unit (ns, us, ms, s, m, h), as in @duration:>1.5s",
                    value.start,
                )
            return
        if value.number is not None:
            return
        if value.duration is not None and facet.value_type == "number":
            raise self.error(
                f"'{value.text}' is a duration, but {_describe_type(facet)}; write a plain number",
                value.start,
            )
        if what is not None and facet.value_type != "number":
            message = f"{what} compares numbers, but '{value.text}' is not a number"
        else:
            message = f"'{value.text}' is not a number; {_describe_type(facet)}"
        raise self.error(message, value.start)

    # --- mixing ---------------------------------------------------------------------

    def check_mix(self, leaves: list[tuple[Leaf[Attribute], Facet]]) -> None:
        multi = next(((leaf, f) for leaf, f in leaves if isinstance(f, MultiRunFacet)), None)
        if multi is None:
            return
        multi_leaf, multi_facet = multi
        assert isinstance(multi_facet, MultiRunFacet)
        aggregate_name = multi_leaf.attribute.name
        plain_example = _plain_example(multi_leaf, multi_facet)
        for leaf, facet in leaves:
            written = leaf.attribute.name
            if facet.scope == "row":
                kind = "average" if multi_facet.aggregate == "avg" else "most common value"
                message = (
                    f"Cannot combine '{aggregate_name}' with '{written}' in one query: a "
                    "multi-run term selects records by their aggregate across runs, while "
                    f"'{written}' selects single runs; together they would mean \"records "
                    f'whose {kind} is X and one of whose runs has Y", which the store '
                    "cannot answer in one pass. "
                )
                one_run = (
                    "restrict to one run with plain terms "
                    f"(run_iteration:1 {plain_example} {to_text(leaf)})"
                )
                counterparts = aggregates_of(facet)
                if counterparts:
                    aggregate = _fitting_aggregate(leaf, counterparts)
                    aggregated = f"@multi_run_{aggregate}.{facet.name}"
                    both = to_text(replace(leaf, attribute=Attribute(aggregated)))
                    message += (
                        f"Filter on the aggregate for both ({both}), or drop the "
                        f"@multi_run_ terms and {one_run}"
                    )
                else:
                    message += f"Drop the @multi_run_ terms and {one_run}"
                raise self.error(message, leaf.attribute.start)
            if facet.scope == "run":
                raise self.error(
                    f"Cannot combine '{aggregate_name}' with '{written}': multi-run "
                    "aggregates are computed over every run of a record, so they cannot be "
                    f"limited to some runs. Drop {written} to filter records by their "
                    "aggregates, or drop the @multi_run_ terms and filter the rows of one "
                    f"run with plain terms (run_iteration:1 {plain_example})",
                    leaf.attribute.start,
                )


def _is_numeric_test(leaf: Leaf[Attribute]) -> bool:
    if isinstance(leaf, Range):
        return True
    if isinstance(leaf, Comparison):
        return leaf.operator != "=" or (
            leaf.value.number is not None and leaf.value.boolean is None
        )
    return False


def _fitting_aggregate(leaf: Leaf[Attribute], counterparts: tuple[str, ...]) -> str:
    """The aggregate a rewrite should use: an average for numbers, a mode for labels."""
    if _is_numeric_test(leaf) and "avg" in counterparts:
        return "avg"
    return "mode" if "mode" in counterparts else counterparts[0]


def _plain_example(multi_leaf: Leaf[Attribute], multi_facet: MultiRunFacet) -> str:
    """The multi-run term as a per-run term that the resolver accepts."""
    of = multi_facet.of
    boolean = isinstance(of, EvaluationFacet) and of.metric_type == "boolean"
    if boolean and _is_numeric_test(multi_leaf):
        # An average of a boolean is a share; one run's value is true or false.
        return f"{of.name}:true"
    return to_text(replace(multi_leaf, attribute=Attribute(of.name)))


def _leaves(node: Node) -> list[Leaf[Attribute]]:
    result: list[Leaf[Attribute]] = []
    stack: list[Node] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Not):
            stack.append(current.operand)
        elif isinstance(current, And | Or):
            stack.extend(reversed(current.operands))
        elif not isinstance(current, Term):
            result.append(current)
    return result


def _with_facets(node: Node, facets: dict[int, Facet]) -> ResolvedNode:
    if isinstance(node, Term):
        return node
    if isinstance(node, Not):
        return Not(_with_facets(node.operand, facets), start=node.start, end=node.end)
    if isinstance(node, And):
        operands = tuple(_with_facets(operand, facets) for operand in node.operands)
        return And(operands, start=node.start, end=node.end)
    if isinstance(node, Or):
        operands = tuple(_with_facets(operand, facets) for operand in node.operands)
        return Or(operands, start=node.start, end=node.end)
    facet = facets[id(node)]
    if isinstance(node, Comparison):
        return Comparison(facet, node.operator, node.value, start=node.start, end=node.end)
    if isinstance(node, Range):
        return Range(facet, node.low, node.high, start=node.start, end=node.end)
    if isinstance(node, Wildcard):
        return Wildcard(facet, node.pattern, start=node.start, end=node.end)
    return Exists(facet, start=node.start, end=node.end)


def _is_status(facet: Facet) -> bool:
    return isinstance(facet, StatusFacet) or (
        isinstance(facet, MultiRunFacet) and isinstance(facet.of, StatusFacet)
    )


def _describe_type(facet: Facet) -> str:
    """``'sentiment' is a categorical evaluation`` and the like, for messages."""
    if isinstance(facet, EvaluationFacet):
        return f"'{facet.label}' is a {facet.metric_type or 'untyped'} evaluation"
    if isinstance(facet, MetricFacet):
        return f"'{facet.name}' is a number of {facet.unit}"
    if isinstance(facet, MultiRunFacet):
        if facet.aggregate == "avg":
            return f"'{facet.name}' is an average"
        if facet.value_type == "boolean":
            return f"'{facet.name}' is true or false"
        if isinstance(facet.of, StatusFacet):
            return f"'{facet.name}' is 'ok' or 'error'"
        return f"'{facet.name}' is the most common label of a categorical evaluation"
    if isinstance(facet, StatusFacet):
        return "'@status' is 'ok' or 'error'"
    if facet.value_type == "number":
        return f"'{facet.name}' is a number"
    return f"'{facet.name}' is text"


def _reshaped(name: str) -> list[str]:
    """Guesses for a misspelled prefix, keeping the rest (``@meta.inptu.q`` → ``@meta.input.q``)."""
    parts = name.split(".")
    if name.startswith("@meta.") and len(parts) > 2:
        rest = ".".join(parts[2:])
        return [
            f"@meta.{field}.{rest}" for field in ("input", "output", "expected_output", "metadata")
        ]
    return []
