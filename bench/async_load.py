"""The Python load generators of `bench.grpc_load`: N calls in flight on one event loop, until a
time or a count runs out, with latency percentiles of the calls that succeeded.

  grpc.aio  gRPC: one channel for every call in flight (HTTP/2 streams), grpc's C core beneath
  asyncio   HTTP/1.1 on asyncio streams, one keep-alive connection per call in flight, the request's
            bytes written as built: the least a Python client spends per request, gRPC's counterpart
  httpx     HTTP/1.1 through httpx, one pooled connection per call in flight, as a real client does
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import grpc
import httpx
import numpy as np

from bench.servers import Load

Call = Callable[[], Awaitable[None]]
GENERATORS = {"grpc": ("grpc.aio",), "http": ("asyncio", "httpx")}
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class CallFailedError(Exception):
    """An answer other than 200."""


class RawConnection:
    """One HTTP/1.1 keep-alive connection sending one prepared request again and again."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port, self.request = host, port, request
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def call(self) -> None:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        try:
            writer.write(self.request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = CONTENT_LENGTH.search(head)
            await reader.readexactly(int(length[1]) if length else 0)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.close()
            raise
        if head[9:12] != b"200":
            raise CallFailedError(head[:12].decode(errors="replace"))

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


def raw_request(path: str, data: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", f"content-length: {len(data)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


class Generator:
    """One generator's client(s) to the server; `calls(n)` gives n calls that may run at once."""

    def __init__(self, kind: str, http_url: str, grpc_target: str, connections: int) -> None:
        self.kind, self.http_url, self.grpc_target = kind, http_url, grpc_target
        self.channel = grpc.aio.insecure_channel(grpc_target) if kind == "grpc.aio" else None
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.http = (
            httpx.AsyncClient(base_url=http_url, limits=limits, timeout=60) if kind == "httpx" else None
        )
        self.raw: list[RawConnection] = []

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.http is not None:
            await self.http.aclose()
        for connection in self.raw:
            connection.close()

    def calls(self, count: int, path: str, data: bytes, headers: dict[str, str]) -> list[Call]:
        """`count` calls sending `data` to `path` and reading the answer's bytes, unparsed; each
        raises unless the call succeeded."""
        if self.channel is not None:
            # No serializers: the message was serialized once, the answer stays bytes.
            model_infer = self.channel.unary_unary(path)

            async def grpc_call() -> None:
                await model_infer(data, timeout=60)

            return [grpc_call] * count
        if self.http is not None:
            http = self.http

            async def httpx_call() -> None:
                response = await http.post(path, content=data, headers=headers)
                response.raise_for_status()

            return [httpx_call] * count
        host, port = self.http_url.removeprefix("http://").rsplit(":", 1)
        request = raw_request(path, data, headers)
        connections = [RawConnection(host, int(port), request) for _ in range(count)]
        self.raw += connections
        return [connection.call for connection in connections]


async def drive(calls: list[Call], seconds: float, limit: int | None) -> Load:
    """Each of `calls` in a loop of its own (so len(calls) in flight) until `seconds` pass or
    `limit` calls have been sent: req/s and latency percentiles of the successes, the failures."""
    latencies: list[float] = []
    sent = errors = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def loop(call: Call) -> None:
        nonlocal sent, errors
        while time.perf_counter() < deadline and (limit is None or sent < limit):
            sent += 1
            began = time.perf_counter()
            try:
                await call()
            except (grpc.RpcError, httpx.HTTPError, CallFailedError, OSError, asyncio.IncompleteReadError):
                errors += 1
                continue
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(loop(call) for call in calls))
    elapsed = time.perf_counter() - started
    if not latencies:
        return Load(0.0, 0.0, 0.0, errors)
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    return Load(len(latencies) / elapsed, float(p50), float(p99), errors)
