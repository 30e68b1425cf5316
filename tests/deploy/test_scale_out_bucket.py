"""Three real `mnist-serve` replicas reading one bucket on a real S3 server (rclone): a version
published there is served by every replica without a restart, and the time it takes is measured.

This is the compose `s3` profile and the Kubernetes object-storage component in processes: each
replica has its own download cache, as each container or pod has its own disk.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import publish_copy
from tests.support.live_server import RunningServer, free_port, running, service_env, spawn
from tests.support.s3 import s3_server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

REPLICAS = 3
POLL_SECONDS = 1.0  # MNIST_RELOAD_POLL_SECONDS of the replicas
# The poll interval plus one replica's download, load and warm-up of a version, with room to spare.
SWITCH_BOUND_SECONDS = 60.0


def served_version(server: RunningServer) -> int:
    return int(httpx.get(f"{server.url}/model", timeout=5).json()["metadata"]["version"])


def start_replica(uri: str, env: dict[str, str], mnist_dir: Path, folder: Path) -> RunningServer:
    port = free_port()
    settings = service_env(
        uri,
        mnist_dir,
        host="127.0.0.1",
        port=str(port),
        grpc_port="0",
        workers="1",
        model_cache_dir=str(folder / "cache"),
        reload_poll_seconds=str(POLL_SECONDS),
        log_json="false",
    )
    return spawn([sys.executable, "-m", "app.cli"], port, folder / "replica.log", env=env | settings)


def test_a_version_published_to_the_bucket_reaches_every_replica_without_a_restart(
    trained_store: Path, mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with s3_server(tmp_path / "s3") as server, ExitStack() as replicas:
        for variable, value in server.env().items():
            monkeypatch.setenv(variable, value)
        uri = f"s3://{server.create_bucket()}/store"
        assert publish_copy(uri, source_root=trained_store) == 1
        servers = []
        for index in range(REPLICAS):
            folder = tmp_path / f"replica-{index}"
            folder.mkdir()
            started = start_replica(uri, os.environ | server.env(), mnist_dir, folder)
            servers.append(replicas.enter_context(running(started)))
        pids = [replica.process.pid for replica in servers]
        assert [served_version(replica) for replica in servers] == [1] * REPLICAS

        assert publish_copy(uri, source_root=trained_store) == 2
        published = time.monotonic()
        switched: dict[int, float] = {}

        def every_replica_serves_it() -> bool:
            for index, replica in enumerate(servers):
                if index not in switched and served_version(replica) == 2:
                    switched[index] = time.monotonic() - published
            return len(switched) == REPLICAS

        wait_until(every_replica_serves_it, POLL_SECONDS + SWITCH_BOUND_SECONDS, interval=0.05)
        assert [replica.process.pid for replica in servers] == pids
        assert all(replica.process.poll() is None for replica in servers), "no replica restarted"
        seconds = ", ".join(f"{switched[index]:.2f}" for index in sorted(switched))
        print(f"\npoll every {POLL_SECONDS} s: version 2 served by replica 1, 2, 3 after {seconds} s")
