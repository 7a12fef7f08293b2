"""Resolving attributes to facets: every facet, and every error with its message and caret."""

from __future__ import annotations

from typing import Any

import pytest

from assay.errors import QueryError
from assay.query import (
    And,
    Catalog,
    Comparison,
    ErrorTypeFacet,
    EvaluationFacet,
    Facet,
    JsonFacet,
    MetricFacet,
    MultiRunFacet,
    Not,
    RecordIdFacet,
    ResolvedQuery,
    RunFacet,
    StatusFacet,
    TagFacet,
    Term,
    is_duration,
    multi_run_facets,
    number_operand,
    parse,
    resolve,
)
from assay.query.ast import Value

CATALOG = Catalog(
    {
        "accuracy": "score",
        "exact_match": "boolean",
        "sentiment": "categorical",
        "details": "json",
    },
    frozenset({"difficulty", "topic"}),
)


def facet_of(text: str, catalog: Catalog = CATALOG) -> Facet:
    node = resolve(text, catalog).node
    while isinstance(node, Not):
        node = node.operand
    assert node is not None and not isinstance(node, Term | And)
    assert not isinstance(node, Not)
    attribute = node.attribute  # type: ignore[union-attr]
    assert not isinstance(attribute, str)
    return attribute  # type: ignore[return-value]


ACCURACY = EvaluationFacet("accuracy", "score")
EXACT = EvaluationFacet("exact_match", "boolean")
SENTIMENT = EvaluationFacet("sentiment", "categorical")


@pytest.mark.parametrize(
    ("text", "facet", "value_type", "scope"),
    [
        ("@evaluations.custom.accuracy:>0.5", ACCURACY, "number", "row"),
        ("@evaluation.accuracy.value:>=0.35", ACCURACY, "number", "row"),
        ("@evaluation.external.accuracy.value:1", ACCURACY, "number", "row"),
        ("@evaluations.custom.exact_match:true", EXACT, "boolean", "row"),
        ("@evaluations.custom.sentiment:positive", SENTIMENT, "text", "row"),
        ("@evaluations.custom.details:*", EvaluationFacet("details", "json"), "json", "row"),
        ("@trace.total_tokens:>10", MetricFacet("total_tokens"), "number", "row"),
        ("@trace.input_tokens:>10", MetricFacet("input_tokens"), "number", "row"),
        ("@trace.output_tokens:>10", MetricFacet("output_tokens"), "number", "row"),
        ("@trace.estimated_total_cost:>10", MetricFacet("estimated_total_cost"), "number", "row"),
        ("@duration:>1.5s", MetricFacet("duration"), "number", "row"),
        ("@status:error", StatusFacet(), "text", "row"),
        ("@meta.error.type:TimeoutError", ErrorTypeFacet(), "text", "row"),
        ("@meta.input:paris", JsonFacet("input"), "json", "record"),
        ("@meta.input.question:x", JsonFacet("input", ("question",)), "json", "record"),
        ("@meta.output.a.b:x", JsonFacet("output", ("a", "b")), "json", "row"),
        ("@meta.expected_output:x", JsonFacet("expected_output"), "json", "record"),
        ("@meta.metadata.source:x", JsonFacet("metadata", ("source",)), "json", "record"),
        ("run_iteration:1", RunFacet("run_iteration"), "number", "run"),
        ("run_id:abc", RunFacet("run_id"), "text", "run"),
        ("dataset_record_id:abc", RecordIdFacet(), "text", "record"),
        ("difficulty:hard", TagFacet("difficulty"), "text", "record"),
    ],
)
def test_plain_facets(text: str, facet: Facet, value_type: str, scope: str) -> None:
    resolved = facet_of(text)
    assert resolved == facet
    assert resolved.value_type == value_type
    assert resolved.scope == scope
    assert resolved.multi_run is False
    assert resolve(text, CATALOG).multi_run is False


