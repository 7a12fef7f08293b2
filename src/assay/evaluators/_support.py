"""What the built-in evaluators share: argument checks, output extraction and verdicts.

Kept private so the public surface stays the five evaluator classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from assay.evaluation import EvaluatorResult

Extractor = Callable[[Any], Any]
"""Turns a task output (or expected output) into the value an evaluator checks."""

# Reasoning is stored on every evaluation row and shown in tables, so quoted values are
# cut short: the reader needs to recognise the value, not to read all of it.
_PREVIEW_CHARS = 40


def require_choice(value: object, allowed: tuple[str, ...], *, argument: str, owner: str) -> None:
    """Raise ``ValueError`` naming ``value`` and the allowed values if it is not one of them."""
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(repr(choice) for choice in allowed)
        raise ValueError(f"Unknown {argument} {value!r} for {owner}: use one of {choices}")


def require_callable(value: object, *, argument: str, owner: str) -> None:
    """Raise ``TypeError`` if ``value`` is neither ``None`` nor callable (as ddtrace does)."""
    if value is not None and not callable(value):
        raise TypeError(f"{argument} for {owner} must be a callable, got {value!r}")


def extract(value: Any, extractor: Extractor | None) -> Any:
    """Apply ``extractor`` to ``value`` if one was given."""
    return value if extractor is None else extractor(value)


def preview(text: str) -> str:
    """``text`` quoted, shortened to a recognisable prefix when long."""
    if len(text) <= _PREVIEW_CHARS:
        return repr(text)
    return repr(text[:_PREVIEW_CHARS]) + f"… ({len(text)} chars)"


def verdict(passed: bool, reasoning: str) -> EvaluatorResult:
    """A boolean result whose assessment follows its value."""
    return EvaluatorResult(value=passed, reasoning=reasoning, assessment=_assessment(passed))


def _assessment(passed: bool) -> str:
    return "pass" if passed else "fail"


NO_OUTPUT = "output is None (the task failed or the extractor returned None)"
"""Reasoning for a check that has nothing to look at."""
