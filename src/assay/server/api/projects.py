"""Projects: create-or-get and list (``/projects``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.exc import IntegrityError

from assay.server.auth import Caller
from assay.server.dependencies import Store
from assay.server.jsonapi import JsonApiResponse, document, not_found, page_of, resource
from assay.server.wire import ProjectBody
from assay.store.records import ProjectInfo
from assay.store.sql.lookups import get_project, list_projects

router = APIRouter(tags=["projects"])


def project_resource(project: ProjectInfo) -> dict[str, object]:
    return resource(
        "projects", project.id, {"name": project.name, "description": project.description}
    )


@router.post("/projects", summary="Create a project, or get the one with this name")
def create_project(body: ProjectBody, store: Store, caller: Caller) -> JsonApiResponse:
    attributes = body.data.attributes
    if not caller.may_create(attributes.name):
        raise caller.forbidden_project(attributes.name)
    try:
        project = store.ensure_project(attributes.name, attributes.description or "")
    except IntegrityError:
        # Another request created it between our look-up and our insert.
        found = store.find_project(attributes.name)
        if found is None:
            raise
        project = found
    return document(project_resource(project))


@router.get("/projects", summary="List projects")
def list_all_projects(
    store: Store,
    caller: Caller,
    ids: Annotated[list[str], Query(alias="filter[id]")] = [],  # noqa: B006 - FastAPI copies it
    names: Annotated[list[str], Query(alias="filter[name]")] = [],  # noqa: B006
    limit: Annotated[int, Query(alias="page[limit]", ge=1, le=5000)] = 100,
    cursor: Annotated[str | None, Query(alias="page[cursor]")] = None,
) -> JsonApiResponse:
    found = [p for p in list_projects(store.engine, ids=ids, names=names) if caller.sees(p.id)]
    page, after = page_of(found, cursor=cursor, limit=limit)
    return document(
        [project_resource(project) for project in page], meta={"after": after} if after else None
    )


@router.get("/projects/{project_id}", summary="Get a project")
def get_one_project(project_id: str, store: Store, caller: Caller) -> JsonApiResponse:
    project = get_project(store.engine, project_id)
    if project is None or not caller.sees(project.id):
        raise not_found(f"No project with id {project_id!r}", parameter="project_id")
    return document(project_resource(project))
