"""The web UI of ``assay serve``: server-rendered pages over the same store as the API.

Pages are Jinja2 templates (``templates/``) with htmx and a little JavaScript for the parts
that update in place (``static/``, vendored: no build step, no CDN, works offline):

- ``/llm/experiments``: the experiments, filtered, with each evaluation's summary value;
- ``/llm/experiments/{id}``: an experiment's summary, run selector and records view
  (search bar, facets, table);
- ``/llm/experiments/{id}/records/{record_id}``: one record's runs and traces;
- ``/llm/experiments/compare?a=..&b=..``: two or more experiments side by side;
- ``/llm/datasets/{id}``: a dataset's records, versions and experiments.

Every view's state is in its URL. Where the server requires API keys, a page asks for the
key once and keeps it in a cookie (:mod:`.access`). None of these routes is in the OpenAPI
document.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse, Response

from assay.server.ui import access, compare, datasets, experiments, records, summary
from assay.server.ui.rendering import HERE, PREFIX, PageError, error_page

__all__ = ["install"]


def install(app: FastAPI) -> None:
    """Add the pages, their static files and their HTML error page to ``app``."""
    # compare before experiments: /llm/experiments/compare is not an experiment "compare".
    for module in (access, compare, summary, records, experiments, datasets):
        app.include_router(module.router, include_in_schema=False)

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return RedirectResponse(f"{PREFIX}/experiments", status_code=307)

    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(HERE / "static")), name="assay-static")

    async def on_page_error(request: Request, error: Exception) -> Response:
        if isinstance(error, access.LoginRequired):
            return access.login_page(request, error)
        assert isinstance(error, PageError)
        return error_page(request, error)

    app.add_exception_handler(PageError, on_page_error)
