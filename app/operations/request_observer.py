"""Per-request bookkeeping: a request id, one JSON log line, and the HTTP metrics.

Pure ASGI rather than BaseHTTPMiddleware: it adds no task hop or body buffering to the hot path.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.operations.metrics import Metrics

access_log = logging.getLogger("app.access")
REQUEST_ID_HEADER = "x-request-id"
MODEL_VERSION_HEADER = "x-model-version"
# A client's id is echoed only if it is short and plain, so it cannot forge log lines or headers.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def route_template(scope: Scope) -> str:
    """`/test/{index}` rather than `/test/128`, so metrics stay a handful of series."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class RequestObserver:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Unique across workers and restarts, and cheaper than a uuid4 per request.
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count(1)

    def _next_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):016x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        supplied = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = supplied if _SAFE_REQUEST_ID.fullmatch(supplied) else self._next_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                if "model_version" in state:
                    headers[MODEL_VERSION_HEADER] = str(state["model_version"])
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_with_ids)
        finally:
            self.metrics.in_progress.dec()
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(elapsed)
            version = state.get("model_version")
            if version is not None:
                self.metrics.version_latency.labels(route, str(version)).observe(elapsed)
                if status >= 400:
                    self.metrics.version_errors.labels(route, str(version), str(status)).inc()
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 3),
                    "model_version": version,
                },
            )
