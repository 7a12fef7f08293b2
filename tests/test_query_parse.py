"""Golden tests of the query grammar: every construct, offsets, escapes, errors."""

from __future__ import annotations

import pickle

import pytest

from assay.errors import QueryError
from assay.query import (
    And,
    Attribute,
    Comparison,
    Exists,
    Node,
    Not,
    Or,
    Range,
    Term,
    Value,
    Wildcard,
    parse,
    to_text,
)
from assay.query.ast import GlobToken, glob_regex, glob_segments, walk
from assay.query.parse import MAX_DEPTH


def eq(name: str, text: str, operator: str = "=") -> Comparison[Attribute]:
    return Comparison(Attribute(name), operator, Value(text))  # type: ignore[arg-type]


def word(text: str) -> Term:
    return Term(text)


@pytest.mark.parametrize("text", ["", " ", "\t\n  "])
def test_an_empty_query_matches_everything(text: str) -> None:
    assert parse(text) is None
    assert to_text(None) == ""


# --- Free text -------------------------------------------------------------------------


def test_words_and_phrases() -> None:
    assert parse("paris") == Term("paris")
    assert parse('"new york"') == Term("new york", phrase=True)
    assert parse("par*s pari?") == And((Term("par*s"), Term("pari?")))
    # Wildcards are literal inside quotes, and escaped ones stay escaped in the glob.
    assert parse('"par*s"') == Term("par*s", phrase=True)
    assert parse(r"par\*s") == Term(r"par\*s")
    assert glob_segments(r"par\*s") == ("par*s",)


def test_keywords_are_capitalized() -> None:
    assert parse("a and b") == And((word("a"), word("and"), word("b")))
    assert parse("a or b not c") == And(tuple(map(word, ["a", "or", "b", "not", "c"])))
    assert parse("ANDROID ORACLE NOTE TO") == And(
        tuple(map(word, ["ANDROID", "ORACLE", "NOTE", "TO"]))
    )


# --- Attributes ------------------------------------------------------------------------


@pytest.mark.parametrize("operator", [">", ">=", "<", "<="])
def test_comparisons(operator: str) -> None:
    assert parse(f"@trace.total_tokens:{operator}1000") == eq(
        "@trace.total_tokens", "1000", operator
    )


def test_attribute_values() -> None:
    assert parse("@status:error") == eq("@status", "error")
    assert parse("run_iteration:1") == eq("run_iteration", "1")
    assert parse('@meta.input.city:"New York"') == eq("@meta.input.city", "New York")
    assert parse(r"@meta.input.city:New\ York") == eq("@meta.input.city", "New York")
    assert parse("@evaluations.custom.score:-0.5") == eq("@evaluations.custom.score", "-0.5")
    assert parse("@a: x") == eq("@a", "x")  # spaces after the colon are ignored
    assert parse(r'@a:"say \"hi\" \\ \*"') == eq("@a", 'say "hi" \\ *')


def test_escapes() -> None:
    assert parse(r"@a:hello\:world") == eq("@a", "hello:world")
    assert parse(r"@a:\*") == eq("@a", "*")
    assert parse(r"@a:\(x\)\[\]\<\>\=") == eq("@a", "(x)[]<>=")
    assert parse(r"@my\ key:x") == eq("@my key", "x")
    assert parse(r"a\:b") == Term("a:b")
    assert parse(r"\-a") == Term("-a")
    assert parse(r"\AND \@x") == And((Term("AND"), Term("@x")))
    assert parse(r"@a:\NOT") == eq("@a", "NOT")


def test_values_keep_their_parsed_forms() -> None:
    assert Value("12").number == 12.0
    assert Value("-0.5").number == -0.5
    assert Value("1e3").number == 1000.0
    assert Value("12").duration is None
    assert Value("1.5s").duration == 1_500_000_000
    assert Value("1.5s").number is None
    assert Value("200ms").duration == 200_000_000
    assert Value("3us").duration == 3_000
    assert Value("7ns").duration == 7
    assert Value("2m").duration == 120_000_000_000
    assert Value("1h").duration == 3_600_000_000_000
    assert Value("0.1s").duration == 100_000_000  # exact, not one off
    assert Value("1e999").number is None  # not finite
    assert Value("1e99h").duration is None  # beyond 64 bits
    assert Value("true").boolean is True
    assert Value("False").boolean is False
    assert Value("yes").boolean is None
    assert Value("nan").number is None
    assert Value("inf").number is None


