"""Covering indexes for multi-run search's record sets; the record count of a rebuild

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_SHORT_MODE = sa.text("length(mode) <= 200")


def upgrade() -> None:
    op.drop_index("ix_record_aggregates_mean", "record_aggregates")
    op.create_index(
        "ix_record_aggregates_mean",
        "record_aggregates",
        ["experiment_id", "facet", "mean", "idx", "record_id"],
    )
    op.create_index(
        "ix_record_aggregates_mode",
        "record_aggregates",
        ["experiment_id", "facet", "mode", "idx", "record_id"],
        sqlite_where=_SHORT_MODE,
        postgresql_where=_SHORT_MODE,
    )
    with op.batch_alter_table("aggregate_state") as table:
        table.add_column(sa.Column("records", sa.Integer(), nullable=False, server_default="0"))
    # Aggregates are derived data: forgetting when they were built makes the next search
    # rebuild them, which fills in the new record count.
    op.execute("DELETE FROM aggregate_state")


def downgrade() -> None:
    with op.batch_alter_table("aggregate_state") as table:
        table.drop_column("records")
    op.drop_index("ix_record_aggregates_mode", "record_aggregates")
    op.drop_index("ix_record_aggregates_mean", "record_aggregates")
    op.create_index(
        "ix_record_aggregates_mean", "record_aggregates", ["experiment_id", "facet", "mean"]
    )
