"""The gRPC server of one worker: on the worker's event loop, beside uvicorn, started and stopped
by the app's lifespan.

Every worker listens on the same port: grpcio sets SO_REUSEPORT on Linux, so the kernel spreads
new connections over the workers as it does for HTTP. Each call is counted, timed and traced
here, and its `CallError` becomes its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from opentelemetry import propagate, trace

from app.grpc.open_inference.messages import POOL, SERVICE, methods
from app.grpc.service import CallError, InferenceService, Metadata
from app.serving.state import ServiceState

log = logging.getLogger(__name__)

# Reflection answers from the protocol's pool, so it describes the health and reflection services too.
for _module in (health_pb2, reflection_pb2):
    POOL.AddSerializedFile(_module.DESCRIPTOR.serialized_pb)

Rpc = Callable[[Any, Metadata, float | None], Awaitable[Any]]


class GrpcStartError(RuntimeError):
    """The gRPC port could not be opened."""


@dataclass(frozen=True)
class Undecodable:
    """What arrived instead of a message: the RPC answers INVALID_ARGUMENT, where grpcio would
    answer a deserializer's exception with INTERNAL."""

    problem: str


def _decoder(message_class: Any) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return Undecodable(f"the request is not a {message_class.DESCRIPTOR.full_name} message: {exc}")

    return decode


@dataclass
class InFlight:
    """Calls being answered, so a stop can say how many it let finish."""

    calls: int = 0


def _observed(
    state: ServiceState, name: str, rpc: Rpc, in_flight: InFlight
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """`rpc` as grpc.aio calls it: counted and timed by method and status, in a span that continues
    the caller's trace (`traceparent` metadata), its CallError turned into the call's status."""
    metrics = state.metrics
    latency = metrics.grpc_latency.labels(name)

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        in_flight.calls += 1
        metrics.grpc_in_progress.inc()
        metadata: Metadata = tuple(context.invocation_metadata() or ())
        code = grpc.StatusCode.OK
        span = None
        if state.tracer is not None:
            carrier = {key: value for key, value in metadata if isinstance(value, str)}
            span = state.tracer.start_span(
                f"{SERVICE}/{name}", context=propagate.extract(carrier), kind=trace.SpanKind.SERVER
            )
            span.set_attribute("rpc.system", "grpc")
            span.set_attribute("rpc.service", SERVICE)
            span.set_attribute("rpc.method", name)
        try:
            if isinstance(request, Undecodable):
                raise CallError(grpc.StatusCode.INVALID_ARGUMENT, request.problem)
            with trace.use_span(span, end_on_exit=False) if span is not None else contextlib.nullcontext():
                return await rpc(request, metadata, context.time_remaining())
        except CallError as exc:
            code = exc.code
            if exc.trailing:
                context.set_trailing_metadata(exc.trailing)
            await context.abort(exc.code, str(exc))
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # by the client, or by its deadline
            raise
        except Exception:
            # The service's own fault (a failed forward pass): logged, never blamed on the client.
            log.exception("gRPC %s failed", name)
            code = grpc.StatusCode.INTERNAL
            await context.abort(code, "the service failed on this call; see its log")
        finally:
            in_flight.calls -= 1
            metrics.grpc_in_progress.dec()
            latency.observe(time.perf_counter() - started)
            metrics.grpc_requests.labels(name, code.name).inc()
            if span is not None:
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                span.end()

    return handle


def _handlers(state: ServiceState, in_flight: InFlight) -> grpc.GenericRpcHandler:
    service = InferenceService(state)
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _observed(state, name, getattr(service, name), in_flight),
            request_deserializer=_decoder(request_class),
            response_serializer=response_class.SerializeToString,
        )
        for name, (request_class, response_class) in methods().items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


class GrpcServer:
    """One worker's gRPC server on `host:port`, answering from `state`."""

    def __init__(self, state: ServiceState, host: str, port: int) -> None:
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._server = grpc.aio.server(
            options=[
                # A message may be as large as an HTTP body.
                ("grpc.max_receive_message_length", state.settings.max_upload_bytes),
                ("grpc.so_reuseport", 1),
            ]
        )
        self.in_flight = InFlight()
        self._server.add_generic_rpc_handlers((_handlers(state, self.in_flight),))
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        names = (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self._server, pool=POOL)

    async def start(self) -> None:
        """Listen and serve; GrpcStartError if the port cannot be opened."""
        try:
            bound = self._server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise GrpcStartError(f"cannot listen for gRPC on {self.address}: {exc}") from exc
        if not bound:
            raise GrpcStartError(f"cannot listen for gRPC on {self.address}")
        await self._server.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC (Open Inference Protocol) on %s", self.address)

    async def stop(self, grace_seconds: float) -> None:
        """Report NOT_SERVING, stop taking calls, and give the calls in flight up to
        `grace_seconds` to finish."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        draining = self.in_flight.calls
        log.info("gRPC stopping: %d calls in flight get up to %s s to finish", draining, grace_seconds)
        await self._server.stop(grace_seconds)
        log.info("gRPC stopped: %d calls cut off by the grace period", self.in_flight.calls)

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE):  # the server as a whole, and the inference service
            await self._health.set(name, status)
