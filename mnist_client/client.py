"""`Client` and `AsyncClient`: the same calls, blocking or awaitable.

    from mnist_client import Client
    with Client("http://127.0.0.1:8000", api_key="...") as mnist:
        print(mnist.predict("digit.png").digit)

An image is a path, bytes of an image file, a PIL image or a numpy array (28x28 uint8, MNIST
polarity: light digit on dark). A 503 (queue full) or 429 (rate limit) is retried after the
server's Retry-After, at most `retries` times; other errors raise MnistServeError.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ImageInput = str | os.PathLike[str] | bytes | Image.Image | np.ndarray
RETRIED = (429, 503)
RetryHook = Callable[[int, float], None]  # (status, seconds to wait)


class MnistServeError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Prediction:
    digit: int
    confidence: float
    probabilities: list[float]
    model_version: int
    verdict: str | None = None  # present on servers that judge their answers
    source: str | None = None  # the file name, for batches of files


@dataclass(frozen=True)
class TestSample:
    index: int
    label: int
    prediction: Prediction

    @property
    def correct(self) -> bool:
        return self.label == self.prediction.digit


def _prediction(body: dict[str, Any], source: str | None = None) -> Prediction:
    return Prediction(
        digit=int(body["prediction"]),
        confidence=float(body["confidence"]),
        probabilities=[float(p) for p in body["probabilities"]],
        model_version=int(body["model"]["version"]),
        verdict=body.get("verdict"),
        source=source,
    )


def _batch_predictions(body: dict[str, Any], sources: Sequence[str | None]) -> list[Prediction]:
    version = int(body["model"]["version"])
    verdicts = body.get("verdicts") or [None] * body["count"]
    return [
        Prediction(int(d), float(c), [float(p) for p in probs], version, v, s)
        for d, c, probs, v, s in zip(
            body["predictions"], body["confidences"], body["probabilities"], verdicts, sources, strict=True
        )
    ]


def image_file(image: ImageInput, index: int = 0) -> tuple[str, bytes]:
    """(file name, bytes of an image file) for any accepted image."""
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return path.name, path.read_bytes()
    if isinstance(image, bytes):
        return f"image-{index}", image
    if isinstance(image, np.ndarray):
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError(f"a numpy image is one 2-D uint8 array; got {image.dtype} {image.shape}")
        image = Image.fromarray(image, mode="L")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return f"image-{index}.png", buffer.getvalue()


def _npy(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, images, allow_pickle=False)
    return buffer.getvalue()


@dataclass(frozen=True)
class _Call:
    """One HTTP call, built once and sent (and maybe re-sent) by either client."""

    method: str
    path: str
    params: dict[str, Any]
    files: list[tuple[str, tuple[str, bytes]]] | None = None
    content: bytes | None = None
    content_type: str | None = None

    def send_args(self) -> dict[str, Any]:
        headers = {"Content-Type": self.content_type} if self.content_type else None
        return {
            "params": {k: v for k, v in self.params.items() if v is not None},
            "files": self.files,
            "content": self.content,
            "headers": headers,
        }


def _predict_call(image: ImageInput, version: int | None) -> tuple[_Call, str | None]:
    """The call, and the file name when the image is a path."""
    name, data = image_file(image)
    call = _Call("POST", "/predict", {"version": version}, files=[("file", (name, data))])
    return call, name if isinstance(image, str | os.PathLike) else None


def _batch_call(
    images: Sequence[ImageInput] | np.ndarray, version: int | None
) -> tuple[_Call, list[str | None]]:
    if isinstance(images, np.ndarray):  # (N, 28, 28) uint8: sent as one .npy array
        call = _Call(
            "POST",
            "/predict/batch",
            {"version": version},
            content=_npy(images),
            content_type="application/x-npy",
        )
        return call, [None] * len(images)
    files = [image_file(image, i) for i, image in enumerate(images)]
    call = _Call("POST", "/predict/batch", {"version": version}, files=[("file", f) for f in files])
    return call, [name for name, _ in files]


def _retry_after(response: httpx.Response, attempt: int, retries: int, max_wait: float) -> float | None:
    """Seconds to wait before retrying `response`, or None to stop."""
    if response.status_code not in RETRIED or attempt >= retries:
        return None
    try:
        wait = float(response.headers.get("retry-after", "1"))
    except ValueError:
        wait = 1.0
    return min(max(wait, 0.0), max_wait)


def _checked(response: httpx.Response) -> dict[str, Any]:
    if response.is_success:
        body: dict[str, Any] = response.json()
        return body
    try:
        detail = response.json().get("detail") or response.json().get("error") or response.text
    except ValueError:
        detail = response.text
    raise MnistServeError(response.status_code, str(detail))


class _Base:
    """Settings and the retry rule shared by both clients; each opens its own httpx client."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        max_wait_seconds: float = 10.0,
        on_retry: RetryHook | None = None,
    ) -> None:
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.max_wait_seconds = max_wait_seconds
        self.on_retry = on_retry
        self._open()

    def _open(self) -> None:
        raise NotImplementedError

    def _should_retry(self, response: httpx.Response, attempt: int) -> float | None:
        wait = _retry_after(response, attempt, self.retries, self.max_wait_seconds)
        if wait is not None and self.on_retry is not None:
            self.on_retry(response.status_code, wait)
        return wait


