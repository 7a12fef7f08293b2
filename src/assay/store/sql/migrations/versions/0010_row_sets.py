"""Indexes for row queries on evaluations: typed value ranges, a row's evaluation by label,
span ids on the root-span index

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Copied, not imported: a migration keeps the schema of its day.
_VALUE_INDEXES = {
    "score_value": "ix_evaluations_score",
    "boolean_value": "ix_evaluations_boolean",
    "categorical_value": "ix_evaluations_categorical",
}
_ROOT = sa.text("parent_id IS NULL")
_ROOT_ORDER = [
    "experiment_id",
    "run_iteration",
    "idx",
    "total_tokens",
    "estimated_total_cost",
    "duration_ns",
]


def _condition(column: str) -> sa.TextClause:
    short = " AND length(categorical_value) <= 200" if column == "categorical_value" else ""
    return sa.text(f"{column} IS NOT NULL AND error_type IS NULL{short}")


def upgrade() -> None:
    for column, name in _VALUE_INDEXES.items():
        op.create_index(
            name,
            "evaluations",
            ["experiment_id", "label", "run_iteration", column, "span_id"],
            sqlite_where=_condition(column),
            postgresql_where=_condition(column),
        )
    # A row's evaluation of one label, found by all three: a page read in order tests it.
    op.drop_index("ix_evaluations_span", "evaluations")
    op.create_index("ix_evaluations_span", "evaluations", ["experiment_id", "span_id", "label"])
    op.drop_index("ix_spans_root_order", "spans")
    op.create_index(
        "ix_spans_root_order",
        "spans",
        [*_ROOT_ORDER, "span_id"],
        sqlite_where=_ROOT,
        postgresql_where=_ROOT,
    )


def downgrade() -> None:
    op.drop_index("ix_spans_root_order", "spans")
    op.create_index(
        "ix_spans_root_order", "spans", _ROOT_ORDER, sqlite_where=_ROOT, postgresql_where=_ROOT
    )
    op.drop_index("ix_evaluations_span", "evaluations")
    op.create_index("ix_evaluations_span", "evaluations", ["experiment_id", "span_id"])
    for name in _VALUE_INDEXES.values():
        op.drop_index(name, "evaluations")
