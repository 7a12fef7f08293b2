"""Search: evaluations by span, aggregates by record, an experiment's facets

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_evaluations_span", "evaluations", ["experiment_id", "span_id"])
    op.create_index(
        "ix_record_aggregates_record", "record_aggregates", ["experiment_id", "record_id"]
    )
    op.create_table(
        "experiment_facets",
        sa.Column("experiment_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("metric_type", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_experiment_facets_experiment_id_experiments"),
        ),
        sa.PrimaryKeyConstraint("experiment_id", "kind", "name", name=op.f("pk_experiment_facets")),
    )


def downgrade() -> None:
    op.drop_table("experiment_facets")
    op.drop_index("ix_record_aggregates_record", "record_aggregates")
    op.drop_index("ix_evaluations_span", "evaluations")
