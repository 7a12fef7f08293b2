"""Checking that an output is JSON, optionally with required keys."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from assay.evaluation import BaseEvaluator, EvaluatorContext, EvaluatorResult
from assay.evaluators._support import NO_OUTPUT, Extractor, extract, require_callable, verdict


class JSONEvaluator(BaseEvaluator):
    """Pass when the output is valid JSON that has every required key.

    A string output is parsed with :func:`json.loads`; a ``dict`` or ``list`` output is
    already JSON and is taken as is; anything else is parsed through ``str()``. A ``None``
    output fails. As in ddtrace, ``required_keys`` applies only when the JSON is an
    object: a valid array or scalar passes whatever keys are required.

    Example::

        check = JSONEvaluator(required_keys=["city", "country"])
        result = check.evaluate(EvaluatorContext(input_data="", output_data='{"city": "Paris"}'))
        assert result.value is False and result.reasoning == "JSON object lacks key 'country'"
    """

    def __init__(
        self,
        required_keys: Iterable[str] | None = None,
        output_extractor: Extractor | None = None,
        name: str | None = None,
    ) -> None:
        """Keep a copy of ``required_keys``; raise ``TypeError`` for a bare string."""
        super().__init__(name=name)
        owner = type(self).__name__
        # A bare string would be read as one key per character, silently checking the
        # wrong thing, so it is refused rather than iterated.
        if isinstance(required_keys, str):
            raise TypeError(
                f"required_keys for {owner} must be a list of key names, got the string "
                f"{required_keys!r} (write [{required_keys!r}])"
            )
        require_callable(output_extractor, argument="output_extractor", owner=owner)
        self.required_keys: list[str] = list(required_keys or [])
        self.output_extractor = output_extractor

    def evaluate(self, context: EvaluatorContext) -> EvaluatorResult:
        """Parse the (extracted) output and look for the required keys."""
        output = extract(context.output_data, self.output_extractor)
        if output is None:
            return verdict(False, NO_OUTPUT)
        parsed: Any
        if isinstance(output, dict | list):
            parsed = output
        else:
            try:
                parsed = json.loads(str(output))
            except ValueError as error:  # JSONDecodeError, or a bad surrogate in the text
                return verdict(False, f"output is not valid JSON: {error}")
        if not isinstance(parsed, dict):
            return verdict(True, f"valid JSON {type(parsed).__name__}")
        missing = [key for key in self.required_keys if key not in parsed]
        if missing:
            keys = ", ".join(repr(key) for key in missing)
            return verdict(False, f"JSON object lacks key{'s' if len(missing) > 1 else ''} {keys}")
        if self.required_keys:
            return verdict(True, "valid JSON object with every required key")
        return verdict(True, "valid JSON object")
