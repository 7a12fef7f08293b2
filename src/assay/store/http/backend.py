"""``HttpBackend``: the backend interface against an Assay server (``assay serve``).

The SDK holds it exactly as it holds a ``SqlBackend`` and gets the same answers: the
server is a ``SqlBackend`` behind HTTP. Projects, dataset creation and look-ups, dataset
deletes, status changes and searches use the Datadog-shaped routes (the ones ddtrace
uses); everything those cannot carry without loss goes through Assay's ``/sdk/...``
routes (``assay.server.api.sdk``).

Rows are sent in batches of at most ``batch_rows`` rows and about ``batch_bytes`` bytes
of JSON, gzip-compressed: one ``write_rows`` call of the SDK's writer (up to 2,000 rows)
is a few requests, each one transaction on the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from assay.errors import (
    AssayError,
    DatasetError,
    DatasetNotFoundError,
    ExperimentError,
    ExperimentNotFoundError,
    NotFoundError,
    QueryError,
)
from assay.query import check_page
from assay.store.comparison_values import ComparisonValues
from assay.store.http import encoding
from assay.store.http.transport import Failures, Method, Retry, ServerConnection
from assay.store.records import (
    UNCHANGED,
    DatasetInfo,
    DatasetVersionInfo,
    EvaluationRecord,
    ExperimentFilter,
    ExperimentInfo,
    ExperimentSpec,
    ExperimentStatus,
    PinnedBaseline,
    ProjectInfo,
    RecordAggregate,
    RecordInsert,
    RecordUpdate,
    RowRecord,
    RunInfo,
    SearchPage,
    StoredRecord,
    SummaryEvaluationRecord,
)

SEARCH_PAGE_LIMIT = 5000
"""The largest page the search route gives; larger ``limit`` values are read in pages."""

_PLAIN = Failures()
_DATASETS = Failures(not_found=DatasetNotFoundError, invalid=DatasetError)
_EXPERIMENTS = Failures(not_found=ExperimentNotFoundError, invalid=ExperimentError)


def _segment(value: str, failures: Failures) -> str:
    """``value`` as one URL path segment; an id no store could hold is not found here."""
    if not value or value in (".", "..") or "/" in value or "\x00" in value:
        raise failures.not_found(f"No such id {value!r}")
    return quote(value, safe="")


def _query_error(query: str) -> Callable[[str], AssayError]:
    """Turns the server's message back into the ``QueryError`` the store raised.

    ``str(QueryError)`` ends with the query and a caret under the position at fault; the
    position is read back from the caret's column.
    """

    def rebuild(detail: str) -> AssayError:
        lines = detail.split("\n")
        caret = lines[-1] if len(lines) >= 3 else ""
        if caret.startswith("  ") and caret.strip() == "^":
            return QueryError("\n".join(lines[:-2]), query=query, position=len(caret) - 3)
        return QueryError(detail, query=query)

    return rebuild


class HttpBackend:
    """Everything kept by the Assay server at ``url`` (``http://host:port``).

    ``api_key`` is sent as ``DD-API-KEY`` and as ``Authorization: Bearer``; ``app_key``
    (ddtrace's second key, which Assay does not need) as ``DD-APPLICATION-KEY``.
    ``retries`` and ``backoff`` govern retries of failed requests (see
    ``assay.store.http.transport``); ``transport`` replaces httpx's (for tests).
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str = "",
        app_key: str = "",
        timeout: float = 120.0,
        retries: int = 4,
        backoff: float = 0.25,
        batch_rows: int = 500,
        batch_bytes: int = 4 * 1024 * 1024,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._server = ServerConnection(
            url,
            api_key=api_key,
            app_key=app_key,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            transport=transport,
        )
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes

    @property
    def location(self) -> str:
        return self._server.url

    def close(self) -> None:
        self._server.close()

    def _call(
        self,
        method: Method,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        document: Any = None,
        body: bytes | None = None,
        retry: Retry = "always",
        failures: Failures = _PLAIN,
    ) -> Any:
        if document is not None:
            body = encoding.encode(document).encode("utf-8")
        return self._server.request(
            method, path, params=params, body=body, retry=retry, failures=failures
        )

    def _data(self, method: Method, path: str, **options: Any) -> Any:
        answer = self._call(method, path, **options)
        return answer["data"] if answer is not None else None

    # Projects -----------------------------------------------------------------------------

    def ensure_project(self, name: str, description: str = "") -> ProjectInfo:
        document = {
            "data": {"type": "projects", "attributes": {"name": name, "description": description}}
        }
        return encoding.project_from(self._data("POST", "/projects", document=document))

    def find_project(self, name: str) -> ProjectInfo | None:
        found = self._data("GET", "/projects", params={"filter[name]": name})
        return encoding.project_from(found[0]) if found else None

    # Datasets -----------------------------------------------------------------------------

    def create_dataset(self, project_id: str, name: str, description: str = "") -> DatasetInfo:
        failures = Failures(not_found=NotFoundError, invalid=DatasetError)  # a project's 404
        project = _segment(project_id, failures)
        document = {
            "data": {"type": "datasets", "attributes": {"name": name, "description": description}}
        }
        created = self._data("POST", f"/{project}/datasets", document=document, failures=failures)
        return encoding.dataset_from(created)

    def find_dataset(self, project_id: str, name: str) -> DatasetInfo | None:
        try:
            project = _segment(project_id, Failures())
            found = self._data(
                "GET", f"/{project}/datasets", params={"filter[name]": name, "page[limit]": 1}
            )
        except NotFoundError:
            return None  # no such project: no such dataset in it
        return encoding.dataset_from(found[0]) if found else None

    def get_dataset(self, dataset_id: str) -> DatasetInfo:
        path = f"/sdk/datasets/{_segment(dataset_id, _DATASETS)}"
        return encoding.dataset_from(self._data("GET", path, failures=_DATASETS))

    def list_datasets(self, project_id: str | None = None) -> list[DatasetInfo]:
        params = {"filter[project_id]": project_id} if project_id is not None else None
        found = self._data("GET", "/sdk/datasets", params=params)
        return [encoding.dataset_from(item) for item in found]

    def update_dataset_records(
        self,
        dataset_id: str,
        *,
        inserts: Sequence[RecordInsert] = (),
        updates: Sequence[RecordUpdate] = (),
        deletes: Sequence[str] = (),
        deduplicate: bool = True,
        create_new_version: bool = True,
    ) -> int:
        path = f"/sdk/datasets/{_segment(dataset_id, _DATASETS)}/changes"
        attributes = {
            "inserts": [encoding.insert_json(record) for record in inserts],
            "updates": [encoding.update_json(record) for record in updates],
            "deletes": list(deletes),
            "deduplicate": deduplicate,
            "create_new_version": create_new_version,
        }
        document = {"data": {"type": "dataset_changes", "attributes": attributes}}
        try:
            # Strict: a local store refuses what JSON cannot hold, so the server must see it.
            body = encoding.encode_strict(document).encode("utf-8")
        except (TypeError, ValueError) as error:
            raise _not_json(inserts, updates, error) from error
        # Not repeated when its answer is lost: a repeated delta could make two versions.
        changed = self._data("POST", path, body=body, retry="unsent", failures=_DATASETS)
        return int(changed["attributes"]["current_version"])

    def dataset_records(
        self, dataset_id: str, *, version: int | None = None, tags: Sequence[str] = ()
    ) -> list[StoredRecord]:
        path = f"/sdk/datasets/{_segment(dataset_id, _DATASETS)}/records"
        params: dict[str, Any] = {"filter[tags]": list(tags)}
        if version is not None:
            params["filter[version]"] = version
        found = self._data("GET", path, params=params, failures=_DATASETS)
        return [encoding.stored_record_from(item) for item in found]

    def dataset_versions(self, dataset_id: str) -> list[DatasetVersionInfo]:
        path = f"/sdk/datasets/{_segment(dataset_id, _DATASETS)}/versions"
        found = self._data("GET", path, failures=_DATASETS)
        return [encoding.version_from(item) for item in found]

    def delete_dataset(self, dataset_id: str) -> None:
        document = {
            "data": {
                "type": "datasets",
                "attributes": {"type": "soft", "dataset_ids": [dataset_id]},
            }
        }
        self._call("POST", "/datasets/delete", document=document, failures=_DATASETS)

    # Experiments --------------------------------------------------------------------------

    def create_experiment(self, spec: ExperimentSpec, runs: Sequence[RunInfo]) -> ExperimentInfo:
        document = {"data": {"type": "experiments", "attributes": encoding.spec_json(spec, runs)}}
        created = self._data(
            "POST", "/sdk/experiments", document=document, retry="unsent", failures=_EXPERIMENTS
        )
        return encoding.experiment_from(created)

    def set_experiment_status(
        self,
        experiment_id: str,
        status: ExperimentStatus,
        error: str | None = None,
        *,
        runner: str | None = None,
    ) -> None:
        experiment = _segment(experiment_id, _EXPERIMENTS)
        attributes: dict[str, Any] = {"status": status, "error": error}
        # The Datadog route has no runner: only a status change that names one needs ours.
        path = f"/experiments/{experiment}"
        if runner is not None:
            attributes["runner"] = runner
            path = f"/sdk{path}"
        document = {"data": {"type": "experiments", "attributes": attributes}}
        self._call("PATCH", path, document=document, failures=_EXPERIMENTS)

    def get_experiment(self, experiment_id: str) -> ExperimentInfo:
        path = f"/sdk/experiments/{_segment(experiment_id, _EXPERIMENTS)}"
        return encoding.experiment_from(self._data("GET", path, failures=_EXPERIMENTS))

    def resolve_experiment(self, reference: str) -> ExperimentInfo:
        found = self._data(
            "GET",
            "/sdk/experiments/resolve",
            params={"filter[reference]": reference},
            failures=_EXPERIMENTS,
        )
        return encoding.experiment_from(found)

    def list_experiments(self, where: ExperimentFilter | None = None) -> list[ExperimentInfo]:
        where = where or ExperimentFilter()
        params: dict[str, Any] = {"filter[parent_experiment_id]": list(where.parent_experiment_ids)}
        for key, value in (
            ("filter[name]", where.name),
            ("filter[project_id]", where.project_id),
            ("filter[dataset_id]", where.dataset_id),
            ("filter[status]", where.status),
            ("page[limit]", where.limit),
        ):
            if value is not None:
                params[key] = value
        if where.tags:
            params["filter[tags]"] = encoding.encode(where.tags)
        found = self._data("GET", "/sdk/experiments", params=params)
        return [encoding.experiment_from(item) for item in found]

    def write_rows(self, rows: Sequence[RowRecord]) -> None:
        by_experiment: dict[str, list[RowRecord]] = {}
        for row in rows:
            by_experiment.setdefault(row.experiment_id, []).append(row)
        for experiment_id, written in by_experiment.items():
            path = f"/sdk/experiments/{_segment(experiment_id, _EXPERIMENTS)}/rows"
            for body in self._row_batches(written):
                # A repeated batch is refused whole (its span ids are taken): safe to retry.
                self._call("POST", path, body=body, retry="written_once", failures=_EXPERIMENTS)

    def _row_batches(self, rows: Sequence[RowRecord]) -> Iterator[bytes]:
        pieces: list[str] = []
        size = 0
        for row in rows:
            piece = encoding.encode(
                encoding.resource("experiment_rows", row.span_id, encoding.row_json(row))
            )
            if pieces and (len(pieces) >= self.batch_rows or size + len(piece) > self.batch_bytes):
                yield _data_list(pieces)
                pieces, size = [], 0
            pieces.append(piece)
            size += len(piece)
        if pieces:
            yield _data_list(pieces)

    def write_summary_evaluations(
        self, experiment_id: str, run_iteration: int, evaluations: Sequence[EvaluationRecord]
    ) -> None:
        path = f"/sdk/experiments/{_segment(experiment_id, _EXPERIMENTS)}/summary_evaluations"
        attributes = {
            "run_iteration": run_iteration,
            "evaluations": [encoding.evaluation_json(item) for item in evaluations],
        }
        document = {"data": {"type": "summary_evaluations", "attributes": attributes}}
        self._call("POST", path, document=document, retry="unsent", failures=_EXPERIMENTS)

    def experiment_rows(
        self, experiment_id: str, *, run_iteration: int | None = None, with_spans: bool = False
    ) -> list[RowRecord]:
        path = f"/sdk/experiments/{_segment(experiment_id, _EXPERIMENTS)}/rows"
        params: dict[str, Any] = {}
        if run_iteration is not None:
            params["filter[run_iteration]"] = run_iteration
        if with_spans:
            params["include"] = "spans"
        found = self._data("GET", path, params=params, failures=_EXPERIMENTS)
        return [encoding.row_from(experiment_id, item["attributes"]) for item in found]

    def comparison_values(self, experiment_id: str, *, run: int | None = None) -> ComparisonValues:
        # The server computes them in its database: one small document, never the rows.
        path = f"/sdk/experiments/{_segment(experiment_id, _EXPERIMENTS)}/comparison_values"
        params = {"filter[run_iteration]": run} if run is not None else {}
        found = self._data("GET", path, params=params, failures=_EXPERIMENTS)
        return ComparisonValues.from_json(found["attributes"])

    def summary_evaluations(self, experiment_id: str) -> list[SummaryEvaluationRecord]:
        path = f"/sdk/experiments/{_segment(experiment_id, _EXPERIMENTS)}/summary_evaluations"
        found = self._data("GET", path, failures=_EXPERIMENTS)
        return [encoding.summary_evaluation_from(item["attributes"]) for item in found]

    def refresh_aggregates(self, experiment_id: str, *, only_if_stale: bool = False) -> None:
        experiment = _segment(experiment_id, _EXPERIMENTS)
        self._call(
            "POST",
            f"/sdk/experiments/{experiment}/record_aggregates/refresh",
            params={"only_if_stale": only_if_stale},
            failures=_EXPERIMENTS,
        )

    def record_aggregates(self, experiment_id: str) -> list[RecordAggregate]:
        path = f"/sdk/experiments/{_segment(experiment_id, _EXPERIMENTS)}/record_aggregates"
        found = self._data("GET", path, failures=_EXPERIMENTS)
        return [encoding.aggregate_from(item["attributes"]) for item in found]

    def search(
        self,
        experiment_id: str,
        query: str,
        *,
        run: int | None = None,
        limit: int = 50,
        offset: int = 0,
        sort: str | None = None,
    ) -> SearchPage:
        check_page(query, limit, offset)  # here too: a URL cannot carry a NUL
        path = f"/experiments/{_segment(experiment_id, _EXPERIMENTS)}/records"
        failures = Failures(not_found=ExperimentNotFoundError, invalid=_query_error(query))
        params: dict[str, Any] = {"filter[query]": query}
        if run is not None:
            params["filter[run_iteration]"] = run
        if sort is not None:
            params["sort"] = sort
        items: list[dict[str, Any]] = []
        first: Any = None
        while True:
            wanted = min(limit - len(items), SEARCH_PAGE_LIMIT)
            params["page[limit]"] = wanted
            params["page[offset]"] = offset + len(items)
            answer = self._call("GET", path, params=params, failures=failures)
            first = first or answer
            page = [item["attributes"] for item in answer["data"]]
            items.extend(page)
            if len(page) < wanted or len(items) >= limit or wanted == 0:
                break
        meta = first["meta"]
        return SearchPage(
            total=meta["total"],
            items=items,
            multi_run=meta["multi_run"],
            description=meta["description"],
            of=meta["of"],
        )

    def count_rows(self, experiment_id: str) -> int:
        path = f"/sdk/experiments/{_segment(experiment_id, _EXPERIMENTS)}/rows/count"
        return int(self._data("GET", path, failures=_EXPERIMENTS)["attributes"]["rows"])

    # Baselines ----------------------------------------------------------------------------

    def set_baseline(self, experiment_id: str) -> PinnedBaseline:
        attributes = {"experiment_id": experiment_id}
        document = {"data": {"type": "baselines", "attributes": attributes}}
        # Pinning the same experiment twice is pinning it once: safe to repeat.
        pinned = self._data("POST", "/sdk/baselines", document=document, failures=_EXPERIMENTS)
        return encoding.baseline_from(pinned)

    def list_baselines(
        self, *, project_id: str | None = None, dataset_id: str | None = None
    ) -> list[PinnedBaseline]:
        params: dict[str, Any] = {}
        if project_id is not None:
            params["filter[project_id]"] = project_id
        if dataset_id is not None:
            params["filter[dataset_id]"] = dataset_id
        found = self._data("GET", "/sdk/baselines", params=params)
        return [encoding.baseline_from(item) for item in found]


def _data_list(pieces: list[str]) -> bytes:
    return ('{"data":[' + ",".join(pieces) + "]}").encode("utf-8")


def _not_json(
    inserts: Sequence[RecordInsert], updates: Sequence[RecordUpdate], error: Exception
) -> DatasetError:
    """The error a local store raises for the first record with a value JSON cannot hold
    (an object, NaN, an infinity), in the store's words."""
    changes: list[tuple[Any, Any, Any]] = [
        (record.record_id, (record.input_data, record.expected_output), record.metadata)
        for record in inserts
    ]
    changes += [
        (
            record.record_id,
            tuple(v for v in (record.input_data, record.expected_output) if v is not UNCHANGED),
            None if record.metadata is UNCHANGED else record.metadata,
        )
        for record in updates
    ]
    for record_id, content, metadata in changes:
        for what, value in (("an input or expected output", content), ("metadata", metadata)):
            try:
                encoding.encode_strict(value)
            except (TypeError, ValueError) as found:
                if what == "metadata" and not isinstance(value, dict):
                    return DatasetError(
                        f"Record {record_id!r} has metadata {value!r}; metadata must be a dict"
                    )
                return DatasetError(
                    f"Record {record_id!r} has {what} that is not JSON ({found}); use only "
                    "dicts, lists, strings, finite numbers, booleans and None"
                )
    return DatasetError(f"A record change is not JSON ({error}); use only JSON values")
