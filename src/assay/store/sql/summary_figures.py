"""An experiment's summary computed in the database, for the web UI's summary fragment.

The numbers are those of :func:`assay.aggregation.summarize` and
:func:`assay.trace_metrics.summarize_trace_metrics` (the rules are in their docstrings),
but the UI must not load 500,000 rows into Python to show them. So:

- across all runs, everything that depends on record values — each evaluation's value,
  interval, record count, errors, flaky records, pass@k and the spread of record values,
  and the trace metrics' means and totals — is read from ``record_aggregates``, one row
  per record, grouped in SQL (a histogram is ten counts, pass@k a tally of (runs, passes));
- each run's value is one ``GROUP BY run`` over the evaluations, and the duration
  percentiles two ``ORDER BY ... OFFSET`` lookups over the root spans;
- for one run, the same figures come from that run's evaluations and root spans.

What Python gets is a few rows per label. The aggregates must be fresh
(``SqlBackend.refresh_aggregates(id, only_if_stale=True)`` first). Categorical labels
that also hold numbers or JSON objects are aggregated by their text values only here
(``summarize`` turns the numbers into text); the API summary is the reference.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Float, Integer, and_, case, cast, false, func, select, true

from assay import stats
from assay.aggregation import AggregateValue, EvaluationSummary
from assay.query import Catalog
from assay.store.records import ExperimentInfo, MetricType
from assay.store.sql.aggregates import TRACE_FACETS, evaluation_facet
from assay.store.sql.search import load_catalog
from assay.store.sql.tables import evaluations, record_aggregates, spans
from assay.trace_metrics import TraceMetric

__all__ = ["BINS", "SummaryFigures", "summary_figures"]

BINS = 10
"""Slices of a label's value range in its histogram of record values."""
_SPAN_COLUMNS = {
    "duration": "duration_ns",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "total_tokens": "total_tokens",
    "estimated_total_cost": "estimated_total_cost",
}


@dataclass(frozen=True)
class Histogram:
    """How many record values fall in each of ``BINS`` equal slices of ``[low, high]``."""

    counts: list[int]
    low: float
    high: float


@dataclass(frozen=True)
class SummaryFigures:
    """What the summary fragment shows, computed by :func:`summary_figures`."""

    evaluations: dict[str, EvaluationSummary]
    """Label to summary, sorted by label: the shape (and numbers) of ``summarize``."""
    histograms: dict[str, Histogram] = field(default_factory=dict)
    """Score and boolean labels: the spread of record values (booleans over [0, 1])."""
    flaky: dict[str, int] = field(default_factory=dict)
    """Boolean labels: records whose usable runs disagree."""
    trace: dict[str, TraceMetric] = field(default_factory=dict)
    """Duration (seconds), tokens and cost, as ``summarize_trace_metrics`` gives them."""
    rows: int = 0
    records: int = 0


def summary_figures(
    connection: Connection, info: ExperimentInfo, *, run: int | None = None
) -> SummaryFigures:
    """The summary of every run (``run=None``) or of run ``run`` alone."""
    catalog = load_catalog(connection, info.id)
    iterations = [item.run_iteration for item in info.runs] if run is None else [run]
    roots = [spans.c.experiment_id == info.id, spans.c.parent_id.is_(None)]
    roots.append(spans.c.run_iteration.in_(iterations))
    rows = int(connection.execute(select(func.count()).where(*roots)).scalar_one())
    if run is None:
        records = int(
            connection.execute(
                select(func.count()).where(
                    record_aggregates.c.experiment_id == info.id,
                    record_aggregates.c.facet == "status",
                )
            ).scalar_one()
        )
        label_rows = _record_level(connection, info.id, catalog)
    else:
        records = rows
        label_rows = _run_level(connection, info.id, catalog, run)
    per_run = _per_run(connection, info.id, catalog, iterations)
    evaluations_found: dict[str, EvaluationSummary] = {}
    histograms: dict[str, Histogram] = {}
    flaky: dict[str, int] = {}
    for label, metric_type in sorted(catalog.evaluations.items()):
        figures = label_rows.get(label, _LabelFigures())
        evaluations_found[label] = figures.summary(
            metric_type,
            expected=records * len(iterations),
            per_run=[per_run.get((iteration, label)) for iteration in iterations],
            runs=len(iterations),
        )
        if figures.histogram is not None:
            histograms[label] = figures.histogram
        if metric_type == "boolean":
            flaky[label] = figures.flaky
    return SummaryFigures(
        evaluations=evaluations_found,
        histograms=histograms,
        flaky=flaky,
        trace=_trace(connection, info.id, iterations, by_record=run is None),
        rows=rows,
        records=records,
    )


