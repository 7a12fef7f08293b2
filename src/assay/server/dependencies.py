"""What route functions receive: the store, from the app (overridable in tests), and the
writer that groups the ingest requests of that store."""

from __future__ import annotations

import threading
import weakref
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from assay.store.sql.backend import SqlBackend
from assay.store.sql.ingest import IngestWriter


async def get_backend(request: Request) -> SqlBackend:
    """The app's store; tests replace it with ``app.dependency_overrides[get_backend]``."""
    # Async: a plain function would be sent to the thread pool on every request.
    backend: SqlBackend = request.app.state.backend
    return backend


Store = Annotated[SqlBackend, Depends(get_backend)]

# One writer per engine, not per app: a test may serve one store from several apps, or
# another store through a dependency override, and a store's writes must queue together.
_writers: weakref.WeakKeyDictionary[Engine, IngestWriter] = weakref.WeakKeyDictionary()
_writers_lock = threading.Lock()


def ingest_writer(store: SqlBackend) -> IngestWriter:
    """The group-commit writer of this store (see ``assay.store.sql.ingest.group``)."""
    with _writers_lock:
        writer = _writers.get(store.engine)
        if writer is None:
            writer = _writers[store.engine] = IngestWriter(store.engine)
        return writer


async def get_ingest_writer(store: Store) -> IngestWriter:
    return ingest_writer(store)


Writer = Annotated[IngestWriter, Depends(get_ingest_writer)]
