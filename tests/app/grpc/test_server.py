"""The gRPC server around the protocol: the standard health service and reflection, API keys and
their rate over metadata, and every worker answering on the one port."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client.mmap_dict import MmapedDict
from tritonclient.grpc import service_pb2, service_pb2_grpc

from model_store.mnist_data import MnistSplit
from tests.app.grpc.conftest import GrpcServer, grpc_server
from tests.app.operations.test_api_keys import ALICE, write_keys
from tests.support.live_server import READY_TIMEOUT_SECONDS

pytestmark = pytest.mark.e2e
SERVICE = "inference.GRPCInferenceService"


def digit_request(test_split: MnistSplit, index: int = 128) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="images", datatype="UINT8", shape=[1, 784])
    request.raw_input_contents.append(test_split.images[index].tobytes())
    return request


def test_health_service_reports_serving(served: GrpcServer) -> None:
    with grpc.insecure_channel(served.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=30)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def test_reflection_describes_the_service(served: GrpcServer) -> None:
    with grpc.insecure_channel(served.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
        described = database.FindFileContainingSymbol(SERVICE)
    methods = {method.name for method in described.service[0].method}
    assert methods == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    }
    assert "ModelInferRequest" in {message.name for message in described.message_type}


def test_api_keys_over_metadata(
    trained_store: Path, mnist_dir: Path, tmp_path: Path, test_split: MnistSplit
) -> None:
    keys = tmp_path / "keys"
    write_keys(keys, {"alice": ALICE})
    settings = {"api_keys_file": str(keys), "api_key_rate_per_second": "0.001", "api_key_rate_burst": "3"}
    with (
        grpc_server(trained_store, mnist_dir, tmp_path / "server.log", settings=settings) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = digit_request(test_split)

        def refused(metadata: tuple[tuple[str, str], ...]) -> Any:
            with pytest.raises(grpc.RpcError) as raised:
                stub.ModelInfer(request, metadata=metadata, timeout=30)
            return raised.value

        missing = refused(())
        assert missing.code() == grpc.StatusCode.UNAUTHENTICATED and "x-api-key" in missing.details()
        wrong = refused((("x-api-key", "not-a-key-0123456789"),))
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED and "unknown API key" in wrong.details()
        # Health and metadata stay open, as over HTTP.
        assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=30).ready
        # The burst of 3 is one budget over both protocols: HTTP takes one, gRPC the other two.
        http = httpx.get(f"{server.http.url}/test/1", headers={"X-API-Key": ALICE})
        assert http.status_code == 200
        for metadata in ((("authorization", f"Bearer {ALICE}"),), (("x-api-key", ALICE),)):
            answer = stub.ModelInfer(request, metadata=metadata, timeout=30)
            assert np.frombuffer(answer.raw_output_contents[1], "<i8").tolist() == [8]
        limited = refused((("x-api-key", ALICE),))
        assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "over its limit" in limited.details()
        assert int(dict(limited.trailing_metadata())["retry-after"]) >= 1
        metrics = httpx.get(f"{server.http.url}/metrics").text
    assert 'mnist_api_key_requests_total{key="alice",outcome="accepted"} 3.0' in metrics
    assert 'mnist_api_key_requests_total{key="",outcome="missing"} 1.0' in metrics


def grpc_calls_by_worker(metrics_dir: Path) -> dict[str, float]:
    """ModelInfer calls counted by each worker process, from its own multiprocess metrics file."""
    calls = {}
    for path in metrics_dir.glob("counter_*.db"):
        total = 0.0
        for key, value, _ in MmapedDict(str(path), read_mode=True).read_all_values():
            _, sample, labels, _ = json.loads(key)
            if sample == "mnist_grpc_requests_total" and labels.get("method") == "ModelInfer":
                total += value
        calls[path.stem.removeprefix("counter_")] = total
    return calls


def test_every_worker_answers_on_the_one_port(
    trained_store: Path,
    mnist_dir: Path,
    tmp_path: Path,
    test_split: MnistSplit,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    with grpc_server(trained_store, mnist_dir, tmp_path / "server.log", workers=2) as server:
        # Ready means one worker answers /readyz; on a busy machine the other may start a second
        # later, and every connection made before then goes to the first.
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while server.http.log().count("gRPC (Open Inference Protocol) on") < 2:
            assert time.monotonic() < deadline, server.http.log()[-3000:]
            time.sleep(0.1)
        for index in range(40):
            # A new connection each time: the kernel spreads connections, not calls, over the workers.
            client = triton.InferenceServerClient(server.target)
            tensor = triton.InferInput("images", [1, 784], "UINT8")
            tensor.set_data_from_numpy(test_split.images[index : index + 1].reshape(1, 784))
            digit = client.infer("mnist", [tensor]).as_numpy("digit")[0]
            assert digit == client.infer("mnist", [tensor]).as_numpy("digit")[0]
            client.close()
        calls = grpc_calls_by_worker(metrics_dir)
    answered = {pid: count for pid, count in calls.items() if count}
    assert len(answered) == 2, calls
    assert sum(answered.values()) == 80
