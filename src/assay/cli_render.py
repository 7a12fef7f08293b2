"""What the ``assay`` command shows: rich tables for people, plain dicts for ``--json``.

Kept apart from :mod:`assay.cli` so the command module stays about arguments and exits.
Everything about one experiment reads an :class:`ExperimentReport`, built once from the
store by :func:`experiment_report`, so ``assay demo`` and ``assay show`` print the same
thing.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from assay.aggregation import (
    AggregateValue,
    EvaluationSummary,
    RecordEvaluation,
    RecordSummary,
    SummaryEvaluationRuns,
    summarize,
    summarize_summary_evaluations,
)
from assay.experiment import SyncExperiment, pulled_experiment
from assay.store.backend import Backend
from assay.store.records import JSON, ExperimentInfo, MetricType, SearchPage
from assay.store.sql.keys import ApiKeyInfo
from assay.trace_metrics import TraceMetric

_NOTHING = "—"
_RUN_COLUMNS = 10
_STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "interrupted": "yellow",
    "running": "cyan",
    "created": "dim",
}


@dataclass(frozen=True)
class ExperimentReport:
    """Everything ``assay show`` prints about one experiment, for all runs or one."""

    info: ExperimentInfo
    experiment: SyncExperiment
    run: int | None
    """The one run shown, or None for all of them."""
    rows: int
    """Rows (record x run) stored for the runs shown."""
    failed_rows: int
    """Of those, the rows whose task call raised."""
    summary: dict[str, EvaluationSummary]
    record_summaries: list[RecordSummary]
    summary_evaluations: dict[str, SummaryEvaluationRuns]
    metrics: dict[str, TraceMetric]

    @property
    def iterations(self) -> list[int]:
        """The run iterations shown, in order."""
        if self.run is not None:
            return [self.run]
        return [run.run_iteration for run in self.info.runs]


def experiment_report(
    backend: Backend, info: ExperimentInfo, *, run: int | None
) -> ExperimentReport:
    """Read one experiment back from the store and aggregate it (``run``: only that run).

    ``run`` must be one of the experiment's run iterations; the CLI checks it first so
    that a bad ``--run`` is a usage error.
    """
    experiment = pulled_experiment(backend, info)
    iterations = [run] if run is not None else [item.run_iteration for item in info.runs]
    rows = [
        row
        for item in experiment.runs
        if run is None or item.run_iteration == run
        for row in item.rows
    ]
    return ExperimentReport(
        info=info,
        experiment=experiment,
        run=run,
        rows=len(rows),
        failed_rows=sum(1 for row in rows if row["error"]["type"] is not None),
        summary=experiment.summary(run=run),
        record_summaries=experiment.record_summaries(run=run),
        summary_evaluations=summarize_summary_evaluations(
            backend.summary_evaluations(info.id), iterations
        ),
        metrics=experiment.trace_metrics(run=run),
    )


# Values -----------------------------------------------------------------------------------


def _number(value: float) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if math.isnan(value):
        return "nan"
    # Three significant digits, without falling into exponents for everyday values.
    return f"{value:.3g}" if abs(value) >= 0.001 or value == 0 else f"{value:.2e}"


def format_aggregate(metric_type: MetricType, value: AggregateValue) -> str:
    """An aggregate for people: booleans as a percentage of True, scores with 3 digits."""
    if value is None:
        return _NOTHING
    if metric_type == "boolean" and isinstance(value, int | float):
        return f"{value:.1%}"
    if metric_type == "score" and isinstance(value, int | float):
        return _number(value)
    return str(value)


def format_value(value: JSON) -> str:
    """One evaluation value as returned by an evaluator, compactly."""
    if value is None:
        return _NOTHING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def _compact_per_run(metric_type: MetricType, values: Sequence[AggregateValue]) -> str:
    if metric_type == "boolean":
        return "  ".join(_NOTHING if v is None else f"{v:.0%}" for v in values)
    return "  ".join(format_aggregate(metric_type, value) for value in values)


def _categorical_share(record_values: Sequence[JSON], label: AggregateValue) -> str:
    """`` (65%)``: the share of records whose value is the shown label."""
    present = [value for value in record_values if value is not None]
    if label is None or not present:
        return ""
    return f" ({sum(1 for value in present if value == label) / len(present):.0%})"


def format_interval(metric_type: MetricType, interval: Sequence[float] | None) -> str:
    """A 95% interval as ``[low, high]``, in the same units as its aggregate."""
    if interval is None:
        return _NOTHING
    low, high = interval
    if metric_type == "boolean":
        return f"[{low:.1%}, {high:.1%}]"
    return f"[{_number(low)}, {_number(high)}]"


def _run_spread(metric_type: MetricType, run_sd: float | None) -> str:
    if run_sd is None:
        return _NOTHING
    return f"{run_sd:.1%}" if metric_type == "boolean" else _number(run_sd)


def _share(value: float | None) -> str:
    return _NOTHING if value is None else f"{value:.0%}"


def across_runs(item: EvaluationSummary, records: Sequence[RecordEvaluation]) -> str:
    """How the records of a label hold up across their runs, compactly.

    Booleans: ``pass@1 62% · pass@5 90%`` over ``pass^5 31% · 4/20 flaky`` (the first and
    last k; flaky records are those whose runs disagree). Categorical: the mean share of a
    record's runs that agree with its mode. Scores: the mean of the records' run sd.
    """
    usable = [e for e in records if e["value"] is not None]
    if item["metric_type"] == "boolean":
        flaky = f"{sum(1 for e in usable if e['flaky'])}/{len(usable)} flaky"
        at_k, hat_k = item["pass_at_k"] or {}, item["pass_hat_k"] or {}
        if not at_k:
            return flaky
        last = max(at_k)
        ks = [1, last] if last > 1 else [1]
        # Two short lines keep the table within a 100-column terminal.
        first = " · ".join(f"pass@{k} {_share(at_k[k])}" for k in ks)
        return f"{first}\npass^{last} {_share(hat_k.get(last))} · {flaky}"
    if item["metric_type"] == "categorical":
        agreements = [e["agreement"] for e in usable if e["agreement"] is not None]
        return f"agreement {_share(_average(agreements))}" if agreements else ""
    if item["metric_type"] == "score":
        sds = [e["sd"] for e in usable if e["sd"] is not None]
        return f"record sd {_number(_average(sds))}" if sds else ""
    return ""


def _average(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def local_time(moment: datetime, *, seconds: bool = True) -> str:
    """A stored (UTC) time in the local time zone."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def metric_lines(metrics: dict[str, TraceMetric]) -> list[tuple[str, str]]:
    """Duration, tokens and cost as header lines; metrics no row reported are left out."""
    lines: list[tuple[str, str]] = []
    duration = metrics.get("duration")
    if duration and duration["value"] is not None:
        lines.append(
            (
                "duration",
                f"{_seconds(duration['value'])} per call (median {_seconds(duration['p50'])}, "
                f"p95 {_seconds(duration['p95'])})",
            )
        )
    tokens = metrics.get("total_tokens")
    if tokens and tokens["value"] is not None and tokens["total"] is not None:
        lines.append(("tokens", f"{tokens['value']:,.0f} per call, {tokens['total']:,.0f} in all"))
    cost = metrics.get("estimated_total_cost")
    if cost and cost["value"] is not None and cost["total"] is not None:
        lines.append(
            (
                "est. cost",
                f"${cost['value'] / 1e9:.6f} per call, ${cost['total'] / 1e9:.4f} in all "
                f"({cost['rows']} rows priced)",
            )
        )
    return lines


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 1:
        return f"{value:.2f} s"
    milliseconds = value * 1000
    return f"{milliseconds:.0f} ms" if milliseconds >= 10 else f"{milliseconds:.2g} ms"


