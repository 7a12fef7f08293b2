"""The built-in evaluators, driven the way an experiment drives them: through ``evaluate``."""

from __future__ import annotations

import inspect
import math
import re
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

import assay.evaluators
from assay.evaluation import BaseEvaluator, EvaluatorContext, EvaluatorResult
from assay.evaluators import (
    JSONEvaluator,
    LengthEvaluator,
    RegexMatchEvaluator,
    SemanticSimilarityEvaluator,
    StringCheckEvaluator,
)


def row(output: Any, expected: Any = None) -> EvaluatorContext:
    return EvaluatorContext(
        input_data={"question": "q"},
        output_data=output,
        expected_output=expected,
        metadata={"experiment_config": {}},
    )


def run(evaluator: BaseEvaluator, output: Any, expected: Any = None) -> EvaluatorResult:
    result = evaluator.evaluate(row(output, expected))
    assert isinstance(result, EvaluatorResult)
    # Every verdict explains itself, and the assessment always agrees with the value.
    assert result.reasoning
    if isinstance(result.value, bool):
        assert result.assessment == ("pass" if result.value else "fail")
    return result


def passes(evaluator: BaseEvaluator, output: Any, expected: Any = None) -> bool:
    value = run(evaluator, output, expected).value
    assert isinstance(value, bool)
    return value


# --- the package -------------------------------------------------------------------------


def test_all_is_sorted_and_complete() -> None:
    assert assay.evaluators.__all__ == sorted(assay.evaluators.__all__)
    assert set(assay.evaluators.__all__) == {
        "JSONEvaluator",
        "LengthEvaluator",
        "RegexMatchEvaluator",
        "SemanticSimilarityEvaluator",
        "StringCheckEvaluator",
    }


BUILD: dict[str, Callable[..., BaseEvaluator]] = {
    "StringCheckEvaluator": lambda **kw: StringCheckEvaluator(**kw),
    "RegexMatchEvaluator": lambda **kw: RegexMatchEvaluator("x", **kw),
    "LengthEvaluator": lambda **kw: LengthEvaluator(max_length=3, **kw),
    "JSONEvaluator": lambda **kw: JSONEvaluator(**kw),
    "SemanticSimilarityEvaluator": lambda **kw: SemanticSimilarityEvaluator(lambda t: [1.0], **kw),
}


@pytest.mark.parametrize("class_name", sorted(BUILD))
def test_docstring_example_runs(class_name: str) -> None:
    evaluator_class = getattr(assay.evaluators, class_name)
    example = (inspect.getdoc(evaluator_class) or "").split("Example::\n", 1)[1]
    namespace = {"EvaluatorContext": EvaluatorContext, class_name: evaluator_class}
    exec(textwrap.dedent(example), namespace)


@pytest.mark.parametrize("class_name", sorted(BUILD))
def test_default_name_is_the_class_name(class_name: str) -> None:
    evaluator = BUILD[class_name]()
    assert isinstance(evaluator, BaseEvaluator)
    assert evaluator.name == class_name


@pytest.mark.parametrize("class_name", sorted(BUILD))
def test_custom_name(class_name: str) -> None:
    assert BUILD[class_name](name="my-check_1").name == "my-check_1"


@pytest.mark.parametrize("class_name", sorted(BUILD))
def test_invalid_name_is_refused(class_name: str) -> None:
    with pytest.raises(ValueError, match="'has space'"):
        BUILD[class_name](name="has space")


# --- StringCheckEvaluator ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "output", "expected", "passed"),
    [
        ("eq", "Paris", "Paris", True),
        ("eq", "Paris", "paris", False),
        ("eq", "Paris", "Pari", False),
        ("ne", "Paris", "London", True),
        ("ne", "Paris", "Paris", False),
        ("contains", "It is Paris.", "Paris", True),
        ("contains", "It is PARIS.", "Paris", False),
        ("icontains", "It is PARIS.", "paris", True),
        ("icontains", "It is London.", "paris", False),
    ],
)
def test_string_check_operations(operation: str, output: str, expected: str, passed: bool) -> None:
    assert passes(StringCheckEvaluator(operation), output, expected) is passed


def test_string_check_default_operation_is_eq() -> None:
    check = StringCheckEvaluator()
    assert check.operation == "eq"
    assert passes(check, "a", "a") and not passes(check, "a", "b")


