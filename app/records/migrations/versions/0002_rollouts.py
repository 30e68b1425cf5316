"""The automatic rollout: its history, each answer's latency, and the requests that failed.

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
    with op.batch_alter_table("predictions") as table:
        table.add_column(sa.Column("latency_ms", sa.Float(), nullable=True))
    op.create_table(
        "answer_errors",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(200), nullable=False),
    )
    op.create_index("ix_answer_errors_version_created_at", "answer_errors", ["model_version", "created_at"])
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("candidate", sa.Integer(), nullable=False, unique=True),
        sa.Column("stable", sa.Integer(), nullable=False),
        sa.Column("percent", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=True),
    )
    # At most one canary at a time, whatever two processes saw when they each started one.
    canary = sa.text("state = 'canary'")
    op.create_index(
        "ix_rollouts_one_canary",
        "rollouts",
        ["state"],
        unique=True,
        sqlite_where=canary,
        postgresql_where=canary,
    )


def downgrade() -> None:
    op.drop_table("rollouts")
    op.drop_table("answer_errors")
    with op.batch_alter_table("predictions") as table:
        table.drop_column("latency_ms")
