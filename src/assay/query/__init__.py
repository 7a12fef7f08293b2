"""Search queries over experiment records: Datadog's search syntax, multi-run aware.

:func:`parse` turns text into a syntax tree (:mod:`.ast`), :func:`resolve` checks it
against one experiment's facets (a :class:`Catalog`) and gives a :class:`ResolvedQuery`,
:func:`describe` says it in English, :func:`to_text` prints a tree back as query text, and
:func:`evaluate` is the plain-Python reference of what a query selects, which the store's
SQL compiler must match. Every problem with a query is a :class:`QueryError`.

Example::

    catalog = Catalog({"accuracy": "score", "tone": "categorical"}, frozenset({"topic"}))
    query = resolve("@multi_run_avg.@evaluations.custom.accuracy:>=0.5 topic:geo", catalog)
    query.multi_run   # True: it selects records by their averages across runs
    describe(query)   # 'records whose average accuracy across runs is at least 0.5 and
                      #  tagged topic:geo'
"""

from assay.errors import QueryError
from assay.query.ast import (
    And,
    Attribute,
    Comparison,
    Exists,
    Expr,
    GlobToken,
    Leaf,
    Node,
    Not,
    Operator,
    Or,
    Range,
    Term,
    Value,
    Wildcard,
    glob_regex,
    glob_segments,
    walk,
)
from assay.query.evaluate import (
    RecordAggregate,
    Row,
    aggregate_records,
    evaluate,
    filter_records,
    filter_rows,
    matches_record,
    matches_row,
    search_text,
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
    Scope,
    StatusFacet,
    TagFacet,
    ValueType,
    is_duration,
    multi_run_facets,
    number_operand,
)
from assay.query.parse import parse
from assay.query.resolve import ResolvedNode, ResolvedQuery, check_page, resolve
from assay.query.sentence import describe
from assay.query.text import to_text

__all__ = [
    "And",
    "Attribute",
    "Catalog",
    "Comparison",
    "ErrorTypeFacet",
    "EvaluationFacet",
    "Exists",
    "Expr",
    "Facet",
    "GlobToken",
    "JsonFacet",
    "Leaf",
    "MetricFacet",
    "MultiRunFacet",
    "Node",
    "Not",
    "Operator",
    "Or",
    "QueryError",
    "Range",
    "RecordAggregate",
    "RecordIdFacet",
    "ResolvedNode",
    "ResolvedQuery",
    "Row",
    "RunFacet",
    "Scope",
    "StatusFacet",
    "TagFacet",
    "Term",
    "Value",
    "ValueType",
    "Wildcard",
    "aggregate_records",
    "check_page",
    "describe",
    "evaluate",
    "filter_records",
    "filter_rows",
    "glob_regex",
    "glob_segments",
    "is_duration",
    "matches_record",
    "matches_row",
    "multi_run_facets",
    "number_operand",
    "parse",
    "resolve",
    "search_text",
    "to_text",
    "walk",
]
