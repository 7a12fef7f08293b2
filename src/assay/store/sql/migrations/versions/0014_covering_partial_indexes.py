"""The root-span and evaluation-value indexes carry the columns of their own partial
condition, so that counts over them read no table row

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# Copied, not imported: a migration keeps the schema of its day.
_ROOT = sa.text("parent_id IS NULL")
_ROOT_INDEXES = {
    "ix_spans_root_order": [
        "experiment_id",
        "run_iteration",
        "idx",
        "total_tokens",
        "estimated_total_cost",
        "duration_ns",
        "span_id",
    ],
    "ix_spans_root_tokens": ["experiment_id", "run_iteration", "total_tokens", "span_id"],
    "ix_spans_root_duration": ["experiment_id", "duration_ns", "run_iteration"],
}
_VALUE_INDEXES = {
    "score_value": "ix_evaluations_score",
    "boolean_value": "ix_evaluations_boolean",
    "categorical_value": "ix_evaluations_categorical",
}


def _condition(column: str) -> sa.TextClause:
    short = " AND length(categorical_value) <= 200" if column == "categorical_value" else ""
    return sa.text(f"{column} IS NOT NULL AND error_type IS NULL{short}")


def _rebuild(covering: bool) -> None:
    for name, columns in _ROOT_INDEXES.items():
        op.drop_index(name, "spans")
        extra = ["parent_id"] if covering else []
        op.create_index(
            name, "spans", [*columns, *extra], sqlite_where=_ROOT, postgresql_where=_ROOT
        )
    for column, name in _VALUE_INDEXES.items():
        op.drop_index(name, "evaluations")
        extra = ["error_type"] if covering else []
        op.create_index(
            name,
            "evaluations",
            ["experiment_id", "label", "run_iteration", column, "span_id", *extra],
            sqlite_where=_condition(column),
            postgresql_where=_condition(column),
        )


def upgrade() -> None:
    _rebuild(covering=True)


def downgrade() -> None:
    _rebuild(covering=False)
