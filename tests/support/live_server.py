"""Real server processes on 127.0.0.1 for end-to-end tests: started, waited for, stopped, in one place."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

# Written once for the benchmarks and the tests; imported from here by the tests.
from bench import processes
from bench.processes import STOP_TIMEOUT_SECONDS, free_port, stop
from tests.support.paths import REPO_ROOT

__all__ = ["free_port", "service_env", "stop"]

READY_TIMEOUT_SECONDS = 120


def environment_without_settings() -> dict[str, str]:
    """This process's environment without MNIST_* variables, so only a test's own settings apply."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MNIST_")}


def service_env(store: Path | str, mnist_dir: Path, **settings: str) -> dict[str, str]:
    """MNIST_* variables for a server of `store`: `settings` are further ones by lower-case name.
    The prediction log is off unless `settings` turn it on (with a database of the test's own)."""
    return processes.service_env(store, mnist_dir, **({"prediction_log": "off"} | settings))


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    own_session: bool = False  # started as a session leader: stopped with its whole process group

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_ready(server: RunningServer, timeout: float = READY_TIMEOUT_SECONDS, route: str = "/readyz") -> None:
    """Until `route` answers 200; fails with the log's end if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()[-3000:]}")
        try:
            if httpx.get(f"{server.url}{route}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout} s:\n{server.log()[-3000:]}")


def spawn(
    command: list[str],
    port: int,
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path = REPO_ROOT,
    new_session: bool = False,
) -> RunningServer:
    """`command` started with its output in `log_path`, serving on `port`; not waited for."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
    return RunningServer(f"http://127.0.0.1:{port}", process, log_path, new_session)


@contextmanager
def running(
    server: RunningServer,
    ready_timeout: float = READY_TIMEOUT_SECONDS,
    stop_timeout: float = STOP_TIMEOUT_SECONDS,
) -> Iterator[RunningServer]:
    """A spawned server, ready before the block starts; stopped with SIGTERM when it ends."""
    try:
        wait_ready(server, ready_timeout)
        yield server
    finally:
        stop(server.process, stop_timeout, group=server.own_session)


@contextmanager
def uvicorn_server(
    env: dict[str, str], log_path: Path, *, workers: int = 1, extra_args: tuple[str, ...] = ()
) -> Iterator[RunningServer]:
    """`uvicorn app.main:create_app --factory` with MNIST_* settings from `env`; stopped with SIGTERM."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers), *extra_args]
    with running(spawn(command, port, log_path, env=os.environ | env)) as server:
        yield server