@dataclass
class _LabelFigures:
    """One label's figures as the database returned them."""

    contributing: int = 0
    errors: int = 0
    usable: int = 0
    mean: float | None = None
    values: int = 0
    squares: float = 0.0
    """The sum of squared deviations of record values from ``mean``."""
    low: float | None = None
    high: float | None = None
    flaky: int = 0
    modes: Counter[str] = field(default_factory=Counter)
    tally: Counter[tuple[int, int]] = field(default_factory=Counter)
    histogram: Histogram | None = None

    def summary(
        self, metric_type: MetricType, *, expected: int, per_run: list[AggregateValue], runs: int
    ) -> EvaluationSummary:
        numeric = metric_type in ("score", "boolean")
        value: AggregateValue = None
        stderr: float | None = None
        ci95: list[float] | None = None
        if numeric and self.mean is not None and self.values:
            value = float(self.mean)
            if self.values > 1:
                stderr = (self.squares / (self.values - 1)) ** 0.5 / self.values**0.5
                half = stats.t_quantile(0.975, self.values - 1) * stderr
                low, high = value - half, value + half
                if metric_type == "boolean":
                    low, high = max(low, 0.0), min(high, 1.0)
                ci95 = [low, high]
        elif metric_type == "categorical" and self.modes:
            value = min(self.modes.items(), key=lambda item: (-item[1], item[0]))[0]
        at_k: dict[int, float | None] | None = None
        hat_k: dict[int, float | None] | None = None
        if metric_type == "boolean":
            at_k, hat_k = stats.pass_curves(self.tally.elements(), runs)
        return EvaluationSummary(
            metric_type=metric_type,
            value=value,
            records=self.contributing,
            errors=self.errors,
            missing=max(expected - self.errors - self.usable, 0),
            per_run=per_run,
            stderr=stderr,
            ci95=ci95,
            run_sd=(
                stats.run_sd([v for v in per_run if isinstance(v, float)]) if numeric else None
            ),
            pass_at_k=at_k,
            pass_hat_k=hat_k,
        )


def _deviations(column: Any, key: Any, means: dict[Any, float]) -> Any:
    """``(column - mean of its group)²``, the group's mean given as a bound parameter: the
    second pass of a two-pass variance, which stays exact where sums of squares cancel."""
    if not means:
        return None
    mean = case(*((key == name, value) for name, value in means.items()), else_=None)
    return func.sum((column - mean) * (column - mean))


def _bins(column: Any, key: Any, bounds: dict[Any, tuple[float, float]], dialect: str) -> Any:
    """The histogram slice of ``column`` within its group's ``[low, high]``."""
    low = case(*((key == name, pair[0]) for name, pair in bounds.items()), else_=None)
    width = case(*((key == name, pair[1] - pair[0]) for name, pair in bounds.items()), else_=None)
    scaled = (column - low) / width * BINS
    # Values are at or above `low`, so truncation is the floor; SQLite may lack floor(),
    # and PostgreSQL's integer cast rounds instead of truncating.
    position = func.floor(scaled) if dialect == "postgresql" else cast(scaled, Integer)
    return case((position < 0, 0), (position > BINS - 1, BINS - 1), else_=position)


def _span(metric_type: MetricType, low: float | None, high: float | None) -> tuple[float, float]:
    if metric_type == "boolean":
        return 0.0, 1.0
    low, high = low or 0.0, high or 0.0
    return (low, low + 1.0) if high == low else (low, high)


