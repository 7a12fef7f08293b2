"""Resolved search queries as SQLAlchemy conditions, with bound parameters only.

Row queries become a condition on the root ``spans`` of an experiment; multi-run queries a
condition on its records, one ``record_aggregates`` row each. Every leaf compiles to a
condition that is never NULL (so ``NOT`` of a missing attribute is true, as in the
reference evaluator :mod:`assay.query.evaluate`, whose semantics this module follows):

- evaluations: one range of a typed covering index per term
  (``tables.EVALUATION_VALUE_INDEXES``), as ``span_id IN (...)`` in a condition, or as a
  set of its own in :meth:`QueryCompiler.row_set`;
- ``@trace.*`` / ``@duration`` / ``@status`` / ``@meta.error.type``: the span's columns;
- ``@meta.<field>.<path>`` and record tags: the JSON functions of each dialect (SQLite's
  ``json_type``/``json_extract``/``json_each``, PostgreSQL's ``json_typeof``/
  ``json_extract_path``/``json_array_elements``); an array matches when any element does;
- free text: a case-insensitive ``LIKE`` over the JSON text of input, output, expected
  output, metadata and tags (for strings, their quoted JSON text: a phrase containing a
  quote or backslash may differ from the reference; SQLite folds case of ASCII only);
- multi-run queries: set operations over the records each leaf selects, or the records
  of an equality leaf each looked up in the others (see :meth:`QueryCompiler.records`);
  record-level terms (tags, inputs, text) through the record's spans.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Float,
    String,
    and_,
    case,
    cast,
    except_,
    exists,
    false,
    func,
    intersect,
    literal,
    not_,
    or_,
    select,
    true,
    union,
    union_all,
)

from assay.errors import QueryError
from assay.query.ast import (
    And,
    Comparison,
    Exists,
    Expr,
    GlobToken,
    Not,
    Or,
    Range,
    Term,
    Value,
    Wildcard,
    glob_segments,
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
    number_operand,
)
from assay.store.sql.aggregates import evaluation_facet
from assay.store.sql.query_shape import (
    aggregate_facet,
    has_evaluation_terms,
    required_run,
    selectivity_rank,
)
from assay.store.sql.tables import MODE_INDEX_LENGTH, evaluations, record_aggregates, spans

Condition = ColumnElement[bool]
_OPERATORS: Mapping[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}
_METRIC_COLUMNS = {
    "duration": "duration_ns",
    "total_tokens": "total_tokens",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "estimated_total_cost": "estimated_total_cost",
}


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def like_pattern(pattern: str, *, anywhere: bool, lower: bool = False) -> str:
    """A glob (``*`` any run, ``?`` one character, backslash escapes) as a LIKE pattern."""
    parts = []
    for segment in glob_segments(pattern):
        if segment is GlobToken.ANY:
            parts.append("%")
        elif segment is GlobToken.ONE:
            parts.append("_")
        else:
            text = str(segment)
            parts.append(_like_escape(text.lower() if lower else text))
    body = "".join(parts)
    return f"%{body}%" if anywhere else body


def _never_null(condition: Any) -> Condition:
    # NULL would make NOT(...) NULL too and drop rows whose attribute is missing.
    return func.coalesce(condition, false())


class JsonAccess:
    """One dialect's way to look inside a JSON column: type, text and number at a path."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def at(self, column: Any, path: Sequence[str]) -> Any:
        if self.dialect == "postgresql":
            return (
                func.json_extract_path(cast(column, _pg_json()), *path)
                if path
                else cast(column, _pg_json())
            )
        quoted = "".join('."' + key.replace('"', '\\"') + '"' for key in path)
        return (column, f"${quoted}")

    def scalar_kind(self, located: Any) -> Any:
        if self.dialect == "postgresql":
            return func.replace(func.json_typeof(located), "string", "text")
        column, path = located
        kind = func.json_type(column, path)
        return _sqlite_kind(kind)

    def truth(self, located: Any) -> Any:
        """``true`` or ``false`` for a JSON boolean (SQLite extracts them as 1 and 0)."""
        if self.dialect == "postgresql":
            return located.op("#>>")(_EMPTY_PATH())
        column, path = located
        return func.json_type(column, path)

    def text(self, located: Any) -> Any:
        if self.dialect == "postgresql":
            return located.op("#>>")(_EMPTY_PATH())
        column, path = located
        return cast(func.json_extract(column, path), String)

    def number(self, located: Any) -> Any:
        if self.dialect == "postgresql":
            # PostgreSQL may evaluate a CAST before the test beside it: only cast numbers.
            return case(
                (func.json_typeof(located) == "number", cast(self.text(located), Float)),
                else_=None,
            )
        column, path = located
        return cast(func.json_extract(column, path), Float)

    def elements(self, located: Any) -> tuple[Any, Any, Any, Any, Any]:
        """A table of the array's elements: (from-clause, kind, text, number, truth)."""
        if self.dialect == "postgresql":
            table = func.json_array_elements(located).table_valued("value").alias("element")
            value = table.c.value
            text = value.op("#>>")(_EMPTY_PATH())
            return (
                table,
                func.replace(func.json_typeof(value), "string", "text"),
                text,
                case((func.json_typeof(value) == "number", cast(text, Float)), else_=None),
                text,
            )
        column, path = located
        table = func.json_each(column, path).table_valued("type", "value").alias("element")
        return (
            table,
            _sqlite_kind(table.c.type),
            cast(table.c.value, String),
            cast(table.c.value, Float),
            table.c.type,
        )


