"""OpenTelemetry tracing, off unless MNIST_OTLP_ENDPOINT is set (or a provider is handed in).

One span per HTTP request (route, status, request id, the model version that answered), a
`predict` child per inference (version, images) and a `forward` grandchild per forward pass the
images took part in, with the size of that batch: the pass runs on the batcher's thread, beside
other requests' images, so it is recorded with the times the batcher measured.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__
from app.operations.request_observer import route_template
from app.serving.batcher import BatchResult
from app.serving.model import ServingModel

TRACER_NAME = "mnist-serve"


def otlp_provider(endpoint: str) -> TracerProvider:
    """Spans exported in batches over OTLP/HTTP, e.g. to http://collector:4318/v1/traces."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "mnist-serve"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def tracer_of(provider: TracerProvider | None) -> trace.Tracer | None:
    return provider.get_tracer(TRACER_NAME, __version__) if provider is not None else None


class TracingMiddleware:
    """A span around each HTTP request, continuing the caller's trace if it sent `traceparent`."""

    def __init__(self, app: ASGIApp, tracer: trace.Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        with self.tracer.start_as_current_span(
            scope["method"], context=propagate.extract(carrier), kind=trace.SpanKind.SERVER
        ) as span:

            async def send_noting_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            try:
                await self.app(scope, receive, send_noting_status)
            finally:
                route = route_template(scope)
                state = scope.get("state", {})
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.request.method", scope["method"])
                span.set_attribute("http.route", route)
                span.set_attribute("url.path", scope["path"])
                if "request_id" in state:
                    span.set_attribute("mnist.request_id", state["request_id"])
                if "model_version" in state:
                    span.set_attribute("mnist.model.version", state["model_version"])


async def traced_prediction(
    tracer: trace.Tracer | None,
    model: ServingModel,
    images: np.ndarray,
    run: Callable[[], Awaitable[BatchResult]],
) -> BatchResult:
    """`run()` inside a `predict` span, with a `forward` child for each pass its images took."""
    if tracer is None:
        return await run()
    attributes = {"mnist.model.version": model.version, "mnist.images": len(images)}
    with tracer.start_as_current_span("predict", attributes=attributes) as span:
        result = await run()
        span.set_attribute("mnist.batch_sizes", [p.images for p in result.passes])
        for forward in result.passes:
            child = tracer.start_span(
                "forward", start_time=forward.started_ns, attributes={"mnist.batch_size": forward.images}
            )
            child.end(end_time=forward.ended_ns)
    return result