def _record_level(
    connection: Connection, experiment_id: str, catalog: Catalog
) -> dict[str, _LabelFigures]:
    """Every label's figures from the records' aggregates (one row per record and label)."""
    table = record_aggregates
    by_facet = {evaluation_facet(label): label for label in catalog.evaluations}
    if not by_facet:
        return {}
    scope = and_(table.c.experiment_id == experiment_id, table.c.facet.in_(list(by_facet)))
    found: dict[str, _LabelFigures] = {label: _LabelFigures() for label in by_facet.values()}
    for row in connection.execute(
        select(
            table.c.facet,
            func.count(case((table.c.n > 0, 1), else_=None)).label("contributing"),
            func.sum(table.c.errors).label("errors"),
            func.sum(table.c.n).label("usable"),
            func.avg(table.c.mean).label("mean"),
            func.count(table.c.mean).label("values"),
            func.min(table.c.mean).label("low"),
            func.max(table.c.mean).label("high"),
            func.count(case((and_(table.c.mean > 0, table.c.mean < 1), 1), else_=None)).label(
                "flaky"
            ),
        )
        .where(scope)
        .group_by(table.c.facet)
    ):
        figures = found[by_facet[row.facet]]
        figures.contributing = int(row.contributing or 0)
        figures.errors = int(row.errors or 0)
        figures.usable = int(row.usable or 0)
        figures.values = int(row.values or 0)
        figures.mean = float(row.mean) if row.mean is not None else None
        figures.low = float(row.low) if row.low is not None else None
        figures.high = float(row.high) if row.high is not None else None
        figures.flaky = int(row.flaky or 0)
    numeric = {
        facet: label
        for facet, label in by_facet.items()
        if catalog.evaluations[label] in ("score", "boolean") and found[label].values
    }
    if numeric:
        means = {facet: found[label].mean or 0.0 for facet, label in numeric.items()}
        bounds = {
            facet: _span(catalog.evaluations[label], found[label].low, found[label].high)
            for facet, label in numeric.items()
        }
        with_value = and_(scope, table.c.facet.in_(list(numeric)), table.c.mean.is_not(None))
        for row in connection.execute(
            select(table.c.facet, _deviations(table.c.mean, table.c.facet, means).label("squares"))
            .where(with_value)
            .group_by(table.c.facet)
        ):
            found[numeric[row.facet]].squares = float(row.squares or 0.0)
        _histograms(connection, with_value, table.c.facet, table.c.mean, bounds, numeric, found)
    booleans = [f for f, label in by_facet.items() if catalog.evaluations[label] == "boolean"]
    if booleans:
        # pass@k needs each record's (usable runs, passing runs): its n and share x n.
        passes = cast(func.round(table.c.mean * table.c.n), Float)
        for row in connection.execute(
            select(table.c.facet, table.c.n, passes.label("passes"), func.count().label("times"))
            .where(scope, table.c.facet.in_(booleans), table.c.mean.is_not(None))
            .group_by(table.c.facet, table.c.n, passes)
        ):
            tally = found[by_facet[row.facet]].tally
            tally[(int(row.n), int(row.passes))] += int(row.times)
    categorical = [
        f for f, label in by_facet.items() if catalog.evaluations[label] == "categorical"
    ]
    if categorical:
        for row in connection.execute(
            select(table.c.facet, table.c.mode, func.count().label("times"))
            .where(scope, table.c.facet.in_(categorical), table.c.mode.is_not(None))
            .group_by(table.c.facet, table.c.mode)
        ):
            found[by_facet[row.facet]].modes[str(row.mode)] += int(row.times)
    return found


def _histograms(
    connection: Connection,
    where: Any,
    key: Any,
    column: Any,
    bounds: dict[Any, tuple[float, float]],
    names: dict[Any, str],
    found: dict[str, _LabelFigures],
) -> None:
    slice_ = _bins(column, key, bounds, connection.dialect.name)
    counts: dict[Any, list[int]] = defaultdict(lambda: [0] * BINS)
    for row in connection.execute(
        select(key.label("key"), slice_.label("slice"), func.count().label("times"))
        .where(where)
        .group_by(key, slice_)
    ):
        if row.slice is not None:
            counts[row.key][int(row.slice)] += int(row.times)
    for name, label in names.items():
        low, high = bounds[name]
        found[label].histogram = Histogram(counts[name], low, high)