def test_ranges() -> None:
    assert parse("@duration:[100ms TO 1.5s]") == Range(
        Attribute("@duration"), Value("100ms"), Value("1.5s")
    )
    assert parse("@a:[* TO 5]") == Range(Attribute("@a"), None, Value("5"))
    assert parse("@a:[5 TO *]") == Range(Attribute("@a"), Value("5"), None)
    assert parse('@a:["a b" TO \\*]') == Range(Attribute("@a"), Value("a b"), Value("*"))
    assert parse("@a:[-1 TO 1]") == Range(Attribute("@a"), Value("-1"), Value("1"))


def test_wildcards_and_existence() -> None:
    assert parse("@meta.error.type:*Timeout*") == Wildcard(
        Attribute("@meta.error.type"), "*Timeout*"
    )
    assert parse("@a:x?z") == Wildcard(Attribute("@a"), "x?z")
    assert parse(r"@a:x\*y*") == Wildcard(Attribute("@a"), r"x\*y*")
    assert parse("@a:*") == Exists(Attribute("@a"))
    assert parse("-@a:*") == Not(Exists(Attribute("@a")))
    assert parse("@a:**") == Wildcard(Attribute("@a"), "**")
    assert parse('@a:"*"') == eq("@a", "*")


def test_globs() -> None:
    assert glob_segments(r"a*b?\?") == ("a", GlobToken.ANY, "b", GlobToken.ONE, "?")
    assert glob_regex(r"a.*b?\?") == r"a\..*b.\?"


# --- Boolean structure -----------------------------------------------------------------


def test_implicit_and_explicit_and() -> None:
    expected = And((word("a"), word("b"), word("c")))
    assert parse("a b c") == expected
    assert parse("a AND b AND c") == expected
    assert parse("a AND (b c)") == expected  # nested ANDs are flattened


def test_or_binds_looser_than_and() -> None:
    assert parse("a b OR c") == Or((And((word("a"), word("b"))), word("c")))
    assert parse("a (b OR c)") == And((word("a"), Or((word("b"), word("c")))))
    assert parse("a OR b OR (c OR d)") == Or(tuple(map(word, "abcd")))


@pytest.mark.parametrize("text", ["-a", "NOT a", "NOT(a)", "- a", "-(a)"])
def test_negation(text: str) -> None:
    assert parse(text) == Not(word("a"))


def test_negation_binds_tightest() -> None:
    assert parse("-a b") == And((Not(word("a")), word("b")))
    assert parse("NOT a OR b") == Or((Not(word("a")), word("b")))
    assert parse("-(a OR b)") == Not(Or((word("a"), word("b"))))
    assert parse("--a") == Not(Not(word("a")))
    assert parse("a-b") == word("a-b")  # a hyphen inside a word is part of it


def test_value_lists() -> None:
    a = "@evaluations.custom.violation"
    assert parse(f"{a}:(not_fun OR not_nice)") == Or((eq(a, "not_fun"), eq(a, "not_nice")))
    assert parse(f"{a}:(x y)") == And((eq(a, "x"), eq(a, "y")))
    assert parse(f"{a}:(x AND NOT y)") == And((eq(a, "x"), Not(eq(a, "y"))))
    # Inside a list a leading "-" belongs to the value: negative numbers.
    assert parse("@a:(-1 OR >5)") == Or((eq("@a", "-1"), eq("@a", "5", ">")))
    assert parse("@a:(x* OR * OR [1 TO 2] OR (y z))") == Or(
        (
            Wildcard(Attribute("@a"), "x*"),
            Exists(Attribute("@a")),
            Range(Attribute("@a"), Value("1"), Value("2")),
            And((eq("@a", "y"), eq("@a", "z"))),
        )
    )
    assert parse("env:(prod OR test) -version:beta") == And(
        (Or((eq("env", "prod"), eq("env", "test"))), Not(eq("version", "beta")))
    )


