"""The RPCs of `inference.GRPCInferenceService`, answered from the same state as HTTP.

Each RPC either returns its response or raises `CallError` with the status the protocol implies;
`app.grpc.server` turns that into the call's status, so a client's mistake never ends as
INTERNAL or UNKNOWN.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc

from app import __version__
from app.grpc.open_inference.messages import message
from app.grpc.tensors import infer_response, request_images, requested_outputs
from app.inputs.tensors import PLATFORM, InferError, tensor_metadata
from app.operations.api_keys import KeyRefusedError, admit
from app.serving.batcher import OverloadedError
from app.serving.model import ServingModel
from app.serving.state import NotServedError, ServiceState

SERVER_NAME = "mnist-serve"
HOW = "send metadata 'authorization: Bearer <key>' or 'x-api-key: <key>'"
Metadata = Sequence[tuple[str, str | bytes]]


class CallError(Exception):
    """The status a call ends with, its message, and trailing metadata (e.g. retry-after)."""

    def __init__(
        self, code: grpc.StatusCode, message: str, trailing: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.code = code
        self.trailing = trailing


def _version(text: str) -> str | None:
    return text or None  # the protocol's empty string: the version the server picks


class InferenceService:
    def __init__(self, state: ServiceState) -> None:
        self.state = state

    def _model(self, name: str, version: str) -> ServingModel:
        try:
            return self.state.served_model(name, _version(version))
        except NotServedError as exc:
            raise CallError(grpc.StatusCode.NOT_FOUND, str(exc)) from exc

    async def ServerLive(self, request: Any, metadata: Metadata, deadline: float | None) -> Any:  # noqa: N802
        return message("ServerLiveResponse")(live=True)

    async def ServerReady(self, request: Any, metadata: Metadata, deadline: float | None) -> Any:  # noqa: N802
        # The gRPC server starts once the model is loaded, so it is ready whenever it answers.
        return message("ServerReadyResponse")(ready=True)

    async def ModelReady(self, request: Any, metadata: Metadata, deadline: float | None) -> Any:  # noqa: N802
        self._model(request.name, request.version)
        return message("ModelReadyResponse")(ready=True)

    async def ServerMetadata(self, request: Any, metadata: Metadata, deadline: float | None) -> Any:  # noqa: N802
        return message("ServerMetadataResponse")(name=SERVER_NAME, version=__version__)

    async def ModelMetadata(self, request: Any, metadata: Metadata, deadline: float | None) -> Any:  # noqa: N802
        model = self._model(request.name, request.version)
        versions = [model.version] if request.version else sorted(self.state.holder.loaded)
        tensors = tensor_metadata()
        return message("ModelMetadataResponse")(
            name=model.name,
            versions=[str(v) for v in versions],
            platform=PLATFORM,
            inputs=tensors["inputs"],
            outputs=tensors["outputs"],
        )

    async def ModelInfer(self, request: Any, metadata: Metadata, deadline: float | None) -> Any:  # noqa: N802
        key = self._admit(metadata)
        model = self._model(request.model_name, request.model_version)
        if not request.model_version:
            # A canary's share is sticky per client, as over HTTP: its key, else the request id.
            model = self.state.router.choose(None, key or request.id or "")
        try:
            names = requested_outputs(request)
            images = request_images(request, self.state.settings.max_array_images)
        except InferError as exc:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        prediction = self.state.predict(images, model, "grpc", "grpc ModelInfer", key)
        try:
            if deadline is None:
                result = await prediction
            else:
                # Cancelled when the deadline passes: a call still queued then leaves the queue
                # and takes no part in a forward pass.
                result = await asyncio.wait_for(prediction, max(deadline, 0))
        except TimeoutError as exc:
            raise CallError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the answer"
            ) from exc
        except OverloadedError as exc:
            raise CallError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the service is overloaded ({exc}); retry shortly",
                (("retry-after", "1"),),
            ) from exc
        return infer_response(
            request, names, result.model.version, result.probabilities, result.verdicts, result.ids
        )

    def _admit(self, metadata: Metadata) -> str | None:
        """The caller's key name (None when keys are off); the same keys and rate as HTTP."""
        keys = self.state.api_keys
        if keys is None:
            return None
        presented = None
        for name, value in metadata:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            if name == "x-api-key":
                presented = text
            elif name == "authorization" and presented is None and text[:7].lower() == "bearer ":
                presented = text[7:].strip()
        try:
            return admit(keys, self.state.rate_limiter, self.state.metrics.api_key_requests, presented)
        except KeyRefusedError as exc:
            if exc.reason == "rate_limited":
                trailing = (("retry-after", str(exc.retry_after)),)
                raise CallError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), trailing) from exc
            text = f"{exc}: {HOW}" if exc.reason == "missing" else str(exc)
            raise CallError(grpc.StatusCode.UNAUTHENTICATED, text) from exc
