"""Look-ups the server needs and the ``Backend`` interface does not have (yet).

Projects by id and the list of all projects (``GET .../projects``, the project of a
dataset URL), which experiments exist (the span intake), and the projects of datasets and
experiments (what an API key may see). Kept here so that column names stay in the store
package.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, select

from assay.store.records import ProjectInfo
from assay.store.sql.tables import datasets, experiments, projects


def list_projects(
    engine: Engine, *, ids: Sequence[str] = (), names: Sequence[str] = ()
) -> list[ProjectInfo]:
    """Projects, by name; ``ids`` and ``names`` (when given) keep only those."""
    query = select(projects.c.id, projects.c.name, projects.c.description).order_by(
        projects.c.name, projects.c.id
    )
    if ids:
        query = query.where(projects.c.id.in_(list(ids)))
    if names:
        query = query.where(projects.c.name.in_(list(names)))
    with engine.connect() as connection:
        return [
            ProjectInfo(id=row.id, name=row.name, description=row.description)
            for row in connection.execute(query)
        ]


def get_project(engine: Engine, project_id: str) -> ProjectInfo | None:
    """The project with this id, or None."""
    found = list_projects(engine, ids=[project_id])
    return found[0] if found else None


def existing_experiments(engine: Engine, ids: Sequence[str]) -> set[str]:
    """Which of these experiment ids exist."""
    if not ids:
        return set()
    with engine.connect() as connection:
        return set(
            connection.execute(
                select(experiments.c.id).where(experiments.c.id.in_(list(ids)))
            ).scalars()
        )


def experiment_projects(engine: Engine, ids: Sequence[str]) -> dict[str, str]:
    """The project id of each of these experiments that exists (what an API key may see)."""
    if not ids:
        return {}
    query = select(experiments.c.id, experiments.c.project_id).where(
        experiments.c.id.in_(list(ids))
    )
    with engine.connect() as connection:
        return {row.id: row.project_id for row in connection.execute(query)}


def dataset_projects(engine: Engine, ids: Sequence[str]) -> dict[str, str]:
    """The project id of each of these datasets that exists, deleted ones included."""
    if not ids:
        return {}
    query = select(datasets.c.id, datasets.c.project_id).where(datasets.c.id.in_(list(ids)))
    with engine.connect() as connection:
        return {row.id: row.project_id for row in connection.execute(query)}
