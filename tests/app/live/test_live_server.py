"""End to end against a real uvicorn on 127.0.0.1: the official Triton client, and hot reload
under load with zero failed requests."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode, publish_copy
from tests.support.live_server import RunningServer, service_env, uvicorn_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def live_store(private_store: Path, mnist_dir: Path, tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    env = service_env(private_store, mnist_dir, reload_poll_seconds="0.2")
    with uvicorn_server(env, tmp_path / "server.log") as server:
        yield server, private_store


def test_triton_client_round_trip_matches_predict(
    live_store: tuple[RunningServer, Path], test_split: MnistSplit
) -> None:
    server, _ = live_store
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("mnist")
    metadata = client.get_model_metadata("mnist")
    assert metadata["inputs"][0]["shape"] == [-1, 28, 28, 1]

    indices = [128, 3, 17, 42, 999]
    images = test_split.images[indices]
    answers = [
        httpx.post(f"{server.url}/predict", files={"file": ("d.png", encode(image))}).json()
        for image in images
    ]
    expected = np.array([answer["probabilities"] for answer in answers])
    binary_fp32 = triton.InferInput("images", [5, 28, 28, 1], "FP32")
    binary_fp32.set_data_from_numpy((images.astype(np.float32) / 255).reshape(5, 28, 28, 1))
    json_uint8 = triton.InferInput("images", [5, 784], "UINT8")
    json_uint8.set_data_from_numpy(images.reshape(5, 784), binary_data=False)
    for tensor, binary in ((binary_fp32, True), (json_uint8, False)):
        outputs = [
            triton.InferRequestedOutput(name, binary_data=binary)
            for name in ("probabilities", "digit", "verdict")
        ]
        result = client.infer("mnist", [tensor], outputs=outputs, model_version="1")
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)
        assert result.as_numpy("digit").tolist() == expected.argmax(axis=1).tolist()
        assert result.as_numpy("digit")[0] == 8
        verdicts = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("verdict")]
        assert verdicts == [answer["verdict"] for answer in answers]
    client.close()


def hammer(url: str, stop: threading.Event, seen: Counter[int], failures: list[str]) -> None:
    """Ask for test digit 128 until told to stop, recording the version of every answer."""
    with httpx.Client(timeout=30) as http:
        while not stop.is_set():
            try:
                response = http.get(f"{url}/test/128")
                body = response.json()
                if response.status_code != 200 or body["prediction"] != 8:
                    failures.append(f"{response.status_code} {body}")
                else:
                    seen[body["model"]["version"]] += 1
            except httpx.HTTPError as exc:
                failures.append(repr(exc))


def test_new_version_switches_under_load_with_zero_failures(live_store: tuple[RunningServer, Path]) -> None:
    server, store = live_store
    seen: Counter[int] = Counter()
    failures: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=hammer, args=(server.url, stop, seen, failures)) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: seen[1] >= 50)
        assert publish_copy(store) == 2
        wait_until(lambda: seen[2] >= 50)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert set(seen) == {1, 2}
    after = httpx.get(f"{server.url}/test/128")
    assert after.json()["model"]["version"] == 2 and after.headers["x-model-version"] == "2"
    assert "mnist_model_reloads_total 1.0" in httpx.get(f"{server.url}/metrics").text


def test_corrupt_new_version_is_refused_and_old_keeps_serving(live_store: tuple[RunningServer, Path]) -> None:
    server, store = live_store
    bad = publish_copy(store, model_bytes=b"PK\x03\x04 truncated zip")
    wait_until(lambda: "mnist_model_load_failures_total 1.0" in httpx.get(f"{server.url}/metrics").text)
    for _ in range(5):
        answer = httpx.get(f"{server.url}/test/128").json()
        assert answer["prediction"] == 8 and answer["model"]["version"] == 1
    assert f"refused model version {bad}" in server.log()
    good = publish_copy(store)
    wait_until(lambda: httpx.get(f"{server.url}/test/128").json()["model"]["version"] == good)


def test_two_workers_share_metrics(private_store: Path, mnist_dir: Path, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        "MNIST_MODEL_STORE": str(private_store),
        "MNIST_DATA_DIR": str(mnist_dir),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    with uvicorn_server(env, tmp_path / "server.log", workers=2) as server, httpx.Client() as http:
        # /readyz answered from one worker; wait until the other has loaded its model too.
        wait_until(lambda: http.get(f"{server.url}/metrics").text.count("mnist_model_loaded{") >= 2)
        for _ in range(40):
            assert http.get(f"{server.url}/test/7", headers={"Connection": "close"}).status_code == 200
        text = http.get(f"{server.url}/metrics").text
    line = next(
        line
        for line in text.splitlines()
        if line.startswith('mnist_http_requests_total{method="GET",route="/test/{index}",status="200"}')
    )
    assert float(line.split()[-1]) == 40
    assert text.count("mnist_model_loaded{") >= 2  # one series per worker process


def test_full_queue_answers_503_with_retry_after(
    private_store: Path, mnist_dir: Path, tmp_path: Path, test_split: MnistSplit
) -> None:
    # A 10,000-image request moves in 79 passes of 128 and weighs 128 on a queue of 200 meanwhile;
    # a 1,000-image request beside it would weigh 128 more: refused with 503, not queued.
    env = service_env(
        private_store, mnist_dir, batch_queue_size="200", max_upload_bytes=str(16 * 1024 * 1024)
    )
    headers = {"Content-Type": "application/octet-stream"}
    large: list[httpx.Response] = []

    def passes(url: str) -> float:
        text = httpx.get(f"{url}/metrics").text
        return float(re.search(r"^mnist_batch_size_count (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]

    with uvicorn_server(env, tmp_path / "server.log") as server:
        url = f"{server.url}/predict/batch"
        before = passes(server.url)
        sender = threading.Thread(
            target=lambda: large.append(
                httpx.post(url, content=test_split.images.tobytes(), headers=headers, timeout=120)
            )
        )
        sender.start()
        deadline = time.monotonic() + 60
        while passes(server.url) == before:  # the large request is in its first passes
            assert time.monotonic() < deadline, "the large request never reached the model"
        refused = httpx.post(url, content=test_split.images[:1000].tobytes(), headers=headers, timeout=60)
        sender.join(120)
        taken = httpx.post(url, content=test_split.images[:1000].tobytes(), headers=headers, timeout=60)
        assert httpx.get(f"{server.url}/test/128").json()["prediction"] == 8
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
    assert large[0].status_code == 200 and large[0].json()["count"] == 10_000
    assert taken.status_code == 200 and taken.json()["count"] == 1000