def _numeric_value() -> Any:
    # Booleans of a score label count 1/0 (PostgreSQL does not cast booleans to numbers).
    boolean = case(
        (evaluations.c.boolean_value == true(), 1.0),
        (evaluations.c.boolean_value == false(), 0.0),
        else_=None,
    )
    return func.coalesce(cast(evaluations.c.score_value, Float), boolean)


def _run_level(
    connection: Connection, experiment_id: str, catalog: Catalog, run: int
) -> dict[str, _LabelFigures]:
    """Every label's figures from one run's evaluations: each record has a single value."""
    labels = list(catalog.evaluations)
    if not labels:
        return {}
    table = evaluations
    ok = table.c.error_type.is_(None)
    number = _numeric_value()
    scope = and_(
        table.c.experiment_id == experiment_id,
        table.c.label.in_(labels),
        table.c.run_iteration == run,
    )
    usable = case((and_(ok, func.coalesce(number, table.c.categorical_value).is_not(None)), 1))
    found = {label: _LabelFigures() for label in labels}
    for row in connection.execute(
        select(
            table.c.label,
            func.count(usable).label("usable"),
            func.count(case((ok, None), else_=1)).label("errors"),
            func.avg(case((ok, number))).label("mean"),
            func.count(case((ok, number))).label("values"),
            func.min(case((ok, number))).label("low"),
            func.max(case((ok, number))).label("high"),
            func.sum(case((ok, number))).label("passes"),
        )
        .where(scope)
        .group_by(table.c.label)
    ):
        figures = found[row.label]
        figures.usable = figures.contributing = int(row.usable or 0)
        figures.errors = int(row.errors or 0)
        figures.values = int(row.values or 0)
        figures.mean = float(row.mean) if row.mean is not None else None
        figures.low = float(row.low) if row.low is not None else None
        figures.high = float(row.high) if row.high is not None else None
        if catalog.evaluations[row.label] == "boolean" and figures.values:
            passes = round(float(row.passes or 0))
            figures.tally.update({(1, 1): passes, (1, 0): figures.values - passes})
    numeric = {
        label: label
        for label in labels
        if catalog.evaluations[label] in ("score", "boolean") and found[label].values
    }
    if numeric:
        means = {label: found[label].mean or 0.0 for label in numeric}
        bounds = {
            label: _span(catalog.evaluations[label], found[label].low, found[label].high)
            for label in numeric
        }
        with_value = and_(scope, ok, table.c.label.in_(list(numeric)), number.is_not(None))
        for row in connection.execute(
            select(table.c.label, _deviations(number, table.c.label, means).label("squares"))
            .where(with_value)
            .group_by(table.c.label)
        ):
            found[row.label].squares = float(row.squares or 0.0)
        _histograms(connection, with_value, table.c.label, number, bounds, numeric, found)
    categorical = [label for label in labels if catalog.evaluations[label] == "categorical"]
    if categorical:
        for row in connection.execute(
            select(table.c.label, table.c.categorical_value, func.count().label("times"))
            .where(scope, ok, table.c.label.in_(categorical))
            .where(table.c.categorical_value.is_not(None))
            .group_by(table.c.label, table.c.categorical_value)
        ):
            found[row.label].modes[str(row.categorical_value)] += int(row.times)
    return found