@pytest.mark.parametrize(
    ("text", "facet", "value_type"),
    [
        (
            "@multi_run_avg.@evaluations.custom.accuracy:>0.5",
            MultiRunFacet("avg", ACCURACY),
            "number",
        ),
        (
            "@multi_run_avg.@evaluation.accuracy.value:>0.5",
            MultiRunFacet("avg", ACCURACY),
            "number",
        ),
        (
            "@multi_run_avg.@evaluations.custom.exact_match:>=0.8",
            MultiRunFacet("avg", EXACT),
            "number",
        ),
        (
            "@multi_run_mode.@evaluations.custom.exact_match:true",
            MultiRunFacet("mode", EXACT),
            "boolean",
        ),
        (
            "@multi_run_mode.@evaluations.custom.sentiment:positive",
            MultiRunFacet("mode", SENTIMENT),
            "text",
        ),
        (
            "@multi_run_avg.@trace.total_tokens:>1000",
            MultiRunFacet("avg", MetricFacet("total_tokens")),
            "number",
        ),
        (
            "@multi_run_avg.@trace.input_tokens:>1",
            MultiRunFacet("avg", MetricFacet("input_tokens")),
            "number",
        ),
        (
            "@multi_run_avg.@trace.output_tokens:>1",
            MultiRunFacet("avg", MetricFacet("output_tokens")),
            "number",
        ),
        (
            "@multi_run_avg.@trace.estimated_total_cost:>1",
            MultiRunFacet("avg", MetricFacet("estimated_total_cost")),
            "number",
        ),
        ("@multi_run_avg.@duration:>2s", MultiRunFacet("avg", MetricFacet("duration")), "number"),
        ("@multi_run_mode.@status:error", MultiRunFacet("mode", StatusFacet()), "text"),
    ],
)
def test_multi_run_facets(text: str, facet: MultiRunFacet, value_type: str) -> None:
    resolved = facet_of(text)
    assert resolved == facet
    assert resolved.value_type == value_type
    assert resolved.scope == "aggregate"
    assert resolved.multi_run is True
    assert resolve(text, CATALOG).multi_run is True


def test_canonical_names() -> None:
    assert facet_of("@evaluation.external.accuracy.value:1").name == (
        "@evaluations.custom.accuracy"
    )
    assert MultiRunFacet("avg", MetricFacet("duration")).name == "@multi_run_avg.@duration"
    assert JsonFacet("metadata", ("a", "b")).name == "@meta.metadata.a.b"
    assert [facet.name for facet in multi_run_facets(CATALOG)] == [
        "@multi_run_avg.@evaluations.custom.accuracy",
        "@multi_run_avg.@evaluations.custom.exact_match",
        "@multi_run_mode.@evaluations.custom.exact_match",
        "@multi_run_mode.@evaluations.custom.sentiment",
        "@multi_run_avg.@trace.total_tokens",
        "@multi_run_avg.@trace.input_tokens",
        "@multi_run_avg.@trace.output_tokens",
        "@multi_run_avg.@trace.estimated_total_cost",
        "@multi_run_avg.@duration",
        "@multi_run_mode.@status",
    ]


def test_durations_are_nanoseconds() -> None:
    duration = MetricFacet("duration")
    assert is_duration(duration) and is_duration(MultiRunFacet("avg", duration))
    assert not is_duration(MetricFacet("total_tokens"))
    assert number_operand(duration, Value("1.5s")) == 1.5e9
    assert number_operand(duration, Value("250")) == 250.0
    assert number_operand(MetricFacet("total_tokens"), Value("250")) == 250.0


def test_the_resolved_tree_keeps_structure_and_offsets() -> None:
    text = "paris -@status:error"
    resolved = resolve(text, CATALOG)
    assert resolved == ResolvedQuery(
        text,
        And((Term("paris"), Not(Comparison(StatusFacet(), "=", Value("error"))))),
        False,
        CATALOG,
    )
    assert resolved.node is not None
    assert (resolved.node.start, resolved.node.end) == (0, 20)


def test_an_empty_query_resolves_to_all_rows() -> None:
    assert resolve("  ", CATALOG) == ResolvedQuery("  ", None, False, CATALOG)


