"""The client over gRPC (grpc:// URLs) against a real server with both ports: the same answers as
over HTTP for the same images, keys sent as metadata, and errors as MnistServeError."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_client import AsyncClient, Client, MnistServeError, Prediction
from model_store.mnist_data import MnistSplit
from tests.app.grpc.conftest import GrpcServer, grpc_server
from tests.app.operations.test_api_keys import ALICE, write_keys
from tests.support.live_server import REPO_ROOT, free_port

pytestmark = pytest.mark.e2e
EIGHT = 128  # test image 128 is an 8


def grpc_url(server: GrpcServer) -> str:
    return f"grpc://{server.target}"


def assert_same(over_grpc: list[Prediction], over_http: list[Prediction]) -> None:
    """Digit, verdict, version and source alike; probabilities alike up to float32 rounding (the
    two calls may share forward passes with different neighbours)."""
    assert len(over_grpc) == len(over_http)
    for ours, theirs in zip(over_grpc, over_http, strict=True):
        assert (ours.digit, ours.verdict, ours.model_version, ours.source) == (
            theirs.digit,
            theirs.verdict,
            theirs.model_version,
            theirs.source,
        )
        np.testing.assert_allclose(ours.probabilities, theirs.probabilities, atol=1e-6)
        assert ours.confidence == pytest.approx(theirs.confidence, abs=1e-6)


def image_inputs(test_split: MnistSplit, digit_files: list[Path]) -> list[object]:
    """One digit in every accepted form, including ones the service must normalise."""
    eight = test_split.images[EIGHT]
    large = Image.fromarray(255 - eight, mode="L").resize((140, 140)).convert("RGB")
    jpeg = io.BytesIO()
    large.save(jpeg, format="JPEG", quality=90)
    return [
        digit_files[0],
        digit_files[0].read_bytes(),
        Image.open(digit_files[1]),
        eight,
        255 - eight,  # dark on light: turned around
        large,  # a colour picture, dark on light, five times too large
        jpeg.getvalue(),
    ]


def test_grpc_answers_equal_http_answers(
    served: GrpcServer, digit_files: list[Path], test_split: MnistSplit
) -> None:
    with Client(served.http.url) as http, Client(grpc_url(served)) as over_grpc:
        inputs = image_inputs(test_split, digit_files)
        by_grpc = [over_grpc.predict(image) for image in inputs]  # type: ignore[arg-type]
        assert_same(by_grpc, [http.predict(image) for image in inputs])  # type: ignore[arg-type]
        assert [p.digit for p in by_grpc[3:]] == [8, 8, 8, 8]
        assert by_grpc[0].source == digit_files[0].name and by_grpc[1].source is None
        assert_same(over_grpc.predict_batch(digit_files), http.predict_batch(digit_files))
        arrays = test_split.images[[EIGHT, *range(20)]]
        batch = over_grpc.predict_batch(arrays)
        assert_same(batch, http.predict_batch(arrays))
        assert batch[0].digit == 8
        labels = test_split.labels[: len(digit_files)]
        assert (np.array([p.digit for p in batch[1:]]) == labels).sum() >= 18


def test_async_grpc_answers_equal_http_answers(
    served: GrpcServer, digit_files: list[Path], test_split: MnistSplit
) -> None:
    async def answers(url: str) -> tuple[list[Prediction], list[Prediction]]:
        async with AsyncClient(url) as client:
            one_by_one = await asyncio.gather(*(client.predict(path) for path in digit_files))
            return list(one_by_one), await client.predict_batch(test_split.images[[EIGHT]])

    singles, eight = asyncio.run(answers(grpc_url(served)))
    http_singles, http_eight = asyncio.run(answers(served.http.url))
    assert_same(singles, http_singles)
    assert_same(eight, http_eight)
    assert eight[0].digit == 8


def test_grpc_errors_are_mnist_serve_errors(served: GrpcServer) -> None:
    with Client(grpc_url(served)) as client:
        with pytest.raises(MnistServeError) as not_image:
            client.predict(b"not an image")
        assert not_image.value.status == 400
        with pytest.raises(MnistServeError) as unknown:
            client.predict(np.zeros((28, 28), np.uint8), version=99)
        assert (unknown.value.status, unknown.value.grpc_code) == (404, "NOT_FOUND")
        assert "version '99'" in unknown.value.detail
        with pytest.raises(NotImplementedError, match="HTTP route"):
            client.test_sample(1)
    with pytest.raises(ValueError, match="grpc://host:port"):
        Client("grpc://127.0.0.1")


def test_api_key_goes_as_metadata_and_rate_limits_are_retried(
    trained_store: Path, mnist_dir: Path, tmp_path: Path, test_split: MnistSplit
) -> None:
    keys = tmp_path / "keys"
    write_keys(keys, {"alice": ALICE})
    settings = {"api_keys_file": str(keys), "api_key_rate_per_second": "0.001", "api_key_rate_burst": "2"}
    waits: list[tuple[int, float]] = []
    with grpc_server(trained_store, mnist_dir, tmp_path / "server.log", settings=settings) as server:
        with Client(grpc_url(server)) as anonymous, pytest.raises(MnistServeError) as missing:
            anonymous.predict(test_split.images[EIGHT])
        assert (missing.value.status, missing.value.grpc_code) == (401, "UNAUTHENTICATED")
        assert "x-api-key" in missing.value.detail
        keyed = Client(
            grpc_url(server),
            api_key=ALICE,
            retries=1,
            max_wait_seconds=0.01,
            on_retry=lambda status, wait: waits.append((status, wait)),
        )
        with keyed:
            assert [keyed.predict(test_split.images[EIGHT]).digit for _ in range(2)] == [8, 8]
            # The burst is spent: RESOURCE_EXHAUSTED, retried once after the (bounded) advice.
            with pytest.raises(MnistServeError) as limited:
                keyed.predict(test_split.images[EIGHT])
    assert (limited.value.status, limited.value.grpc_code) == (429, "RESOURCE_EXHAUSTED")
    assert waits == [(429, 0.01)]


def mnist_predict(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mnist_client.cli", *args]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_mnist_predict_over_grpc_prints_what_http_prints(served: GrpcServer, digit_files: list[Path]) -> None:
    files = [str(path) for path in digit_files]
    over_http = mnist_predict("--url", served.http.url, *files)
    over_grpc = mnist_predict("--url", grpc_url(served), *files)
    assert over_grpc.returncode == 0, over_grpc.stderr
    assert over_grpc.stdout == over_http.stdout
    unreachable = mnist_predict("--url", f"grpc://127.0.0.1:{free_port()}", files[0])
    assert unreachable.returncode == 1 and unreachable.stdout == ""
    assert unreachable.stderr.count("\n") == 1 and "cannot reach" in unreachable.stderr
    no_port = mnist_predict("--url", "grpc://127.0.0.1", files[0])
    assert no_port.returncode == 2 and no_port.stderr.count("\n") == 1
