"""The Python client and mnist-predict against a real uvicorn, on 20 real test digits as PNG files."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from mnist_client import AsyncClient, Client, MnistServeError
from model_store.mnist_data import MnistSplit
from tests.client.conftest import INDICES
from tests.support.live_server import REPO_ROOT, RunningServer, service_env, uvicorn_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(
    trained_store: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    env = service_env(trained_store, mnist_dir)
    with uvicorn_server(env, tmp_path_factory.mktemp("log") / "server.log") as running:
        yield running


def correct(digits: list[int], test_split: MnistSplit) -> int:
    return int((np.array(digits) == test_split.labels[INDICES]).sum())


def test_client_classifies_paths_bytes_pil_and_arrays_alike(
    server: RunningServer, digit_files: list[Path], test_split: MnistSplit
) -> None:
    with Client(server.url) as client:
        by_path = [client.predict(path) for path in digit_files]
        assert correct([p.digit for p in by_path], test_split) >= 18
        assert by_path[0].source == digit_files[0].name and by_path[0].model_version == 1
        image = test_split.images[INDICES[0]]
        same = [
            client.predict(digit_files[0].read_bytes()),
            client.predict(Image.open(io.BytesIO(digit_files[0].read_bytes()))),
            client.predict(image),
        ]
        assert {p.digit for p in same} == {by_path[0].digit}
        np.testing.assert_allclose(same[2].probabilities, by_path[0].probabilities, atol=1e-6)
        batch = client.predict_batch(digit_files)
        assert [p.digit for p in batch] == [p.digit for p in by_path]
        assert [p.source for p in batch] == [path.name for path in digit_files]
        arrays = client.predict_batch(test_split.images[INDICES])
        assert [p.digit for p in arrays] == [p.digit for p in by_path]
        sample = client.test_sample(7)
        assert sample.label == test_split.labels[7] and sample.correct
        assert client.model_info()["metadata"]["version"] == 1
        with pytest.raises(MnistServeError) as refused:
            client.predict(b"not an image")
        assert refused.value.status == 400


def test_async_client_classifies_the_same_digits(
    server: RunningServer, digit_files: list[Path], test_split: MnistSplit
) -> None:
    async def run() -> list[int]:
        async with AsyncClient(server.url) as client:
            predictions = await asyncio.gather(*(client.predict(path) for path in digit_files))
            assert (await client.test_sample(3)).label == test_split.labels[3]
            return [p.digit for p in predictions]

    assert correct(asyncio.run(run()), test_split) >= 18


def test_mnist_predict_prints_a_table_and_json(
    server: RunningServer, digit_files: list[Path], test_split: MnistSplit
) -> None:
    command = [sys.executable, "-m", "mnist_client.cli", "--url", server.url]
    table = subprocess.run([*command, *map(str, digit_files)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["file", "digit", "confidence", "verdict", "version"]
    assert len(lines) == 21 and lines[1].startswith(str(digit_files[0]))
    as_json = subprocess.run(
        [*command, "--json", *map(str, digit_files)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    rows = json.loads(as_json.stdout)
    assert correct([row["digit"] for row in rows], test_split) >= 18
    assert all(0 <= row["confidence"] <= 1 and row["model_version"] == 1 for row in rows)


def test_mnist_predict_user_errors_are_one_line(server: RunningServer, tmp_path: Path) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "mnist_client.cli", str(tmp_path / "nope.png")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.count("\n") == 1 and "no such file" in missing.stderr
    (tmp_path / "x.png").write_bytes(b"png?")
    unreachable = subprocess.run(
        [sys.executable, "-m", "mnist_client.cli", "--url", "http://127.0.0.1:9", str(tmp_path / "x.png")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert unreachable.returncode == 1 and unreachable.stderr.count("\n") == 1
    assert "cannot reach" in unreachable.stderr


def test_client_backs_off_and_succeeds_when_the_queue_is_full(
    trained_store: Path, mnist_dir: Path, tmp_path: Path, test_split: MnistSplit
) -> None:
    # A queue of one image, held full by two clients sending 3,000-image batches in small passes.
    env = service_env(trained_store, mnist_dir, batch_queue_size="1", batch_max_size="8")
    big = io.BytesIO()
    np.save(big, np.repeat(test_split.images[:1000], 3, axis=0))
    with uvicorn_server(env, tmp_path / "server.log") as running:
        stop = threading.Event()
        busy = threading.Event()

        def hold() -> None:
            with httpx.Client(base_url=running.url, timeout=120) as http:
                while not stop.is_set():
                    busy.set()
                    http.post(
                        "/predict/batch",
                        content=big.getvalue(),
                        headers={"Content-Type": "application/x-npy"},
                    )

        holders = [threading.Thread(target=hold) for _ in range(2)]
        for holder in holders:
            holder.start()
        retries: list[tuple[int, float]] = []

        def backed_off(status: int, wait: float) -> None:
            retries.append((status, wait))
            stop.set()  # the holders finish their batch; the queue drains; the retry gets in

        try:
            assert busy.wait(60)
            with Client(running.url, on_retry=backed_off, retries=5) as client:
                # The first attempt can slip into a gap between the holders' batches; then try again.
                for _ in range(20):
                    prediction = client.predict(test_split.images[0])
                    if retries:
                        break
        finally:
            stop.set()
            for holder in holders:
                holder.join(120)
        assert retries and retries[0] == (503, 1.0)
        assert prediction.digit == test_split.labels[0]