def test_the_seeds_examples() -> None:
    assert parse(
        "@multi_run_avg.@evaluations.custom.random_evaluator:>0.5  "
        "@multi_run_mode.@evaluations.custom.sentient_evaluator:positive"
    ) == And(
        (
            eq("@multi_run_avg.@evaluations.custom.random_evaluator", "0.5", ">"),
            eq("@multi_run_mode.@evaluations.custom.sentient_evaluator", "positive"),
        )
    )
    assert parse("@multi_run_avg.@trace.total_tokens:>1000") == eq(
        "@multi_run_avg.@trace.total_tokens", "1000", ">"
    )
    assert parse("run_iteration:1 @trace.total_tokens:>1000") == And(
        (eq("run_iteration", "1"), eq("@trace.total_tokens", "1000", ">"))
    )
    # Syntactically fine; resolve() rejects the mix (see test_query_facets.py).
    assert parse(
        "@multi_run_avg.@trace.total_tokens:>1000 @trace.estimated_total_cost:>0.01"
    ) == And(
        (
            eq("@multi_run_avg.@trace.total_tokens", "1000", ">"),
            eq("@trace.estimated_total_cost", "0.01", ">"),
        )
    )


def test_protocol_examples() -> None:
    assert parse("@evaluation.has_risk_pred.value:true") == eq(
        "@evaluation.has_risk_pred.value", "true"
    )
    assert parse("@duration:>=9.5s") == eq("@duration", "9.5s", ">=")
    assert parse("(env:prod AND -version:beta)") == And(
        (eq("env", "prod"), Not(eq("version", "beta")))
    )


# --- Offsets ---------------------------------------------------------------------------


def spans(node: Node | None) -> list[tuple[str, int, int]]:
    assert node is not None
    return [(type(part).__name__, part.start, part.end) for part in walk(node)]


def test_offsets() -> None:
    text = '@a:>5 -"x y" (b OR c*)'
    #       0123456789012345678901
    node = parse(text)
    assert spans(node) == [
        ("And", 0, 22),
        ("Comparison", 0, 5),
        ("Not", 6, 12),
        ("Term", 7, 12),
        ("Or", 13, 22),
        ("Term", 14, 15),
        ("Term", 19, 21),
    ]
    assert isinstance(node, And)
    comparison = node.operands[0]
    assert isinstance(comparison, Comparison)
    assert (comparison.attribute.start, comparison.attribute.end) == (0, 2)
    assert (comparison.value.start, comparison.value.end) == (4, 5)


def test_offsets_in_value_lists_and_ranges() -> None:
    text = "@a:(x OR [1 TO 2])"
    assert spans(parse(text)) == [("Or", 0, 18), ("Comparison", 4, 5), ("Range", 9, 17)]
    assert spans(parse("@a:[1 TO *]")) == [("Range", 0, 11)]
    assert spans(parse("NOT @a:*")) == [("Not", 0, 8), ("Exists", 4, 8)]


def test_offsets_are_not_part_of_equality() -> None:
    assert parse("  a") == parse("a")
    assert Value("x", quoted=True) == Value("x")


# --- Printing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        ("a  b", "a b"),
        ("a AND b", "a b"),
        ("a b OR c", "a b OR c"),
        ("a (b OR c)", "a (b OR c)"),
        ("NOT (a b)", "-(a b)"),
        ('@a:( x OR "y z" )', '@a:(x OR "y z")'),
        ("@a:x OR @a:>5", "@a:(x OR >5)"),
        ("@a:x OR @b:y", "@a:x OR @b:y"),
        (r"@a:hello\ world", r"@a:hello\ world"),
        ('@a:"hello world"', '@a:"hello world"'),
        ("@a:[* TO 5]", "@a:[* TO 5]"),
        (r"\AND \-x \@y", r"\AND \-x \@y"),
        ('""', '""'),
        ("@a:*", "@a:*"),
        (r"@a:\*", r"@a:\*"),
    ],
)
def test_to_text(text: str, printed: str) -> None:
    assert to_text(parse(text)) == printed
    assert parse(printed) == parse(text)


# --- Errors ----------------------------------------------------------------------------


