"""SIGTERM under gRPC load: the calls in flight finish with their answers, calls after the stop are
refused as UNAVAILABLE (never failed mid-call), and the process exits cleanly."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from model_store.mnist_data import MnistSplit
from tests.app.grpc.conftest import grpc_server

pytestmark = pytest.mark.e2e

CALLS = 6
IMAGES = 5000  # each call a few forward passes long, so all are still in flight at the signal
CLEAN_EXIT = (0, -signal.SIGTERM)


def in_progress(url: str) -> float:
    match = re.search(r"^mnist_grpc_calls_in_progress (\S+)$", httpx.get(f"{url}/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0


def test_sigterm_drains_grpc_calls_in_flight(
    trained_store: Path, mnist_dir: Path, tmp_path: Path, test_split: MnistSplit
) -> None:
    images = np.resize(test_split.images, (IMAGES, 28, 28))
    labels = np.resize(test_split.labels, IMAGES)
    results: list[object] = [None] * CALLS
    settings = {"graceful_shutdown_seconds": "120", "max_upload_bytes": str(16 * 1024 * 1024)}
    with grpc_server(trained_store, mnist_dir, tmp_path / "server.log", settings=settings) as server:

        def call(index: int) -> None:
            client = triton.InferenceServerClient(server.target)
            tensor = triton.InferInput("images", [IMAGES, 784], "UINT8")
            tensor.set_data_from_numpy(images.reshape(IMAGES, 784))
            try:
                results[index] = client.infer("mnist", [tensor], client_timeout=300).as_numpy("digit")
            except InferenceServerException as exc:
                results[index] = exc
            finally:
                client.close()

        threads = [threading.Thread(target=call, args=(i,)) for i in range(CALLS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while in_progress(server.http.url) < CALLS:
            assert time.monotonic() < deadline, "the calls never reached the server"
            time.sleep(0.02)
        server.http.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(300)
        # Once the server is gone, a call is refused as UNAVAILABLE.
        late = triton.InferenceServerClient(server.target)
        tensor = triton.InferInput("images", [1, 784], "UINT8")
        tensor.set_data_from_numpy(images[:1].reshape(1, 784))
        assert server.http.process.wait(60) in CLEAN_EXIT
        with pytest.raises(InferenceServerException) as refused:
            late.infer("mnist", [tensor], client_timeout=10)
        assert refused.value.status() == "StatusCode.UNAVAILABLE"
        log = server.http.log()
    for result in results:
        assert isinstance(result, np.ndarray), result
        assert np.mean(result == labels) > 0.9
    assert f"gRPC stopping: {CALLS} calls in flight" in log or re.search(r"gRPC stopping: [1-9]", log), log[
        -2000:
    ]
    assert "gRPC stopped: 0 calls cut off" in log