# Tables -----------------------------------------------------------------------------------


def header(report: ExperimentReport) -> Table:
    """Name, id, project, dataset, status, runs, rows, config and creation time."""
    info = report.info
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("experiment", info.name)
    grid.add_row("id", info.id)
    grid.add_row("project", info.project_name)
    grid.add_row("dataset", f"{info.dataset_name} (version {info.dataset_version})")
    status = Text(info.status, style=_STATUS_STYLE.get(info.status, ""))
    grid.add_row("status", status)
    if info.error:
        grid.add_row("error", Text(info.error, style="red"))
    runs = f"{info.run_count}" + (f" (showing run {report.run})" if report.run else "")
    grid.add_row("runs", runs)
    failed = f" ({report.failed_rows} with a task error)" if report.failed_rows else ""
    grid.add_row("rows", f"{report.rows}{failed}")
    if info.evaluator_names or info.summary_evaluator_names:
        evaluators = ", ".join(info.evaluator_names)
        if info.summary_evaluator_names:
            evaluators += f"; summary: {', '.join(info.summary_evaluator_names)}"
        grid.add_row("evaluators", evaluators)
    grid.add_row("config", json.dumps(info.config, default=str) if info.config else "{}")
    for label, text in metric_lines(report.metrics):
        grid.add_row(label, text)
    grid.add_row("created", local_time(info.created_at))
    grid.add_row("url", report.experiment.url)
    return grid


