"""Real server processes with gRPC on a free port, over the session's trained store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.live_server import RunningServer, free_port, service_env, uvicorn_server


@dataclass
class GrpcServer:
    http: RunningServer
    target: str  # host:port of the gRPC server


@contextmanager
def grpc_server(
    store: Path, mnist_dir: Path, log_path: Path, *, workers: int = 1, settings: dict[str, str] | None = None
) -> Iterator[GrpcServer]:
    """uvicorn with gRPC on a free port; `settings` are further MNIST_* variables (lower-case names)."""
    port = free_port()
    defaults = {"grpc_port": str(port), "reload_poll_seconds": "0"}
    env = service_env(store, mnist_dir, **defaults | (settings or {}))
    with uvicorn_server(env, log_path, workers=workers) as server:
        yield GrpcServer(server, f"127.0.0.1:{port}")


@pytest.fixture(scope="session")
def served(
    trained_store: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GrpcServer]:
    with grpc_server(trained_store, mnist_dir, tmp_path_factory.mktemp("grpc") / "server.log") as server:
        yield server
