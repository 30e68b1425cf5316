"""The prediction log and its feedback.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("precision", sa.String(8), nullable=True),
        sa.Column("route", sa.String(64), nullable=False),
        sa.Column("api_key", sa.String(128), nullable=True),
        sa.Column("pixels", sa.LargeBinary(), nullable=False),
        sa.Column("probabilities", sa.LargeBinary(), nullable=True),
        sa.Column("digit", sa.SmallInteger(), nullable=True),
        sa.Column("verdict", sa.String(16), nullable=True),
    )
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_index("ix_predictions_version_verdict", "predictions", ["model_version", "verdict"])
    op.create_table(
        "feedback",
        sa.Column(
            "prediction_id",
            sa.String(32),
            sa.ForeignKey("predictions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("label", sa.SmallInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_feedback_updated_at", "feedback", ["updated_at"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("predictions")
