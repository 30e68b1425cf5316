"""Every RPC of the Open Inference Protocol over gRPC, with Triton's own client (sync and asyncio)
against a real server process, on real MNIST digits: the same answers as HTTP v2 and /predict."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import service_pb2, service_pb2_grpc

from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode
from tests.app.grpc.conftest import GrpcServer

pytestmark = pytest.mark.e2e

INDICES = [128, 3, 17, 42, 999]
OUTPUTS = ("probabilities", "digit", "verdict")


def http_answers(server: GrpcServer, images: np.ndarray) -> list[dict[str, object]]:
    return [
        httpx.post(f"{server.http.url}/predict", files={"file": ("d.png", encode(image))}).json()
        for image in images
    ]


def test_health_and_metadata_rpcs(served: GrpcServer) -> None:
    client = triton.InferenceServerClient(served.target)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("mnist")
    assert client.is_model_ready("mnist", "1")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "mnist-serve" and server["version"]
    model = client.get_model_metadata("mnist", as_json=True)
    assert model["name"] == "mnist" and model["versions"] == ["1"]
    assert model["platform"] == "tensorflow_keras"
    assert model["inputs"] == [{"name": "images", "datatype": "FP32", "shape": ["-1", "28", "28", "1"]}]
    assert [o["name"] for o in model["outputs"]] == list(OUTPUTS)
    assert client.get_model_metadata("mnist", "1", as_json=True)["versions"] == ["1"]
    # The HTTP side names the port the same protocol is served on over gRPC.
    metadata = httpx.get(f"{served.http.url}/v2").json()
    assert metadata["grpc_port"] == int(served.target.rsplit(":", 1)[1])
    client.close()


def test_model_infer_raw_matches_http(served: GrpcServer, test_split: MnistSplit) -> None:
    images = test_split.images[INDICES]
    answers = http_answers(served, images)
    expected = np.array([answer["probabilities"] for answer in answers])
    client = triton.InferenceServerClient(served.target)
    fp32 = triton.InferInput("images", [5, 28, 28, 1], "FP32")
    fp32.set_data_from_numpy((images.astype(np.float32) / 255).reshape(5, 28, 28, 1))
    uint8 = triton.InferInput("images", [5, 784], "UINT8")
    uint8.set_data_from_numpy(images.reshape(5, 784))
    for tensor in (fp32, uint8):
        outputs = [triton.InferRequestedOutput(name) for name in OUTPUTS]
        result = client.infer("mnist", [tensor], outputs=outputs, model_version="1", request_id="r-7")
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)
        assert result.as_numpy("digit").tolist() == expected.argmax(axis=1).tolist()
        assert result.as_numpy("digit")[0] == test_split.labels[128] == 8
        assert [v.decode() for v in result.as_numpy("verdict")] == [a["verdict"] for a in answers]
        response = result.get_response()
        assert response.model_name == "mnist" and response.model_version == "1" and response.id == "r-7"
    # Only the outputs asked for, in the order asked.
    result = client.infer("mnist", [uint8], outputs=[triton.InferRequestedOutput("digit")])
    assert [o.name for o in result.get_response().outputs] == ["digit"]
    assert result.as_numpy("probabilities") is None
    client.close()


def test_model_infer_typed_contents(served: GrpcServer, test_split: MnistSplit) -> None:
    """Typed `contents` in (as grpcurl-style callers send), typed `contents` out."""
    images = test_split.images[INDICES[:2]]
    expected = np.array([a["probabilities"] for a in http_answers(served, images)])
    request = service_pb2.ModelInferRequest(model_name="mnist")
    tensor = request.inputs.add(name="images", datatype="UINT8", shape=[2, 28, 28])
    tensor.contents.uint_contents.extend(images.reshape(-1).tolist())
    request.outputs.add(name="probabilities")
    request.outputs.add(name="digit")
    request.outputs.add(name="verdict")
    with grpc.insecure_channel(served.target) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert not response.raw_output_contents
    probabilities, digit, verdict = response.outputs
    assert list(probabilities.shape) == [2, 10] and probabilities.datatype == "FP32"
    np.testing.assert_allclose(np.reshape(probabilities.contents.fp32_contents, (2, 10)), expected, atol=1e-6)
    assert list(digit.contents.int64_contents) == expected.argmax(axis=1).tolist()
    assert [v.decode() for v in verdict.contents.bytes_contents] == ["digit", "digit"]


def test_asyncio_client_concurrent_calls(served: GrpcServer, test_split: MnistSplit) -> None:
    """Many calls at once from tritonclient's asyncio client: every one answered, each its own digit."""
    images = test_split.images[:32]

    async def run() -> list[int]:
        client = triton_aio.InferenceServerClient(served.target)
        try:
            assert await client.is_server_live() and await client.is_model_ready("mnist")

            async def one(image: np.ndarray) -> int:
                tensor = triton_aio.InferInput("images", [1, 784], "UINT8")
                tensor.set_data_from_numpy(image.reshape(1, 784))
                result = await client.infer("mnist", [tensor])
                return int(result.as_numpy("digit")[0])

            return list(await asyncio.gather(*(one(image) for image in images)))
        finally:
            await client.close()

    digits = asyncio.run(run())
    singles = [a["prediction"] for a in http_answers(served, images)]
    assert digits == singles
    assert np.mean(np.array(digits) == test_split.labels[:32]) > 0.9


def test_grpc_calls_are_in_metrics(served: GrpcServer) -> None:
    client = triton.InferenceServerClient(served.target)
    tensor = triton.InferInput("images", [1, 784], "UINT8")
    tensor.set_data_from_numpy(np.zeros((1, 784), np.uint8))
    client.infer("mnist", [tensor])
    client.close()
    text = httpx.get(f"{served.http.url}/metrics").text
    assert 'mnist_grpc_requests_total{code="OK",method="ModelInfer"}' in text
    assert 'mnist_request_images_count{protocol="grpc"}' in text
    assert 'mnist_grpc_request_duration_seconds_count{method="ModelInfer"}' in text