def test_a_parsed_tree_resolves_too() -> None:
    text = "@evaluations.custom.accuracy:>0.5"
    assert resolve(parse(text), CATALOG, text=text) == resolve(text, CATALOG)
    with pytest.raises(QueryError) as caught:
        resolve(parse("@evaluations.custom.acuracy:1"), CATALOG)
    # Without its text, a tree has no offsets to point at.
    assert caught.value.position is None
    assert caught.value.query == "@evaluations.custom.acuracy:1"


@pytest.mark.parametrize(
    "text",
    [
        # Record-level terms combine with multi-run terms.
        "@multi_run_avg.@evaluations.custom.accuracy:>0.5 paris",
        "@multi_run_avg.@evaluations.custom.accuracy:>0.5 difficulty:hard",
        "@multi_run_avg.@evaluations.custom.accuracy:>0.5 dataset_record_id:r1",
        "@multi_run_avg.@evaluations.custom.accuracy:>0.5 @meta.input.q:x",
        "@multi_run_avg.@evaluations.custom.accuracy:>0.5 -@meta.expected_output:*",
        "@multi_run_avg.@evaluations.custom.accuracy:>0.5 OR @meta.metadata.k:v",
        # Per-run terms combine with run restrictions and record-level terms.
        "run_iteration:1 @trace.total_tokens:>1000",
        "run_id:abc @status:error paris difficulty:hard",
        "@multi_run_avg.@trace.total_tokens:>1000 @multi_run_mode.@status:ok",
    ],
)
def test_allowed_combinations(text: str) -> None:
    resolve(text, CATALOG)


# --- Errors ----------------------------------------------------------------------------


def error_of(text: str, catalog: Catalog = CATALOG) -> QueryError:
    with pytest.raises(QueryError) as caught:
        resolve(text, catalog)
    return caught.value


