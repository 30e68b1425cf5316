"""A hostile corpus over gRPC: each malformed call gets the status the protocol implies, with a
message naming the problem, never INTERNAL or UNKNOWN; the server keeps serving."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from model_store.mnist_data import MnistSplit
from tests.app.grpc.conftest import GrpcServer

pytestmark = pytest.mark.e2e
Code = grpc.StatusCode
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def stub(served: GrpcServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(
        served.target, options=[("grpc.max_send_message_length", 64 * MIB)]
    ) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def infer(shape: list[int], datatype: str = "UINT8", **fields: Any) -> service_pb2.ModelInferRequest:
    """A request for model mnist with one input `images`; `fields` set the rest (or replace it)."""
    request = service_pb2.ModelInferRequest(model_name=fields.pop("model_name", "mnist"))
    request.model_version = fields.pop("model_version", "")
    tensor = request.inputs.add(name=fields.pop("name", "images"), datatype=datatype, shape=shape)
    if "uint" in fields:
        tensor.contents.uint_contents.extend(fields.pop("uint"))
    if "fp32" in fields:
        tensor.contents.fp32_contents.extend(fields.pop("fp32"))
    if "int64" in fields:
        tensor.contents.int64_contents.extend(fields.pop("int64"))
    for raw in fields.pop("raw", ()):
        request.raw_input_contents.append(raw)
    for output in fields.pop("outputs", ()):
        request.outputs.add(name=output)
    assert not fields, fields
    return request


ZEROS = bytes(784)
CORPUS: dict[str, tuple[Callable[[], Any], grpc.StatusCode, str]] = {
    "wrong datatype INT64": (
        lambda: infer([1, 784], "INT64", int64=[0] * 784),
        Code.INVALID_ARGUMENT,
        "INT64",
    ),
    "wrong datatype BYTES": (lambda: infer([1, 784], "BYTES", raw=[ZEROS]), Code.INVALID_ARGUMENT, "BYTES"),
    "wrong datatype FP16": (
        lambda: infer([1, 784], "FP16", raw=[bytes(1568)]),
        Code.INVALID_ARGUMENT,
        "FP16",
    ),
    "shape overflowing int64": (
        lambda: infer([2**62, 784], raw=[ZEROS]),
        Code.INVALID_ARGUMENT,
        "limit is 10000",
    ),
    "shape of huge negative": (lambda: infer([-(2**63), 784], raw=[ZEROS]), Code.INVALID_ARGUMENT, "shape"),
    "shape with huge image side": (
        lambda: infer([1, 2**40, 2**40], raw=[ZEROS]),
        Code.INVALID_ARGUMENT,
        "shape",
    ),
    "shape of zero images": (lambda: infer([0, 784], raw=[b""]), Code.INVALID_ARGUMENT, "shape"),
    "shape of one dimension": (lambda: infer([784], raw=[ZEROS]), Code.INVALID_ARGUMENT, "shape"),
    "too many images": (lambda: infer([10_001, 784], raw=[ZEROS]), Code.INVALID_ARGUMENT, "limit is 10000"),
    "raw too short": (lambda: infer([2, 784], raw=[ZEROS]), Code.INVALID_ARGUMENT, "expected 1568"),
    "raw too long": (lambda: infer([1, 784], raw=[ZEROS + b"x"]), Code.INVALID_ARGUMENT, "expected 784"),
    "raw FP32 size of UINT8": (lambda: infer([1, 784], "FP32", raw=[ZEROS]), Code.INVALID_ARGUMENT, "3136"),
    "two raw entries": (lambda: infer([1, 784], raw=[ZEROS, ZEROS]), Code.INVALID_ARGUMENT, "2 entries"),
    "raw and contents": (
        lambda: infer([1, 784], uint=[0] * 784, raw=[ZEROS]),
        Code.INVALID_ARGUMENT,
        "not both",
    ),
    "contents in the wrong field": (
        lambda: infer([1, 784], fp32=[0.0] * 784),
        Code.INVALID_ARGUMENT,
        "uint_contents",
    ),
    "too few values": (lambda: infer([1, 784], uint=[0] * 10), Code.INVALID_ARGUMENT, "needs 784"),
    "no values": (lambda: infer([1, 784]), Code.INVALID_ARGUMENT, "needs 784"),
    "UINT8 value over 255": (lambda: infer([1, 784], uint=[256] * 784), Code.INVALID_ARGUMENT, "0-255"),
    "FP32 NaN": (lambda: infer([1, 784], "FP32", fp32=[float("nan")] * 784), Code.INVALID_ARGUMENT, "finite"),
    "FP32 over 1": (lambda: infer([1, 784], "FP32", fp32=[2.0] * 784), Code.INVALID_ARGUMENT, "0-1"),
    "unknown input": (lambda: infer([1, 784], name="pixels", raw=[ZEROS]), Code.INVALID_ARGUMENT, "pixels"),
    "missing input": (
        lambda: service_pb2.ModelInferRequest(model_name="mnist"),
        Code.INVALID_ARGUMENT,
        "got 0",
    ),
    "unknown output": (
        lambda: infer([1, 784], raw=[ZEROS], outputs=["logits"]),
        Code.INVALID_ARGUMENT,
        "logits",
    ),
    "unknown model": (lambda: infer([1, 784], raw=[ZEROS], model_name="resnet"), Code.NOT_FOUND, "resnet"),
    "unknown version": (lambda: infer([1, 784], raw=[ZEROS], model_version="7"), Code.NOT_FOUND, "'7'"),
    "version not a number": (
        lambda: infer([1, 784], raw=[ZEROS], model_version="abc"),
        Code.NOT_FOUND,
        "abc",
    ),
    "version zero": (lambda: infer([1, 784], raw=[ZEROS], model_version="0"), Code.NOT_FOUND, "'0'"),
    "message over the size limit": (
        lambda: infer([5400, 784], raw=[bytes(5400 * 784)]),
        Code.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
}


@pytest.mark.parametrize("case", list(CORPUS))
def test_hostile_infer(stub: service_pb2_grpc.GRPCInferenceServiceStub, case: str) -> None:
    build, code, words = CORPUS[case]
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(build(), timeout=30)
    error: Any = refused.value
    assert error.code() == code, error.details()
    assert words in error.details()


@pytest.mark.parametrize("rpc", ["ModelReady", "ModelMetadata"])
@pytest.mark.parametrize(("name", "version"), [("resnet", ""), ("mnist", "9"), ("mnist", "-1")])
def test_unknown_models_and_versions(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, rpc: str, name: str, version: str
) -> None:
    request = getattr(service_pb2, f"{rpc}Request")(name=name, version=version)
    with pytest.raises(grpc.RpcError) as refused:
        getattr(stub, rpc)(request, timeout=30)
    error: Any = refused.value
    assert error.code() == Code.NOT_FOUND
    assert (version or name) in error.details()


def test_bytes_that_are_not_a_message(served: GrpcServer) -> None:
    with grpc.insecure_channel(served.target) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as refused:
            call(b"\xff\xff\xff\xff garbage", timeout=30)
    error: Any = refused.value
    assert error.code() == Code.INVALID_ARGUMENT
    assert "not a inference.ModelInferRequest message" in error.details()


def test_unknown_method_is_unimplemented(served: GrpcServer) -> None:
    with grpc.insecure_channel(served.target) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/RepositoryModelLoad")
        with pytest.raises(grpc.RpcError) as refused:
            call(b"", timeout=30)
    assert refused.value.code() == Code.UNIMPLEMENTED  # type: ignore[attr-defined]


def test_still_serving_after_the_corpus(
    served: GrpcServer, stub: service_pb2_grpc.GRPCInferenceServiceStub, test_split: MnistSplit
) -> None:
    for build, _, _ in CORPUS.values():
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(build(), timeout=30)
    response = stub.ModelInfer(infer([1, 28, 28], raw=[test_split.images[128].tobytes()]), timeout=30)
    digit = np.frombuffer(response.raw_output_contents[1], "<i8")
    assert digit.tolist() == [8]
    assert served.http.process.poll() is None
    assert "Traceback" not in served.http.log()
