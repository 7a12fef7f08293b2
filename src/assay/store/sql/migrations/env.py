"""Alembic environment: migrations run on the connection Assay hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from assay.store.sql.tables import metadata

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when someone runs the alembic CLI
    raise RuntimeError("Assay runs its migrations itself: call assay.store.sql.engine.migrate()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
