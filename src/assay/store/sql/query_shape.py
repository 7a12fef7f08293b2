"""The shape of a resolved query, which decides how the store runs it: whether a row
query tests evaluations, which run it names outright, which leaves are on multi-run
aggregates and which of those to read first (see ``search`` and ``search_compile``)."""

from __future__ import annotations

from assay.query.ast import And, Comparison, Expr, Not, Or, Term
from assay.query.facets import EvaluationFacet, Facet, MultiRunFacet, RunFacet


def has_evaluation_terms(node: Expr[Facet]) -> bool:
    """Whether a row query tests an evaluation anywhere (see ``QueryCompiler.row_set``)."""
    if isinstance(node, And | Or):
        return any(has_evaluation_terms(operand) for operand in node.operands)
    if isinstance(node, Not):
        return has_evaluation_terms(node.operand)
    return not isinstance(node, Term) and isinstance(node.attribute, EvaluationFacet)


def required_run(node: Expr[Facet] | None) -> int | None:
    """The run every match of a row query is in, where the query names one outright
    (``run_iteration:N``, alone or as a term of the top ``AND``)."""
    operands = node.operands if isinstance(node, And) else (node,)
    for operand in operands:
        number = _run_named(operand)
        if number is not None:
            return number
    return None


def without_run(node: Expr[Facet], run: int) -> Expr[Facet] | None:
    """``node`` less its top ``run_iteration:run`` terms (None if nothing is left): for a
    search whose scope already holds the run, where SQLite would test it again on every
    entry of the range it reads."""
    operands = node.operands if isinstance(node, And) else (node,)
    rest = [operand for operand in operands if _run_named(operand) != run]
    if len(rest) == len(operands):
        return node
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else And(tuple(rest), start=node.start, end=node.end)


def _run_named(node: Expr[Facet] | None) -> int | None:
    """N, for a ``run_iteration:N`` leaf."""
    if (
        isinstance(node, Comparison)
        and node.operator == "="
        and isinstance(node.attribute, RunFacet)
        and node.attribute.key == "run_iteration"
    ):
        number = node.value.number
        if number is not None and number == int(number):
            return int(number)
    return None


def aggregate_facet(node: Expr[Facet]) -> MultiRunFacet | None:
    """The facet of a leaf on a multi-run aggregate, else None."""
    if isinstance(node, And | Or | Not | Term) or not isinstance(node.attribute, MultiRunFacet):
        return None
    return node.attribute


def selectivity_rank(node: Expr[Facet]) -> int:
    """Sort key for the sets of an ``AND``: equality on an aggregate, then other leaves."""
    if isinstance(node, Comparison) and isinstance(node.attribute, MultiRunFacet):
        return 0 if node.operator == "=" else 1
    return 2
