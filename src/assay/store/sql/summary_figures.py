"""An experiment's summary computed in the database, for the web UI's summary fragment.

The numbers are those of :func:`assay.aggregation.summarize` and
:func:`assay.trace_metrics.summarize_trace_metrics` (the rules are in their docstrings),
but the UI must not load 500,000 rows into Python to show them. So:

- across all runs, everything that depends on record values — each evaluation's value,
  interval, record count, errors and the spread of record values, and the trace metrics'
  means — is read from ``record_aggregates``, one row per record, grouped in SQL (a
  histogram is ten counts), each pass one range of the covering index
  ``ix_record_aggregates_mean`` per label; pass@k, flaky records and the mode of record
  modes from ``record_tallies``, the records counted by (runs, passes) and by mode;
- each run's value, the row counts and the trace totals come from ``run_aggregates``
  (a few rows per run, kept by the same refresh), and the duration percentiles from two
  ``ORDER BY ... OFFSET`` lookups along ``ix_spans_root_duration``, nothing sorted;
- for one run, counts, means and modes come from that run's ``run_aggregates`` rows, and
  a score label's spread and histogram from one range of its value index.

What Python gets is a few rows per label. The aggregates must be fresh
(``SqlBackend.refresh_aggregates(id, only_if_stale=True)`` first). Categorical labels
that also hold numbers or JSON objects are aggregated by their text values only here
(``summarize`` turns the numbers into text); the API summary is the reference.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Float, Integer, and_, case, cast, func, select

from assay import stats
from assay.aggregation import AggregateValue, EvaluationSummary
from assay.query import Catalog
from assay.store.records import ExperimentInfo, MetricType
from assay.store.sql.aggregates import TRACE_FACETS, evaluation_facet
from assay.store.sql.record_tallies import read_record_tallies
from assay.store.sql.run_aggregates import RunTotals, read_run_aggregates
from assay.store.sql.search import load_catalog
from assay.store.sql.tables import (
    aggregate_state,
    evaluations,
    record_aggregates,
    spans,
)
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
    run_totals, run_values = read_run_aggregates(connection, info.id, iterations)
    rows = sum(run_totals.get((iteration, "status"), RunTotals()).n for iteration in iterations)
    if run is None:
        records = int(
            connection.execute(
                select(func.coalesce(func.max(aggregate_state.c.records), 0)).where(
                    aggregate_state.c.experiment_id == info.id
                )
            ).scalar_one()
        )
        whole = _whole(run_totals, iterations, records)
        label_rows = _record_level(connection, info.id, catalog, whole, records)
    else:
        records = rows
        label_rows = _run_level(connection, info.id, catalog, run, run_totals, run_values)
    per_run = _per_run(catalog, iterations, run_totals, run_values)
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
        trace=_trace(
            connection,
            info.id,
            iterations,
            run_totals,
            whole=_whole(run_totals, iterations, records) if run is None else None,
        ),
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


def _bins(column: Any, low: float, high: float, dialect: str) -> Any:
    """The histogram slice of ``column`` within ``[low, high]``."""
    scaled = (column - low) / (high - low) * BINS
    # Values are at or above `low`, so truncation is the floor; SQLite may lack floor(),
    # and PostgreSQL's integer cast rounds instead of truncating.
    position = func.floor(scaled) if dialect == "postgresql" else cast(scaled, Integer)
    return case((position < 0, 0), (position > BINS - 1, BINS - 1), else_=position)


def _slice(value: float, low: float, high: float) -> int:
    """``_bins`` for one value, in Python (the same IEEE arithmetic as the databases')."""
    return min(max((math.floor((value - low) / (high - low) * BINS)), 0), BINS - 1)


def _span(metric_type: MetricType, low: float | None, high: float | None) -> tuple[float, float]:
    if metric_type == "boolean":
        return 0.0, 1.0
    low, high = low or 0.0, high or 0.0
    return (low, low + 1.0) if high == low else (low, high)


def _spread(
    connection: Connection,
    where: Callable[[Any], Any],
    column: Any,
    figures: dict[Any, tuple[float, tuple[float, float]]],
) -> dict[Any, tuple[float, list[int]]]:
    """Per group, in one pass over its values (``where(key)``): the sum of squared
    deviations of ``column`` from the group's mean (the second pass of a two-pass variance,
    exact where sums of squares cancel) and the histogram counts over its ``(low, high)``.
    ``figures``: key to (mean, bounds). A statement per group, with its mean and bounds as
    plain parameters: one index range each, and no per-row choice among groups."""
    found: dict[Any, tuple[float, list[int]]] = {}
    for key, (mean, (low, high)) in figures.items():
        slice_ = _bins(column, low, high, connection.dialect.name)
        squares, counts = 0.0, [0] * BINS
        for row in connection.execute(
            select(
                slice_.label("slice"),
                func.count().label("times"),
                func.sum((column - mean) * (column - mean)).label("squares"),
            )
            .where(where(key))
            .group_by(slice_)
        ):
            if row.slice is not None:
                counts[int(row.slice)] += int(row.times)
            squares += float(row.squares or 0.0)
        found[key] = (squares, counts)
    return found


def _whole(
    run_totals: dict[tuple[int, str], RunTotals], iterations: Sequence[int], records: int
) -> dict[str, RunTotals]:
    """Facets that every record has a usable value of in every run, with their totals over
    the runs. A record has at most one row per run, so ``records x runs`` usable values
    mean exactly that; then every record has as many values, and the mean of the record
    means is the mean of all values: no pass over the records needed for it."""
    summed: dict[str, RunTotals] = {}
    for (iteration, facet), totals in run_totals.items():
        if iteration in iterations:
            summed.setdefault(facet, RunTotals()).add(totals)
    expected = records * len(iterations)
    return {
        facet: totals
        for facet, totals in summed.items()
        if expected and totals.n == expected and not totals.errors
    }


def _record_level(
    connection: Connection,
    experiment_id: str,
    catalog: Catalog,
    whole: dict[str, RunTotals],
    records: int,
) -> dict[str, _LabelFigures]:
    """Every label's figures from the records' aggregates (one row per record and label),
    each pass one range of ``ix_record_aggregates_mean`` per label, and from the counts of
    records by (runs, passes) and by mode in ``record_tallies``.

    ``whole``: facets every record has in every run (``_whole``), whose counts and mean
    follow from the runs' totals, and least and greatest from the ends of the index.
    """
    table = record_aggregates
    by_facet = {evaluation_facet(label): label for label in catalog.evaluations}
    if not by_facet:
        return {}
    found: dict[str, _LabelFigures] = {label: _LabelFigures() for label in by_facet.values()}
    rest = [facet for facet in by_facet if facet not in whole]
    for facet, totals in whole.items():
        if facet not in by_facet:
            continue
        figures = found[by_facet[facet]]
        figures.contributing = records
        figures.usable = totals.n
        if totals.numbers == totals.n:  # numbers only: a score or boolean label
            figures.values = records
            figures.mean = (totals.total or 0.0) / totals.numbers
            figures.low, figures.high = (
                connection.execute(
                    select(bound(table.c.mean)).where(
                        table.c.experiment_id == experiment_id,
                        table.c.facet == facet,
                        table.c.mean.is_not(None),
                    )
                ).scalar_one()
                for bound in (func.min, func.max)
            )
    rows = (
        connection.execute(
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
            .where(table.c.experiment_id == experiment_id, table.c.facet.in_(rest))
            .group_by(table.c.facet)
        )
        if rest
        else ()
    )
    for row in rows:
        figures = found[by_facet[row.facet]]
        figures.contributing = int(row.contributing or 0)
        figures.errors = int(row.errors or 0)
        figures.usable = int(row.usable or 0)
        figures.values = int(row.values or 0)
        figures.mean = float(row.mean) if row.mean is not None else None
        figures.low = float(row.low) if row.low is not None else None
        figures.high = float(row.high) if row.high is not None else None
        figures.flaky = int(row.flaky or 0)
    scores = {
        facet: label
        for facet, label in by_facet.items()
        if catalog.evaluations[label] == "score" and found[label].values
    }
    if scores:
        spread = _spread(
            connection,
            lambda facet: and_(
                table.c.experiment_id == experiment_id,
                table.c.facet == facet,
                table.c.mean.is_not(None),
            ),
            table.c.mean,
            {
                facet: (
                    found[label].mean or 0.0,
                    _span("score", found[label].low, found[label].high),
                )
                for facet, label in scores.items()
            },
        )
        for facet, label in scores.items():
            figures = found[label]
            figures.squares, counts = spread[facet]
            figures.histogram = Histogram(counts, *_span("score", figures.low, figures.high))
    # pass@k needs each record's (usable runs, passing runs), the mode of record modes each
    # record's mode: both counted by the refresh (record_tallies), read here as they are.
    passes, modes = read_record_tallies(connection, experiment_id, list(by_facet))
    for facet, label in by_facet.items():
        if catalog.evaluations[label] == "boolean":
            found[label].tally = passes.get(facet, Counter())
            _boolean_spread(found[label])
        elif catalog.evaluations[label] == "categorical":
            found[label].modes = modes.get(facet, Counter())
    return found


def _boolean_spread(figures: _LabelFigures) -> None:
    """A boolean label's spread and histogram from its tally of (runs, passes): each
    record's share is passes / runs, the very division its aggregate's mean is."""
    if not figures.values or figures.mean is None:
        return
    counts = [0] * BINS
    squares = 0.0
    figures.flaky = 0
    for (runs, passes), times in figures.tally.items():
        if runs:
            share = passes / runs
            figures.flaky += times if 0 < passes < runs else 0
            counts[_slice(share, 0.0, 1.0)] += times
            squares += times * (share - figures.mean) ** 2
    figures.squares = squares
    figures.histogram = Histogram(counts, 0.0, 1.0)


def _run_level(
    connection: Connection,
    experiment_id: str,
    catalog: Catalog,
    run: int,
    run_totals: dict[tuple[int, str], RunTotals],
    run_values: dict[tuple[int, str], Counter[str]],
) -> dict[str, _LabelFigures]:
    """Every label's figures in one run, where each record has a single value: counts,
    mean and bounds from the run's totals; the spread and histogram of a score label from
    one range of its value index."""
    found: dict[str, _LabelFigures] = {}
    spread_of: dict[str, tuple[float, tuple[float, float]]] = {}
    for label, metric_type in catalog.evaluations.items():
        totals = run_totals.get((run, evaluation_facet(label)), RunTotals())
        figures = found[label] = _LabelFigures(
            contributing=totals.n,
            errors=totals.errors,
            usable=totals.n,
            values=totals.numbers,
            low=totals.low,
            high=totals.high,
            modes=Counter(run_values.get((run, evaluation_facet(label)), Counter())),
        )
        if metric_type not in ("score", "boolean") or not totals.numbers:
            continue
        figures.mean = (totals.total or 0.0) / totals.numbers
        if metric_type == "boolean":
            passes = round(totals.total or 0.0)
            figures.tally.update({(1, 1): passes, (1, 0): totals.numbers - passes})
        bounds = _span(metric_type, totals.low, totals.high)
        if metric_type == "boolean":
            # Only 1s and 0s: their deviations and slices follow from the counts.
            falses = totals.numbers - totals.trues
            figures.squares = totals.trues * (1.0 - figures.mean) ** 2 + falses * figures.mean**2
            figures.histogram = Histogram([falses] + [0] * (BINS - 2) + [totals.trues], *bounds)
        else:
            spread_of[label] = (figures.mean, bounds)
    if spread_of:
        spread = _run_spread(connection, experiment_id, run, spread_of)
        for label, (mean, bounds) in spread_of.items():
            figures = found[label]
            squares, counts = spread.get(label, (0.0, [0] * BINS))
            totals = run_totals[(run, evaluation_facet(label))]
            # Booleans among a score label's numbers are 1/0: their slices and deviations
            # are added here, as the score index holds scores only.
            falses = totals.booleans - totals.trues
            for value, times in ((1.0, totals.trues), (0.0, falses)):
                if times:
                    counts[_slice(value, *bounds)] += times
                    squares += times * (value - mean) * (value - mean)
            figures.squares = squares
            figures.histogram = Histogram(counts, *bounds)
    return found


def _run_spread(
    connection: Connection,
    experiment_id: str,
    run: int,
    figures: dict[str, tuple[float, tuple[float, float]]],
) -> dict[str, tuple[float, list[int]]]:
    """``_spread`` of the labels' scores in one run, from ``ix_evaluations_score``: the
    conditions of that partial index, spelled out, let the database read only it."""
    table = evaluations
    return _spread(
        connection,
        lambda label: and_(
            table.c.experiment_id == experiment_id,
            table.c.label == label,
            table.c.run_iteration == run,
            table.c.score_value.is_not(None),
            table.c.error_type.is_(None),
        ),
        cast(table.c.score_value, Float),
        figures,
    )


def _per_run(
    catalog: Catalog,
    iterations: Sequence[int],
    run_totals: dict[tuple[int, str], RunTotals],
    run_values: dict[tuple[int, str], Counter[str]],
) -> dict[tuple[int, str], AggregateValue]:
    """(run, label) to the summary rule over that run's rows: a mean, a share or a mode."""
    found: dict[tuple[int, str], AggregateValue] = {}
    for label, kind in catalog.evaluations.items():
        facet = evaluation_facet(label)
        for iteration in iterations:
            if kind in ("score", "boolean"):
                totals = run_totals.get((iteration, facet))
                if totals is not None and totals.numbers:
                    found[(iteration, label)] = (totals.total or 0.0) / totals.numbers
            elif kind == "categorical":
                counts = run_values.get((iteration, facet))
                if counts:
                    found[(iteration, label)] = min(
                        counts.items(), key=lambda item: (-item[1], item[0])
                    )[0]
    return found


def _trace(
    connection: Connection,
    experiment_id: str,
    iterations: Sequence[int],
    run_totals: dict[tuple[int, str], RunTotals],
    *,
    whole: dict[str, RunTotals] | None,
) -> dict[str, TraceMetric]:
    """Duration (seconds), tokens and cost: means of record means, totals, percentiles.

    ``whole``: for every run (``None``: one run), the facets every record has in every run
    (``_whole``), whose mean of record means is the mean of their rows.
    """
    found: dict[str, TraceMetric] = {}
    means: dict[str, Any] = {}
    averaged = [facet for facet in TRACE_FACETS if whole is not None and facet not in whole]
    if averaged:
        table = record_aggregates
        means = {
            row.facet: row.value
            for row in connection.execute(
                select(table.c.facet, func.avg(table.c.mean).label("value"))
                .where(table.c.experiment_id == experiment_id, table.c.facet.in_(averaged))
                .group_by(table.c.facet)
            )
        }
    for facet in TRACE_FACETS:
        totals = RunTotals()
        for iteration in iterations:
            totals.add(run_totals.get((iteration, facet), RunTotals()))
        scale = 1e-9 if facet == "duration" else 1.0
        # One run: each record has one row, so the mean of record means is the row mean.
        value = (
            means.get(facet)
            if facet in averaged
            else ((totals.total or 0.0) / totals.n if totals.n else None)
        )
        found[facet] = TraceMetric(
            value=float(value) * scale if value is not None else None,
            total=float(totals.total) * scale if totals.total is not None and totals.n else None,
            rows=totals.n,
            p50=None,
            p95=None,
        )
    duration = found["duration"]
    if duration["rows"]:
        roots = and_(
            spans.c.experiment_id == experiment_id,
            spans.c.parent_id.is_(None),
            spans.c.run_iteration.in_(list(iterations)),
        )
        duration["p50"], duration["p95"] = (
            _percentile(connection, roots, duration["rows"], share) for share in (0.5, 0.95)
        )
    return found


def _percentile(connection: Connection, roots: Any, count: int, share: float) -> float:
    """A duration percentile in seconds, interpolated between closest ranks like numpy:
    two values read in order along ``ix_spans_root_duration``, none sorted, from whichever
    end of the index is nearer (the 95th percentile walks 5% of it, not 95%)."""
    position = (count - 1) * share
    low = int(position)
    high = min(low + 1, count - 1)
    from_top = low > count // 2
    order = spans.c.duration_ns.desc() if from_top else spans.c.duration_ns
    first = count - 1 - high if from_top else low
    pair = [
        float(value)
        for value in connection.execute(
            select(spans.c.duration_ns)
            .where(roots)
            .order_by(order)
            .limit(high - low + 1)
            .offset(first)
        ).scalars()
    ]
    if not pair:
        return 0.0
    if from_top:
        pair.reverse()
    upper = pair[1] if len(pair) > 1 else pair[0]
    return (pair[0] + (upper - pair[0]) * (position - low)) * 1e-9
