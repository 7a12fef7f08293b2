"""Comparing an output with its expected output as strings."""

from __future__ import annotations

from typing import Any

from assay.evaluation import BaseEvaluator, EvaluatorContext, EvaluatorResult
from assay.evaluators._support import (
    Extractor,
    extract,
    preview,
    require_callable,
    require_choice,
    verdict,
)


class StringCheckEvaluator(BaseEvaluator):
    """Pass when the output and the expected output compare as asked.

    Operations: ``"eq"`` (equal, the default), ``"ne"`` (not equal), ``"contains"``
    (the expected output is a substring of the output) and ``"icontains"`` (the same,
    ignoring case). Values that are not strings are compared through ``str()``; the
    extractors, if given, are applied first.

    ``None`` is handled as in ddtrace: a ``None`` output fails ``eq``, ``contains`` and
    ``icontains``; it passes ``ne`` unless the expected output is ``None`` too, and two
    ``None`` values pass ``eq``.

    Example::

        check = StringCheckEvaluator("icontains", strip_whitespace=True)
        result = check.evaluate(EvaluatorContext(
            input_data="Capital of France?", output_data=" It is PARIS. ", expected_output="paris"
        ))
        assert result.value is True and result.assessment == "pass"
    """

    VALID_OPERATIONS = ("eq", "ne", "contains", "icontains")

    def __init__(
        self,
        operation: str = "eq",
        case_sensitive: bool = True,
        strip_whitespace: bool = False,
        output_extractor: Extractor | None = None,
        expected_output_extractor: Extractor | None = None,
        name: str | None = None,
    ) -> None:
        """Check ``operation`` and the extractors; raise ``ValueError``/``TypeError`` if bad."""
        super().__init__(name=name)
        owner = type(self).__name__
        require_choice(operation, self.VALID_OPERATIONS, argument="operation", owner=owner)
        require_callable(output_extractor, argument="output_extractor", owner=owner)
        require_callable(
            expected_output_extractor, argument="expected_output_extractor", owner=owner
        )
        self.operation = operation
        self.case_sensitive = case_sensitive
        self.strip_whitespace = strip_whitespace
        self.output_extractor = output_extractor
        self.expected_output_extractor = expected_output_extractor

    def evaluate(self, context: EvaluatorContext) -> EvaluatorResult:
        """Compare the (extracted) output with the (extracted) expected output."""
        output = extract(context.output_data, self.output_extractor)
        expected = extract(context.expected_output, self.expected_output_extractor)
        if output is None or expected is None:
            return self._compare_missing(output, expected)

        output_text, expected_text = self._normalise(output), self._normalise(expected)
        if self.operation == "eq":
            passed = output_text == expected_text
            relation = "equals" if passed else "does not equal"
        elif self.operation == "ne":
            passed = output_text != expected_text
            relation = "differs from" if passed else "is the same as"
        else:
            passed = expected_text in output_text
            relation = "contains" if passed else "does not contain"
        reasoning = f"output {preview(output_text)} {relation} expected {preview(expected_text)}"
        if self.operation == "icontains" or not self.case_sensitive:
            reasoning += " (ignoring case)"
        return verdict(passed, reasoning)

    def _normalise(self, value: Any) -> str:
        text = str(value)
        if self.strip_whitespace:
            text = text.strip()
        # ``icontains`` ignores case whatever ``case_sensitive`` says, as in ddtrace.
        if self.operation == "icontains" or not self.case_sensitive:
            text = text.lower()
        return text

    def _compare_missing(self, output: Any, expected: Any) -> EvaluatorResult:
        # A missing value is never a substring and never equal to a present one, so only
        # ``ne`` can pass; two missing values are equal. These are ddtrace's rules.
        if output is None and expected is None:
            passed = self.operation == "eq"
            return verdict(passed, "output and expected output are both None")
        missing = "output" if output is None else "expected output"
        passed = self.operation == "ne"
        reasoning = f"{missing} is None, so {self.operation!r} {'holds' if passed else 'fails'}"
        return verdict(passed, reasoning)
