"""An index to test one record's aggregate of a label by the record's position

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_record_aggregates_probe",
        "record_aggregates",
        ["experiment_id", "facet", "idx", "mean", "record_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_record_aggregates_probe", "record_aggregates")
