"""`Client` and `AsyncClient`: the same calls, blocking or awaitable.

    from mnist_client import Client
    with Client("http://127.0.0.1:8000", api_key="...") as mnist:
        print(mnist.predict("digit.png").digit)

A grpc:// (or grpcs://) URL, e.g. `Client("grpc://127.0.0.1:8081")`, sends `predict` and
`predict_batch` as ModelInfer calls of the Open Inference Protocol instead, with the same answers;
the other calls are HTTP routes, outside that protocol, and raise NotImplementedError there.

Every answer carries its `prediction_id`; `feedback(prediction_id, label)` tells a service that
keeps a log of its answers the true label (docs/feedback.md).

An image is a path, bytes of an image file, a PIL image or a numpy array (28x28 uint8, MNIST
polarity: light digit on dark). A 503 (queue full) or 429 (rate limit), over gRPC a
RESOURCE_EXHAUSTED, is retried after the server's advice, at most `retries` times; other errors
raise MnistServeError.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import grpc
import httpx
import numpy as np
from PIL import Image

from mnist_client import grpc_transport
from mnist_client.results import MnistServeError, Prediction, TestSample, UnreachableError
from model_store.store import DEFAULT_MODEL_NAME

__all__ = ["AsyncClient", "Client", "MnistServeError", "Prediction", "TestSample", "UnreachableError"]

ImageInput = str | os.PathLike[str] | bytes | Image.Image | np.ndarray
RETRIED = (429, 503)
RetryHook = Callable[[int, float], None]  # (status, seconds to wait)
Label = int | Literal["not_a_digit"]
T = TypeVar("T")


def _prediction(body: dict[str, Any], source: str | None = None) -> Prediction:
    return Prediction(
        digit=int(body["prediction"]),
        confidence=float(body["confidence"]),
        probabilities=[float(p) for p in body["probabilities"]],
        model_version=int(body["model"]["version"]),
        verdict=body.get("verdict"),
        source=source,
        prediction_id=body.get("prediction_id"),
    )


def _batch_predictions(body: dict[str, Any], sources: Sequence[str | None]) -> list[Prediction]:
    version = int(body["model"]["version"])
    verdicts = body.get("verdicts") or [None] * body["count"]
    ids = body.get("prediction_ids") or [None] * body["count"]
    return [
        Prediction(int(d), float(c), [float(p) for p in probs], version, v, s, i)
        for d, c, probs, v, s, i in zip(
            body["predictions"],
            body["confidences"],
            body["probabilities"],
            verdicts,
            sources,
            ids,
            strict=True,
        )
    ]


def _feedback_call(prediction_id: str, label: Label) -> _Call:
    return _Call(
        "POST",
        "/feedback",
        {},
        content=json.dumps({"prediction_id": prediction_id, "label": label}).encode(),
        content_type="application/json",
    )


def image_file(image: ImageInput, index: int = 0) -> tuple[str, bytes]:
    """(file name, bytes of an image file) for any accepted image."""
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return path.name, path.read_bytes()
    if isinstance(image, bytes):
        return f"image-{index}", image
    if isinstance(image, np.ndarray):
        image = Image.fromarray(_checked_array(image, 2), mode="L")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return f"image-{index}.png", buffer.getvalue()


def _checked_array(images: np.ndarray, ndim: int) -> np.ndarray:
    if images.ndim != ndim or images.dtype != np.uint8:
        what = "one 2-D uint8 array" if ndim == 2 else "an (N, 28, 28) uint8 array"
        raise ValueError(f"a numpy image is {what}; got {images.dtype} {images.shape}")
    return images


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


def _grpc_predict_call(image: ImageInput, version: int | None) -> tuple[Any, list[str | None]]:
    """The ModelInfer request of `_predict_call`: the digit the service would make of the upload."""
    if isinstance(image, np.ndarray):
        pixels = grpc_transport.array_digit(_checked_array(image, 2))
        return grpc_transport.infer_request(pixels[np.newaxis], version), [None]
    name, data = image_file(image)
    source = name if isinstance(image, str | os.PathLike) else None
    return grpc_transport.infer_request(grpc_transport.file_digit(data)[np.newaxis], version), [source]


def _grpc_batch_call(
    images: Sequence[ImageInput] | np.ndarray, version: int | None
) -> tuple[Any, list[str | None]]:
    """The ModelInfer request of `_batch_call`: an array as it is, files as the service reads them."""
    if isinstance(images, np.ndarray):
        return grpc_transport.infer_request(_checked_array(images, 3), version), [None] * len(images)
    files = [image_file(image, i) for i, image in enumerate(images)]
    pixels = np.stack([grpc_transport.file_digit(data) for _, data in files])
    return grpc_transport.infer_request(pixels, version), [name for name, _ in files]


def _backoff(status: int, advice: str | None, attempt: int, retries: int, max_wait: float) -> float | None:
    """Seconds to wait before retrying an answer with `status` and the server's advice, or None."""
    if status not in RETRIED or attempt >= retries:
        return None
    try:
        wait = float(advice or "1")
    except ValueError:
        wait = 1.0
    return min(max(wait, 0.0), max_wait)