def summary_table(report: ExperimentReport) -> Table:
    """One line per evaluation label: type, aggregate, its 95% interval, records, errors."""
    show_missing = any(item["missing"] for item in report.summary.values())
    title = "Evaluations" if report.run is None else f"Evaluations, run {report.run}"
    table = Table(title=title, title_justify="left", title_style="bold")
    table.add_column("evaluation", no_wrap=True)
    table.add_column("type")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("records", justify="right")
    table.add_column("errors", justify="right")
    if show_missing:
        table.add_column("missing", justify="right")
    for label, item in report.summary.items():
        metric_type = item["metric_type"]
        value = format_aggregate(metric_type, item["value"])
        if metric_type == "categorical":
            records = [rs["evaluations"][label] for rs in report.record_summaries]
            value += _categorical_share([e["value"] for e in records], item["value"])
        cells: list[str | Text] = [label, metric_type, value]
        cells.append(format_interval(metric_type, item["ci95"]))
        cells.append(str(item["records"]))
        cells.append(Text(str(item["errors"]), style="red" if item["errors"] else ""))
        if show_missing:
            cells.append(str(item["missing"]))
        table.add_row(*cells)
    if not report.summary:
        table.add_row(_NOTHING, "", "no evaluations stored", "", "", "")
    return table


def runs_table(report: ExperimentReport) -> Table | None:
    """With several runs, one line per label: how its value moves between the runs.

    The spread of the per-run values, each run's value, and how stable the records are
    (see :func:`across_runs`). ``None`` when one run is shown or there is no evaluation.
    """
    runs = report.iterations
    if len(runs) < 2 or not report.summary:
        return None
    table = Table(title="Across runs", title_justify="left", title_style="bold")
    table.add_column("evaluation", no_wrap=True)
    table.add_column("run sd", justify="right")
    table.add_column(f"per run ({runs[0]}..{runs[-1]})")
    table.add_column("records across runs")
    for label, item in report.summary.items():
        metric_type = item["metric_type"]
        records = [rs["evaluations"][label] for rs in report.record_summaries]
        table.add_row(
            label,
            _run_spread(metric_type, item["run_sd"]),
            _compact_per_run(metric_type, item["per_run"]),
            across_runs(item, records),
        )
    return table