MIX = (
    "a multi-run term selects records by their aggregate across runs, while '{p}' selects "
    'single runs; together they would mean "records whose {kind} is X and one of whose '
    'runs has Y", which the store cannot answer in one pass.'
)


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        (
            "@evaluations.custom.acuracy:>0.5",
            (
                "Unknown facet '@evaluations.custom.acuracy' (did you mean "
                "'@evaluations.custom.accuracy'?)"
            ),
            0,
        ),
        (
            "@evaluation.acuracy.value:1",
            (
                "Unknown facet '@evaluation.acuracy.value' (did you mean "
                "'@evaluation.accuracy.value'?)"
            ),
            0,
        ),
        (
            "@trace.total_token:>5",
            "Unknown facet '@trace.total_token' (did you mean '@trace.total_tokens'?)",
            0,
        ),
        (
            "@meta.inptu.question:x",
            "Unknown facet '@meta.inptu.question' (did you mean '@meta.input.question'?)",
            0,
        ),
        ("@meta.input..x:y", "Unknown facet '@meta.input..x' (did you mean '@meta.input'?)", 0),
        (
            "@multi_run_avg.@evaluations.custom.acuracy:>1",
            (
                "Unknown facet '@multi_run_avg.@evaluations.custom.acuracy' (did you "
                "mean '@multi_run_avg.@evaluations.custom.accuracy'?)"
            ),
            0,
        ),
        (
            "@multi_run_average.@duration:>1",
            (
                "Unknown facet '@multi_run_average.@duration' (did you mean "
                "'@multi_run_avg.@duration'?)"
            ),
            0,
        ),
        (
            "x dificulty:hard",
            (
                "Unknown facet 'dificulty' (did you mean 'difficulty'?); to search for "
                'the text, quote it: "dificulty:..."'
            ),
            2,
        ),
        (
            "@evaluations.custom.sentiment:>positive",
            (
                "'>' compares numbers, but 'sentiment' is a categorical evaluation; "
                "use @evaluations.custom.sentiment:positive"
            ),
            0,
        ),
        (
            "@evaluations.custom.sentiment:[a TO b]",
            (
                "A range compares numbers, but 'sentiment' is a categorical "
                "evaluation; use @evaluations.custom.sentiment:<value>"
            ),
            0,
        ),
        (
            "@evaluations.custom.exact_match:>0",
            (
                "'>' compares numbers, but 'exact_match' is a boolean evaluation; use "
                "@evaluations.custom.exact_match:true"
            ),
            0,
        ),
        ("@status:>1", "'>' compares numbers, but '@status' is 'ok' or 'error'; use @status:1", 0),
        (
            "@meta.error.type:<=x",
            "'<=' compares numbers, but '@meta.error.type' is text; use @meta.error.type:x",
            0,
        ),
        (
            "dataset_record_id:>5",
            "'>' compares numbers, but 'dataset_record_id' is text; use dataset_record_id:5",
            0,
        ),
        (
            "@multi_run_mode.@evaluations.custom.sentiment:>a",
            (
                "'>' compares numbers, but "
                "'@multi_run_mode.@evaluations.custom.sentiment' is the most common "
                "label of a categorical evaluation; use "
                "@multi_run_mode.@evaluations.custom.sentiment:a"
            ),
            0,
        ),
        (
            "@duration:>fast",
            (
                "'fast' is not a duration; @duration takes nanoseconds or a number "
                "with a unit (ns, us, ms, s, m, h), as in @duration:>1.5s"
            ),
            11,
        ),
        (
            "@duration:[1s TO soon]",
            (
                "'soon' is not a duration; @duration takes nanoseconds or a number "
                "with a unit (ns, us, ms, s, m, h), as in @duration:>1.5s"
            ),
            17,
        ),
        (
            "@trace.total_tokens:>5s",
            (
                "'5s' is a duration, but '@trace.total_tokens' is a number of tokens; "
                "write a plain number"
            ),
            21,
        ),
        (
            "@trace.total_tokens:many",
            "'many' is not a number; '@trace.total_tokens' is a number of tokens",
            20,
        ),
        (
            "@evaluations.custom.accuracy:high",
            "'high' is not a number; 'accuracy' is a score evaluation",
            29,
        ),
        ("run_iteration:first", "'first' is not a number; 'run_iteration' is a number", 14),
        (
            "@multi_run_avg.@duration:>slow",
            (
                "'slow' is not a duration; @multi_run_avg.@duration takes nanoseconds "
                "or a number with a unit (ns, us, ms, s, m, h), as in @duration:>1.5s"
            ),
            26,
        ),
        (
            "@evaluations.custom.exact_match:yes",
            "'yes' is not true or false; 'exact_match' is a boolean evaluation",
            32,
        ),
        (
            "@multi_run_mode.@evaluations.custom.exact_match:1",
            (
                "'1' is not true or false; "
                "'@multi_run_mode.@evaluations.custom.exact_match' is true or false"
            ),
            48,
        ),
        ("@status:failed", "@status is 'ok' or 'error', not 'failed'", 8),
        ("@multi_run_mode.@status:OK", "@multi_run_mode.@status is 'ok' or 'error', not 'OK'", 24),
        ("difficulty:>hard", "'>' compares numbers, but 'hard' is not a number", 12),
        ("@meta.input.n:[1 TO x]", "A range compares numbers, but 'x' is not a number", 20),
        (
            "@trace.total_tokens:1*",
            (
                "Wildcards match text, but '@trace.total_tokens' is a number of "
                "tokens; use @trace.total_tokens:<value> or a range"
            ),
            0,
        ),
        (
            "@evaluations.custom.exact_match:t*",
            (
                "Wildcards match text, but 'exact_match' is a boolean evaluation; use "
                "@evaluations.custom.exact_match:<value>"
            ),
            0,
        ),
        (
            "@multi_run_avg.@evaluations.custom.sentiment:x",
            (
                "'@multi_run_avg.' averages numbers, but 'sentiment' is a categorical "
                "evaluation; use @multi_run_mode.@evaluations.custom.sentiment"
            ),
            0,
        ),
        (
            "@multi_run_mode.@trace.total_tokens:3",
            (
                "'@multi_run_mode.' takes the most common value, but "
                "'@trace.total_tokens' is a number of tokens; use "
                "@multi_run_avg.@trace.total_tokens"
            ),
            0,
        ),
        (
            "@multi_run_mode.@evaluations.custom.accuracy:3",
            (
                "'@multi_run_mode.' takes the most common value, but 'accuracy' is a "
                "score evaluation; use @multi_run_avg.@evaluations.custom.accuracy"
            ),
            0,
        ),
        (
            "@multi_run_avg.@status:1",
            (
                "'@multi_run_avg.' averages numbers, but '@status' is 'ok' or 'error'; "
                "use @multi_run_mode.@status"
            ),
            0,
        ),
        (
            "@multi_run_avg.@meta.input.q:3",
            (
                "'@meta.input.q' is the same in every run of a record, so it has no "
                "across-run aggregate; use @meta.input.q without '@multi_run_avg.'"
            ),
            0,
        ),
        (
            "@multi_run_mode.difficulty:hard",
            (
                "'difficulty' is the same in every run of a record, so it has no "
                "across-run aggregate; use difficulty without '@multi_run_mode.'"
            ),
            0,
        ),
        (
            "@multi_run_avg.@meta.output.q:3",
            (
                "'@meta.output.q' has no across-run aggregate (only evaluations, "
                "@trace.* metrics, @duration and @status do); to filter one run, write "
                "run_iteration:1 @meta.output.q:..."
            ),
            0,
        ),
        (
            "@multi_run_avg.run_iteration:3",
            (
                "'run_iteration' has no across-run aggregate (only evaluations, "
                "@trace.* metrics, @duration and @status do)"
            ),
            0,
        ),
        (
            "@multi_run_mode.@evaluations.custom.details:3",
            "'details' is a json evaluation, and those are not aggregated across runs",
            0,
        ),
    ],
)
def test_facet_errors(text: str, message: str, position: int) -> None:
    error = error_of(text)
    assert error.message == message
    assert error.position == position