class Client(_Base):
    """Blocking client. Use as a context manager, or call close()."""

    def _open(self) -> None:
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> dict[str, Any]:
        attempt = 0
        while True:
            response = self._http.request(call.method, call.path, **call.send_args())
            wait = self._should_retry(response, attempt)
            if wait is None:
                return _checked(response)
            time.sleep(wait)  # the server's Retry-After, bounded
            attempt += 1

    def predict(self, image: ImageInput, version: int | None = None) -> Prediction:
        call, source = _predict_call(image, version)
        return _prediction(self._send(call), source)

    def predict_batch(
        self, images: Sequence[ImageInput] | np.ndarray, version: int | None = None
    ) -> list[Prediction]:
        call, sources = _batch_call(images, version)
        return _batch_predictions(self._send(call), sources)

    def test_sample(self, index: int, version: int | None = None) -> TestSample:
        body = self._send(_Call("GET", f"/test/{index}", {"version": version}))
        return TestSample(index, int(body["label"]), _prediction(body))

    def test_accuracy(self, version: int | None = None) -> dict[str, Any]:
        return self._send(_Call("GET", "/test/accuracy", {"version": version}))

    def model_info(self) -> dict[str, Any]:
        return self._send(_Call("GET", "/model", {}))


class AsyncClient(_Base):
    """The same calls as `Client`, awaitable."""

    def _open(self) -> None:
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> dict[str, Any]:
        attempt = 0
        while True:
            response = await self._http.request(call.method, call.path, **call.send_args())
            wait = self._should_retry(response, attempt)
            if wait is None:
                return _checked(response)
            await asyncio.sleep(wait)  # the server's Retry-After, bounded
            attempt += 1

    async def predict(self, image: ImageInput, version: int | None = None) -> Prediction:
        call, source = _predict_call(image, version)
        return _prediction(await self._send(call), source)

    async def predict_batch(
        self, images: Sequence[ImageInput] | np.ndarray, version: int | None = None
    ) -> list[Prediction]:
        call, sources = _batch_call(images, version)
        return _batch_predictions(await self._send(call), sources)

    async def test_sample(self, index: int, version: int | None = None) -> TestSample:
        body = await self._send(_Call("GET", f"/test/{index}", {"version": version}))
        return TestSample(index, int(body["label"]), _prediction(body))

    async def test_accuracy(self, version: int | None = None) -> dict[str, Any]:
        return await self._send(_Call("GET", "/test/accuracy", {"version": version}))

    async def model_info(self) -> dict[str, Any]:
        return await self._send(_Call("GET", "/model", {}))