def summary_evaluations_table(report: ExperimentReport) -> Table | None:
    """One line per summary evaluator with its value in each run; None when there are none.

    Up to ``_RUN_COLUMNS`` runs get a column each; more share one compact column, as the
    evaluations do, so that fifty runs do not squeeze the table to nothing.
    """
    if not report.summary_evaluations:
        return None
    iterations = report.iterations
    columns = len(iterations) <= _RUN_COLUMNS
    show_errors = any(item["errors"] for item in report.summary_evaluations.values())
    table = Table(title="Summary evaluations", title_justify="left", title_style="bold")
    table.add_column("summary evaluator", no_wrap=True)
    table.add_column("type")
    if columns:
        for iteration in iterations:
            table.add_column(f"run {iteration}", justify="right")
    else:
        table.add_column(f"per run ({iterations[0]}..{iterations[-1]})")
    if show_errors:
        table.add_column("errors", justify="right")
    for label, item in report.summary_evaluations.items():
        values = [format_value(value) for value in item["per_run"]]
        cells: list[str | Text] = [label, item["metric_type"]]
        cells += values if columns else ["  ".join(values)]
        if show_errors:
            cells.append(str(item["errors"]))
        table.add_row(*cells)
    return table


def experiment_view(report: ExperimentReport) -> RenderableType:
    """The whole of ``assay show``: header, evaluations, across runs, summary evaluations."""
    parts: list[RenderableType] = [header(report), Text(""), summary_table(report)]
    runs = runs_table(report)
    if runs is not None:
        parts += [Text(""), runs]
    summaries = summary_evaluations_table(report)
    if summaries is not None:
        parts += [Text(""), summaries]
    return Group(*parts)


@dataclass(frozen=True)
class ListedExperiment:
    """One line of ``assay experiments list``."""

    info: ExperimentInfo
    rows: int
    summary: dict[str, EvaluationSummary]
    url: str


def listed_experiment(backend: Backend, info: ExperimentInfo, *, url: str) -> ListedExperiment:
    """An experiment's row count and summary, aggregated over all its runs."""
    rows = backend.experiment_rows(info.id)
    summary = summarize(rows, [run.run_iteration for run in info.runs])
    return ListedExperiment(info=info, rows=len(rows), summary=summary, url=url)


def experiments_table(items: Sequence[ListedExperiment], *, title: str) -> Table:
    """``assay experiments list``: one line per experiment, newest first."""
    # No rules between columns and one space of padding: nine columns must fit a
    # 100-column terminal; on narrower ones the text columns fold rather than vanish.
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    table.add_column("id", no_wrap=True, style="cyan")
    table.add_column("name", overflow="fold")
    table.add_column("project", overflow="fold")
    table.add_column("dataset", overflow="fold")
    table.add_column("runs", justify="right")
    table.add_column("rows", justify="right")
    table.add_column("status")
    table.add_column("created")
    table.add_column("evaluations", overflow="fold")
    for item in items:
        info = item.info
        # One evaluation per line keeps the column narrow, so names need not wrap.
        evaluations = "\n".join(
            f"{label} {format_aggregate(s['metric_type'], s['value'])}"
            for label, s in item.summary.items()
        )
        table.add_row(
            info.id[:8],
            info.name,
            info.project_name,
            f"{info.dataset_name}@{info.dataset_version}",
            str(info.run_count),
            str(item.rows),
            Text(info.status, style=_STATUS_STYLE.get(info.status, "")),
            local_time(info.created_at, seconds=False),
            evaluations or _NOTHING,
        )
    return table


# JSON -------------------------------------------------------------------------------------


def info_json(info: ExperimentInfo, *, url: str, rows: int) -> dict[str, Any]:
    """An experiment's stored fields as JSON-ready values (times in ISO 8601, UTC)."""
    data = dataclasses.asdict(info)
    data["created_at"] = info.created_at.isoformat()
    data["updated_at"] = info.updated_at.isoformat()
    data["runs"] = [dataclasses.asdict(run) for run in info.runs]
    data["rows"] = rows
    data["url"] = url
    return data


def report_json(report: ExperimentReport) -> dict[str, Any]:
    """``assay show --json``: the experiment, its summaries and its record summaries."""
    return {
        "experiment": {
            **info_json(report.info, url=report.experiment.url, rows=report.rows),
            "failed_rows": report.failed_rows,
        },
        "run": report.run,
        "summary": report.summary,
        "summary_evaluations": report.summary_evaluations,
        "record_summaries": report.record_summaries,
        "metrics": report.metrics,
    }


