"""Where experiments are kept: one backend interface, a SQL implementation."""

from __future__ import annotations

from assay.config import database_url
from assay.store.backend import Backend


def open_backend(url: str | None = None) -> Backend:
    """The SQL backend at ``url`` (default: ``ASSAY_DATABASE_URL`` or ``~/.assay/assay.db``)."""
    from assay.store.sql.backend import SqlBackend

    return SqlBackend(url or database_url())


__all__ = ["Backend", "open_backend"]
