"""Property tests of the query language: nothing but QueryError escapes, and printing a
tree gives text that parses back to the same tree."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.errors import QueryError
from assay.query import (
    And,
    Attribute,
    Catalog,
    Comparison,
    Exists,
    Node,
    Not,
    Or,
    Range,
    Row,
    Term,
    Value,
    Wildcard,
    describe,
    evaluate,
    parse,
    resolve,
    to_text,
)
from assay.query.ast import glob_escape, glob_has_wildcard, walk

# The autouse fixtures of conftest are function-scoped; these tests do not use them. No
# example database: nothing is written into the working tree.
SETTINGS = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

CATALOG = Catalog(
    {"accuracy": "score", "tone": "categorical", "exact": "boolean", "blob": "json"},
    frozenset({"topic", "level"}),
)

# Text that is mostly query syntax, so that random strings reach deep into the grammar.
QUERY_ALPHABET = '@:()"\\*?-<>=[]{} \t.ANDORTNabcxyz019_'
SYNTAX_WORDS = [
    "AND",
    "OR",
    "NOT",
    "TO",
    "@evaluations.custom.accuracy:",
    "@multi_run_avg.@trace.total_tokens:",
    "@multi_run_mode.@evaluations.custom.tone:",
    "@duration:",
    "run_iteration:",
    "topic:",
    "@meta.input.q:",
    "[",
    " TO ",
    "]",
    ">=",
    "1.5s",
    "true",
    '"',
    "\\",
]
query_like = st.lists(
    st.one_of(st.text(QUERY_ALPHABET, max_size=4), st.sampled_from(SYNTAX_WORDS)), max_size=12
).map("".join)


@SETTINGS
@given(st.one_of(st.text(), query_like))
def test_parse_raises_only_query_errors(text: str) -> None:
    try:
        node = parse(text)
    except QueryError as error:
        assert error.query == text
        assert error.position is None or 0 <= error.position <= len(text)
        str(error)
        return
    if node is not None:
        # Whatever parses prints back to text that parses to the same tree.
        assert parse(to_text(node)) == node
        describe(node)


@SETTINGS
@given(st.one_of(st.text(), query_like))
def test_resolve_raises_only_query_errors(text: str) -> None:
    try:
        query = resolve(text, CATALOG)
    except QueryError as error:
        assert error.position is None or 0 <= error.position <= len(text)
        return
    describe(query)
    evaluate(query, [])


# --- Well-formed trees -----------------------------------------------------------------

any_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
some_text = st.one_of(any_text, st.text(QUERY_ALPHABET, max_size=6))
attributes = st.one_of(
    st.sampled_from(["@evaluations.custom.accuracy", "@duration", "topic", "@meta.input.q"]),
    some_text.filter(bool),
).map(Attribute)
values = st.builds(lambda text, quoted: Value(text, quoted=quoted), some_text, st.booleans())
operators = st.sampled_from(["=", ">", ">=", "<", "<="])

glob_pieces = st.one_of(some_text.filter(bool).map(glob_escape), st.sampled_from(["*", "?"]))
globs = st.lists(glob_pieces, min_size=1, max_size=4).map("".join)
wildcard_globs = st.tuples(globs, st.sampled_from(["*", "?"]), globs).map("".join)


leaves: st.SearchStrategy[Node] = st.one_of(
    st.builds(lambda text: Term(text, phrase=True), some_text),
    st.builds(lambda pattern: Term(pattern), globs.filter(bool)),
    st.builds(lambda a, op, v: Comparison(a, op, v), attributes, operators, values),
    st.builds(
        lambda a, low, high: Range(a, low, high),
        attributes,
        st.none() | values,
        st.none() | values,
    ),
    st.builds(
        lambda a, pattern: Wildcard(a, pattern),
        attributes,
        wildcard_globs.filter(lambda p: p != "*" and glob_has_wildcard(p)),
    ),
    st.builds(Exists, attributes),
)


def _flat(kind: type[And[Attribute]] | type[Or[Attribute]], parts: list[Node]) -> Node:
    operands: list[Node] = []
    for part in parts:
        operands.extend(part.operands if isinstance(part, kind) else [part])
    return kind(tuple(operands))


def _extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    groups = st.lists(children, min_size=2, max_size=4)
    return st.one_of(
        children.map(Not),
        groups.map(lambda parts: _flat(And, parts)),
        groups.map(lambda parts: _flat(Or, parts)),
    )


trees = st.recursive(leaves, _extend, max_leaves=10)


@SETTINGS
@given(trees)
def test_printed_trees_parse_back(node: Node) -> None:
    text = to_text(node)
    assert parse(text) == node, text


@SETTINGS
@given(trees)
def test_offsets_point_into_the_text(node: Node) -> None:
    text = to_text(node)
    parsed = parse(text)
    assert parsed is not None
    for part in walk(parsed):
        assert 0 <= part.start < part.end <= len(text), (text, part)
        if isinstance(part, Term) and not part.phrase:
            assert text[part.start : part.end] == to_text(part)


# --- Evaluating random queries over random rows ------------------------------------------

FACET_NAMES = [
    "@evaluations.custom.accuracy",
    "@evaluations.custom.tone",
    "@evaluations.custom.exact",
    "@evaluations.custom.blob",
    "@trace.total_tokens",
    "@duration",
    "@status",
    "@meta.error.type",
    "@meta.input",
    "@meta.input.q",
    "@meta.output.a",
    "@meta.metadata.k",
    "topic",
    "level",
    "dataset_record_id",
    "run_iteration",
    "run_id",
    "@multi_run_avg.@evaluations.custom.accuracy",
    "@multi_run_mode.@evaluations.custom.tone",
    "@multi_run_avg.@duration",
    "@multi_run_mode.@status",
]
VALUE_TEXTS = ["1", "0.5", "-2", "1.5s", "true", "false", "ok", "error", "x*", "*", "a", '"a b"']
terms = st.one_of(
    st.builds(
        lambda name, op, value: f"{name}:{op}{value}",
        st.sampled_from(FACET_NAMES),
        st.sampled_from(["", ">", ">=", "<", "<="]),
        st.sampled_from(VALUE_TEXTS),
    ),
    st.builds(
        lambda name, low, high: f"{name}:[{low} TO {high}]",
        st.sampled_from(FACET_NAMES),
        st.sampled_from(["*", "0", "1s"]),
        st.sampled_from(["*", "5", "2h"]),
    ),
    st.sampled_from(["a", '"b c"', "x*", "-a", "NOT b"]),
)
queries = st.lists(
    st.tuples(st.sampled_from([" ", " OR ", " -", " AND NOT "]), terms), min_size=1, max_size=4
).map(lambda parts: "".join(f"{joiner}{term}" for joiner, term in parts).lstrip(" -"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-3, 3) | st.text("abx ", max_size=3),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from("aqk"), children, max_size=3)
    ),
    max_leaves=6,
)
rows = st.lists(
    st.fixed_dictionaries(
        {
            "record_id": st.sampled_from(["r1", "r2", "r3"]),
            "run_iteration": st.integers(1, 3),
            "run_id": st.sampled_from(["u1", "u2"]),
            "input": json_values,
            "output": json_values,
            "expected_output": json_values,
            "metadata": json_values,
            "tags": st.lists(st.sampled_from(["topic:geo", "level:2", "level:x", "plain"])),
            "status": st.sampled_from(["ok", "error"]),
            "error_type": st.none() | st.just("TimeoutError"),
            "duration": st.none() | st.floats(0, 1e10),
            "total_tokens": st.none() | st.integers(0, 2000),
            "input_tokens": st.none(),
            "output_tokens": st.none(),
            "estimated_total_cost": st.none() | st.floats(0, 1e8),
            "evaluations": st.fixed_dictionaries(
                {},
                optional={
                    "accuracy": st.none() | st.floats(0, 1) | st.booleans(),
                    "tone": st.none() | st.sampled_from(["a", "b"]),
                    "exact": st.none() | st.booleans(),
                    "blob": json_values,
                },
            ),
        }
    ),
    max_size=6,
)


@SETTINGS
@given(queries, rows)
def test_evaluating_random_queries_raises_nothing(text: str, experiment: list[Row]) -> None:
    try:
        query = resolve(text, CATALOG)
    except QueryError:
        return
    selected = evaluate(query, experiment)
    assert len(selected) <= len(experiment)
    # Exclusion is the complement, missing attributes included.
    if query.node is not None and not query.multi_run:
        negated = resolve(f"-({text})", CATALOG)
        assert len(evaluate(negated, experiment)) == len(experiment) - len(selected)
