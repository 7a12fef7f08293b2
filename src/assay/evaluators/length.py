"""Checking that an output is neither too short nor too long."""

from __future__ import annotations

from assay.evaluation import BaseEvaluator, EvaluatorContext, EvaluatorResult
from assay.evaluators._support import (
    NO_OUTPUT,
    Extractor,
    extract,
    require_callable,
    require_choice,
    verdict,
)


class LengthEvaluator(BaseEvaluator):
    """Pass when the output's length lies within ``[min_length, max_length]`` (inclusive).

    ``count_type`` says what is counted: ``"characters"`` (the default), ``"words"``
    (whitespace-separated) or ``"lines"``. Either bound may be left out, not both.
    Non-string outputs are measured through ``str()``; a ``None`` output fails.

    Example::

        short = LengthEvaluator(max_length=50, count_type="words")
        result = short.evaluate(EvaluatorContext(input_data="Summarise", output_data="Too long."))
        assert result.value is True and result.reasoning == "2 words, within at most 50"
    """

    VALID_COUNT_TYPES = ("characters", "words", "lines")

    def __init__(
        self,
        min_length: int | None = None,
        max_length: int | None = None,
        count_type: str = "characters",
        output_extractor: Extractor | None = None,
        name: str | None = None,
    ) -> None:
        """Check the bounds and ``count_type``; raise ``ValueError`` if they cannot work."""
        super().__init__(name=name)
        owner = type(self).__name__
        require_choice(count_type, self.VALID_COUNT_TYPES, argument="count_type", owner=owner)
        if min_length is None and max_length is None:
            raise ValueError(f"{owner} needs min_length, max_length or both; got neither")
        for argument, bound in (("min_length", min_length), ("max_length", max_length)):
            if bound is not None and bound < 0:
                raise ValueError(f"{argument} for {owner} must be 0 or more, got {bound}")
        if min_length is not None and max_length is not None and min_length > max_length:
            raise ValueError(
                f"min_length ({min_length}) for {owner} is greater than max_length "
                f"({max_length}): no output could pass; swap them"
            )
        require_callable(output_extractor, argument="output_extractor", owner=owner)
        self.min_length = min_length
        self.max_length = max_length
        self.count_type = count_type
        self.output_extractor = output_extractor

    def evaluate(self, context: EvaluatorContext) -> EvaluatorResult:
        """Measure the (extracted) output and compare it with the bounds."""
        output = extract(context.output_data, self.output_extractor)
        if output is None:
            return verdict(False, NO_OUTPUT)
        length = self._measure(str(output))
        unit = self.count_type if length != 1 else self.count_type.removesuffix("s")
        measured = f"{length} {unit}"
        if self.min_length is not None and length < self.min_length:
            return verdict(False, f"{measured}, below the minimum of {self.min_length}")
        if self.max_length is not None and length > self.max_length:
            return verdict(False, f"{measured}, above the maximum of {self.max_length}")
        return verdict(True, f"{measured}, within {self._bounds()}")

    def _measure(self, text: str) -> int:
        if self.count_type == "characters":
            return len(text)
        if self.count_type == "words":
            return len(text.split())
        return len(text.splitlines())

    def _bounds(self) -> str:
        if self.max_length is None:
            return f"at least {self.min_length}"
        if self.min_length is None:
            return f"at most {self.max_length}"
        return f"[{self.min_length}, {self.max_length}]"
