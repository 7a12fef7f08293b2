"""Pinned baselines in SQL: one experiment per (project, dataset), replaced by the next pin."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from assay.errors import ExperimentNotFoundError
from assay.store.records import PinnedBaseline
from assay.store.sql.tables import baselines, datasets, experiments, projects


def set_baseline(engine: Engine, experiment_id: str) -> PinnedBaseline:
    """Pin the experiment as the baseline of its project and dataset (replacing any other)."""
    with engine.connect() as connection:
        found = connection.execute(
            select(experiments.c.project_id, experiments.c.dataset_id).where(
                experiments.c.id == experiment_id
            )
        ).first()
    if found is None:
        raise ExperimentNotFoundError(
            f"No experiment with id {experiment_id!r}; `assay experiments list` shows them"
        )
    key = and_(
        baselines.c.project_id == found.project_id, baselines.c.dataset_id == found.dataset_id
    )
    values = {"experiment_id": experiment_id, "set_at": datetime.now(UTC)}
    # Update, else insert: portable across dialects. Two pins racing on a new pair make
    # one insert fail on the primary key; that one then updates the other's row.
    for attempt in range(2):
        try:
            with engine.begin() as connection:
                if connection.execute(update(baselines).where(key).values(**values)).rowcount:
                    break
                connection.execute(
                    insert(baselines).values(
                        project_id=found.project_id, dataset_id=found.dataset_id, **values
                    )
                )
                break
        except IntegrityError:
            if attempt:
                raise
    pinned = list_baselines(engine, project_id=found.project_id, dataset_id=found.dataset_id)
    return pinned[0]


def list_baselines(
    engine: Engine, *, project_id: str | None = None, dataset_id: str | None = None
) -> list[PinnedBaseline]:
    """The pinned baselines, by project and dataset name; only those of the given ids."""
    query: Any = (
        select(
            baselines.c.project_id,
            projects.c.name.label("project_name"),
            baselines.c.dataset_id,
            datasets.c.name.label("dataset_name"),
            baselines.c.experiment_id,
            experiments.c.name.label("experiment_name"),
            baselines.c.set_at,
        )
        .join(projects, projects.c.id == baselines.c.project_id)
        .join(datasets, datasets.c.id == baselines.c.dataset_id)
        .join(experiments, experiments.c.id == baselines.c.experiment_id)
        .order_by(projects.c.name, datasets.c.name, baselines.c.dataset_id)
    )
    if project_id is not None:
        query = query.where(baselines.c.project_id == project_id)
    if dataset_id is not None:
        query = query.where(baselines.c.dataset_id == dataset_id)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        PinnedBaseline(
            project_id=row.project_id,
            project_name=row.project_name,
            dataset_id=row.dataset_id,
            dataset_name=row.dataset_name,
            experiment_id=row.experiment_id,
            experiment_name=row.experiment_name,
            # SQLite hands back naive datetimes even for timezone-aware columns; they are UTC.
            set_at=row.set_at if row.set_at.tzinfo else row.set_at.replace(tzinfo=UTC),
        )
        for row in rows
    ]
