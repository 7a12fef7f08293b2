"""Per-run counts of rows by token count and of scores by bucket, for counting row
queries on a token facet or a score label

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import math
from collections import Counter

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# Copied, not imported: a migration keeps the schema of its day.
_TOKEN_COLUMNS = ("total_tokens", "input_tokens", "output_tokens")
_SCALE = 1024
_EDGE = 2**52


def _bucket(score: float) -> int:
    if math.isnan(score):
        return _EDGE
    scaled = score * _SCALE
    return _EDGE if scaled >= _EDGE else -_EDGE if scaled <= -_EDGE else math.floor(scaled)


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

    scores = op.create_table(
        "run_score_counts",
        sa.Column("experiment_id", sa.String(length=36), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("run_iteration", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_run_score_counts_experiment_id_experiments"),
        ),
        sa.PrimaryKeyConstraint(
            "experiment_id", "label", "run_iteration", "bucket", name=op.f("pk_run_score_counts")
        ),
        sqlite_with_rowid=False,
    )
    evaluations = sa.table(
        "evaluations",
        sa.column("pk", sa.BigInteger()),
        sa.column("experiment_id", sa.String()),
        sa.column("label", sa.String()),
        sa.column("run_iteration", sa.Integer()),
        sa.column("score_value", sa.Float()),
        sa.column("error_type", sa.String()),
    )
    built_evaluations = sa.table(
        "run_aggregate_state",
        sa.column("experiment_id", sa.String()),
        sa.column("evaluation_mark", sa.BigInteger()),
    )
    counted: Counter[tuple[str, str, int, int]] = Counter()
    for experiment_id, label, run, score in op.get_bind().execute(
        sa.select(
            evaluations.c.experiment_id,
            evaluations.c.label,
            evaluations.c.run_iteration,
            evaluations.c.score_value,
        )
        .select_from(
            evaluations.join(
                built_evaluations,
                built_evaluations.c.experiment_id == evaluations.c.experiment_id,
            )
        )
        .where(
            evaluations.c.pk <= built_evaluations.c.evaluation_mark,
            evaluations.c.score_value.is_not(None),
            evaluations.c.error_type.is_(None),
        )
        .execution_options(yield_per=10_000)  # streamed: every score of the store
    ):
        counted[(experiment_id, label, int(run), _bucket(float(score)))] += 1
    if counted:
        op.bulk_insert(
            scores,
            [
                {"experiment_id": e, "label": label, "run_iteration": run, "bucket": b, "n": n}
                for (e, label, run, b), n in sorted(counted.items())
            ],
        )


def downgrade() -> None:
    op.drop_table("run_score_counts")
    op.drop_table("run_token_counts")
