"""What the web UI reads beside the ``Backend`` interface: pages, counts and ranges.

Each function answers one page's question with a few indexed queries, never by loading
every row of an experiment: a page of experiments with their totals, the summary value of
each evaluation from the per-record aggregates (the seed's rules: mean of record means,
mean of boolean shares, mode of record modes), the counts and ranges that the records
view's facets show, and the rows of one record. Kept here so that column names stay in
the store package.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select

from assay.query import Catalog
from assay.store.records import (
    ExperimentInfo,
    ExperimentStatus,
    MetricType,
    RowRecord,
    StoredRecord,
)
from assay.store.sql.aggregates import evaluation_facet
from assay.store.sql.datasets import visible_at
from assay.store.sql.record_tallies import read_record_tallies
from assay.store.sql.search import load_catalog
from assay.store.sql.tables import (
    MODE_INDEX_LENGTH,
    aggregate_state,
    dataset_records,
    evaluations,
    experiments,
    record_aggregates,
    run_aggregates,
    runs,
    spans,
)
from assay.store.sql.values import rows_from_columns

__all__ = [
    "ExperimentTotals",
    "FacetCounts",
    "data_version",
    "experiment_page",
    "experiment_totals",
    "facet_counts",
    "record_rows",
]

SummaryValue = float | str | None


@dataclass(frozen=True)
class ExperimentTotals:
    """One experiment's records and each evaluation's summary value, for a list."""

    records: int
    """Records with at least one row (as of the last aggregate rebuild)."""
    rows: int
    """Rows (record x run) written."""
    evaluations: dict[str, tuple[MetricType, SummaryValue]] = field(default_factory=dict)
    """Label to (metric type, summary value by the seed's rules)."""


@dataclass(frozen=True)
class FacetCounts:
    """What the facets of a records view offer, over one run's rows or every record."""

    catalog: Catalog
    """The experiment's evaluation labels (with metric types) and tag keys."""
    values: dict[str, list[tuple[str, int]]]
    """``"status"`` or ``"evaluation:<label>"`` to each value with its count, most common
    first: rows of the run, or records by their most common value across runs."""
    ranges: dict[str, tuple[float | None, float | None]]
    """``"duration"``, ``"total_tokens"``, ``"estimated_total_cost"`` or
    ``"evaluation:<label>"`` (scores) to the smallest and largest value (record means
    across runs, or row values of the run)."""


def experiment_page(
    engine: Engine,
    *,
    project_id: str | None = None,
    dataset_id: str | None = None,
    name_contains: str | None = None,
    status: ExperimentStatus | None = None,
    project_ids: Collection[str] | None = None,
    limit: int = 25,
    offset: int = 0,
) -> tuple[int, list[str]]:
    """The ids of one page of experiments, newest first, and how many match in all.

    ``project_ids`` (when not None) keeps only experiments of those projects: what an API
    key may see.
    """
    conditions: list[Any] = []
    if project_id:
        conditions.append(experiments.c.project_id == project_id)
    if dataset_id:
        conditions.append(experiments.c.dataset_id == dataset_id)
    if name_contains:
        conditions.append(experiments.c.name.contains(name_contains, autoescape=True))
    if status:
        conditions.append(experiments.c.status == status)
    if project_ids is not None:
        conditions.append(experiments.c.project_id.in_(list(project_ids)))
    where = and_(True, *conditions)
    with engine.connect() as connection:
        total = connection.execute(
            select(func.count()).select_from(experiments).where(where)
        ).scalar_one()
        ids = connection.execute(
            select(experiments.c.id)
            .where(where)
            .order_by(experiments.c.created_at.desc(), experiments.c.id)
            .limit(limit)
            .offset(offset)
        ).scalars()
        return int(total), list(ids)


def data_version(engine: Engine, experiment_id: str) -> tuple[int, int, int]:
    """What anything computed from an experiment's rows is current for: the writers' row
    and evaluation counters, and the aggregates' row mark (one primary-key lookup each).

    The mark catches what the counters miss: the HTTP intake rolling a late child span's
    tokens onto a row in place moves the mark back (``aggregates.reopen_rows``), and the
    refresh after it moves the mark past the child.
    """
    with engine.connect() as connection:
        found = connection.execute(
            select(
                experiments.c.row_count,
                experiments.c.evaluation_count,
                select(aggregate_state.c.row_mark)
                .where(aggregate_state.c.experiment_id == experiment_id)
                .scalar_subquery(),
            ).where(experiments.c.id == experiment_id)
        ).first()
    if found is None:
        return (0, 0, 0)
    return (int(found[0]), int(found[1]), int(found[2] or 0))


def short_mode(table: Any) -> Any:
    """The condition that lets a count of modes read only the covering mode index.

    ``ix_record_aggregates_mode`` is partial (modes up to ``MODE_INDEX_LENGTH``
    characters); the database uses it only when the query states the same condition, and
    reading the table instead costs a row lookup per record (1 s against 80 ms at 100,000
    records). A value longer than that is no checkbox anyone would tick: such values are
    left out of the facets' counts, and can still be searched for.
    """
    return func.length(table.c.mode) <= MODE_INDEX_LENGTH


def experiment_totals(engine: Engine, experiment_ids: Sequence[str]) -> dict[str, ExperimentTotals]:
    """Records, rows and summary values of these experiments, from their aggregates.

    The aggregates must be fresh (``SqlBackend.refresh_aggregates(id, only_if_stale=True)``
    first); an experiment never aggregated reports no records and no evaluations.
    """
    if not experiment_ids:
        return {}
    ids = list(experiment_ids)
    with engine.connect() as connection:
        counts = {
            row.id: (int(row.row_count), int(row.records or 0))
            for row in connection.execute(
                select(experiments.c.id, experiments.c.row_count, aggregate_state.c.records)
                .outerjoin(aggregate_state, aggregate_state.c.experiment_id == experiments.c.id)
                .where(experiments.c.id.in_(ids))
            )
        }
        catalogs = {experiment_id: load_catalog(connection, experiment_id) for experiment_id in ids}
        whole = _whole_means(connection, ids, {key: value[1] for key, value in counts.items()})
        mean_of: dict[tuple[str, str], Any] = dict(whole)
        mode_counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        table = record_aggregates
        for experiment_id in ids:
            labels = catalogs[experiment_id].evaluations
            # Facets every record has in every run take their mean from the runs' totals;
            # the others, one range of the covering mean index each.
            averaged = [
                evaluation_facet(label)
                for label, kind in labels.items()
                if kind in ("score", "boolean")
                and (experiment_id, evaluation_facet(label)) not in whole
            ]
            if averaged:
                for row in connection.execute(
                    select(table.c.facet, func.avg(table.c.mean).label("value"))
                    .where(table.c.experiment_id == experiment_id, table.c.facet.in_(averaged))
                    .group_by(table.c.facet)
                ):
                    mean_of[(experiment_id, row.facet)] = row.value
            categorical = [
                evaluation_facet(label) for label, kind in labels.items() if kind == "categorical"
            ]
            # The mode of record modes: the records counted by mode (record_tallies).
            _, modes = read_record_tallies(connection, experiment_id, categorical)
            for facet, counted in modes.items():
                mode_counts[(experiment_id, facet)].update(counted)
    found: dict[str, ExperimentTotals] = {}
    for experiment_id in ids:
        rows, records = counts.get(experiment_id, (0, 0))
        values: dict[str, tuple[MetricType, SummaryValue]] = {}
        for label, metric_type in sorted(catalogs[experiment_id].evaluations.items()):
            key = (experiment_id, evaluation_facet(label))
            value: SummaryValue = None
            if metric_type in ("score", "boolean"):
                mean = mean_of.get(key)
                value = float(mean) if mean is not None else None
            elif metric_type == "categorical":
                value = _mode(mode_counts.get(key, Counter()))
            values[label] = (metric_type, value)
        found[experiment_id] = ExperimentTotals(records=records, rows=rows, evaluations=values)
    return found


def _whole_means(
    connection: Connection, ids: Sequence[str], records: dict[str, int]
) -> dict[tuple[str, str], float]:
    """(experiment, facet) to the mean of record means, for the numeric evaluation facets
    every record has a value of in every run: with as many values each, that is the mean of
    all values, which the runs' totals (``run_aggregates``) hold."""
    runs_of: Counter[str] = Counter(
        connection.execute(
            select(runs.c.experiment_id).where(runs.c.experiment_id.in_(ids))
        ).scalars()
    )
    table = run_aggregates
    found: dict[tuple[str, str], float] = {}
    for row in connection.execute(
        select(
            table.c.experiment_id,
            table.c.facet,
            func.sum(table.c.n).label("n"),
            func.sum(table.c.errors).label("errors"),
            func.sum(table.c.numbers).label("numbers"),
            func.sum(table.c.total).label("total"),
        )
        .where(
            table.c.experiment_id.in_(ids),
            table.c.value.is_(None),
            table.c.facet.startswith("evaluation:"),
        )
        .group_by(table.c.experiment_id, table.c.facet)
    ):
        expected = records.get(row.experiment_id, 0) * runs_of[row.experiment_id]
        n, numbers = int(row.n or 0), int(row.numbers or 0)
        if expected and n == expected == numbers and not row.errors and row.total is not None:
            found[(row.experiment_id, row.facet)] = float(row.total) / numbers
    return found


def _mode(counts: Counter[str]) -> str | None:
    """The most common value; a tie goes to the alphabetically first, as everywhere."""
    if not counts:
        return None
    return min(counts.items(), key=lambda item: (-item[1], item[0]))[0]


_RANGE_FACETS = ("duration", "total_tokens", "estimated_total_cost")


def facet_counts(engine: Engine, experiment_id: str, *, run: int | None = None) -> FacetCounts:
    """Value counts and ranges for the facets of the records view.

    ``run=None``: over records, by their aggregate across runs (what ``@multi_run_``
    terms select on; the aggregates must be fresh). ``run=N``: over the rows of run N.
    """
    with engine.connect() as connection:
        catalog = load_catalog(connection, experiment_id)
        values: dict[str, list[tuple[str, int]]] = {}
        ranges: dict[str, tuple[float | None, float | None]] = {}
        categorical = [
            label
            for label, kind in catalog.evaluations.items()
            if kind in ("categorical", "boolean")
        ]
        scores = [label for label, kind in catalog.evaluations.items() if kind == "score"]
        if run is None:
            table = record_aggregates
            mine = table.c.experiment_id == experiment_id
            for row in connection.execute(
                select(table.c.facet, table.c.mode, func.count().label("times"))
                .where(
                    mine,
                    table.c.facet.in_(["status", *(evaluation_facet(x) for x in categorical)]),
                    short_mode(table),
                )
                .group_by(table.c.facet, table.c.mode)
            ):
                values.setdefault(row.facet, []).append((str(row.mode), int(row.times)))
            wanted = [*_RANGE_FACETS, *(evaluation_facet(label) for label in scores)]
            for row in connection.execute(
                select(
                    table.c.facet,
                    func.min(table.c.mean).label("low"),
                    func.max(table.c.mean).label("high"),
                )
                .where(mine, table.c.facet.in_(wanted))
                .group_by(table.c.facet)
            ):
                ranges[row.facet] = (_number(row.low), _number(row.high))
        else:
            roots = and_(
                spans.c.experiment_id == experiment_id,
                spans.c.run_iteration == run,
                spans.c.parent_id.is_(None),
            )
            values["status"] = [
                (str(row.status), int(row.times))
                for row in connection.execute(
                    select(spans.c.status, func.count().label("times"))
                    .where(roots)
                    .group_by(spans.c.status)
                )
            ]
            bounds = connection.execute(
                select(
                    *(
                        function(spans.c[column]).label(f"{column}_{name}")
                        for column in ("duration_ns", "total_tokens", "estimated_total_cost")
                        for name, function in (("low", func.min), ("high", func.max))
                    )
                ).where(roots)
            ).one()
            for facet, column in zip(
                _RANGE_FACETS, ("duration_ns", "total_tokens", "estimated_total_cost"), strict=True
            ):
                ranges[facet] = (
                    _number(getattr(bounds, f"{column}_low")),
                    _number(getattr(bounds, f"{column}_high")),
                )
            scope = and_(
                evaluations.c.experiment_id == experiment_id,
                evaluations.c.run_iteration == run,
                evaluations.c.error_type.is_(None),
            )
            if categorical:
                for row in connection.execute(
                    select(
                        evaluations.c.label,
                        evaluations.c.categorical_value,
                        evaluations.c.boolean_value,
                        func.count().label("times"),
                    )
                    .where(scope, evaluations.c.label.in_(categorical))
                    .group_by(
                        evaluations.c.label,
                        evaluations.c.categorical_value,
                        evaluations.c.boolean_value,
                    )
                ):
                    if row.boolean_value is not None:
                        value = "true" if row.boolean_value else "false"
                    elif row.categorical_value is not None:
                        value = str(row.categorical_value)
                    else:
                        continue
                    values.setdefault(evaluation_facet(row.label), []).append(
                        (value, int(row.times))
                    )
            if scores:
                for row in connection.execute(
                    select(
                        evaluations.c.label,
                        func.min(evaluations.c.score_value).label("low"),
                        func.max(evaluations.c.score_value).label("high"),
                    )
                    .where(scope, evaluations.c.label.in_(scores))
                    .group_by(evaluations.c.label)
                ):
                    ranges[evaluation_facet(row.label)] = (_number(row.low), _number(row.high))
    for key, items in values.items():
        values[key] = sorted(items, key=lambda item: (-item[1], item[0]))
    return FacetCounts(catalog=catalog, values=values, ranges=ranges)


def _number(value: Any) -> float | None:
    return float(value) if value is not None else None


def record_rows(engine: Engine, info: ExperimentInfo, record_id: str) -> list[RowRecord]:
    """Every run's row of one record, in run order, with evaluations and child spans.

    Three index lookups (roots by run and record, evaluations by span, children by trace).
    """
    iterations = [run.run_iteration for run in info.runs] or [1]
    with engine.connect() as connection:
        roots = connection.execute(
            select(spans)
            .where(
                spans.c.experiment_id == info.id,
                spans.c.run_iteration.in_(iterations),
                spans.c.record_id == record_id,
                spans.c.parent_id.is_(None),
            )
            .order_by(spans.c.run_iteration)
        ).all()
        if not roots:
            return []
        evaluation_rows = connection.execute(
            select(evaluations)
            .where(
                evaluations.c.experiment_id == info.id,
                evaluations.c.span_id.in_([row.span_id for row in roots]),
            )
            .order_by(evaluations.c.pk)
        ).all()
        child_rows = connection.execute(
            select(spans)
            .where(
                spans.c.experiment_id == info.id,
                spans.c.trace_id.in_([row.trace_id for row in roots]),
                spans.c.parent_id.is_not(None),
            )
            .order_by(spans.c.start_ns, spans.c.pk)
        ).all()
    return rows_from_columns(roots, evaluation_rows, child_rows)


def dataset_page(
    engine: Engine, dataset_id: str, *, version: int, limit: int, offset: int
) -> tuple[int, list[StoredRecord]]:
    """How many records a dataset version has, and one page of them in dataset order.

    Two queries over the version index (a count and a page), where ``dataset_records``
    would read every record of the version to show fifty.
    """
    table = dataset_records
    where = and_(table.c.dataset_id == dataset_id, visible_at(version))
    with engine.connect() as connection:
        total = connection.execute(select(func.count()).select_from(table).where(where))
        count = int(total.scalar_one())
        rows = connection.execute(
            select(table)
            .where(where)
            .order_by(table.c.position, table.c.pk)
            .limit(limit)
            .offset(offset)
        ).all()
    return count, [
        StoredRecord(
            record_id=row.record_id,
            input_data=row.input,
            expected_output=row.expected_output,
            metadata=row.metadata,
            tags=row.tags,
            canonical_id=row.canonical_id,
        )
        for row in rows
    ]
