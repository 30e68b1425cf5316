"""gRPC and HTTP share one batcher: calls of both protocols meet in one forward pass, a call whose
deadline passes while queued never reaches one, and a full queue answers RESOURCE_EXHAUSTED with
retry advice. The app runs in-process, its model gated so the test decides when a pass finishes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from fastapi.testclient import TestClient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from app.config import Settings
from app.main import create_app
from app.serving.model import ServingModel
from model_store.mnist_data import MnistSplit
from tests.support.live_server import free_port
from tests.support.waiting import wait_until

WAIT = 30.0


@dataclass(frozen=True)
class GatedModel(ServingModel):
    """The served model, but each forward pass notes its size and waits for the gate."""

    gate: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    sizes: list[int] = field(default_factory=list)

    def answer(self, images: np.ndarray) -> np.ndarray:
        self.sizes.append(len(images))
        self.entered.set()
        assert self.gate.wait(WAIT)
        return super().answer(images)


@dataclass
class Gated:
    client: TestClient
    model: GatedModel
    grpc: triton.InferenceServerClient
    pool: ThreadPoolExecutor
    target: str

    def queued(self) -> int:
        return int(self.client.app.state.service.predictor.queued_images)  # type: ignore[attr-defined]


@pytest.fixture
def gated(fixture_store: Path, mnist_dir: Path) -> Iterator[Gated]:
    port = free_port()
    settings = Settings(
        model_store=fixture_store,
        data_dir=mnist_dir,
        grpc_port=port,
        batch_queue_size=8,
        reload_poll_seconds=0,
    )
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(8) as pool:
        holder = client.app.state.service.holder  # type: ignore[attr-defined]
        current = holder.current
        model = GatedModel(**{f.name: getattr(current, f.name) for f in fields(ServingModel)})
        holder.current = holder.loaded[current.version] = model
        target = f"127.0.0.1:{port}"
        grpc_client = triton.InferenceServerClient(target)
        try:
            yield Gated(client, model, grpc_client, pool, target)
        finally:
            model.gate.set()
            grpc_client.close()


def http_v2(gated: Gated, images: np.ndarray) -> Future[Any]:
    body = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [len(images), 784]}]}
    body["inputs"][0]["data"] = images.reshape(-1).tolist()
    return gated.pool.submit(gated.client.post, "/v2/models/mnist/infer", json=body)


def grpc_infer(gated: Gated, images: np.ndarray, **options: Any) -> Future[Any]:
    tensor = triton.InferInput("images", [len(images), 784], "UINT8")
    tensor.set_data_from_numpy(images.reshape(len(images), 784))
    return gated.pool.submit(gated.grpc.infer, "mnist", [tensor], **options)


def first_pass_running(gated: Gated, test_split: MnistSplit) -> Future[Any]:
    """Two images over HTTP, held in the forward pass by the gate."""
    running = http_v2(gated, test_split.images[:2])
    assert gated.model.entered.wait(WAIT)
    return running


def test_grpc_and_http_calls_share_a_forward_pass(gated: Gated, test_split: MnistSplit) -> None:
    running = first_pass_running(gated, test_split)
    over_grpc = grpc_infer(gated, test_split.images[2:5])
    over_http = http_v2(gated, test_split.images[5:9])
    wait_until(lambda: gated.queued() == 7, WAIT)
    gated.model.gate.set()
    assert running.result(WAIT).status_code == 200
    digits = over_grpc.result(WAIT).as_numpy("digit").tolist()
    http_digits = next(o for o in over_http.result(WAIT).json()["outputs"] if o["name"] == "digit")["data"]
    assert gated.model.sizes == [2, 7]  # the gRPC call's 3 images and the HTTP call's 4, together
    assert digits + http_digits == test_split.labels[2:9].tolist()


def test_call_past_its_deadline_never_reaches_a_forward_pass(gated: Gated, test_split: MnistSplit) -> None:
    running = first_pass_running(gated, test_split)
    late = grpc_infer(gated, test_split.images[2:5], client_timeout=0.5)
    with pytest.raises(Exception) as expired:
        late.result(WAIT)
    assert "DEADLINE_EXCEEDED" in str(expired.value) or "Deadline" in str(expired.value)
    gated.model.gate.set()
    assert running.result(WAIT).status_code == 200
    after = grpc_infer(gated, test_split.images[9:10]).result(WAIT)
    assert after.as_numpy("digit").tolist() == [test_split.labels[9]]
    assert gated.model.sizes == [2, 1]  # the expired call's 3 images were dropped from the queue
    assert gated.queued() == 0


def test_full_queue_is_resource_exhausted_with_retry_advice(gated: Gated, test_split: MnistSplit) -> None:
    running = first_pass_running(gated, test_split)
    queued = grpc_infer(gated, test_split.images[2:10])  # the queue's 8 images
    wait_until(lambda: gated.queued() == 8)
    request = service_pb2.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="images", datatype="UINT8", shape=[1, 784])
    request.raw_input_contents.append(test_split.images[10].tobytes())
    with grpc.insecure_channel(gated.target) as channel, pytest.raises(grpc.RpcError) as refused:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=WAIT)
    error: Any = refused.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "overloaded" in error.details()
    assert dict(error.trailing_metadata())["retry-after"] == "1"
    gated.model.gate.set()
    assert running.result(WAIT).status_code == 200
    assert queued.result(WAIT).as_numpy("digit").tolist() == test_split.labels[2:10].tolist()
