"""Key rotation against a real uvicorn with two workers, under load, with zero failed requests."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.app.operations.test_api_keys import ALICE, BOB, write_keys
from tests.support.live_server import uvicorn_server

pytestmark = pytest.mark.e2e
THREADS = 4


def test_keys_rotate_under_load_with_zero_failed_requests(
    trained_store: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys"
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    write_keys(key_file, {"old": ALICE})
    env = {
        "MNIST_MODEL_STORE": str(trained_store),
        "MNIST_DATA_DIR": str(mnist_dir),
        "MNIST_API_KEYS_FILE": str(key_file),
        # Both workers' counters in one /metrics, whichever worker answers it (as mnist-serve does).
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    with uvicorn_server(env, tmp_path / "server.log", workers=2) as server:
        key = [ALICE]  # the key clients use now; the main thread moves them over
        results: list[tuple[int, str, int]] = []  # (thread, key used, status)
        progress = threading.Condition()
        stop = threading.Event()

        def client(worker: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                index = worker
                while not stop.is_set():
                    used = key[0]
                    status = http.get(f"/test/{index % 10_000}", headers={"X-API-Key": used}).status_code
                    with progress:
                        results.append((worker, used, status))
                        progress.notify_all()
                    index += THREADS

        def wait_for(count: int, used: str) -> None:
            """Until every thread has finished `count` requests sent with `used`."""

            def done() -> bool:
                per_thread = Counter(n for n, k, _ in results if k == used)
                return all(per_thread[n] >= count for n in range(THREADS))

            with progress:
                assert progress.wait_for(done, timeout=120), "the clients made no progress"

        threads = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        try:
            wait_for(20, ALICE)
            write_keys(key_file, {"old": ALICE, "new": BOB})  # add the new key
            key[0] = BOB  # clients move over
            wait_for(20, BOB)
            with progress:
                sent_with_old = sum(1 for _, k, _ in results if k == ALICE)
            write_keys(key_file, {"new": BOB})  # the old one is removed
            with progress:
                done = len(results)
            with progress:
                assert progress.wait_for(lambda: len(results) >= done + 20 * THREADS, timeout=120)
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)

        outcomes = Counter(status for _, _, status in results)
        assert outcomes == Counter({200: len(results)}), outcomes
        # Every thread took up the new key in a single step, so no old-key request was still in flight.
        assert sum(1 for _, k, _ in results if k == ALICE) == sent_with_old
        assert httpx.get(f"{server.url}/test/1", headers={"X-API-Key": ALICE}).status_code == 403
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'key="old",outcome="accepted"' in metrics and 'key="new",outcome="accepted"' in metrics