@pytest.mark.parametrize(
    ("operation", "output", "expected", "passed"),
    [
        ("eq", "PARIS", "paris", True),
        ("ne", "PARIS", "paris", False),
        ("ne", "PARIS", "london", True),
        ("contains", "IN PARIS", "paris", True),
    ],
)
def test_string_check_case_insensitive(
    operation: str, output: str, expected: str, passed: bool
) -> None:
    result = run(StringCheckEvaluator(operation, case_sensitive=False), output, expected)
    assert result.value is passed
    assert "ignoring case" in (result.reasoning or "")


def test_string_check_icontains_ignores_case_sensitive_flag() -> None:
    assert passes(StringCheckEvaluator("icontains", case_sensitive=True), "PARIS", "paris")


def test_string_check_strip_whitespace() -> None:
    assert not passes(StringCheckEvaluator(), "  Paris\n", "Paris")
    assert passes(StringCheckEvaluator(strip_whitespace=True), "  Paris\n", "\tParis ")


def test_string_check_compares_non_strings_through_str() -> None:
    assert passes(StringCheckEvaluator(), 42, "42")
    assert passes(StringCheckEvaluator(), 3.5, 3.5)
    assert passes(StringCheckEvaluator("contains"), ["a", "b"], "'b'")


def test_string_check_extractors_are_applied_first() -> None:
    check = StringCheckEvaluator(
        output_extractor=lambda output: output["answer"],
        expected_output_extractor=lambda expected: expected["city"],
    )
    assert passes(check, {"answer": "Paris"}, {"city": "Paris"})
    assert not passes(check, {"answer": "Lyon"}, {"city": "Paris"})


@pytest.mark.parametrize(
    ("operation", "passed"),
    [("eq", False), ("ne", True), ("contains", False), ("icontains", False)],
)
def test_string_check_none_output(operation: str, passed: bool) -> None:
    result = run(StringCheckEvaluator(operation), None, "Paris")
    assert result.value is passed
    assert "output is None" in (result.reasoning or "")


@pytest.mark.parametrize(
    ("operation", "passed"), [("eq", False), ("ne", True), ("contains", False)]
)
def test_string_check_none_expected_output(operation: str, passed: bool) -> None:
    result = run(StringCheckEvaluator(operation), "Paris", None)
    assert result.value is passed
    assert "expected output is None" in (result.reasoning or "")


@pytest.mark.parametrize(
    ("operation", "passed"),
    [("eq", True), ("ne", False), ("contains", False), ("icontains", False)],
)
def test_string_check_both_none(operation: str, passed: bool) -> None:
    assert passes(StringCheckEvaluator(operation), None, None) is passed


def test_string_check_extractor_returning_none_counts_as_no_output() -> None:
    assert not passes(StringCheckEvaluator(output_extractor=lambda output: None), "x", "x")


def test_string_check_reasoning_names_values_and_shortens_long_ones() -> None:
    assert run(StringCheckEvaluator(), "Lyon", "Paris").reasoning == (
        "output 'Lyon' does not equal expected 'Paris'"
    )
    reasoning = run(StringCheckEvaluator(), "x" * 500, "y").reasoning or ""
    assert "(500 chars)" in reasoning and len(reasoning) < 120


def test_string_check_unknown_operation() -> None:
    with pytest.raises(ValueError) as error:
        StringCheckEvaluator("equals")
    message = str(error.value)
    assert "'equals'" in message
    assert "'eq', 'ne', 'contains', 'icontains'" in message


@pytest.mark.parametrize("argument", ["output_extractor", "expected_output_extractor"])
def test_string_check_extractor_must_be_callable(argument: str) -> None:
    not_callable: dict[str, Any] = {argument: "answer"}
    with pytest.raises(TypeError, match=argument):
        StringCheckEvaluator(**not_callable)


# --- RegexMatchEvaluator -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("match_mode", "output", "passed"),
    [
        ("search", "call 555-0199 now", True),
        ("search", "no number here", False),
        ("match", "555-0199 now", True),
        ("match", "call 555-0199", False),
        ("fullmatch", "555-0199", True),
        ("fullmatch", "555-0199 now", False),
    ],
)
def test_regex_match_modes(match_mode: str, output: str, passed: bool) -> None:
    check = RegexMatchEvaluator(r"\d{3}-\d{4}", match_mode)
    result = run(check, output)
    assert result.value is passed
    assert r"'\\d{3}-\\d{4}'" in (result.reasoning or "")


def test_regex_match_default_mode_is_search() -> None:
    assert RegexMatchEvaluator("b").match_mode == "search"
    assert passes(RegexMatchEvaluator("b"), "abc")


