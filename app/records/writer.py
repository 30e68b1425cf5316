"""The queued writer: answers are logged off the request path, in batches, by one thread.

A request only appends its images to a bounded in-memory queue (a lock and a list append); one
background thread writes whatever has gathered every FLUSH_SECONDS (sooner past FLUSH_ROWS) in one
transaction. A full queue drops the new answers and counts them
(`mnist_prediction_log_dropped_total`): inference never waits for the database. While the database
is unreachable the writer keeps its batch and retries, so an outage costs at most the answers that
do not fit in the queue, and the log catches up by itself when the database is back. A worker
killed outright loses at most what it had queued: `queue_size` images, in steady state about
FLUSH_SECONDS of answers.

The same thread prunes old rows (retention) and refreshes the live-accuracy gauges.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import SQLAlchemyError

from app.operations.metrics import Metrics
from app.records.database import prepare_schema
from app.records.quality import refresh_accuracy_gauges
from app.records.tables import AnswerErrorRow, PredictionRow
from model_store.preprocessing import NUM_CLASSES
from model_store.trust import VERDICTS

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.25
FLUSH_ROWS = 512  # wake the writer before FLUSH_SECONDS once this many (or half the queue) wait
PRUNE_SECONDS = 60.0
GAUGE_SECONDS = 30.0
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)  # waits between attempts while the database is unreachable


@dataclass(slots=True)
class Answers:
    """One request's answered images, as they wait in the queue."""

    ids: list[str]
    created_at: datetime
    model_name: str
    model_version: int
    precision: str
    route: str
    api_key: str | None
    images: np.ndarray  # (N, 28, 28) uint8: what the model saw
    rows: np.ndarray  # (N, 12): probabilities, calibrated confidence, verdict code
    latency_ms: float | None = None  # the request's, from the predictor's queue to its answer

    def records(self) -> list[dict[str, object]]:
        pixels = np.ascontiguousarray(self.images, dtype=np.uint8).reshape(len(self.ids), -1)
        probabilities = np.ascontiguousarray(self.rows[:, :NUM_CLASSES], dtype="<f4")
        digits = probabilities.argmax(axis=1).tolist()
        verdicts = self.rows[:, NUM_CLASSES + 1].astype(int).tolist()
        return [
            {
                "id": prediction_id,
                "created_at": self.created_at,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "precision": self.precision,
                "route": self.route,
                "api_key": self.api_key,
                "pixels": pixels[i].tobytes(),
                "probabilities": probabilities[i].tobytes(),
                "digit": digits[i],
                "verdict": VERDICTS[verdicts[i]],
                "latency_ms": self.latency_ms,
            }
            for i, prediction_id in enumerate(self.ids)
        ]


@dataclass(frozen=True, slots=True)
class FailedAnswer:
    """A request whose forward pass raised, as it waits in the queue."""

    created_at: datetime
    model_version: int
    images: int
    error: str

    def record(self) -> dict[str, object]:
        return {
            "created_at": self.created_at,
            "model_version": self.model_version,
            "images": self.images,
            "error": self.error[:ERROR_TEXT_LENGTH],
        }


ERROR_TEXT_LENGTH = 200  # the column's width: the exception's class and the start of its message


@dataclass(frozen=True)
class Retention:
    max_age: timedelta | None  # None: no age limit
    max_rows: int | None  # None: no row limit


