"""Per-record aggregates for multi-run search

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "record_aggregates",
        sa.Column("experiment_id", sa.String(length=36), nullable=False),
        sa.Column("facet", sa.String(length=220), nullable=False),
        sa.Column("record_id", sa.String(length=64), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("mean", sa.Float(), nullable=True),
        sa.Column("mode", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_record_aggregates_experiment_id_experiments"),
        ),
        sa.PrimaryKeyConstraint(
            "experiment_id", "facet", "record_id", name=op.f("pk_record_aggregates")
        ),
    )
    with op.batch_alter_table("record_aggregates", schema=None) as batch_op:
        batch_op.create_index(
            "ix_record_aggregates_mean", ["experiment_id", "facet", "mean"], unique=False
        )
    op.create_table(
        "aggregate_state",
        sa.Column("experiment_id", sa.String(length=36), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("evaluations", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_aggregate_state_experiment_id_experiments"),
        ),
        sa.PrimaryKeyConstraint("experiment_id", name=op.f("pk_aggregate_state")),
    )


def downgrade() -> None:
    op.drop_table("aggregate_state")
    with op.batch_alter_table("record_aggregates", schema=None) as batch_op:
        batch_op.drop_index("ix_record_aggregates_mean")
    op.drop_table("record_aggregates")