def test_regex_match_flags() -> None:
    assert not passes(RegexMatchEvaluator("paris", "fullmatch"), "PARIS")
    assert passes(RegexMatchEvaluator("paris", "fullmatch", flags=re.IGNORECASE), "PARIS")
    assert passes(RegexMatchEvaluator("^b$", flags=re.MULTILINE), "a\nb\nc")


def test_regex_match_output_extractor_and_non_strings() -> None:
    phone = RegexMatchEvaluator(r"\d{3}-\d{4}", output_extractor=lambda output: output["phone"])
    assert passes(phone, {"phone": "555-0199"})
    assert not passes(phone, {"phone": "unknown"})
    assert passes(RegexMatchEvaluator(r"\d+", "fullmatch"), 12345)


def test_regex_match_none_output() -> None:
    result = run(RegexMatchEvaluator(".*"), None)
    assert result.value is False
    assert "output is None" in (result.reasoning or "")
    assert not passes(RegexMatchEvaluator(".*", output_extractor=lambda output: None), "x")


def test_regex_match_unknown_mode() -> None:
    with pytest.raises(ValueError) as error:
        RegexMatchEvaluator("x", "findall")
    assert "'findall'" in str(error.value)
    assert "'search', 'match', 'fullmatch'" in str(error.value)


def test_regex_match_invalid_pattern() -> None:
    with pytest.raises(ValueError, match=r"Invalid regex pattern '\(unclosed'") as error:
        RegexMatchEvaluator("(unclosed")
    assert isinstance(error.value.__cause__, re.error)


def test_regex_match_extractor_must_be_callable() -> None:
    with pytest.raises(TypeError, match="output_extractor"):
        RegexMatchEvaluator("x", output_extractor=42)  # type: ignore[arg-type]


# --- LengthEvaluator ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count_type", "output", "length"),
    [
        ("characters", "hello", 5),
        ("characters", "", 0),
        ("words", "  one two\tthree\nfour ", 4),
        ("words", "   ", 0),
        ("lines", "a\nb\r\nc", 3),
        ("lines", "a\nb\n", 2),
        ("lines", "", 0),
    ],
)
def test_length_count_types(count_type: str, output: str, length: int) -> None:
    assert passes(LengthEvaluator(length, length, count_type=count_type), output)
    assert not passes(LengthEvaluator(length + 1, count_type=count_type), output)
    if length > 0:
        assert not passes(LengthEvaluator(max_length=length - 1, count_type=count_type), output)


def test_length_default_count_type_is_characters() -> None:
    assert LengthEvaluator(max_length=1).count_type == "characters"


def test_length_bounds_are_inclusive_and_explained() -> None:
    check = LengthEvaluator(2, 4)
    assert run(check, "ab").reasoning == "2 characters, within [2, 4]"
    assert run(check, "abcd").value is True
    assert run(check, "a").reasoning == "1 character, below the minimum of 2"
    assert run(check, "abcde").reasoning == "5 characters, above the maximum of 4"


def test_length_one_sided_bounds() -> None:
    assert run(LengthEvaluator(min_length=3), "abcdefgh").reasoning == (
        "8 characters, within at least 3"
    )
    assert run(LengthEvaluator(max_length=50, count_type="words"), "Too long.").reasoning == (
        "2 words, within at most 50"
    )


def test_length_output_extractor_and_non_strings() -> None:
    summary = LengthEvaluator(max_length=3, output_extractor=lambda output: output["summary"])
    assert passes(summary, {"summary": "abc", "body": "x" * 100})
    assert not passes(summary, {"summary": "abcd"})
    assert passes(LengthEvaluator(3, 3), 123)


def test_length_none_output() -> None:
    result = run(LengthEvaluator(min_length=0), None)
    assert result.value is False
    assert "output is None" in (result.reasoning or "")


def test_length_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="min_length, max_length or both"):
        LengthEvaluator()


def test_length_min_above_max() -> None:
    with pytest.raises(ValueError, match=r"min_length \(5\).*max_length \(2\)"):
        LengthEvaluator(5, 2)


@pytest.mark.parametrize("bounds", [{"min_length": -1}, {"max_length": -3}])
def test_length_negative_bound(bounds: dict[str, int]) -> None:
    argument, value = next(iter(bounds.items()))
    with pytest.raises(ValueError, match=f"{argument} .* got {value}"):
        LengthEvaluator(**bounds)  # type: ignore[arg-type]