def listed_json(item: ListedExperiment) -> dict[str, Any]:
    """One experiment of ``assay experiments list --json``."""
    return {**info_json(item.info, url=item.url, rows=item.rows), "summary": item.summary}


# Search ---------------------------------------------------------------------------------


def _short(value: JSON, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _aggregate_cell(name: str, value: JSON) -> str:
    if name.endswith("@duration") and isinstance(value, int | float):
        return _seconds(value / 1e9)  # stored in nanoseconds
    return format_value(value)


def search_view(info: ExperimentInfo, page: SearchPage, *, offset: int) -> RenderableType:
    """``assay records``: "8 of 127 records", the query in words, and the page as a table."""
    noun = "records" if page.multi_run else "rows"
    shown = f"{offset + 1}-{offset + len(page.items)}" if page.items else "none"
    heading = Text(f"{page.total} of {page.of} {noun} match ({shown} shown): {page.description}")
    table = Table(title=f"{info.name} ({info.id[:8]})", title_justify="left")
    table.add_column("record", style="dim")
    if page.multi_run:
        table.add_column("runs", justify="right")
        table.add_column("input")
        labels = sorted({name for item in page.items for name in item["aggregates"]})
        for label in labels:
            table.add_column(label.replace("@evaluations.custom.", "").replace("@multi_run_", ""))
        for item in page.items:
            aggregates = item["aggregates"]
            assert isinstance(aggregates, dict)
            table.add_row(
                str(item["record_id"])[:8],
                str(item["runs"]),
                _short(item["input"]),
                *(_aggregate_cell(label, aggregates.get(label)) for label in labels),
            )
    else:
        table.add_column("run", justify="right")
        table.add_column("input")
        table.add_column("output")
        labels = sorted({name for item in page.items for name in item["evaluations"]})
        for label in labels:
            table.add_column(label)
        table.add_column("duration", justify="right")
        table.add_column("tokens", justify="right")
        for item in page.items:
            values = item["evaluations"]
            assert isinstance(values, dict)
            duration = item["duration"]
            table.add_row(
                str(item["record_id"])[:8],
                str(item["run_iteration"]),
                _short(item["input"]),
                _short(item["output"]),
                *(format_value(values.get(label)) for label in labels),
                _seconds(duration / 1e9 if isinstance(duration, int | float) else None),
                "—" if item["total_tokens"] is None else f"{item['total_tokens']:,}",
            )
    return Group(heading, table)


# API keys -----------------------------------------------------------------------------------


def _key_projects(key: ApiKeyInfo) -> str:
    return "every project" if key.projects is None else ", ".join(key.projects)


def api_keys_table(keys: Sequence[ApiKeyInfo], *, title: str) -> Table:
    """``assay keys list``: one line per key, oldest first, revoked ones dimmed."""
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    table.add_column("name", overflow="fold")
    table.add_column("id", no_wrap=True, style="cyan")
    table.add_column("prefix", no_wrap=True)
    table.add_column("projects", overflow="fold")
    table.add_column("created")
    table.add_column("last used")
    table.add_column("revoked")
    for key in keys:
        table.add_row(
            key.name,
            key.id[:8],
            f"{key.prefix}…",
            _key_projects(key),
            local_time(key.created_at, seconds=False),
            local_time(key.last_used_at, seconds=False) if key.last_used_at else "never",
            local_time(key.revoked_at, seconds=False) if key.revoked_at else _NOTHING,
            style="dim" if key.revoked else "",
        )
    return table


def api_key_json(key: ApiKeyInfo) -> dict[str, Any]:
    """One key of ``assay keys list --json`` (never its secret, which is not stored)."""
    data = dataclasses.asdict(key)
    data["projects"] = list(key.projects) if key.projects is not None else None
    for name in ("created_at", "last_used_at", "revoked_at"):
        moment = getattr(key, name)
        data[name] = moment.isoformat() if moment is not None else None
    data["revoked"] = key.revoked
    return data
