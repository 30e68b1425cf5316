"""OpenTelemetry: one /predict gives a request span, a predict child and a forward grandchild."""

from __future__ import annotations

import http.server
import threading
from typing import ClassVar

import numpy as np
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.config import Settings
from app.main import create_app
from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_predict_request_is_traced_with_its_version_batch_and_forward_pass(
    settings: Settings, test_split: MnistSplit
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with TestClient(create_app(settings, tracer_provider=provider)) as client:
        exporter.clear()  # startup spans, if any
        response = client.post(
            "/predict",
            files={"file": ("seven.png", encode(test_split.images[0]), "image/png")},
            headers={"X-Request-Id": "trace-me-1", "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
        )
        assert response.status_code == 200
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"POST /predict", "predict", "forward"}
    request, predict, forward = spans["POST /predict"], spans["predict"], spans["forward"]
    assert (
        request.attributes is not None and predict.attributes is not None and forward.attributes is not None
    )
    assert request.attributes["mnist.request_id"] == "trace-me-1"
    assert request.attributes["http.route"] == "/predict"
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["mnist.model.version"] == 1
    # The caller's trace continues: every span carries its trace id.
    assert {format(span.context.trace_id, "032x") for span in spans.values()} == {TRACE_ID}
    assert predict.parent is not None and predict.parent.span_id == request.context.span_id
    assert forward.parent is not None and forward.parent.span_id == predict.context.span_id
    assert predict.attributes["mnist.model.version"] == 1 and predict.attributes["mnist.images"] == 1
    assert forward.attributes["mnist.batch_size"] == 1
    times = [predict.start_time, forward.start_time, forward.end_time, predict.end_time]
    assert None not in times and times == sorted(times)  # type: ignore[type-var]


def test_no_spans_without_tracing(client: TestClient) -> None:
    assert client.app.state.service.tracer is None  # type: ignore[attr-defined]
    assert np.isclose(client.get("/test/0").json()["probabilities"][7], 1.0, atol=0.2)


class Collector(http.server.BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP collector: it keeps what is posted to it."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_spans_are_exported_over_otlp_when_an_endpoint_is_set(settings: Settings) -> None:
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
    try:
        configured = Settings.model_validate(
            settings.model_copy(update={"otlp_endpoint": endpoint}).model_dump()
        )
        with TestClient(create_app(configured)) as client:
            assert client.get("/test/3", headers={"X-Request-Id": "exported-1"}).status_code == 200
        # Shutting down flushed the batch: the collector has the request's spans, as protobuf.
        bodies = b"".join(body for path, kind, body in Collector.received if path == "/v1/traces")
        assert all(kind == "application/x-protobuf" for _, kind, _ in Collector.received)
        assert b"GET /test/{index}" in bodies and b"exported-1" in bodies and b"forward" in bodies
    finally:
        collector.shutdown()