def test_an_unknown_facet_without_a_close_match_lists_the_facets() -> None:
    error = error_of("@foo:bar")
    assert error.message == (
        "Unknown facet '@foo'; facets are @evaluations.custom.<label> (labels: accuracy, "
        "details, exact_match, sentiment), @trace.total_tokens, @trace.input_tokens, "
        "@trace.output_tokens, @trace.estimated_total_cost, @duration, @status, "
        "@meta.error.type, @meta.input, @meta.output, @meta.expected_output and "
        "@meta.metadata (with .<path>), @multi_run_avg.<facet>, @multi_run_mode.<facet>, "
        "and the tags run_iteration, run_id, dataset_record_id and the record tags "
        "(difficulty, topic)"
    )


def test_tags_must_be_the_records_own() -> None:
    assert error_of("difficulty:hard", Catalog()).message.startswith("Unknown facet 'difficulty'")
    assert error_of("@evaluations.custom.accuracy:1", Catalog()).message.startswith(
        "Unknown facet '@evaluations.custom.accuracy'"
    )


def test_the_seeds_unsupported_mix_says_why_and_how() -> None:
    text = "@multi_run_avg.@trace.total_tokens:>1000 @trace.estimated_total_cost:>0.01"
    error = error_of(text)
    assert error.message == (
        "Cannot combine '@multi_run_avg.@trace.total_tokens' with "
        "'@trace.estimated_total_cost' in one query: "
        + MIX.format(p="@trace.estimated_total_cost", kind="average")
        + " Filter on the aggregate for both "
        "(@multi_run_avg.@trace.estimated_total_cost:>0.01), or drop the @multi_run_ terms "
        "and restrict to one run with plain terms (run_iteration:1 "
        "@trace.total_tokens:>1000 @trace.estimated_total_cost:>0.01)"
    )
    assert error.position == 41
    assert str(error).splitlines()[1:] == [f"  {text}", " " * 43 + "^"]


