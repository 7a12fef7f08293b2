"""Scoring how close in meaning an output is to its expected output."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from assay.evaluation import BaseEvaluator, EvaluatorContext, EvaluatorResult
from assay.evaluators._support import require_callable

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike

EmbeddingFunction = Callable[[str], "ArrayLike"]
"""Turns a text into a vector of floats, e.g. an embeddings API or a local model."""


class SemanticSimilarityEvaluator(BaseEvaluator):
    """Score the cosine similarity of output and expected output embeddings, in ``[0, 1]``.

    The cosine ``s`` in ``[-1, 1]`` is reported as ``(s + 1) / 2``, so unrelated
    (orthogonal) texts score 0.5; the assessment is ``"pass"`` when the score is at least
    ``threshold``. Both texts go through ``str()`` and ``embedding_fn``. As in ddtrace,
    two ``None`` values score 1.0, one ``None`` scores 0.0, and an all-zero embedding
    counts as orthogonal.

    Example::

        def embed(text: str) -> list[float]:
            return [text.count("a"), text.count("b")]

        similar = SemanticSimilarityEvaluator(embed, threshold=0.9)
        result = similar.evaluate(EvaluatorContext(
            input_data="", output_data="aab", expected_output="aaab"
        ))
        assert result.assessment == "pass"
    """

    def __init__(
        self,
        embedding_fn: EmbeddingFunction,
        threshold: float = 0.7,
        name: str | None = None,
    ) -> None:
        """Check ``embedding_fn`` and ``threshold``; raise ``TypeError``/``ValueError`` if bad."""
        super().__init__(name=name)
        owner = type(self).__name__
        if embedding_fn is None:
            raise TypeError(f"{owner} needs an embedding_fn that turns a text into a vector")
        require_callable(embedding_fn, argument="embedding_fn", owner=owner)
        # ``not 0 <= x <= 1`` rather than ``x < 0 or x > 1`` so that NaN is refused too.
        if not 0 <= threshold <= 1:
            raise ValueError(
                f"threshold {threshold!r} for {owner} is outside the allowed range [0, 1] "
                "(scores are (cosine + 1) / 2)"
            )
        self.embedding_fn = embedding_fn
        self.threshold = threshold

    def evaluate(self, context: EvaluatorContext) -> EvaluatorResult:
        """Embed both texts and score their similarity."""
        output, expected = context.output_data, context.expected_output
        if output is None and expected is None:
            return self._result(1.0, "output and expected output are both None")
        if output is None or expected is None:
            missing = "output" if output is None else "expected output"
            return self._result(0.0, f"{missing} is None")
        output_vector = self._embed(str(output), "output")
        expected_vector = self._embed(str(expected), "expected output")
        if output_vector.shape != expected_vector.shape:
            raise ValueError(
                f"embedding_fn returned vectors of different lengths: {output_vector.size} "
                f"for the output, {expected_vector.size} for the expected output"
            )
        import numpy as np  # here, not at import: most experiments never load numpy

        norms = float(np.linalg.norm(output_vector)) * float(np.linalg.norm(expected_vector))
        if norms == 0:
            return self._result(0.5, "an embedding is all zeros, so it counts as orthogonal")
        cosine = float(np.dot(output_vector, expected_vector)) / norms
        # Rounding can push |cosine| a hair past 1; the score must stay within [0, 1].
        score = (min(1.0, max(-1.0, cosine)) + 1) / 2
        return self._result(score, f"cosine similarity {cosine:.4f}")

    def _embed(self, text: str, what: str) -> np.ndarray[tuple[int], np.dtype[np.float64]]:
        import numpy as np

        vector = np.asarray(self.embedding_fn(text), dtype=np.float64)
        if vector.ndim != 1 or vector.size == 0:
            raise ValueError(
                f"embedding_fn must return a non-empty 1-D vector; for the {what} it "
                f"returned shape {vector.shape}"
            )
        return vector

    def _result(self, score: float, why: str) -> EvaluatorResult:
        passed = score >= self.threshold
        comparison = ">=" if passed else "<"
        return EvaluatorResult(
            value=score,
            reasoning=f"score {score:.4f} {comparison} threshold {self.threshold} ({why})",
            assessment="pass" if passed else "fail",
        )
