"""SIGTERM under load: requests already in flight finish, new connections are refused at once, and the
process exits within the drain time (uvicorn's --timeout-graceful-shutdown, which `mnist-serve`
sets from MNIST_GRACEFUL_SHUTDOWN_SECONDS; here uvicorn is started directly, so it is passed).
"""

from __future__ import annotations

import io
import re
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

from model_store.mnist_data import MnistSplit
from tests.support.live_server import RunningServer, service_env, uvicorn_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

# uvicorn re-raises the SIGTERM it handled once it has shut down cleanly, so a drained process ends
# "terminated by SIGTERM" (143 in a shell), the status supervisors expect from a stop; 0 is fine too.
CLEAN_EXIT = (0, -signal.SIGTERM)
# Lifespan shutdown (the forward-pass thread finishing its batch) and interpreter exit, after the drain.
EXIT_SLACK_SECONDS = 8


@contextmanager
def start(trained_store: Path, mnist_dir: Path, log: Path, drain_seconds: int) -> Iterator[RunningServer]:
    env = service_env(
        trained_store,
        mnist_dir,
        graceful_shutdown_seconds=str(drain_seconds),
        reload_poll_seconds="0",
        batch_queue_size="100000",  # every request is queued: none is refused as overload
        max_upload_bytes=str(64 * 1024 * 1024),
        log_json="false",
    )
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


class HeldRequests:
    """Batch requests on their own connections, each body sent but for its last byte, which goes
    only when the test calls `release()`: until then the requests are in flight, whatever the
    speed of the machine."""

    def __init__(self, url: str, body: bytes, requests: int) -> None:
        self.outcomes = [Outcome() for _ in range(requests)]
        self._release = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, args=(url, body, i), daemon=True) for i in range(requests)
        ]
        for thread in self._threads:
            thread.start()

    def _send(self, url: str, body: bytes, i: int) -> None:
        def chunks() -> Iterator[bytes]:
            for start in range(0, len(body) - 1, 1 << 20):
                yield body[start : min(start + (1 << 20), len(body) - 1)]
            self._release.wait(120)
            yield body[-1:]

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
            outcome.finished_at = time.monotonic()

    def release(self) -> None:
        self._release.set()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in self._threads), "a request never got an answer"


def in_progress(url: str) -> int:
    """Requests the server has received and not answered, this /metrics request included."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return int(float(re.search(r"^mnist_http_requests_in_progress (\S+)$", text, re.M).group(1)))  # type: ignore[union-attr]


def refused(url: str) -> bool:
    """A new connection is refused (not accepted and left hanging)."""
    try:
        httpx.get(f"{url}/healthz", timeout=3)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def test_sigterm_lets_in_flight_requests_finish_and_refuses_new_ones(
    trained_store: Path, mnist_dir: Path, digits: MnistSplit, tmp_path: Path
) -> None:
    drain = 30
    images, labels = digits.images[:2500], digits.labels[:2500]
    with start(trained_store, mnist_dir, tmp_path / "server.log", drain) as server:
        held = HeldRequests(server.url, npy(images), requests=3)
        wait_until(lambda: in_progress(server.url) == 3 + 1)

        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        wait_until(lambda: refused(server.url), timeout=drain / 2)
        # New connections are refused while the three are still in flight (their bodies are held).
        assert all(outcome.finished_at == 0.0 for outcome in held.outcomes)
        held.release()

        held.join(timeout=drain + EXIT_SLACK_SECONDS)
        returncode = server.process.wait(timeout=drain + EXIT_SLACK_SECONDS)
        exited_after = time.monotonic() - signalled
        log = server.log()

    assert [outcome.status for outcome in held.outcomes] == [200] * 3, held.outcomes
    for outcome in held.outcomes:
        assert outcome.count == len(images)
        assert np.mean(np.array(outcome.predictions) == labels) > 0.95
    assert returncode in CLEAN_EXIT, log[-3000:]
    assert exited_after < drain + EXIT_SLACK_SECONDS
    assert "Application shutdown complete" in log and "Traceback" not in log, log[-3000:]


def test_requests_past_the_drain_deadline_are_cut_and_the_process_still_exits(
    trained_store: Path, mnist_dir: Path, digits: MnistSplit, tmp_path: Path
) -> None:
    """Requests that cannot finish before the drain deadline (their bodies are held back): the process
    exits on time anyway, and no request is left hanging."""
    drain = 1
    with start(trained_store, mnist_dir, tmp_path / "server.log", drain) as server:
        held = HeldRequests(server.url, npy(digits.images[:500]), requests=4)
        wait_until(lambda: in_progress(server.url) == 4 + 1)

        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        returncode = server.process.wait(timeout=drain + EXIT_SLACK_SECONDS)
        exited_after = time.monotonic() - signalled
        held.release()
        held.join(timeout=30)
        log = server.log()

    assert exited_after < drain + EXIT_SLACK_SECONDS, log[-3000:]
    assert returncode in CLEAN_EXIT, log[-3000:]
    assert "timeout graceful shutdown exceeded" in log, log[-3000:]
    # Cut requests get uvicorn's 500 or a closed connection: never a partial 200.
    for outcome in held.outcomes:
        assert outcome.error is not None or (outcome.status is not None and outcome.status >= 500), outcome
