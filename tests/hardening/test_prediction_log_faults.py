"""The prediction log under faults, against real server processes and a real PostgreSQL server:
a worker killed outright, and the database stopped and started again under load."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, func, select

from app.records.tables import FeedbackRow, PredictionRow
from model_store.mnist_data import MnistSplit, load_split
from tests.app.conftest import encode
from tests.support.live_server import RunningServer, service_env, uvicorn_server
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

QUEUE_SIZE = 40  # the bound on what a killed worker may lose, and what an outage may hold


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> MnistSplit:
    return load_split(mnist_dir, "test")


@contextmanager
def logging_server(store: Path, mnist_dir: Path, database: str, log_path: Path) -> Iterator[RunningServer]:
    settings = {
        "prediction_log": "on",
        "database_url": database,
        "prediction_log_queue_size": str(QUEUE_SIZE),
        "reload_poll_seconds": "0",
    }
    with uvicorn_server(service_env(store, mnist_dir, **settings), log_path) as server:
        yield server


def predict(server: RunningServer, pixels: np.ndarray) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", files={"file": ("d.png", encode(pixels))}, timeout=30)


def count(database: str, table: type[PredictionRow] | type[FeedbackRow] = PredictionRow) -> int:
    engine = create_engine(database)
    try:
        with engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(table)).scalar_one())
    finally:
        engine.dispose()


def metric(server: RunningServer, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", httpx.get(f"{server.url}/metrics").text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_killed_worker_loses_at_most_its_queue_and_never_answered_feedback(
    trained_store: Path, mnist_dir: Path, tmp_path: Path, digits: MnistSplit
) -> None:
    database = f"sqlite:///{tmp_path / 'log.db'}"
    with logging_server(trained_store, mnist_dir, database, tmp_path / "server.log") as server:
        answers = [predict(server, digits.images[i]).json() for i in range(120)]
        feedback = httpx.post(
            f"{server.url}/feedback",
            json={"prediction_id": answers[-1]["prediction_id"], "label": 3},
            timeout=30,
        )
        assert feedback.status_code == 201
        answers += [predict(server, digits.images[i]).json() for i in range(30)]
        dropped = metric(server, "mnist_prediction_log_dropped_total")  # the queue was full: counted
        server.process.kill()
        server.process.wait()
    kept = count(database)
    assert len(answers) - dropped - QUEUE_SIZE <= kept <= len(answers) - dropped
    assert count(database, FeedbackRow) == 1


def test_inference_outlives_a_postgresql_outage_and_the_log_recovers_by_itself(
    trained_store: Path, mnist_dir: Path, tmp_path: Path, digits: MnistSplit, postgres: PostgresServer
) -> None:
    with logging_server(trained_store, mnist_dir, postgres.url, tmp_path / "server.log") as server:
        before = predict(server, digits.images[0]).json()
        wait_until(lambda: count(postgres.url) == 1)
        postgres.stop()
        during = [predict(server, digits.images[i]) for i in range(QUEUE_SIZE + 20)]
        assert all(response.status_code == 200 for response in during)
        assert metric(server, "mnist_prediction_log_dropped_total") >= 20
        refused = httpx.post(
            f"{server.url}/feedback", json={"prediction_id": before["prediction_id"], "label": 7}, timeout=30
        )
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
        postgres.start()
        # The queued answers are written once the database is back; new ones follow them.
        wait_until(lambda: count(postgres.url) >= 1 + QUEUE_SIZE, timeout=60)
        after = predict(server, digits.images[1]).json()
        accepted = httpx.post(
            f"{server.url}/feedback", json={"prediction_id": after["prediction_id"], "label": 2}, timeout=30
        )
        assert accepted.status_code == 201
        assert (
            httpx.post(
                f"{server.url}/feedback",
                json={"prediction_id": before["prediction_id"], "label": 7},
                timeout=30,
            ).status_code
            == 201
        )
        assert httpx.get(f"{server.url}/monitoring").json()["versions"][0]["feedback"] == 2


def test_concurrent_workers_migrate_one_postgresql_database_once(
    trained_store: Path, mnist_dir: Path, tmp_path: Path, digits: MnistSplit, postgres: PostgresServer
) -> None:
    settings = {"prediction_log": "on", "database_url": postgres.url, "reload_poll_seconds": "0"}
    env = service_env(trained_store, mnist_dir, **settings)
    with uvicorn_server(env, tmp_path / "server.log", workers=2) as server:
        ids = {predict(server, digits.images[i]).json()["prediction_id"] for i in range(20)}
        wait_until(lambda: count(postgres.url) == 20)
        assert "Traceback" not in server.log()
    assert len(ids) == 20
