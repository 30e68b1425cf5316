"""`mnist-serve --workers N` and `MNIST_WORKERS=N` run the same service: every worker sizes ONNX
Runtime's threads to its share of the cores, read from each worker's own series in /metrics."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.live_server import environment_without_settings, free_port, running, service_env, spawn
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

THREADS_SERIES = re.compile(r'^mnist_onnxruntime_threads\{pid="(\d+)"\} (\S+)$', re.MULTILINE)


def threads_per_worker(
    store: Path, mnist_dir: Path, log: Path, args: list[str], **settings: str
) -> dict[int, int]:
    """pid -> ONNX Runtime's intra-op threads, for every worker of `mnist-serve <args>`."""
    port = free_port()
    env = environment_without_settings() | service_env(store, mnist_dir, port=str(port), **settings)
    server = spawn([sys.executable, "-m", "app.cli", *args], port, log, env=env)

    def series() -> dict[int, int]:
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        return {int(pid): int(float(value)) for pid, value in THREADS_SERIES.findall(text)}

    with running(server):
        # /readyz answered from one worker; a series reads 0 until its worker has loaded the model.
        wait_until(lambda: len(series()) == 2 and 0 not in series().values())
        return series()


def test_workers_flag_shares_the_cores_as_the_variable_does(
    private_store: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    by_flag = threads_per_worker(private_store, mnist_dir, tmp_path / "flag.log", ["--workers", "2"])
    by_variable = threads_per_worker(private_store, mnist_dir, tmp_path / "variable.log", [], workers="2")

    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert sorted(by_variable.values()) == [share, share]
    assert sorted(by_flag.values()) == [share, share]