@dataclass(frozen=True)
class _RetryAfter:
    """A call's outcome that asks for the call again after `seconds`."""

    seconds: float


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
    """Settings and the retry rule shared by both clients; each opens its own httpx client, or its
    own gRPC channel for a grpc:// URL."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        max_wait_seconds: float = 10.0,
        on_retry: RetryHook | None = None,
        model_name: str = DEFAULT_MODEL_NAME,
    ) -> None:
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.metadata = grpc_transport.metadata(api_key)
        self.base_url = base_url.rstrip("/")
        self.grpc = grpc_transport.is_grpc_url(self.base_url)
        self.model_name = model_name  # the protocol names the model in every gRPC call
        self.timeout = timeout
        self.retries = retries
        self.max_wait_seconds = max_wait_seconds
        self.on_retry = on_retry
        self._open()

    def _open(self) -> None:
        raise NotImplementedError

    def _should_retry(self, status: int, advice: str | None, attempt: int) -> float | None:
        wait = _backoff(status, advice, attempt, self.retries, self.max_wait_seconds)
        if wait is not None and self.on_retry is not None:
            self.on_retry(status, wait)
        return wait

    def _http_outcome(self, response: httpx.Response, attempt: int) -> dict[str, Any] | _RetryAfter:
        """The answer's body, a wait before the call again, or the error the answer raises."""
        wait = self._should_retry(response.status_code, response.headers.get("retry-after"), attempt)
        return _checked(response) if wait is None else _RetryAfter(wait)

    def _grpc_outcome(self, error: grpc.RpcError, attempt: int) -> _RetryAfter:
        """A wait before the call again, or the error the failed call raises."""
        failed = grpc_transport.failure(error)
        if isinstance(failed, MnistServeError):
            wait = self._should_retry(failed.status, grpc_transport.retry_advice(error), attempt)
            if wait is not None:
                return _RetryAfter(wait)
        raise failed from error

    def _http_only(self, call: _Call) -> None:
        if self.grpc:
            raise NotImplementedError(
                f"{call.path} is an HTTP route, not in the gRPC protocol; use the service's http:// URL"
            )

    def _grpc_request(self, request: Any) -> Any:
        request.model_name = self.model_name
        return request


