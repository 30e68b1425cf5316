"""The service on a store in an S3 bucket, against a real S3 server (rclone) started by the tests:
serving, following new versions and pins, one-line refusals at startup, and riding out an outage."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from model_store.mnist_data import MnistSplit
from model_store.pins import PIN_FILE, write_pin
from model_store.store import ModelStore
from tests.app.conftest import publish_copy
from tests.conftest import assert_one_line_error, run_cli
from tests.support.live_server import free_port
from tests.support.s3 import S3Store, s3_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

DIGIT = 0
POLL_SECONDS = 0.1


def served_version(client: TestClient) -> int:
    response = client.get(f"/test/{DIGIT}")
    assert response.status_code == 200, response.text
    return int(response.json()["model"]["version"])


def bucket_settings(uri: str, mnist_dir: Path, cache: Path) -> Settings:
    return Settings(
        model_store=uri, model_cache_dir=cache, data_dir=mnist_dir, reload_poll_seconds=POLL_SECONDS
    )


def completed_polls(client: TestClient) -> int:
    return int(client.app.state.service.manager.completed_polls)  # type: ignore[attr-defined]


def test_the_service_serves_a_bucket_and_follows_its_versions_and_pins(
    s3_store: S3Store, trained_store: Path, mnist_dir: Path, tmp_path: Path, test_split: MnistSplit
) -> None:
    publish_copy(s3_store.uri, source_root=trained_store)
    settings = bucket_settings(s3_store.uri, mnist_dir, tmp_path / "cache")
    with TestClient(create_app(settings)) as client:
        answer = client.get(f"/test/{DIGIT}").json()
        assert answer["model"]["version"] == 1
        assert answer["prediction"] == test_split.labels[DIGIT]
        assert publish_copy(s3_store.uri, source_root=trained_store) == 2
        wait_until(lambda: served_version(client) == 2)  # picked up without a restart
        write_pin(ModelStore(s3_store.uri), 1, "an operator")
        wait_until(lambda: served_version(client) == 1)  # the pin, read from the bucket
    assert f"store/mnist/{PIN_FILE}" in s3_store.objects()


@pytest.mark.parametrize("fault", ["wrong credentials", "missing bucket", "endpoint down"])
def test_mnist_serve_refuses_a_store_it_cannot_reach_in_one_line(
    fault: str, s3_store: S3Store, trained_store: Path, tmp_path: Path
) -> None:
    publish_copy(s3_store.uri, source_root=trained_store)
    env = s3_store.env() | {"MNIST_MODEL_STORE": s3_store.uri, "MNIST_PORT": str(free_port())}
    expected = {
        "wrong credentials": "AWS_SECRET_ACCESS_KEY",
        "missing bucket": "NoSuchBucket",
        "endpoint down": "Could not connect",
    }[fault]
    if fault == "wrong credentials":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    elif fault == "missing bucket":
        env["MNIST_MODEL_STORE"] = "s3://no-such-bucket/store"
    else:
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    result = run_cli("app.cli", cwd=tmp_path, env=env)
    assert_one_line_error(result, "mnist-serve", expected, "s3://")


def test_an_outage_of_the_store_keeps_the_served_version_answering_and_the_poller_retries(
    trained_store: Path, mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with s3_server(tmp_path / "s3") as server:
        for variable, value in server.env().items():
            monkeypatch.setenv(variable, value)
        uri = f"s3://{server.create_bucket()}/store"
        publish_copy(uri, source_root=trained_store)
        settings = bucket_settings(uri, mnist_dir, tmp_path / "cache")
        with TestClient(create_app(settings)) as client:
            assert served_version(client) == 1
            server.stop()
            polls = completed_polls(client)
            wait_until(lambda: completed_polls(client) >= polls + 3, timeout=120)  # each one failed
            assert served_version(client) == 1  # still answering from the version it holds
            server.start()  # the same port and buckets
            assert publish_copy(uri, source_root=trained_store) == 2
            wait_until(lambda: served_version(client) == 2, timeout=120)