def _per_run(
    connection: Connection, experiment_id: str, catalog: Catalog, iterations: Sequence[int]
) -> dict[tuple[int, str], AggregateValue]:
    """(run, label) to the summary rule over that run's rows: a mean, a share or a mode."""
    table = evaluations
    ok = table.c.error_type.is_(None)
    scope = and_(
        table.c.experiment_id == experiment_id,
        table.c.run_iteration.in_(list(iterations)),
        ok,
    )
    found: dict[tuple[int, str], AggregateValue] = {}
    numeric = [label for label, kind in catalog.evaluations.items() if kind in ("score", "boolean")]
    if numeric:
        number = _numeric_value()
        for row in connection.execute(
            select(table.c.run_iteration, table.c.label, func.avg(number).label("mean"))
            .where(scope, table.c.label.in_(numeric))
            .group_by(table.c.run_iteration, table.c.label)
        ):
            if row.mean is not None:
                found[(row.run_iteration, row.label)] = float(row.mean)
    categorical = [label for label, kind in catalog.evaluations.items() if kind == "categorical"]
    if categorical:
        counts: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
        for row in connection.execute(
            select(
                table.c.run_iteration,
                table.c.label,
                table.c.categorical_value,
                func.count().label("times"),
            )
            .where(scope, table.c.label.in_(categorical), table.c.categorical_value.is_not(None))
            .group_by(table.c.run_iteration, table.c.label, table.c.categorical_value)
        ):
            counts[(row.run_iteration, row.label)][str(row.categorical_value)] += int(row.times)
        for key, counter in counts.items():
            found[key] = min(counter.items(), key=lambda item: (-item[1], item[0]))[0]
    return found


def _trace(
    connection: Connection, experiment_id: str, iterations: Sequence[int], *, by_record: bool
) -> dict[str, TraceMetric]:
    """Duration (seconds), tokens and cost: means of record means, totals, percentiles."""
    found: dict[str, TraceMetric] = {}
    roots = and_(
        spans.c.experiment_id == experiment_id,
        spans.c.parent_id.is_(None),
        spans.c.run_iteration.in_(list(iterations)),
    )
    if by_record:
        table = record_aggregates
        rows = connection.execute(
            select(
                table.c.facet,
                func.avg(table.c.mean).label("value"),
                func.sum(table.c.mean * table.c.n).label("total"),
                func.sum(table.c.n).label("rows"),
            )
            .where(table.c.experiment_id == experiment_id, table.c.facet.in_(TRACE_FACETS))
            .group_by(table.c.facet)
        ).all()
        figures = {row.facet: (row.value, row.total, row.rows) for row in rows}
    else:
        # One run: each record has one row, so the mean of record means is the row mean.
        columns = [spans.c[_SPAN_COLUMNS[facet]] for facet in TRACE_FACETS]
        row = connection.execute(
            select(
                *(func.avg(cast(column, Float)) for column in columns),
                *(func.sum(cast(column, Float)) for column in columns),
                *(func.count(column) for column in columns),
            ).where(roots)
        ).one()
        count = len(TRACE_FACETS)
        figures = {
            facet: (row[index], row[count + index], row[2 * count + index])
            for index, facet in enumerate(TRACE_FACETS)
        }
    for facet in TRACE_FACETS:
        value, total, rows_with = figures.get(facet, (None, None, 0))
        scale = 1e-9 if facet == "duration" else 1.0
        found[facet] = TraceMetric(
            value=float(value) * scale if value is not None else None,
            total=float(total) * scale if total is not None and rows_with else None,
            rows=int(rows_with or 0),
            p50=None,
            p95=None,
        )
    duration = found["duration"]
    if duration["rows"]:
        duration["p50"], duration["p95"] = (
            _percentile(connection, roots, duration["rows"], share) for share in (0.5, 0.95)
        )
    return found


def _percentile(connection: Connection, roots: Any, count: int, share: float) -> float:
    """A duration percentile in seconds, interpolated between closest ranks like numpy."""
    position = (count - 1) * share
    low = int(position)
    pair = [
        float(value)
        for value in connection.execute(
            select(spans.c.duration_ns)
            .where(roots)
            .order_by(spans.c.duration_ns)
            .limit(2)
            .offset(low)
        ).scalars()
    ]
    if not pair:
        return 0.0
    high = pair[1] if len(pair) > 1 else pair[0]
    return (pair[0] + (high - pair[0]) * (position - low)) * 1e-9
