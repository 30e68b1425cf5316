"""`mnist-serve --grpc-port`: the port reaches the workers; a bad one is one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tritonclient.grpc as triton

from tests.conftest import assert_one_line_error, run_cli
from tests.support.live_server import environment_without_settings, free_port, running, service_env, spawn


@pytest.mark.parametrize("value", ["70000", "-1", "x"])
def test_bad_grpc_port_is_one_line(tmp_path: Path, value: str) -> None:
    result = run_cli("app.cli", "--grpc-port", value, cwd=tmp_path)
    assert_one_line_error(result, "mnist-serve", f"--grpc-port: {value} is not a port", status=2)


@pytest.mark.e2e
def test_grpc_port_flag_reaches_the_server(trained_store: Path, mnist_dir: Path, tmp_path: Path) -> None:
    port, grpc_port = free_port(), free_port()
    env = environment_without_settings() | service_env(trained_store, mnist_dir)
    command = [sys.executable, "-m", "app.cli", "--port", str(port), "--grpc-port", str(grpc_port)]
    with running(spawn(command, port, tmp_path / "server.log", env=env), stop_timeout=60):
        client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert client.is_server_ready() and client.is_model_ready("mnist")
        client.close()
