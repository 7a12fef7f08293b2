"""Per-run aggregates and record tallies for the summary; covering indexes for its passes
over records and for duration percentiles

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_ROOT = sa.text("parent_id IS NULL")
_MEAN = ["experiment_id", "facet", "mean", "idx", "record_id"]


def upgrade() -> None:
    op.create_table(
        "run_aggregates",
        sa.Column("experiment_id", sa.String(length=36), nullable=False),
        sa.Column("run_iteration", sa.Integer(), nullable=False),
        sa.Column("facet", sa.String(length=220), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("numbers", sa.BigInteger(), nullable=False),
        sa.Column("booleans", sa.BigInteger(), nullable=False),
        sa.Column("trues", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=True),
        sa.Column("low", sa.Float(), nullable=True),
        sa.Column("high", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_run_aggregates_experiment_id_experiments"),
        ),
    )
    op.create_index(
        "ix_run_aggregates_run", "run_aggregates", ["experiment_id", "run_iteration", "facet"]
    )
    op.create_table(
        "record_tallies",
        sa.Column("experiment_id", sa.String(length=36), nullable=False),
        sa.Column("facet", sa.String(length=220), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=True),
        sa.Column("passes", sa.Integer(), nullable=True),
        sa.Column("mode", sa.Text(), nullable=True),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_record_tallies_experiment_id_experiments"),
        ),
    )
    op.create_index("ix_record_tallies_facet", "record_tallies", ["experiment_id", "facet"])
    op.create_table(
        "run_aggregate_state",
        sa.Column("experiment_id", sa.String(length=36), nullable=False),
        sa.Column("row_mark", sa.BigInteger(), nullable=False),
        sa.Column("evaluation_mark", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_run_aggregate_state_experiment_id_experiments"),
        ),
        sa.PrimaryKeyConstraint("experiment_id", name=op.f("pk_run_aggregate_state")),
    )
    op.drop_index("ix_record_aggregates_mean", "record_aggregates")
    op.create_index("ix_record_aggregates_mean", "record_aggregates", [*_MEAN, "n", "errors"])
    op.create_index(
        "ix_spans_root_duration",
        "spans",
        ["experiment_id", "duration_ns", "run_iteration"],
        sqlite_where=_ROOT,
        postgresql_where=_ROOT,
    )
    # Aggregates are derived data: forgetting when they were built makes the next search
    # rebuild them in full, which fills in the per-run aggregates.
    op.execute("DELETE FROM aggregate_state")


def downgrade() -> None:
    op.drop_index("ix_spans_root_duration", "spans")
    op.drop_index("ix_record_aggregates_mean", "record_aggregates")
    op.create_index("ix_record_aggregates_mean", "record_aggregates", _MEAN)
    op.drop_table("run_aggregate_state")
    op.drop_index("ix_record_tallies_facet", "record_tallies")
    op.drop_table("record_tallies")
    op.drop_index("ix_run_aggregates_run", "run_aggregates")
    op.drop_table("run_aggregates")