def test_length_unknown_count_type() -> None:
    with pytest.raises(ValueError) as error:
        LengthEvaluator(max_length=1, count_type="tokens")
    assert "'tokens'" in str(error.value)
    assert "'characters', 'words', 'lines'" in str(error.value)


def test_length_extractor_must_be_callable() -> None:
    with pytest.raises(TypeError, match="output_extractor"):
        LengthEvaluator(max_length=1, output_extractor="summary")  # type: ignore[arg-type]


# --- JSONEvaluator -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "passed"),
    [
        ('{"a": 1}', True),
        ("[1, 2]", True),
        ("42", True),
        ('"text"', True),
        ("null", True),
        ({"a": 1}, True),
        ([1, 2], True),
        ("{'a': 1}", False),
        ("not json", False),
        ('{"a": 1', False),
        ("", False),
    ],
)
def test_json_validity(output: Any, passed: bool) -> None:
    assert passes(JSONEvaluator(), output) is passed


def test_json_invalid_reasoning_says_where() -> None:
    assert run(JSONEvaluator(), '{"a": 1').reasoning == (
        "output is not valid JSON: Expecting ',' delimiter: line 1 column 8 (char 7)"
    )


def test_json_required_keys() -> None:
    check = JSONEvaluator(required_keys=["city", "country"])
    assert run(check, '{"city": "Paris", "country": "FR"}').reasoning == (
        "valid JSON object with every required key"
    )
    assert run(check, '{"city": "Paris"}').reasoning == "JSON object lacks key 'country'"
    assert run(check, {"other": 1}).reasoning == "JSON object lacks keys 'city', 'country'"
    assert check.required_keys == ["city", "country"]


def test_json_required_keys_apply_only_to_objects() -> None:
    # ddtrace's rule: an array or scalar is valid JSON and has no keys to check.
    assert passes(JSONEvaluator(required_keys=["a"]), "[1, 2]")
    assert passes(JSONEvaluator(required_keys=["a"]), ["a"])


def test_json_output_extractor() -> None:
    check = JSONEvaluator(required_keys=["status"], output_extractor=lambda o: o["response"])
    assert passes(check, {"response": '{"status": "ok"}'})
    assert not passes(check, {"response": "oops"})


def test_json_none_output() -> None:
    result = run(JSONEvaluator(), None)
    assert result.value is False
    assert "output is None" in (result.reasoning or "")
    # The JSON text "null" is a valid document; only a missing output fails.
    assert passes(JSONEvaluator(), "null")


def test_json_required_keys_as_a_bare_string_is_refused() -> None:
    with pytest.raises(TypeError, match=r"\['city'\]"):
        JSONEvaluator(required_keys="city")


def test_json_extractor_must_be_callable() -> None:
    with pytest.raises(TypeError, match="output_extractor"):
        JSONEvaluator(output_extractor="response")  # type: ignore[arg-type]


# --- SemanticSimilarityEvaluator ---------------------------------------------------------

VECTORS = {
    "cat": [1.0, 0.0],
    "kitten": [1.0, 0.0],
    "dog": [0.0, 1.0],
    "anti-cat": [-1.0, 0.0],
    "diagonal": [1.0, 1.0],
    "nothing": [0.0, 0.0],
}


def embed(text: str) -> list[float]:
    return VECTORS[text]


@pytest.mark.parametrize(
    ("output", "expected", "score"),
    [
        ("cat", "kitten", 1.0),
        ("cat", "dog", 0.5),
        ("cat", "anti-cat", 0.0),
        ("cat", "diagonal", (1 / math.sqrt(2) + 1) / 2),
        ("cat", "nothing", 0.5),
    ],
)
def test_semantic_similarity_score(output: str, expected: str, score: float) -> None:
    result = run(SemanticSimilarityEvaluator(embed), output, expected)
    assert isinstance(result.value, float)
    assert result.value == pytest.approx(score)
    assert 0.0 <= result.value <= 1.0


def test_semantic_similarity_threshold_decides_assessment() -> None:
    # (cos 45° + 1) / 2 ≈ 0.854
    assert run(SemanticSimilarityEvaluator(embed, 0.85), "cat", "diagonal").assessment == "pass"
    result = run(SemanticSimilarityEvaluator(embed, 0.86), "cat", "diagonal")
    assert result.assessment == "fail"
    assert (result.reasoning or "").startswith("score 0.8536 < threshold 0.86")
    assert run(SemanticSimilarityEvaluator(embed, 1.0), "cat", "kitten").assessment == "pass"


