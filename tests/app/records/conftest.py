"""The prediction log's tests run on real SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from app.operations.metrics import Metrics
from app.records.ids import new_ids
from app.records.writer import Answers
from model_store.mnist_data import MnistSplit, load_split
from model_store.preprocessing import NUM_CLASSES
from model_store.trust import VERDICTS
from tests.support.postgres import PostgresServer
from tests.support.prediction_log import migrated_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or the test PostgreSQL server's database (slow)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the database, its schema migrated to this code's head."""
    with migrated_database(database_url) as engine:
        yield engine


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture(scope="session")
def digits(mnist_dir: Path) -> MnistSplit:
    return load_split(mnist_dir, "test")


def answers_of(
    images: np.ndarray,
    digits: list[int],
    version: int = 1,
    verdict: str = "digit",
    created_at: datetime | None = None,
    api_key: str | None = None,
) -> Answers:
    """What `ServiceState.predict` queues for `images` answered as `digits` by `version`."""
    rows = np.zeros((len(images), NUM_CLASSES + 2), dtype=np.float32)
    rows[np.arange(len(images)), digits] = 0.9
    rows[:, NUM_CLASSES] = 0.95
    rows[:, NUM_CLASSES + 1] = VERDICTS.index(verdict)  # type: ignore[arg-type]
    return Answers(
        new_ids(len(images)),
        created_at or datetime.now(UTC),
        "mnist",
        version,
        "float32",
        "/predict",
        api_key,
        images,
        rows,
    )