def _sqlite_kind(kind: Any) -> Any:
    # SQLite says integer/real/true/false; the reference speaks of numbers and booleans.
    return case(
        (kind.in_(("integer", "real")), "number"),
        (kind.in_(("true", "false")), "boolean"),
        else_=kind,
    )


def _EMPTY_PATH() -> Any:
    """PostgreSQL's ``'{}'::text[]``: with ``#>>``, a JSON scalar's text."""
    from sqlalchemy import Text
    from sqlalchemy.dialects.postgresql import ARRAY

    return cast(literal("{}"), ARRAY(Text))


def _pg_json() -> Any:
    from sqlalchemy.dialects.postgresql import JSON

    return JSON()


class QueryCompiler:
    """Compiles a resolved query against one experiment's stored rows."""

    def __init__(
        self,
        *,
        dialect: str,
        experiment_id: str,
        runs: Mapping[str, int],
        query_text: str,
    ) -> None:
        self.dialect = dialect
        self.experiment_id = experiment_id
        self.runs = runs
        self.query_text = query_text
        self.json = JsonAccess(dialect)

    # Rows ---------------------------------------------------------------------------------

    def rows(self, node: Expr[Facet], *, probe: bool = False) -> Condition:
        """The condition on a root span (one row) of the experiment.

        An evaluation term is ``span_id IN (the spans it selects)``, a set the database
        builds once; with ``probe``, it is a look-up of the row's evaluation instead, for
        a page read in order that stops after a few rows (see ``search._search_rows``).
        """
        if isinstance(node, And):
            return and_(*(self.rows(operand, probe=probe) for operand in node.operands))
        if isinstance(node, Or):
            return or_(*(self.rows(operand, probe=probe) for operand in node.operands))
        if isinstance(node, Not):
            # NULL is false to a WHERE clause but would make NOT(...) NULL too, dropping rows
            # whose attribute is missing; coalescing here, not in every leaf, keeps a leaf
            # such as ``total_tokens > ?`` a plain test that an index can answer.
            return not_(_never_null(self.rows(node.operand, probe=probe)))
        if isinstance(node, Term):
            return self._text(node, with_output=True)
        if probe and isinstance(node.attribute, EvaluationFacet):
            found = self._evaluation_set(node.attribute, node, None, probe=True)
            return _never_null(found.exists())
        return self._row_leaf(node)

    def row_set(self, node: Expr[Facet], scope: Sequence[Condition], run: int | None) -> Any:
        """The rows matching a query with evaluation terms, as a set of ``span_id`` rows.

        A condition per row would test each row of the experiment against each evaluation
        term, a probe of an index per row and term. Instead, as for records: each
        evaluation term is one range of a covering index on ``evaluations`` (label, run,
        value, span), the terms on the span's own columns are one condition over the
        root-span index, and ``AND``, ``OR`` and ``NOT`` become ``INTERSECT``, ``UNION``
        and ``EXCEPT``. ``scope`` selects the experiment's rows (of one run, where the
        search names one); ``run``, the run that every match must be in, narrows each
        evaluation range to it, which the intersection with that run would do anyway.
        """
        if not has_evaluation_terms(node):
            return select(spans.c.span_id).where(*scope, self.rows(node))
        if isinstance(node, And | Or):
            plain = [operand for operand in node.operands if not has_evaluation_terms(operand)]
            sets = [
                self._row_member(operand, scope, run)
                for operand in node.operands
                if has_evaluation_terms(operand)
            ]
            combine = and_ if isinstance(node, And) else or_
            if isinstance(node, And) and run is not None:
                # Every evaluation range is narrowed to that run already, and evaluations
                # are of the experiment's rows: the term would only add a set to intersect.
                plain = [operand for operand in plain if required_run(operand) != run]
            if plain:
                condition = combine(*(self.rows(operand) for operand in plain))
                sets.insert(0, select(spans.c.span_id).where(*scope, condition))
            if len(sets) == 1:
                return sets[0]
            return intersect(*sets) if isinstance(node, And) else union(*sets)
        if isinstance(node, Not):
            every = select(spans.c.span_id).where(*scope)
            return except_(every, self._row_member(node.operand, scope, run))
        if isinstance(node, Term) or not isinstance(node.attribute, EvaluationFacet):
            raise self._unsupported(node)  # has_evaluation_terms said it is one
        return self._evaluation_set(node.attribute, node, run)

    def _row_member(self, node: Expr[Facet], scope: Sequence[Condition], run: int | None) -> Any:
        found = self.row_set(node, scope, run)
        if isinstance(found, CompoundSelect):
            # SQLite takes no parenthesised compound inside another: nest it as a subquery.
            nested = found.subquery()
            return select(nested.c.span_id)
        return found

    def score_parts(self, facet: EvaluationFacet, node: Any, run: int | None) -> tuple[Any, Any]:
        """A score label's set (``facet.metric_type`` "score") in its two parts: the spans
        whose score matches, and those whose boolean, as 1 or 0, does."""
        scores, booleans = self._evaluation_set(facet, node, run).selects
        return scores, booleans

    def _evaluation_set(
        self, facet: EvaluationFacet, node: Any, run: int | None, *, probe: bool = False
    ) -> Any:
        """The spans whose evaluation ``facet.label`` matches, each value type's part in the
        form that its partial index (``tables.EVALUATION_VALUE_INDEXES``) answers; with
        ``probe``, the evaluation of the row being tested (by ``ix_evaluations_span``).

        The parts of a score are disjoint, and a span has one evaluation per label (the
        SDK refuses two evaluators of one label, the HTTP ledger two metrics), so the
        set holds each span once without a costly ``UNION``'s sort.
        """
        table = evaluations
        scope = [table.c.experiment_id == self.experiment_id, table.c.label == facet.label]
        if run is not None:
            scope.append(table.c.run_iteration == run)
        no_error = table.c.error_type.is_(None)
        if probe:
            scope.append(table.c.span_id == spans.c.span_id)
            # Worded so that no value index answers it: each carries every column a
            # probe reads, and SQLite, which keeps no statistics here, would take one and
            # scan the label's whole range for each row, not look the row's evaluation
            # up by its span (ix_evaluations_span).
            no_error = table.c.error_type.concat("").is_(None)

        def typed(column: str, condition: Any) -> Any:
            return select(table.c.span_id).where(
                *scope, table.c[column].is_not(None), no_error, condition
            )

        metric_type = facet.metric_type
        if metric_type == "score":
            # A score label's boolean values count as 1 and 0, as in the reference.
            return union_all(
                typed(
                    "score_value",
                    self._number_leaf(table.c.score_value, facet, node, as_float=False),
                ),
                typed(
                    "boolean_value",
                    and_(
                        table.c.score_value.is_(None),
                        self._number_leaf(
                            _boolean_number(table.c.boolean_value), facet, node, as_float=False
                        ),
                    ),
                ),
            )
        if metric_type == "boolean":
            return typed("boolean_value", self._boolean_leaf(table.c.boolean_value, node))
        if metric_type == "categorical":
            column = table.c.categorical_value
            if isinstance(node, Comparison) and node.operator == "=":
                return select(table.c.span_id).where(
                    *scope, no_error, _mode_is(column, node.value.text)
                )
            return select(table.c.span_id).where(*scope, no_error, self._text_leaf(column, node))
        condition = self._json_leaf(self.json.at(table.c.json_value, ()), node)
        return select(table.c.span_id).where(*scope, no_error, condition)

    def _row_leaf(self, node: Any) -> Condition:
        facet = node.attribute
        if isinstance(facet, EvaluationFacet):
            found = self._evaluation_set(facet, node, None)
            return _never_null(spans.c.span_id.in_(found))
        if isinstance(facet, MetricFacet):
            # Numeric columns: compared without a cast, so the root-span index serves them.
            column = spans.c[_METRIC_COLUMNS[facet.metric]]
            condition: Condition = self._number_leaf(column, facet, node, as_float=False)
            return condition
        if isinstance(facet, StatusFacet):
            return _never_null(self._text_leaf(spans.c.status, node))
        if isinstance(facet, ErrorTypeFacet):
            return _never_null(self._text_leaf(spans.c.error_type, node))
        if isinstance(facet, RecordIdFacet):
            return _never_null(self._text_leaf(spans.c.record_id, node))
        if isinstance(facet, RunFacet):
            return self._run_leaf(facet, node)
        if isinstance(facet, JsonFacet):
            column = spans.c[facet.field]
            return self._json_leaf(self.json.at(column, facet.path), node)
        if isinstance(facet, TagFacet):
            return self._tag_leaf(facet, node)
        raise self._unsupported(node)

    def _run_leaf(self, facet: RunFacet, node: Any) -> Condition:
        if facet.key == "run_iteration":
            if isinstance(node, Comparison) and node.operator == "=":
                # A plain integer test, so that the (experiment, run, record) index serves it.
                number = node.value.number
                if number is None or number != int(number):
                    return false()
                return spans.c.run_iteration == int(number)
            compared: Condition = self._number_leaf(
                spans.c.run_iteration, facet, node, as_float=False
            )
            return compared
        # run ids live in the runs table; the experiment's few runs are known here.
        if isinstance(node, Exists):
            return true()
        if isinstance(node, Comparison) and node.operator == "=":
            iteration = self.runs.get(node.value.text)
            return spans.c.run_iteration == iteration if iteration else false()
        if isinstance(node, Wildcard):
            import fnmatch

            matching = [
                number
                for run_id, number in self.runs.items()
                if fnmatch.fnmatchcase(run_id, node.pattern.replace("[", "[[]"))
            ]
            return spans.c.run_iteration.in_(matching) if matching else false()
        raise self._unsupported(node)

    # Leaves on plain columns -----------------------------------------------------------

    def _number_leaf(self, column: Any, facet: Facet, node: Any, *, as_float: bool = True) -> Any:
        if isinstance(node, Exists):
            return column.is_not(None)
        value = cast(column, Float) if as_float else column
        if isinstance(node, Comparison):
            number = number_operand(facet, node.value)
            if number is None:
                return false()
            return _OPERATORS[node.operator](value, number)
        if isinstance(node, Range):
            parts = [column.is_not(None)]
            if node.low is not None:
                low = number_operand(facet, node.low)
                parts.append(value >= low if low is not None else false())
            if node.high is not None:
                high = number_operand(facet, node.high)
                parts.append(value <= high if high is not None else false())
            return and_(*parts)
        if isinstance(node, Wildcard):
            return false()  # a glob matches strings only
        raise self._unsupported(node)

    def _text_leaf(self, column: Any, node: Any) -> Any:
        if isinstance(node, Exists):
            return column.is_not(None)
        if isinstance(node, Comparison) and node.operator == "=":
            return column == node.value.text
        if isinstance(node, Wildcard):
            return self._glob(column, node.pattern)
        if isinstance(node, Comparison | Range):
            return false()  # ordering compares numbers only
        raise self._unsupported(node)

    def _boolean_leaf(self, column: Any, node: Any) -> Any:
        if isinstance(node, Exists):
            return column.is_not(None)
        if isinstance(node, Comparison) and node.operator == "=":
            wanted = node.value.boolean
            if wanted is None:
                return false()
            return column == (true() if wanted else false())
        return false()

    def _glob(self, column: Any, pattern: str) -> Any:
        if self.dialect == "sqlite":
            # SQLite's LIKE ignores ASCII case; a wildcard value match is case-sensitive.
            return _case_sensitive(column, pattern)
        return column.like(like_pattern(pattern, anywhere=False), escape="\\")

    # JSON and tags -------------------------------------------------------------------------

    def _json_scalar(self, kind: Any, text: Any, number: Any, truth: Any, node: Any) -> Any:
        if isinstance(node, Comparison):
            value: Value = node.value
            if node.operator != "=":
                if value.number is None:
                    return false()
                return and_(kind == "number", _OPERATORS[node.operator](number, value.number))
            options = [and_(kind == "text", text == value.text)]
            if value.number is not None:
                options.append(and_(kind == "number", number == value.number))
            if value.boolean is not None:
                options.append(
                    and_(kind == "boolean", truth == ("true" if value.boolean else "false"))
                )
            return or_(*options)
        if isinstance(node, Range):
            parts = [kind == "number"]
            if node.low is not None:
                parts.append(number >= node.low.number if node.low.number is not None else false())
            if node.high is not None:
                parts.append(
                    number <= node.high.number if node.high.number is not None else false()
                )
            return and_(*parts)
        if isinstance(node, Wildcard):
            return and_(kind == "text", self._glob(text, node.pattern))
        raise self._unsupported(node)

    def _json_leaf(self, located: Any, node: Any) -> Condition:
        kind = self.json.scalar_kind(located)
        if isinstance(node, Exists):
            return _never_null(and_(kind.is_not(None), kind != "null"))
        scalar = and_(
            kind.in_(("text", "number", "boolean")),
            self._json_scalar(
                kind,
                self.json.text(located),
                self.json.number(located),
                self.json.truth(located),
                node,
            ),
        )
        table, element_kind, element_text, element_number, element_truth = self.json.elements(
            located
        )
        in_array = and_(
            kind == "array",
            exists(
                select(literal(1))
                .select_from(table)
                .where(
                    element_kind.in_(("text", "number", "boolean")),
                    self._json_scalar(
                        element_kind, element_text, element_number, element_truth, node
                    ),
                )
            ),
        )
        return _never_null(or_(scalar, in_array))

    def _tag_elements(self) -> tuple[Any, Any]:
        if self.dialect == "postgresql":
            table = (
                func.json_array_elements_text(cast(spans.c.tags, _pg_json()))
                .table_valued("value")
                .alias("tag")
            )
            return table, table.c.value
        table = func.json_each(spans.c.tags).table_valued("value").alias("tag")
        return table, cast(table.c.value, String)

    def _tag_leaf(self, facet: TagFacet, node: Any) -> Condition:
        table, tag = self._tag_elements()
        prefix = f"{facet.key}:"
        keyed = tag.like(_like_escape(prefix) + "%", escape="\\")
        value = func.substr(tag, len(prefix) + 1)
        if isinstance(node, Exists):
            condition: Any = keyed
        elif isinstance(node, Comparison) and node.operator == "=":
            condition = tag == prefix + node.value.text
        elif isinstance(node, Wildcard):
            condition = and_(keyed, self._glob(value, node.pattern))
        elif isinstance(node, Comparison | Range):
            number = case((self._numeric_text(value), cast(value, Float)), else_=None)
            condition = and_(keyed, self._number_leaf(number, facet, node))
        else:
            raise self._unsupported(node)
        return _never_null(exists(select(literal(1)).select_from(table).where(condition)))

    def _numeric_text(self, text: Any) -> Any:
        """Whether a text reads as a number (the reference's rule, closely approximated)."""
        if self.dialect == "postgresql":
            return text.op("~")(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
        return and_(
            text.op("GLOB")("*[0-9]*"),
            not_(text.op("GLOB")("*[^0-9eE.+-]*")),
            not_(text.op("GLOB")("*[0-9.][+-]*")),
        )

    # Free text --------------------------------------------------------------------------------

    def _text(self, node: Term, *, with_output: bool) -> Condition:
        if node.phrase:
            pattern = "%" + _like_escape(node.text.lower()) + "%"
        else:
            pattern = like_pattern(node.text, anywhere=True, lower=True)
        columns = [spans.c.input, spans.c.expected_output, spans.c.metadata]
        if with_output:
            columns.insert(1, spans.c.output)
        options: list[Any] = [
            func.lower(cast(column, String)).like(pattern, escape="\\") for column in columns
        ]
        table, tag = self._tag_elements()
        options.append(
            exists(
                select(literal(1))
                .select_from(table)
                .where(func.lower(tag).like(pattern, escape="\\"))
            )
        )
        return _never_null(or_(*options))

    # Records (multi-run) ---------------------------------------------------------------------

    def records(self, node: Expr[Facet] | None) -> Any:
        """The records matching ``node``, as a set of ``(idx, record_id)`` rows.

        ``AND``, ``OR`` and ``NOT`` become ``INTERSECT``, ``UNION`` and ``EXCEPT`` of the
        leaves' sets, and a multi-run leaf is one range of a covering index on
        ``record_aggregates`` ((facet, mean, idx, record_id) or (facet, mode, idx,
        record_id)): the database reads the records each leaf selects and nothing else,
        where testing every record against every leaf would probe an index per record and
        leaf. The exception is an ``AND`` with an equality on an aggregate, whose records
        are few and come in page order: only they are tested against the other aggregate
        leaves (``_driven``). Rows carry ``idx`` first, so a set comes out in page order.
        No aggregate row means not selected, so ``NOT`` is the complement, as in the
        reference evaluator.
        """
        if node is None:
            return self._every_record()
        if isinstance(node, And):
            operands = sorted(node.operands, key=selectivity_rank)
            if selectivity_rank(operands[0]) == 0:
                return self._driven(operands[0], operands[1:])
            # The database keeps the first set and probes it with the others: equality
            # tests first, as they usually select fewer records than ranges do.
            return intersect(*(self._member(operand) for operand in operands))
        if isinstance(node, Or):
            return union(*(self._member(operand) for operand in node.operands))
        if isinstance(node, Not):
            return except_(self._every_record(), self._member(node.operand))
        if isinstance(node, Term):
            return self._record_spans(self._text(node, with_output=False))
        facet = node.attribute
        if isinstance(facet, MultiRunFacet):
            return self._aggregate_records(facet, node)
        if isinstance(facet, RecordIdFacet):
            status = record_aggregates.alias("record")
            return select(status.c.idx, status.c.record_id).where(
                status.c.experiment_id == self.experiment_id,
                status.c.facet == "status",
                self._text_leaf(status.c.record_id, node),
            )
        # Tags and inputs are the same in every run: look at the record's rows.
        return self._record_spans(self._row_leaf(node))

    def _member(self, node: Expr[Facet]) -> Any:
        found = self.records(node)
        if isinstance(found, CompoundSelect):
            # SQLite takes no parenthesised compound inside another: nest it as a subquery.
            nested = found.subquery()
            return select(nested.c.idx, nested.c.record_id)
        return found

    def _every_record(self) -> Any:
        status = record_aggregates.alias("record")
        return select(status.c.idx, status.c.record_id).where(
            status.c.experiment_id == self.experiment_id, status.c.facet == "status"
        )

    def _record_spans(self, condition: Any) -> Any:
        # The record's idx as its aggregates know it (the least of its rows'), so that the
        # set meets the aggregate leaves' sets even if its rows disagree.
        status = record_aggregates.alias("record")
        return select(status.c.idx, status.c.record_id).where(
            status.c.experiment_id == self.experiment_id,
            status.c.facet == "status",
            status.c.record_id.in_(
                select(spans.c.record_id).where(
                    spans.c.experiment_id == self.experiment_id,
                    spans.c.parent_id.is_(None),
                    condition,
                )
            ),
        )

    def _driven(self, driver: Any, others: Sequence[Expr[Facet]]) -> Any:
        """An ``AND`` led by an equality on an aggregate: that leaf's index range (in page
        order, as equal values are ordered by ``idx``), each record of it tested against
        the other aggregate leaves by one look-up of ``ix_record_aggregates_probe``
        (``facet``, ``idx``, ``mean``), and intersected with the other sets.

        Intersecting sets costs an insert into a temporary index per record of every set,
        about twice what a look-up per record of the smallest set costs (the seed's
        multi-run query over 100,000 records: 21,000 look-ups against 70,000 inserts)."""
        records = self._aggregate_records(driver.attribute, driver)
        leader = records.selected_columns.record_id
        position = records.selected_columns.idx
        probes, sets = [], []
        for operand in others:
            facet = aggregate_facet(operand)
            if facet is not None:
                probe = record_aggregates.alias("probe")
                name, condition = self._aggregate_condition(facet, operand, probe)
                probes.append(
                    exists(
                        select(literal(1)).where(
                            probe.c.experiment_id == self.experiment_id,
                            probe.c.facet == name,
                            probe.c.idx == position,
                            # Positions may repeat (records outside the dataset's
                            # version share one), so the record id is checked too, but
                            # as an expression: SQLite would otherwise look the row up
                            # by its primary key, which it prefers to any other index.
                            probe.c.record_id.concat("") == leader,
                            condition,
                        )
                    )
                )
            else:
                sets.append(self._member(operand))
        driven = records.where(*probes)
        return intersect(driven, *sets) if sets else driven

    def _aggregate_records(self, facet: MultiRunFacet, node: Any) -> Any:
        aggregate = record_aggregates.alias("aggregate")
        name, condition = self._aggregate_condition(facet, node, aggregate)
        return select(aggregate.c.idx, aggregate.c.record_id).where(
            aggregate.c.experiment_id == self.experiment_id,
            aggregate.c.facet == name,
            condition,
        )

    def _aggregate_condition(
        self, facet: MultiRunFacet, node: Any, aggregate: Any
    ) -> tuple[str, Any]:
        """(the ``record_aggregates`` facet, the condition on its row) of one leaf."""
        inner = facet.of
        if isinstance(inner, EvaluationFacet):
            name = evaluation_facet(inner.label)
        elif isinstance(inner, MetricFacet):
            name = inner.metric
        else:
            name = "status"
        if facet.aggregate == "avg":
            # ``mean`` is a float column: compared as it is, so its index answers the test.
            condition = self._number_leaf(aggregate.c.mean, inner, node, as_float=False)
        elif (
            isinstance(node, Comparison)
            and node.operator == "="
            and isinstance(inner, EvaluationFacet)
            and inner.metric_type == "boolean"
        ):
            wanted = node.value.boolean
            condition = (
                _mode_is(aggregate.c.mode, "true" if wanted else "false")
                if wanted is not None
                else false()
            )
        elif isinstance(node, Comparison) and node.operator == "=":
            condition = _mode_is(aggregate.c.mode, node.value.text)
        else:
            condition = self._text_leaf(aggregate.c.mode, node)
        return name, condition

    def _unsupported(self, node: Any) -> QueryError:
        return QueryError(
            f"'{self.query_text[node.start : node.end]}' cannot be searched in the store",
            query=self.query_text,
            position=node.start,
        )


def _mode_is(column: Any, value: str) -> Any:
    """``mode = value``, in the form the partial mode index answers when it can.

    The mode index leaves out modes longer than ``MODE_INDEX_LENGTH`` (PostgreSQL cannot
    index arbitrarily long text); a database uses a partial index only for a query that
    repeats the index's condition, which a short value implies.
    """
    if len(value) <= MODE_INDEX_LENGTH:
        return and_(func.length(column) <= MODE_INDEX_LENGTH, column == value)
    return column == value


def _boolean_number(column: Any) -> Any:
    return case((column == true(), 1.0), (column == false(), 0.0), else_=None)


def _case_sensitive(column: Any, pattern: str) -> Any:
    """SQLite's GLOB: the same glob, case-sensitive (its classes escaped)."""
    parts = []
    for segment in glob_segments(pattern):
        if segment is GlobToken.ANY:
            parts.append("*")
        elif segment is GlobToken.ONE:
            parts.append("?")
        else:
            parts.append("".join(f"[{c}]" if c in "*?[]" else c for c in str(segment)))
    return column.op("GLOB")("".join(parts))