def test_semantic_similarity_default_threshold() -> None:
    check = SemanticSimilarityEvaluator(embed)
    assert check.threshold == 0.7
    assert run(check, "cat", "dog").assessment == "fail"


def test_semantic_similarity_embeds_str_of_values_and_accepts_arrays() -> None:
    import numpy as np

    seen: list[str] = []

    def record(text: str) -> np.ndarray[Any, np.dtype[np.float64]]:
        seen.append(text)
        return np.ones(3)

    assert run(SemanticSimilarityEvaluator(record), 7, {"a": 1}).value == pytest.approx(1.0)
    assert seen == ["7", "{'a': 1}"]


def test_semantic_similarity_stays_within_bounds_despite_rounding() -> None:
    vector = [0.1, 0.2, 0.3, 1e-9, 123456.789]
    result = run(SemanticSimilarityEvaluator(lambda text: vector), "a", "b")
    assert result.value == pytest.approx(1.0) and result.value <= 1.0


@pytest.mark.parametrize(
    ("output", "expected", "score"), [(None, None, 1.0), (None, "cat", 0.0), ("cat", None, 0.0)]
)
def test_semantic_similarity_none(output: Any, expected: Any, score: float) -> None:
    def never(text: str) -> list[float]:
        raise AssertionError("embedding_fn must not be called for a missing value")

    result = run(SemanticSimilarityEvaluator(never), output, expected)
    assert result.value == score
    assert result.assessment == ("pass" if score else "fail")
    assert "None" in (result.reasoning or "")


def test_semantic_similarity_mismatched_vectors() -> None:
    lengths = {"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0]}
    with pytest.raises(ValueError, match="2 for the output, 3 for the expected output"):
        SemanticSimilarityEvaluator(lengths.__getitem__).evaluate(row("a", "b"))


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]], 3.0])
def test_semantic_similarity_bad_vector_shape(bad: Any) -> None:
    with pytest.raises(ValueError, match="non-empty 1-D vector"):
        SemanticSimilarityEvaluator(lambda text: bad).evaluate(row("a", "b"))


@pytest.mark.parametrize("threshold", [-0.1, 1.5, math.nan])
def test_semantic_similarity_threshold_out_of_range(threshold: float) -> None:
    with pytest.raises(ValueError) as error:
        SemanticSimilarityEvaluator(embed, threshold)
    assert repr(threshold) in str(error.value)
    assert "[0, 1]" in str(error.value)


@pytest.mark.parametrize("threshold", [0, 0.0, 1, 1.0])
def test_semantic_similarity_threshold_limits_are_allowed(threshold: float) -> None:
    assert SemanticSimilarityEvaluator(embed, threshold).threshold == threshold


@pytest.mark.parametrize("embedding_fn", [None, "text-embedding-3-small"])
def test_semantic_similarity_embedding_fn_must_be_callable(embedding_fn: Any) -> None:
    with pytest.raises(TypeError, match="embedding_fn"):
        SemanticSimilarityEvaluator(embedding_fn)


# --- concurrency -------------------------------------------------------------------------


def test_evaluators_are_safe_to_share_between_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    check = RegexMatchEvaluator(r"^\d+$", "fullmatch")
    outputs = [str(i) if i % 2 else f"x{i}" for i in range(400)]
    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(lambda output: check.evaluate(row(output)).value, outputs))
    assert values == [bool(i % 2) for i in range(400)]


def test_arguments_can_be_given_by_position_as_in_ddtrace() -> None:
    # ddtrace 4.16 takes every argument positionally; scripts written for it must run.
    import re

    from assay.evaluation import EvaluatorContext
    from assay.evaluators import (
        JSONEvaluator,
        LengthEvaluator,
        RegexMatchEvaluator,
        StringCheckEvaluator,
    )

    def context(output: object, expected: object = None) -> EvaluatorContext:
        return EvaluatorContext(input_data=None, output_data=output, expected_output=expected)

    assert StringCheckEvaluator("eq", False, True).evaluate(context(" PARIS ", "paris")).value
    assert RegexMatchEvaluator("par", "match", re.IGNORECASE).evaluate(context("Paris")).value
    assert not LengthEvaluator(1, 3, "words").evaluate(context("a b c d")).value
    assert JSONEvaluator(["a"], None, "has_a").evaluate(context('{"a": 1}')).value
