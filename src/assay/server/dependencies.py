"""What route functions receive: the store, from the app (overridable in tests)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from assay.store.sql.backend import SqlBackend


def get_backend(request: Request) -> SqlBackend:
    """The app's store; tests replace it with ``app.dependency_overrides[get_backend]``."""
    backend: SqlBackend = request.app.state.backend
    return backend


Store = Annotated[SqlBackend, Depends(get_backend)]
