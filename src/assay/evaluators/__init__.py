"""Ready-made evaluators, the same as ``ddtrace.llmobs``'s built-ins.

Each is a :class:`~assay.evaluation.BaseEvaluator` returning an
:class:`~assay.evaluation.EvaluatorResult` with a ``"pass"``/``"fail"`` assessment and a
one-line reasoning. Bad constructor arguments fail at construction, not on the first row.
"""

from assay.evaluators.json_check import JSONEvaluator
from assay.evaluators.length import LengthEvaluator
from assay.evaluators.regex_match import RegexMatchEvaluator
from assay.evaluators.semantic_similarity import SemanticSimilarityEvaluator
from assay.evaluators.string_check import StringCheckEvaluator

__all__ = [
    "JSONEvaluator",
    "LengthEvaluator",
    "RegexMatchEvaluator",
    "SemanticSimilarityEvaluator",
    "StringCheckEvaluator",
]
