"""OpenTelemetry over gRPC: a ModelInfer call gives a server span continuing the caller's trace,
with the same predict and forward children as an HTTP request."""

from __future__ import annotations

from pathlib import Path

import tritonclient.grpc as triton
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.config import Settings
from app.main import create_app
from model_store.mnist_data import MnistSplit
from tests.support.live_server import free_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_model_infer_is_traced(fixture_store: Path, mnist_dir: Path, test_split: MnistSplit) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    port = free_port()
    settings = Settings(model_store=fixture_store, data_dir=mnist_dir, grpc_port=port, reload_poll_seconds=0)
    with TestClient(create_app(settings, tracer_provider=provider)):
        exporter.clear()
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = triton.InferInput("images", [1, 784], "UINT8")
        tensor.set_data_from_numpy(test_split.images[:1].reshape(1, 784))
        headers = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
        digit = client.infer("mnist", [tensor], headers=headers).as_numpy("digit")
        client.close()
    assert digit.tolist() == [test_split.labels[0]]
    spans = {span.name: span for span in exporter.get_finished_spans()}
    call = spans["inference.GRPCInferenceService/ModelInfer"]
    predict, forward = spans["predict"], spans["forward"]
    assert call.attributes is not None and predict.attributes is not None
    assert call.attributes["rpc.system"] == "grpc" and call.attributes["rpc.method"] == "ModelInfer"
    assert call.attributes["rpc.grpc.status_code"] == 0
    assert predict.attributes["mnist.images"] == 1
    assert {format(span.context.trace_id, "032x") for span in (call, predict, forward)} == {TRACE_ID}
    assert predict.parent is not None and predict.parent.span_id == call.context.span_id
    assert forward.parent is not None and forward.parent.span_id == predict.context.span_id
