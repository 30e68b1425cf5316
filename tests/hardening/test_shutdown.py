"""SIGTERM under load: requests already in flight finish, new connections are refused at once, and the
process exits within the drain time (uvicorn's --timeout-graceful-shutdown, which `mnist-serve`
sets from MNIST_GRACEFUL_SHUTDOWN_SECONDS; here uvicorn is started directly, so it is passed).
"""

from __future__ import annotations

import io
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from model_store.mnist_data import MnistSplit, load_split
from tests.servers import RunningServer, uvicorn_server

pytestmark = pytest.mark.e2e

# uvicorn re-raises the SIGTERM it handled once it has shut down cleanly, so a drained process ends
# "terminated by SIGTERM" (143 in a shell), the status supervisors expect from a stop; 0 is fine too.
CLEAN_EXIT = (0, -signal.SIGTERM)
# Lifespan shutdown (the forward-pass thread finishing its batch) and interpreter exit, after the drain.
EXIT_SLACK_SECONDS = 8


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> MnistSplit:
    return load_split(mnist_dir, "test")


@contextmanager
def start(trained_store: Path, mnist_dir: Path, log: Path, drain_seconds: int) -> Iterator[RunningServer]:
    env = {
        "MNIST_MODEL_STORE": str(trained_store),
        "MNIST_DATA_DIR": str(mnist_dir),
        "MNIST_GRACEFUL_SHUTDOWN_SECONDS": str(drain_seconds),
        "MNIST_RELOAD_POLL_SECONDS": "0",
        "MNIST_BATCH_QUEUE_SIZE": "100000",  # every request is queued: none is refused as overload
        "MNIST_MAX_UPLOAD_BYTES": str(64 * 1024 * 1024),
        "MNIST_LOG_JSON": "false",
    }
    extra = ("--timeout-graceful-shutdown", str(drain_seconds))
    with uvicorn_server(env, log, extra_args=extra) as server:
        yield server


@dataclass
class Outcome:
    status: int | None = None
    count: int | None = None
    predictions: list[int] | None = None
    error: str | None = None
    finished_at: float = 0.0


def npy(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, images)
    return buffer.getvalue()


class InFlight:
    """Batch requests sent on their own connections; `uploaded` is set once all bodies are sent."""

    def __init__(self, url: str, body: bytes, requests: int) -> None:
        self.outcomes = [Outcome() for _ in range(requests)]
        self._sent = [threading.Event() for _ in range(requests)]
        self._threads = [
            threading.Thread(target=self._send, args=(url, body, i), daemon=True) for i in range(requests)
        ]
        for thread in self._threads:
            thread.start()

    def _send(self, url: str, body: bytes, i: int) -> None:
        def chunks() -> Iterator[bytes]:
            for start in range(0, len(body), 1 << 20):
                yield body[start : start + (1 << 20)]
            self._sent[i].set()

        outcome = self.outcomes[i]
        headers = {"Content-Type": "application/x-npy", "Content-Length": str(len(body))}
        try:
            with httpx.Client(timeout=120) as http:
                response = http.post(f"{url}/predict/batch", content=chunks(), headers=headers)
            outcome.status = response.status_code
            if response.status_code == 200:
                outcome.count = response.json()["count"]
                outcome.predictions = response.json()["predictions"]
        except httpx.HTTPError as exc:
            outcome.error = repr(exc)
        finally:
            self._sent[i].set()
            outcome.finished_at = time.monotonic()

    def wait_uploaded(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for sent in self._sent:
            assert sent.wait(max(0.0, deadline - time.monotonic())), "uploads did not finish"

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in self._threads), "a request never got an answer"


def refused_connection(url: str) -> tuple[bool, float]:
    """A new connection is refused (not accepted and left hanging); and when it was tried."""
    at = time.monotonic()
    try:
        httpx.get(f"{url}/healthz", timeout=3)
    except httpx.ConnectError:
        return True, at
    except httpx.HTTPError:
        return False, at
    return False, at


def test_sigterm_lets_in_flight_requests_finish_and_refuses_new_ones(
    trained_store: Path, mnist_dir: Path, digits: MnistSplit, tmp_path: Path
) -> None:
    drain = 10
    images, labels = digits.images[:2500], digits.labels[:2500]
    with start(trained_store, mnist_dir, tmp_path / "server.log", drain) as server:
        load = InFlight(server.url, npy(images), requests=3)
        load.wait_uploaded()
        time.sleep(0.2)  # the bodies are read and the requests queued for the model

        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.3)
        refused, tried_at = refused_connection(server.url)

        load.join(timeout=drain + EXIT_SLACK_SECONDS)
        returncode = server.process.wait(timeout=drain + EXIT_SLACK_SECONDS)
        exited_after = time.monotonic() - signalled
        log = server.log()

    assert [outcome.status for outcome in load.outcomes] == [200] * 3, load.outcomes
    for outcome in load.outcomes:
        assert outcome.count == len(images)
        assert np.mean(np.array(outcome.predictions) == labels) > 0.95
    assert refused, f"a new connection after SIGTERM was not refused:\n{log[-3000:]}"
    assert tried_at < max(outcome.finished_at for outcome in load.outcomes), "tried only after the drain"
    assert returncode in CLEAN_EXIT, log[-3000:]
    assert exited_after < drain + EXIT_SLACK_SECONDS
    assert "Application shutdown complete" in log and "Traceback" not in log, log[-3000:]


def test_requests_past_the_drain_deadline_are_cut_and_the_process_still_exits(
    trained_store: Path, mnist_dir: Path, digits: MnistSplit, tmp_path: Path
) -> None:
    """More work in flight than the drain allows: exit on time anyway; no request is left hanging."""
    drain = 1
    with start(trained_store, mnist_dir, tmp_path / "server.log", drain) as server:
        load = InFlight(server.url, npy(digits.images[:5000]), requests=8)
        load.wait_uploaded()
        time.sleep(0.2)

        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        returncode = server.process.wait(timeout=drain + EXIT_SLACK_SECONDS)
        exited_after = time.monotonic() - signalled
        load.join(timeout=10)
        log = server.log()

    assert exited_after < drain + EXIT_SLACK_SECONDS, log[-3000:]
    assert returncode in CLEAN_EXIT, log[-3000:]
    assert "timeout graceful shutdown exceeded" in log, "the work fitted in the drain time; use more"
    answered = [outcome for outcome in load.outcomes if outcome.status == 200]
    cut = [outcome for outcome in load.outcomes if outcome.status != 200]
    assert cut, load.outcomes
    for outcome in answered:
        assert outcome.count == 5000
    # Cut requests get uvicorn's 500 or a closed connection: never a partial 200.
    for outcome in cut:
        assert outcome.error is not None or (outcome.status is not None and outcome.status >= 500), outcome