@pytest.mark.parametrize(
    ("text", "plain", "kind", "position"),
    [
        (
            (
                "@multi_run_mode.@evaluations.custom.sentiment:positive "
                "@evaluations.custom.accuracy:>0.5"
            ),
            "@evaluations.custom.accuracy",
            "most common value",
            55,
        ),
        ("@duration:>1s OR @multi_run_avg.@duration:>1s", "@duration", "average", 0),
        ("@multi_run_avg.@duration:>1s -@status:error", "@status", "average", 30),
        ("@multi_run_avg.@duration:>1s @meta.error.type:*", "@meta.error.type", "average", 29),
        (
            "@multi_run_avg.@duration:>1s @meta.output.answer:x",
            "@meta.output.answer",
            "average",
            29,
        ),
    ],
)
def test_per_run_terms_do_not_mix_with_multi_run_terms(
    text: str, plain: str, kind: str, position: int
) -> None:
    error = error_of(text)
    assert error.message.startswith("Cannot combine '@multi_run_")
    assert MIX.format(p=plain, kind=kind) in error.message
    assert "run_iteration:1" in error.message
    assert error.position == position


def test_run_restrictions_do_not_mix_with_multi_run_terms() -> None:
    error = error_of("@multi_run_avg.@trace.total_tokens:>1000 run_iteration:1")
    assert error.message == (
        "Cannot combine '@multi_run_avg.@trace.total_tokens' with 'run_iteration': multi-run "
        "aggregates are computed over every run of a record, so they cannot be limited to "
        "some runs. Drop run_iteration to filter records by their aggregates, or drop the "
        "@multi_run_ terms and filter the rows of one run with plain terms (run_iteration:1 "
        "@trace.total_tokens:>1000)"
    )
    assert error.position == 41
    assert error_of("run_id:x @multi_run_mode.@status:ok").position == 0


@pytest.mark.parametrize(
    "query",
    [
        "@multi_run_avg.@evaluations.custom.passed:>=0.5 @evaluations.custom.passed:true",
        "@multi_run_avg.@evaluations.custom.passed:>=0.5 run_iteration:1",
        "@multi_run_avg.@evaluations.custom.score:>0.5 @evaluations.custom.score:<0.2",
        "@multi_run_mode.@evaluations.custom.tone:positive @evaluations.custom.tone:negative",
        "@multi_run_avg.@trace.total_tokens:>1000 @trace.estimated_total_cost:>0.01",
    ],
)
def test_every_rewrite_a_mix_error_suggests_is_accepted(query: str) -> None:
    import re

    catalog = Catalog({"passed": "boolean", "score": "score", "tone": "categorical"}, frozenset())
    with pytest.raises(QueryError) as raised:
        resolve(query, catalog)
    suggestions = re.findall(r"\(([^()]*[@:][^()]*)\)", raised.value.message)
    assert suggestions, raised.value.message
    for suggestion in suggestions:
        resolve(suggestion, catalog)  # raises if the advice is itself refused


def test_a_search_scoped_to_a_run_drops_that_runs_terms() -> None:
    """What a search whose scope already holds run N compiles: the query less its top
    ``run_iteration:N`` terms (SQLite would test them again on every entry it reads)."""
    from assay.store.sql.query_shape import required_run, without_run

    def node(text: str) -> Any:
        return resolve(text, CATALOG).node

    both = node("run_iteration:1 @trace.total_tokens:>1000")
    assert required_run(both) == 1
    assert without_run(both, 1) == node("@trace.total_tokens:>1000")
    assert without_run(node("run_iteration:1"), 1) is None
    assert without_run(node("run_iteration:2 @status:ok"), 1) == node("run_iteration:2 @status:ok")
    assert without_run(node("run_iteration:1 run_iteration:2 @status:ok"), 1) == node(
        "run_iteration:2 @status:ok"
    )
    # Below the top AND a run term is not the search's scope: it stays.
    either = node("run_iteration:1 OR @status:ok")
    assert without_run(either, 1) == either
