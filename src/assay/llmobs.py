"""``LLMObs``: the facade that mirrors ``ddtrace.llmobs.LLMObs`` for experiments.

A script written for ddtrace runs on Assay after changing its import line. With a
``site`` that is the URL of an Assay server (``"http://assay.internal:8000"``), or
``ASSAY_URL`` set, everything goes to that server (the remote SDK mode); with no ``site``,
or one that is not an Assay server's URL (``"datadoghq.com"``), to the local store. One
line on stderr says where.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from assay import dataset as datasets
from assay import loaders, tracing
from assay.aggregation import EvaluationSummary, summarize
from assay.config import (
    API_KEY,
    APP_KEY,
    PROJECT_NAME,
    REMOTE_URL,
    SITE,
    database_url,
    is_server_url,
)
from assay.dataset import Dataset, DatasetRecord
from assay.errors import NotEnabledError
from assay.experiment import Experiment, SyncExperiment, pulled_experiment
from assay.store import open_backend
from assay.store.backend import Backend
from assay.store.records import JSON, ExperimentFilter, ExperimentInfo, ProjectInfo
from assay.tracing import Span, SpanScope

if TYPE_CHECKING:
    import pandas


class ExperimentSummary(TypedDict):
    """One experiment as ``LLMObs.list_experiments`` returns it (ddtrace's keys)."""

    id: str
    name: str
    experiment: str
    project_id: str
    dataset_id: str
    dataset_version: int
    description: str
    config: dict[str, JSON]
    run_count: int
    tags: list[str]
    parent_experiment_id: str | None
    aggregate_data: dict[str, EvaluationSummary]
    status: str
    error: str | None
    created_at: str
    updated_at: str


class LLMObs:
    """Entry points for datasets and experiments, with ddtrace's names and parameters."""

    _backend: Backend | None = None
    _project_name: str = PROJECT_NAME.default
    _api_key: str = ""
    _app_key: str = ""

    # Lifecycle --------------------------------------------------------------------------

    @classmethod
    def enable(
        cls,
        ml_app: str | None = None,
        integrations_enabled: bool = True,
        agentless_enabled: bool | None = None,
        instrumented_proxy_urls: set[str] | None = None,
        site: str | None = None,
        api_key: str | None = None,
        app_key: str | None = None,
        project_name: str | None = None,
        env: str | None = None,
        service: str | None = None,
        span_processor: Callable[..., Any] | None = None,
        sample_rate: float | None = None,
        agent_service: str | None = None,
        **_unused: Any,
    ) -> None:
        """Start recording. Keys and site fall back to DD_API_KEY, DD_APP_KEY and DD_SITE.

        A ``site`` starting with ``http://`` or ``https://`` is an Assay server (``assay
        serve``): datasets and experiments are kept there, and ``api_key`` (default
        ``ASSAY_API_KEY``, else ``DD_API_KEY``) is the server's API key. Without one,
        ``ASSAY_URL`` names the server; without that, results go to the local store
        (``ASSAY_DATABASE_URL``, else ``~/.assay/assay.db``). The project defaults to
        ``DD_LLMOBS_PROJECT_NAME``, else ``"default-project"``. Parameters that only matter
        to Datadog's tracer are accepted and ignored.
        """
        if os.environ.get("DD_LLMOBS_ENABLED", "").lower() in ("0", "false", "no", "off"):
            return
        site_from = "site" if site is not None else SITE.env
        site = site if site is not None else SITE.value()
        cls._api_key = api_key if api_key is not None else API_KEY.value()
        cls._app_key = app_key if app_key is not None else APP_KEY.value()
        cls._project_name = project_name or PROJECT_NAME.value()
        if cls._backend is not None:
            cls._backend.close()
            cls._backend = None
        remote = is_server_url(site) or bool(REMOTE_URL.value())
        if remote:
            reason = site_from if is_server_url(site) else REMOTE_URL.env
            backend = open_backend(
                site if is_server_url(site) else None, api_key=api_key, app_key=cls._app_key
            )
        else:
            reason = f"site {site!r} is not an Assay server" if site else "no site given"
            backend = open_backend(database_url())
        cls._backend = backend
        if integrations_enabled:
            # Imports no client library: each installed one is patched once it is imported.
            from assay import integrations

            integrations.patch_all()
        if remote:
            where = f"the Assay server at {backend.location}"
        elif backend.location.startswith("/"):
            where = f"the embedded store at {backend.location}"
        else:
            where = f"the store at {backend.location}"
        print(f"assay: results go to {where} ({reason})", file=sys.stderr)

    @classmethod
    def disable(cls) -> None:
        """Stop recording and release the store."""
        if cls._backend is not None:
            cls._backend.close()
        cls._backend = None

    @classmethod
    def enabled(cls) -> bool:
        return cls._backend is not None

    @classmethod
    def _require(cls) -> Backend:
        if cls._backend is None:
            raise NotEnabledError(
                "LLMObs is not enabled: call LLMObs.enable(project_name=...) first"
            )
        return cls._backend

    @classmethod
    def _project(cls, project_name: str | None) -> ProjectInfo:
        if project_name is not None and not project_name.strip():
            raise ValueError("project_name must be a non-empty string when given")
        return cls._require().ensure_project(project_name or cls._project_name)

    # Datasets ---------------------------------------------------------------------------

    @classmethod
    def create_dataset(
        cls,
        dataset_name: str,
        project_name: str | None = None,
        description: str = "",
        records: Sequence[DatasetRecord | dict[str, Any]] | None = None,
        bulk_upload: bool = False,
        deduplicate: bool = True,
    ) -> Dataset:
        """Create (or get, when the name exists) a dataset and add ``records`` to it."""
        return datasets.create_dataset(
            cls._require(),
            cls._project(project_name),
            dataset_name,
            description=description,
            records=records,
            deduplicate=deduplicate,
        )

    @classmethod
    def create_dataset_from_csv(
        cls,
        csv_path: str | Path,
        dataset_name: str,
        input_data_columns: list[str],
        expected_output_columns: list[str] | None = None,
        metadata_columns: list[str] | None = None,
        csv_delimiter: str = ",",
        description: str = "",
        project_name: str | None = None,
        deduplicate: bool = True,
        id_column: str | None = None,
    ) -> Dataset:
        """A dataset from a CSV file; each row's chosen columns become its fields."""
        return loaders.create_dataset_from_csv(
            cls._require(),
            cls._project(project_name),
            csv_path,
            dataset_name,
            input_data_columns,
            expected_output_columns=expected_output_columns,
            metadata_columns=metadata_columns,
            csv_delimiter=csv_delimiter,
            description=description,
            deduplicate=deduplicate,
            id_column=id_column,
        )

    @classmethod
    def create_dataset_from_jsonl(
        cls,
        path: str | Path,
        dataset_name: str,
        project_name: str | None = None,
        description: str = "",
        deduplicate: bool = True,
    ) -> Dataset:
        """A dataset from a JSON Lines file of records (``input_data``, ``expected_output``...)."""
        return loaders.create_dataset_from_jsonl(
            cls._require(),
            cls._project(project_name),
            path,
            dataset_name,
            description=description,
            deduplicate=deduplicate,
        )

    @classmethod
    def create_dataset_from_dataframe(
        cls,
        dataframe: pandas.DataFrame,
        dataset_name: str,
        input_data_columns: list[str],
        expected_output_columns: list[str] | None = None,
        metadata_columns: list[str] | None = None,
        project_name: str | None = None,
        description: str = "",
        deduplicate: bool = True,
    ) -> Dataset:
        """A dataset from a pandas DataFrame, columns chosen as for CSV files."""
        return loaders.create_dataset_from_dataframe(
            cls._require(),
            cls._project(project_name),
            dataframe,
            dataset_name,
            input_data_columns=input_data_columns,
            expected_output_columns=expected_output_columns,
            metadata_columns=metadata_columns,
            description=description,
            deduplicate=deduplicate,
        )

    @classmethod
    def pull_dataset(
        cls,
        dataset_name: str,
        project_name: str | None = None,
        version: int | None = None,
        tags: list[str] | None = None,
    ) -> Dataset:
        """A stored dataset, at its current version or exactly ``version``."""
        return datasets.pull_dataset(
            cls._require(), cls._project(project_name), dataset_name, version=version, tags=tags
        )

    # Experiments ------------------------------------------------------------------------

    @classmethod
    def experiment(
        cls,
        name: str,
        task: Callable[..., Any],
        dataset: Dataset,
        evaluators: Sequence[Any],
        description: str = "",
        project_name: str | None = None,
        tags: dict[str, str] | None = None,
        config: dict[str, JSON] | None = None,
        summary_evaluators: Sequence[Any] | None = None,
        runs: int = 1,
    ) -> SyncExperiment:
        """An experiment; ``.run(jobs=...)`` executes it ``runs`` times over the dataset."""
        return SyncExperiment(
            name,
            task,
            dataset,
            evaluators,
            description=description,
            project_name=project_name or cls._project_name,
            tags=tags,
            config=config,
            summary_evaluators=summary_evaluators,
            runs=runs,
            backend=cls._require(),
        )

    @classmethod
    def async_experiment(
        cls,
        name: str,
        task: Callable[..., Any],
        dataset: Dataset,
        evaluators: Sequence[Any],
        description: str = "",
        project_name: str | None = None,
        tags: dict[str, str] | None = None,
        config: dict[str, JSON] | None = None,
        summary_evaluators: Sequence[Any] | None = None,
        runs: int = 1,
    ) -> Experiment:
        """An experiment with an ``async def`` task; ``await experiment.run()``."""
        return Experiment(
            name,
            task,
            dataset,
            evaluators,
            description=description,
            project_name=project_name or cls._project_name,
            tags=tags,
            config=config,
            summary_evaluators=summary_evaluators,
            runs=runs,
            backend=cls._require(),
        )

    @classmethod
    def pull_experiment(cls, experiment_id: str) -> SyncExperiment:
        """A stored experiment with its results (every run), ready for ``summary()``."""
        backend = cls._require()
        return pulled_experiment(backend, backend.resolve_experiment(experiment_id))

    @classmethod
    def list_experiments(
        cls,
        experiment_name: str | None = None,
        metadata_filter: dict[str, Any] | None = None,
        parent_experiment_ids: list[str] | None = None,
        project_name: str | None = None,
        page_limit: int = 100,
        max_results: int | None = None,
    ) -> list[ExperimentSummary]:
        """Stored experiments, newest first, with their aggregates (for CI gating).

        ``metadata_filter={"tags": ["git.commit.sha:abc123"]}`` keeps experiments having
        every listed tag.
        """
        backend = cls._require()
        tags: dict[str, str] = {}
        for key, value in (metadata_filter or {}).items():
            if key != "tags":
                raise ValueError(
                    f"metadata_filter supports the key 'tags' (a list of 'k:v'), not {key!r}"
                )
            for tag in value:
                name, _, tag_value = str(tag).partition(":")
                tags[name] = tag_value
        project_id = None
        if project_name is not None:
            project = backend.find_project(project_name)
            if project is None:
                return []
            project_id = project.id
        infos = backend.list_experiments(
            ExperimentFilter(
                name=experiment_name,
                project_id=project_id,
                parent_experiment_ids=tuple(parent_experiment_ids or ()),
                tags=tags,
                limit=max_results,
            )
        )
        return [_experiment_summary(backend, info) for info in infos]

    # Tracing ----------------------------------------------------------------------------
    # Spans inside a task call. Each helper is a context manager and a decorator; outside
    # a running experiment it records nothing and does not fail.

    @classmethod
    def llm(
        cls,
        model_name: str | None = None,
        name: str | None = None,
        model_provider: str | None = None,
        session_id: str | None = None,
        ml_app: str | None = None,
    ) -> SpanScope:
        """A call to a language model; its token metrics give the trace's tokens and cost.

        ``model_provider`` uses ddtrace's names (``openai``, ``anthropic``...)::

            with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai"):
                LLMObs.annotate(metrics={"input_tokens": 120, "output_tokens": 30})
        """
        return tracing.llm(
            model_name=model_name,
            name=name,
            model_provider=model_provider,
            session_id=session_id,
            ml_app=ml_app,
        )

    @classmethod
    def embedding(
        cls,
        model_name: str | None = None,
        name: str | None = None,
        model_provider: str | None = None,
        session_id: str | None = None,
        ml_app: str | None = None,
    ) -> SpanScope:
        """A call to an embedding model; its tokens and cost roll up like an LLM call's."""
        return tracing.embedding(
            model_name=model_name,
            name=name,
            model_provider=model_provider,
            session_id=session_id,
            ml_app=ml_app,
        )

    @classmethod
    def workflow(
        cls, name: str | None = None, session_id: str | None = None, ml_app: str | None = None
    ) -> SpanScope:
        """A predefined sequence of steps."""
        return tracing.workflow(name=name, session_id=session_id, ml_app=ml_app)

    @classmethod
    def task(
        cls, name: str | None = None, session_id: str | None = None, ml_app: str | None = None
    ) -> SpanScope:
        """A standalone step that calls no model and no external service."""
        return tracing.task(name=name, session_id=session_id, ml_app=ml_app)

    @classmethod
    def tool(
        cls, name: str | None = None, session_id: str | None = None, ml_app: str | None = None
    ) -> SpanScope:
        """A call to an external interface or API."""
        return tracing.tool(name=name, session_id=session_id, ml_app=ml_app)

    @classmethod
    def agent(
        cls, name: str | None = None, session_id: str | None = None, ml_app: str | None = None
    ) -> SpanScope:
        """A loop in which a model decides which actions to take."""
        return tracing.agent(name=name, session_id=session_id, ml_app=ml_app)

    @classmethod
    def retrieval(
        cls, name: str | None = None, session_id: str | None = None, ml_app: str | None = None
    ) -> SpanScope:
        """A search returning documents from a knowledge base."""
        return tracing.retrieval(name=name, session_id=session_id, ml_app=ml_app)

    @classmethod
    def annotate(
        cls,
        span: Span | None = None,
        prompt: JSON = None,
        input_data: JSON = None,
        output_data: JSON = None,
        metadata: dict[str, JSON] | None = None,
        metrics: dict[str, int | float] | None = None,
        tags: dict[str, JSON] | None = None,
        tool_definitions: list[dict[str, JSON]] | None = None,
        _name: str | None = None,
    ) -> None:
        """Record data on ``span``, else the innermost open span, else the task's root span.

        Input, output and prompt replace what was there; metadata, metrics and tags are
        merged. ``metrics={"input_tokens": ..., "output_tokens": ...}`` on an LLM span
        makes the trace's token counts and estimated cost. Outside an experiment, a no-op.
        """
        tracing.annotate(
            span,
            prompt=prompt,
            input_data=input_data,
            output_data=output_data,
            metadata=metadata,
            metrics=metrics,
            tags=tags,
            tool_definitions=tool_definitions,
            name=_name,
        )


def _experiment_summary(backend: Backend, info: ExperimentInfo) -> ExperimentSummary:
    rows = backend.experiment_rows(info.id)
    return {
        "id": info.id,
        "name": info.name,
        "experiment": info.name,
        "project_id": info.project_id,
        "dataset_id": info.dataset_id,
        "dataset_version": info.dataset_version,
        "description": info.description,
        "config": info.config,
        "run_count": info.run_count,
        "tags": [f"{key}:{value}" for key, value in info.tags.items()],
        "parent_experiment_id": info.parent_experiment_id,
        "aggregate_data": summarize(rows, [run.run_iteration for run in info.runs]),
        "status": info.status,
        "error": info.error,
        "created_at": info.created_at.isoformat(),
        "updated_at": info.updated_at.isoformat(),
    }
