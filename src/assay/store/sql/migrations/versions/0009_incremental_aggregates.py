"""Incremental per-record aggregates: high-water marks and tallies of value kinds

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("aggregate_state") as table:
        table.add_column(sa.Column("row_mark", sa.BigInteger(), nullable=True))
        table.add_column(sa.Column("evaluation_mark", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("record_aggregates") as table:
        table.add_column(sa.Column("kinds", sa.Integer(), nullable=True))
    with op.batch_alter_table("experiment_facets") as table:
        table.add_column(sa.Column("record_kinds", sa.JSON(none_as_null=True), nullable=True))
    # Aggregates are derived data: forgetting when they were built makes the next search
    # rebuild them in full, which fills in the marks and the kinds.
    op.execute("DELETE FROM aggregate_state")


def downgrade() -> None:
    with op.batch_alter_table("experiment_facets") as table:
        table.drop_column("record_kinds")
    with op.batch_alter_table("record_aggregates") as table:
        table.drop_column("kinds")
    with op.batch_alter_table("aggregate_state") as table:
        table.drop_column("evaluation_mark")
        table.drop_column("row_mark")
    op.execute("DELETE FROM aggregate_state")
