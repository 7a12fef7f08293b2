"""Checking an output against a regular expression."""

from __future__ import annotations

import re

from assay.evaluation import BaseEvaluator, EvaluatorContext, EvaluatorResult
from assay.evaluators._support import (
    NO_OUTPUT,
    Extractor,
    extract,
    preview,
    require_callable,
    require_choice,
    verdict,
)

# What a match (or its absence) means in each mode, for the reasoning.
_FOUND = {
    "search": ("found in output", "not found anywhere in output"),
    "match": ("matches at the start of output", "does not match at the start of output"),
    "fullmatch": ("matches the whole output", "does not match the whole output"),
}


class RegexMatchEvaluator(BaseEvaluator):
    r"""Pass when the output matches a regular expression.

    ``match_mode`` picks the :mod:`re` function: ``"search"`` (anywhere, the default),
    ``"match"`` (at the start) or ``"fullmatch"`` (the whole output). Non-string outputs
    are matched through ``str()``; a ``None`` output fails.

    Example::

        phone = RegexMatchEvaluator(r"\d{3}-\d{4}", output_extractor=lambda o: o["phone"])
        result = phone.evaluate(EvaluatorContext(input_data={}, output_data={"phone": "555-0199"}))
        assert result.value is True
    """

    VALID_MATCH_MODES = ("search", "match", "fullmatch")

    def __init__(
        self,
        pattern: str,
        match_mode: str = "search",
        flags: int = 0,
        output_extractor: Extractor | None = None,
        name: str | None = None,
    ) -> None:
        """Compile ``pattern`` now, so a bad one fails before any row is evaluated."""
        super().__init__(name=name)
        owner = type(self).__name__
        require_choice(match_mode, self.VALID_MATCH_MODES, argument="match_mode", owner=owner)
        try:
            compiled = re.compile(pattern, flags)
        except re.error as error:
            raise ValueError(
                f"Invalid regex pattern {pattern!r} for {owner}: {error} "
                "(write it as a raw string r'...' and escape special characters)"
            ) from error
        require_callable(output_extractor, argument="output_extractor", owner=owner)
        # Compiled patterns are safe to share between the threads that call ``evaluate``.
        self.pattern: re.Pattern[str] = compiled
        self.pattern_str = pattern
        self.match_mode = match_mode
        self.flags = flags
        self.output_extractor = output_extractor

    def evaluate(self, context: EvaluatorContext) -> EvaluatorResult:
        """Match the (extracted) output with the pattern in the chosen mode."""
        output = extract(context.output_data, self.output_extractor)
        if output is None:
            return verdict(False, NO_OUTPUT)
        text = str(output)
        if self.match_mode == "search":
            found = self.pattern.search(text)
        elif self.match_mode == "match":
            found = self.pattern.match(text)
        else:
            found = self.pattern.fullmatch(text)
        passed = found is not None
        on_pass, on_fail = _FOUND[self.match_mode]
        return verdict(
            passed, f"pattern {preview(self.pattern_str)} {on_pass if passed else on_fail}"
        )
