"""HTTP ingestion: spans by id, child spans by trace, evaluations posted over HTTP

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain CREATE INDEX on both dialects: no table rebuild of a possibly large spans table.
    op.create_index("uq_spans_span", "spans", ["experiment_id", "span_id"], unique=True)
    op.create_index(
        "ix_spans_child_trace",
        "spans",
        ["experiment_id", "trace_id"],
        unique=False,
        sqlite_where=sa.text("parent_id IS NOT NULL"),
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )
    op.create_table(
        "posted_evaluations",
        sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("experiment_id", sa.String(length=36), nullable=False),
        sa.Column("span_id", sa.String(length=32), nullable=False),
        sa.Column("run_iteration", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("metric_type", sa.String(length=16), nullable=False),
        sa.Column("score_value", sa.Float(), nullable=True),
        sa.Column("categorical_value", sa.Text(), nullable=True),
        sa.Column("boolean_value", sa.Boolean(), nullable=True),
        sa.Column("json_value", sa.JSON(), nullable=True),
        sa.Column("raw_value", sa.JSON(), nullable=True),
        sa.Column("reasoning", sa.Text(), nullable=True),
        sa.Column("assessment", sa.String(length=16), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=True),
        sa.Column("error_type", sa.String(length=400), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_stack", sa.Text(), nullable=True),
        sa.Column("timestamp_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_posted_evaluations_experiment_id_experiments"),
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_posted_evaluations")),
    )
    op.create_index(
        "uq_posted_evaluations_key",
        "posted_evaluations",
        ["experiment_id", "span_id", "run_iteration", "label"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_posted_evaluations_key", table_name="posted_evaluations")
    op.drop_table("posted_evaluations")
    op.drop_index(
        "ix_spans_child_trace",
        table_name="spans",
        sqlite_where=sa.text("parent_id IS NOT NULL"),
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )
    op.drop_index("uq_spans_span", table_name="spans")