class Client(_Base):
    """Blocking client. Use as a context manager, or call close()."""

    def _open(self) -> None:
        if self.grpc:
            self._channel = grpc_transport.open_channel(self.base_url)
            self._model_infer = self._channel.unary_unary(
                grpc_transport.MODEL_INFER, **grpc_transport.serializers()
            )
        else:
            self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.grpc:
            self._channel.close()
        else:
            self._http.close()

    @staticmethod
    def _retrying(once: Callable[[int], T | _RetryAfter]) -> T:
        """`once(attempt)` again for as long as it asks to be retried, waiting as it asks."""
        attempt = 0
        while isinstance(outcome := once(attempt), _RetryAfter):
            time.sleep(outcome.seconds)  # the server's Retry-After, bounded
            attempt += 1
        return outcome

    def _send(self, call: _Call) -> dict[str, Any]:
        self._http_only(call)

        def once(attempt: int) -> dict[str, Any] | _RetryAfter:
            response = self._http.request(call.method, call.path, **call.send_args())
            return self._http_outcome(response, attempt)

        return self._retrying(once)

    def _infer(self, request: Any, sources: list[str | None]) -> list[Prediction]:
        request = self._grpc_request(request)

        def once(attempt: int) -> list[Prediction] | _RetryAfter:
            try:
                response = self._model_infer(request, metadata=self.metadata, timeout=self.timeout)
            except grpc.RpcError as error:
                return self._grpc_outcome(error, attempt)
            return grpc_transport.predictions(response, sources)

        return self._retrying(once)

    def predict(self, image: ImageInput, version: int | None = None) -> Prediction:
        if self.grpc:
            return self._infer(*_grpc_predict_call(image, version))[0]
        call, source = _predict_call(image, version)
        return _prediction(self._send(call), source)

    def predict_batch(
        self, images: Sequence[ImageInput] | np.ndarray, version: int | None = None
    ) -> list[Prediction]:
        if self.grpc:
            return self._infer(*_grpc_batch_call(images, version))
        call, sources = _batch_call(images, version)
        return _batch_predictions(self._send(call), sources)

    def test_sample(self, index: int, version: int | None = None) -> TestSample:
        body = self._send(_Call("GET", f"/test/{index}", {"version": version}))
        return TestSample(index, int(body["label"]), _prediction(body))

    def test_accuracy(self, version: int | None = None) -> dict[str, Any]:
        return self._send(_Call("GET", "/test/accuracy", {"version": version}))

    def model_info(self) -> dict[str, Any]:
        return self._send(_Call("GET", "/model", {}))

    def feedback(self, prediction_id: str, label: Label) -> dict[str, Any]:
        """The true label (0-9 or "not_a_digit") of the answer `prediction_id`, as the service
        recorded it: `correct`, `predicted`, `model`, ... HTTP only."""
        return self._send(_feedback_call(prediction_id, label))


class AsyncClient(_Base):
    """The same calls as `Client`, awaitable."""

    def _open(self) -> None:
        if self.grpc:
            self._channel = grpc_transport.open_aio_channel(self.base_url)
            self._model_infer = self._channel.unary_unary(
                grpc_transport.MODEL_INFER, **grpc_transport.serializers()
            )
        else:
            self._http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self.grpc:
            await self._channel.close()
        else:
            await self._http.aclose()

    @staticmethod
    async def _retrying(once: Callable[[int], Awaitable[T | _RetryAfter]]) -> T:
        """`Client._retrying`, awaited."""
        attempt = 0
        while isinstance(outcome := await once(attempt), _RetryAfter):
            await asyncio.sleep(outcome.seconds)  # the server's Retry-After, bounded
            attempt += 1
        return outcome

    async def _send(self, call: _Call) -> dict[str, Any]:
        self._http_only(call)

        async def once(attempt: int) -> dict[str, Any] | _RetryAfter:
            response = await self._http.request(call.method, call.path, **call.send_args())
            return self._http_outcome(response, attempt)

        return await self._retrying(once)

    async def _infer(self, request: Any, sources: list[str | None]) -> list[Prediction]:
        request = self._grpc_request(request)

        async def once(attempt: int) -> list[Prediction] | _RetryAfter:
            try:
                response = await self._model_infer(request, metadata=self.metadata, timeout=self.timeout)
            except grpc.RpcError as error:
                return self._grpc_outcome(error, attempt)
            return grpc_transport.predictions(response, sources)

        return await self._retrying(once)

    async def predict(self, image: ImageInput, version: int | None = None) -> Prediction:
        if self.grpc:
            return (await self._infer(*_grpc_predict_call(image, version)))[0]
        call, source = _predict_call(image, version)
        return _prediction(await self._send(call), source)

    async def predict_batch(
        self, images: Sequence[ImageInput] | np.ndarray, version: int | None = None
    ) -> list[Prediction]:
        if self.grpc:
            return await self._infer(*_grpc_batch_call(images, version))
        call, sources = _batch_call(images, version)
        return _batch_predictions(await self._send(call), sources)

    async def test_sample(self, index: int, version: int | None = None) -> TestSample:
        body = await self._send(_Call("GET", f"/test/{index}", {"version": version}))
        return TestSample(index, int(body["label"]), _prediction(body))

    async def test_accuracy(self, version: int | None = None) -> dict[str, Any]:
        return await self._send(_Call("GET", "/test/accuracy", {"version": version}))

    async def model_info(self) -> dict[str, Any]:
        return await self._send(_Call("GET", "/model", {}))

    async def feedback(self, prediction_id: str, label: Label) -> dict[str, Any]:
        """`Client.feedback`, awaited."""
        return await self._send(_feedback_call(prediction_id, label))