def error_of(text: str) -> QueryError:
    with pytest.raises(QueryError) as caught:
        parse(text)
    return caught.value


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("@a:(x OR y))", "Unexpected ')' at position 11; there is no '(' for it to close", 11),
        (
            "(a b",
            "Unexpected end of query at position 4; expected ')' to close the '(' at position 0",
            4,
        ),
        ("foo AND", "Unexpected end of query at position 7; expected a search term", 7),
        ("foo AND  ", "Unexpected end of query at position 7; expected a search term", 7),
        ("@a:", "Unexpected end of query at position 3; expected a value", 3),
        ("@a:)", "Unexpected ')' at position 3; expected a value", 3),
        (
            '"abc',
            (
                "Unterminated quoted phrase starting at position 0; close it with '\"' "
                "(or escape the quote as '\\\"')"
            ),
            0,
        ),
        ("a\\", "Trailing backslash at position 1; write '\\\\' for a literal backslash", 1),
        (
            "a:b:c",
            "Unexpected ':' at position 3; escape it as '\\:' or put the value in double quotes",
            3,
        ),
        (
            "a =b",
            "Unexpected '=' at position 2; escape it as '\\=' or put the value in double quotes",
            2,
        ),
        (
            "@a:x>",
            (
                "Unexpected '>' at position 4; comparisons follow the colon, as in "
                "@trace.total_tokens:>1000"
            ),
            4,
        ),
        ("@a:[1 to 2]", "Unexpected 'to' at position 6; expected TO, as in [1 TO 5]", 6),
        ("@a:[1 TO 2 x]", "Unexpected 'x' at position 11; expected ']'", 11),
        ("@a:[1 TO 2", "Unexpected end of query at position 10; expected ']'", 10),
        (
            "[1 TO 2]",
            (
                "Unexpected '[' at position 0; a range follows an attribute, as in "
                "@duration:[100ms TO 2s]"
            ),
            0,
        ),
        (
            "AND a",
            (
                "Unexpected 'AND' at position 0; AND goes between two terms (write "
                "\\AND to search for the word)"
            ),
            0,
        ),
        (
            "a OR OR b",
            (
                "Unexpected 'OR' at position 5; OR goes between two terms (write \\OR "
                "to search for the word)"
            ),
            5,
        ),
        (
            "@a:(x OR OR y)",
            "Unexpected 'OR' at position 9; to match the value OR, write \\OR or \"OR\"",
            9,
        ),
        (
            "@duration 5s",
            (
                "'@duration' is an attribute without a value; write @duration:value "
                "(@duration:* for any value), or \\@duration to search for the text"
            ),
            0,
        ),
        (
            "@a*:x",
            (
                "Wildcards are not allowed in attribute names ('@a*'); escape a "
                "literal '*' or '?' with a backslash"
            ),
            0,
        ),
        (
            "@a:>x*",
            (
                "'>' compares with a number or a text, not a pattern ('x*'); escape a "
                "literal '*' or '?' with a backslash"
            ),
            4,
        ),
        ("@a:[a* TO b]", "A range bound is a value or '*', not a pattern ('a*')", 4),
    ],
)
def test_syntax_errors(text: str, message: str, position: int) -> None:
    error = error_of(text)
    assert error.message == message
    assert error.position == position
    assert error.query == text
    assert isinstance(error, ValueError)


def test_the_caret_points_at_the_position() -> None:
    assert str(error_of("@a:(x OR y))")) == (
        "Unexpected ')' at position 11; there is no '(' for it to close\n"
        "  @a:(x OR y))\n"
        "             ^"
    )
    # Tabs and newlines are shown as spaces so the caret stays under its character.
    assert str(error_of("a\tOR\nOR b")).splitlines()[1:] == ["  a OR OR b", "       ^"]


def test_errors_survive_pickling() -> None:
    error = pickle.loads(pickle.dumps(error_of("(a")))
    assert (error.message, error.query, error.position) == (
        "Unexpected end of query at position 2; expected ')' to close the '(' at position 0",
        "(a",
        2,
    )


@pytest.mark.parametrize(
    "text",
    [
        "(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1),
        "-" * (MAX_DEPTH + 1) + "a",
        "NOT " * (MAX_DEPTH + 1) + "a",
        "@a:" + "(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1),
        "(" * 5000 + "a" + ")" * 5000,
    ],
)
def test_deep_nesting_is_refused(text: str) -> None:
    error = error_of(text)
    assert error.message.startswith("The query nests parentheses and negations more than")


def test_nesting_up_to_the_limit_parses() -> None:
    depth = MAX_DEPTH - 1
    assert parse("(" * depth + "a" + ")" * depth) == word("a")


def test_non_text_is_a_query_error() -> None:
    with pytest.raises(QueryError, match="A query is text, not int"):
        parse(5)  # type: ignore[arg-type]
