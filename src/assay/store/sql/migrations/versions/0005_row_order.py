"""Rows in page order, with their trace metrics, for row-level searches

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ROOTS = sa.text("parent_id IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_spans_root_order",
        "spans",
        [
            "experiment_id",
            "run_iteration",
            "idx",
            "total_tokens",
            "estimated_total_cost",
            "duration_ns",
        ],
        sqlite_where=_ROOTS,
        postgresql_where=_ROOTS,
    )


def downgrade() -> None:
    op.drop_index("ix_spans_root_order", "spans")