class PredictionLog:
    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        queue_size: int,
        retention: Retention,
        migrate: bool,
        schema_ready: bool,
    ) -> None:
        self.engine = engine
        self._metrics = metrics
        self._capacity = queue_size
        self._wake_at = min(FLUSH_ROWS, max(1, queue_size // 2))
        self._retention = retention
        self._migrate = migrate
        self._schema_ready = schema_ready
        self._lock = threading.Lock()
        self._queue: deque[Answers] = deque()
        self._failures: deque[FailedAnswer] = deque()
        self._pending = 0  # images queued or being written, not yet committed
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, answers: Answers) -> None:
        """Queue `answers` for the writer, or drop and count them if the queue is full. Called on
        the event loop: no I/O, no waiting."""
        count = len(answers.ids)
        with self._lock:
            accepted = self._pending + count <= self._capacity
            if accepted:
                self._queue.append(answers)
                self._pending += count
                pending = self._pending
        if not accepted:
            self._metrics.prediction_log_dropped.inc(count)
            return
        if pending >= self._wake_at:
            self._wake.set()

    def submit_failure(self, failure: FailedAnswer) -> None:
        """Queue a failed request for the writer. Failures are rare and small; past the queue's
        capacity they are dropped like answers."""
        with self._lock:
            if len(self._failures) < self._capacity:
                self._failures.append(failure)

    @property
    def pending(self) -> int:
        return self._pending

    def flush_soon(self) -> None:
        """Write what is queued now rather than at the next tick (feedback waiting for an answer)."""
        self._wake.set()

    def close(self, timeout: float) -> None:
        """Write what is queued (for at most `timeout` seconds), then stop the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        next_prune = next_gauges = time.monotonic()
        while True:
            self._wake.wait(FLUSH_SECONDS if failures == 0 else RETRY_SECONDS[min(failures, 4) - 1])
            self._wake.clear()
            stopping = self._stopping
            try:
                self._write_queued()
                now = time.monotonic()
                if now >= next_prune:
                    self._prune()
                    next_prune = now + PRUNE_SECONDS
                if now >= next_gauges:
                    refresh_accuracy_gauges(self.engine, self._metrics)
                    next_gauges = now + GAUGE_SECONDS
                if failures:
                    log.info("prediction log: the database answers again; writing resumed")
                failures = 0
            except SQLAlchemyError as exc:
                failures += 1
                if failures == 1:
                    log.warning("prediction log: cannot write (%s); retrying, dropping what overflows", exc)
                if stopping:
                    return
            if stopping and not self._queue:
                return

    def _write_queued(self) -> None:
        if not self._schema_ready:
            prepare_schema(self.engine, self._migrate)  # the database was down at startup
            self._schema_ready = True
        with self._lock:
            failures = list(self._failures)
        if failures:
            with self.engine.begin() as connection:
                connection.execute(insert(AnswerErrorRow), [failure.record() for failure in failures])
            with self._lock:
                for _ in failures:
                    self._failures.popleft()
        while True:
            with self._lock:
                batch = list(self._queue)
            if not batch:
                return
            records = [record for answers in batch for record in answers.records()]
            with self.engine.begin() as connection:
                connection.execute(insert(PredictionRow), records)
            with self._lock:
                for _ in batch:
                    self._queue.popleft()
                self._pending -= len(records)
            self._metrics.prediction_log_written.inc(len(records))

    def _prune(self) -> None:
        deleted = prune(self.engine, self._retention, datetime.now(UTC))
        if deleted:
            log.info("prediction log: pruned %d answers past retention", deleted)


def prune(engine: Engine, retention: Retention, now: datetime) -> int:
    """Delete answers older than the retention's age, then the oldest past its row count (ids sort
    by time, so that is a range of the key); their feedback goes with them."""
    deleted = 0
    with engine.begin() as connection:
        if retention.max_age is not None:
            deleted += connection.execute(
                delete(PredictionRow).where(PredictionRow.created_at < now - retention.max_age)
            ).rowcount
        if retention.max_rows is not None:
            boundary = connection.execute(
                select(PredictionRow.id).order_by(PredictionRow.id.desc()).offset(retention.max_rows).limit(1)
            ).scalar()
            if boundary is not None:
                deleted += connection.execute(
                    delete(PredictionRow).where(PredictionRow.id <= boundary)
                ).rowcount
    return deleted


def delete_between(engine: Engine, after: datetime | None, before: datetime | None) -> int:
    """Delete the answers logged in (after, before) and their feedback; the count deleted."""
    statement = delete(PredictionRow)
    if after is not None:
        statement = statement.where(PredictionRow.created_at > after)
    if before is not None:
        statement = statement.where(PredictionRow.created_at < before)
    with engine.begin() as connection:
        return connection.execute(statement).rowcount
