"""The public surface: one sorted ``__all__``, and ddtrace's names where a script needs them."""

from __future__ import annotations

import assay
import assay.evaluators


def test_all_is_sorted_and_importable() -> None:
    assert assay.__all__ == sorted(assay.__all__)
    for name in assay.__all__:
        assert hasattr(assay, name), name
    assert assay.evaluators.__all__ == sorted(assay.evaluators.__all__)


def test_ddtrace_names_are_exported() -> None:
    # The names `from ddtrace.llmobs import ...` offers for experiments.
    for name in (
        "LLMObs",
        "Dataset",
        "DatasetRecord",
        "BaseEvaluator",
        "BaseSummaryEvaluator",
        "BaseAsyncEvaluator",
        "BaseAsyncSummaryEvaluator",
        "EvaluatorContext",
        "SummaryEvaluatorContext",
        "EvaluatorResult",
        "MultiEvaluatorResult",
        "ExperimentSummary",
    ):
        assert name in assay.__all__, name
    for name in (
        "StringCheckEvaluator",
        "RegexMatchEvaluator",
        "LengthEvaluator",
        "JSONEvaluator",
        "SemanticSimilarityEvaluator",
    ):
        assert name in assay.evaluators.__all__, name


def test_llmobs_signatures_match_ddtrace() -> None:
    import inspect

    def parameters(function: object) -> list[str]:
        return list(inspect.signature(function).parameters)  # type: ignore[arg-type]

    assert parameters(assay.LLMObs.experiment) == [
        "name",
        "task",
        "dataset",
        "evaluators",
        "description",
        "project_name",
        "tags",
        "config",
        "summary_evaluators",
        "runs",
    ]
    assert parameters(assay.LLMObs.create_dataset) == [
        "dataset_name",
        "project_name",
        "description",
        "records",
        "bulk_upload",
        "deduplicate",
    ]
    assert parameters(assay.LLMObs.pull_dataset) == [
        "dataset_name",
        "project_name",
        "version",
        "tags",
    ]
    run = inspect.signature(assay.SyncExperiment.run).parameters
    assert list(run)[:6] == [
        "self",
        "jobs",
        "raise_errors",
        "sample_size",
        "max_retries",
        "retry_delay",
    ]
    assert run["jobs"].default == 1
    assert inspect.signature(assay.Experiment.run).parameters["jobs"].default == 10
