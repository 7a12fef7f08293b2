"""A narrow index for counting one run's rows by their total tokens

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_ROOT = sa.text("parent_id IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_spans_root_tokens",
        "spans",
        ["experiment_id", "run_iteration", "total_tokens", "span_id"],
        sqlite_where=_ROOT,
        postgresql_where=_ROOT,
    )


def downgrade() -> None:
    op.drop_index("ix_spans_root_tokens", "spans")
