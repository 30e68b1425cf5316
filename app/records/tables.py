"""The tables: one row per answered image, at most one feedback row per answer, the requests that
failed after a version was chosen, and the automatic rollout's history."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NOT_A_DIGIT = 10  # the label stored for "not a digit", after the ten digits
ROUTE_CONTRIBUTION = "feedback"  # the route of an image sent with its label and no earlier answer


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database: SQLite keeps no zone, so UTC is stored without one
    and given back with it."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class PredictionRow(Base):
    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[int] = mapped_column(Integer)
    # Null for a contribution, which no model answered.
    precision: Mapped[str | None] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(64))
    api_key: Mapped[str | None] = mapped_column(String(128))  # the key's name, never the key
    pixels: Mapped[bytes] = mapped_column(LargeBinary)  # 28x28 uint8, row by row: what the model saw
    probabilities: Mapped[bytes | None] = mapped_column(LargeBinary)  # 10 float32, little-endian
    digit: Mapped[int | None] = mapped_column(SmallInteger)
    verdict: Mapped[str | None] = mapped_column(String(16))
    # From the request's arrival at the predictor to its answer (queue and forward pass), the
    # same for every image of a request; null for a contribution and for answers logged before it.
    latency_ms: Mapped[float | None] = mapped_column(Float)

    # Serves /monitoring's counts per version and verdict from the index alone.
    __table_args__ = (Index("ix_predictions_version_verdict", "model_version", "verdict"),)


class FeedbackRow(Base):
    __tablename__ = "feedback"

    prediction_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("predictions.id", ondelete="CASCADE"), primary_key=True
    )
    label: Mapped[int] = mapped_column(SmallInteger)  # 0-9, or NOT_A_DIGIT
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class AnswerErrorRow(Base):
    """A request a model version failed to answer (its forward pass raised): the rollout compares
    versions' error rates from these, the same for every worker and replica."""

    __tablename__ = "answer_errors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    model_version: Mapped[int] = mapped_column(Integer)
    images: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(String(200))

    __table_args__ = (Index("ix_answer_errors_version_created_at", "model_version", "created_at"),)


class RolloutRow(Base):
    """One automatic canary, from its start to its end. The unique candidate is what makes exactly
    one worker of all replicas start it, and what keeps a version from being canaried twice."""

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    candidate: Mapped[int] = mapped_column(Integer, unique=True)
    stable: Mapped[int] = mapped_column(Integer)
    percent: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16))  # canary, promoted, rolled_back, stopped
    decided_by: Mapped[str | None] = mapped_column(String(16))  # rollout, operator; null while a canary
    reason: Mapped[str | None] = mapped_column(String(500))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    evidence: Mapped[dict[str, object] | None] = mapped_column(JSON)  # what the decision saw

    # At most one canary at a time, whatever two processes saw when they each started one.
    __table_args__ = (
        Index(
            "ix_rollouts_one_canary",
            "state",
            unique=True,
            sqlite_where=text("state = 'canary'"),
            postgresql_where=text("state = 'canary'"),
        ),
    )
