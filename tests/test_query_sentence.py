"""Every query reads as an English sentence."""

from __future__ import annotations

import pytest

from assay.query import Catalog, describe, parse, resolve

CATALOG = Catalog(
    {
        "random_evaluator": "score",
        "sentiment_evaluator": "categorical",
        "exact_match": "boolean",
        "accuracy": "score",
    },
    frozenset({"difficulty"}),
)


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("", "all rows"),
        (
            "@multi_run_avg.@evaluations.custom.random_evaluator:>=0.5 "
            "@multi_run_mode.@evaluations.custom.sentiment_evaluator:positive",
            "records whose average random_evaluator across runs is at least 0.5 and whose "
            "most common sentiment_evaluator is positive",
        ),
        (
            "run_iteration:1 @trace.total_tokens:>1000",
            "rows of run 1 with more than 1000 total tokens",
        ),
        ("run_iteration:2", "rows of run 2"),
        (
            "@multi_run_avg.@trace.total_tokens:>1000",
            "records whose average total token count across runs is more than 1000",
        ),
        (
            "@multi_run_avg.@evaluations.custom.exact_match:>=0.8",
            "records whose share of runs where exact_match is true is at least 0.8",
        ),
        (
            "@multi_run_mode.@evaluations.custom.exact_match:true",
            "records whose most common exact_match is true",
        ),
        ("@multi_run_mode.@status:error", "records whose most common status is error"),
        (
            "@multi_run_avg.@duration:>1.5s",
            "records whose average duration across runs is more than 1.5s",
        ),
        ("paris", 'rows containing "paris"'),
        ('"new york" -london', 'rows containing "new york" and not containing "london"'),
        ("par*s", "rows containing text matching par*s"),
        ("@evaluations.custom.accuracy:<0.5", "rows whose accuracy is less than 0.5"),
        ("@evaluations.custom.accuracy:<=0.5", "rows whose accuracy is at most 0.5"),
        ("@evaluations.custom.accuracy:0.5", "rows whose accuracy is 0.5"),
        ("-@evaluations.custom.accuracy:>0.5", "rows whose accuracy is not more than 0.5"),
        ("@evaluations.custom.accuracy:[0.2 TO 0.8]", "rows whose accuracy is between 0.2 and 0.8"),
        ("@evaluations.custom.accuracy:[0.2 TO *]", "rows whose accuracy is at least 0.2"),
        ("-@evaluations.custom.accuracy:[* TO 0.8]", "rows whose accuracy is not at most 0.8"),
        ("@evaluations.custom.accuracy:[* TO *]", "rows whose accuracy is any number"),
        (
            "@evaluations.custom.sentiment_evaluator:(positive OR neutral)",
            "rows whose sentiment_evaluator is positive or neutral",
        ),
        (
            "@evaluations.custom.sentiment_evaluator:(a OR b OR c)",
            "rows whose sentiment_evaluator is a, b or c",
        ),
        (
            '@evaluations.custom.sentiment_evaluator:"very good"',
            'rows whose sentiment_evaluator is "very good"',
        ),
        ("@evaluations.custom.exact_match:*", "rows whose exact_match is set"),
        ("-@evaluations.custom.exact_match:*", "rows whose exact_match is not set"),
        ("@trace.total_tokens:>=10", "rows with at least 10 total tokens"),
        ("@trace.input_tokens:<10", "rows with fewer than 10 input tokens"),
        ("@trace.output_tokens:<=10", "rows with at most 10 output tokens"),
        ("@trace.output_tokens:10", "rows with exactly 10 output tokens"),
        ("@trace.total_tokens:[100 TO 1000]", "rows with 100 to 1000 total tokens"),
        ("-@trace.total_tokens:>5", "rows whose total token count is not more than 5"),
        (
            "@trace.estimated_total_cost:>10000000",
            "rows whose estimated cost is more than 10000000 nanodollars",
        ),
        ("@duration:>1.5s", "rows taking more than 1.5s"),
        ("@duration:>500", "rows taking more than 500 ns"),
        ("@duration:[100ms TO 2s]", "rows taking between 100ms and 2s"),
        ("-@duration:<1s", "rows whose duration is not less than 1s"),
        ("@status:error", "rows whose status is error"),
        ("@meta.error.type:*Timeout*", "rows whose error type matches *Timeout*"),
        ("-@meta.error.type:*Timeout*", "rows whose error type does not match *Timeout*"),
        ("@meta.input.question:*capital*", "rows whose input.question matches *capital*"),
        ("@meta.expected_output:Paris", "rows whose expected output is Paris"),
        ("@meta.metadata.source.kind:web", "rows whose metadata.source.kind is web"),
        (
            "difficulty:hard -difficulty:easy",
            "rows tagged difficulty:hard and not tagged difficulty:easy",
        ),
        ("difficulty:>2", "rows whose difficulty tag is more than 2"),
        ("dataset_record_id:r1", "rows of record r1"),
        ("run_id:abc", "rows whose run id is abc"),
        ("run_iteration:>2", "rows whose run is more than 2"),
        ("a OR b", 'rows containing "a" or containing "b"'),
        ("a (b OR c)", 'rows containing "a" and (containing "b" or containing "c")'),
        ("(a b) OR c", 'rows (containing "a" and containing "b") or containing "c"'),
        ("-(a OR b)", 'rows not (containing "a" or containing "b")'),
        ("--a", 'rows containing "a"'),
        (
            "paris -@status:error @duration:[100ms TO 2s]",
            'rows containing "paris" and whose status is not error and taking between 100ms and 2s',
        ),
        (
            "@multi_run_avg.@evaluations.custom.accuracy:>0.5 difficulty:hard",
            (
                "records whose average accuracy across runs is more than 0.5 and "
                "tagged difficulty:hard"
            ),
        ),
    ],
)
def test_sentences(text: str, sentence: str) -> None:
    assert describe(resolve(text, CATALOG)) == sentence


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("", "all rows"),
        (
            "@multi_run_avg.@evaluations.custom.anything:>0.5",
            "records whose average anything across runs is more than 0.5",
        ),
        ("@evaluations.custom.anything:x", "rows whose anything is x"),
        ("some_tag:x", "rows tagged some_tag:x"),
        ("@unknown.attribute:>3", "rows whose @unknown.attribute is more than 3"),
        ("@multi_run_avg.@unknown:>3", "rows whose @multi_run_avg.@unknown is more than 3"),
    ],
)
def test_a_parsed_tree_is_described_without_a_catalog(text: str, sentence: str) -> None:
    assert describe(parse(text)) == sentence
