"""Assay: self-hosted LLM experiments, compatible with ``ddtrace.llmobs``.

Change ``from ddtrace.llmobs import LLMObs, EvaluatorResult`` to
``from assay import LLMObs, EvaluatorResult`` and the same script runs against a local
store::

    from assay import LLMObs

    LLMObs.enable(project_name="capitals")
    dataset = LLMObs.create_dataset(dataset_name="capitals", records=[...])
    experiment = LLMObs.experiment(
        name="capital-cities", task=task, dataset=dataset, evaluators=[exact_match], runs=5
    )
    experiment.run(jobs=4)
    print(experiment.summary())
"""

from assay._version import __version__
from assay.aggregation import EvaluationSummary, RecordSummary
from assay.compare import Comparison, compare
from assay.dataset import Dataset, DatasetRecord
from assay.errors import (
    AssayError,
    BudgetExceededError,
    DatasetError,
    DatasetNotFoundError,
    ExperimentError,
    ExperimentNotFoundError,
    NotEnabledError,
    QueryError,
)
from assay.evaluation import (
    BaseAsyncEvaluator,
    BaseAsyncSummaryEvaluator,
    BaseEvaluator,
    BaseSummaryEvaluator,
    EvaluatorContext,
    EvaluatorResult,
    MultiEvaluatorResult,
    SummaryEvaluatorContext,
)
from assay.evaluators import (
    JSONEvaluator,
    LengthEvaluator,
    RegexMatchEvaluator,
    SemanticSimilarityEvaluator,
    StringCheckEvaluator,
)
from assay.execution.calls import CallTimeout
from assay.execution.context import RowContext, current_row
from assay.execution.ratelimit import RateLimited
from assay.experiment import Experiment, SyncExperiment
from assay.judge import (
    BooleanStructuredOutput,
    CategoricalStructuredOutput,
    LLMJudge,
    ScoreStructuredOutput,
)
from assay.llmobs import ExperimentSummary, LLMObs
from assay.results import ExperimentResult, ExperimentRowResult, ExperimentRun
from assay.store.records import SearchPage

__all__ = [
    "AssayError",
    "BaseAsyncEvaluator",
    "BaseAsyncSummaryEvaluator",
    "BaseEvaluator",
    "BaseSummaryEvaluator",
    "BooleanStructuredOutput",
    "BudgetExceededError",
    "CallTimeout",
    "CategoricalStructuredOutput",
    "Comparison",
    "Dataset",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetRecord",
    "EvaluationSummary",
    "EvaluatorContext",
    "EvaluatorResult",
    "Experiment",
    "ExperimentError",
    "ExperimentNotFoundError",
    "ExperimentResult",
    "ExperimentRowResult",
    "ExperimentRun",
    "ExperimentSummary",
    "JSONEvaluator",
    "LLMJudge",
    "LLMObs",
    "LengthEvaluator",
    "MultiEvaluatorResult",
    "NotEnabledError",
    "QueryError",
    "RateLimited",
    "RecordSummary",
    "RegexMatchEvaluator",
    "RowContext",
    "ScoreStructuredOutput",
    "SearchPage",
    "SemanticSimilarityEvaluator",
    "StringCheckEvaluator",
    "SummaryEvaluatorContext",
    "SyncExperiment",
    "__version__",
    "compare",
    "current_row",
]
