"""Per-run counts of rows by token count, for counting row queries on a token facet

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# Copied, not imported: a migration keeps the schema of its day.
_TOKEN_COLUMNS = ("total_tokens", "input_tokens", "output_tokens")


def upgrade() -> None:
    counts = op.create_table(
        "run_token_counts",
        sa.Column("experiment_id", sa.String(length=36), nullable=False),
        sa.Column("facet", sa.String(length=24), nullable=False),
        sa.Column("run_iteration", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_run_token_counts_experiment_id_experiments"),
        ),
        sa.PrimaryKeyConstraint(
            "experiment_id",
            "facet",
            "run_iteration",
            "tokens",
            name=op.f("pk_run_token_counts"),
        ),
        sqlite_with_rowid=False,
    )
    # The per-run totals already built say which rows they include (``row_mark``): count
    # the same rows, so that the two agree and stores upgraded in place search fast at
    # once. Where rows were reopened since, the marks differ and the next refresh rebuilds
    # both.
    spans = sa.table(
        "spans",
        sa.column("pk", sa.BigInteger()),
        sa.column("experiment_id", sa.String()),
        sa.column("run_iteration", sa.Integer()),
        sa.column("parent_id", sa.String()),
        *(sa.column(name, sa.BigInteger()) for name in _TOKEN_COLUMNS),
    )
    built = sa.table(
        "run_aggregate_state",
        sa.column("experiment_id", sa.String()),
        sa.column("row_mark", sa.BigInteger()),
    )
    assert counts is not None
    for name in _TOKEN_COLUMNS:
        column = spans.c[name]
        op.execute(
            counts.insert().from_select(
                ["experiment_id", "facet", "run_iteration", "tokens", "n"],
                sa.select(
                    spans.c.experiment_id,
                    sa.literal(name),
                    spans.c.run_iteration,
                    column,
                    sa.func.count(),
                )
                .select_from(spans.join(built, built.c.experiment_id == spans.c.experiment_id))
                .where(
                    spans.c.parent_id.is_(None),
                    spans.c.pk <= built.c.row_mark,
                    column.is_not(None),
                )
                .group_by(spans.c.experiment_id, spans.c.run_iteration, column),
            )
        )


def downgrade() -> None:
    op.drop_table("run_token_counts")
