from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.app.conftest import publish_copy
from tests.support.waiting import wait_until

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def admin_client(settings: Settings, private_store: Path) -> Iterator[TestClient]:
    configured = settings.model_copy(
        update={"model_store": private_store, "admin_token": TOKEN, "reload_poll_seconds": 0}
    )
    with TestClient(create_app(Settings.model_validate(configured.model_dump()))) as test_client:
        yield test_client


def test_admin_routes_do_not_exist_without_a_token(client: TestClient) -> None:
    response = client.post("/admin/reload")
    assert response.status_code == 404


def test_admin_without_token_is_401(admin_client: TestClient) -> None:
    response = admin_client.post("/admin/reload")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_admin_with_wrong_token_is_403(admin_client: TestClient) -> None:
    response = admin_client.post("/admin/reload", headers={"Authorization": "Bearer nope-nope-nope-nope"})
    assert response.status_code == 403
    assert admin_client.get("/admin/versions", headers={"Authorization": "Basic abc"}).status_code == 401


def test_weak_admin_token_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        Settings(admin_token="secret")


def test_admin_reload_switches_to_a_new_version(admin_client: TestClient, private_store: Path) -> None:
    assert admin_client.get("/test/128").json()["model"]["version"] == 1
    assert publish_copy(private_store) == 2
    response = admin_client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == {"name": "mnist", "version": 2} and body["previous_version"] == 1
    assert body["policy"]["source"] == "newest"
    answer = admin_client.get("/test/128")
    assert answer.json()["model"]["version"] == 2 and answer.headers["x-model-version"] == "2"
    back = admin_client.post("/admin/reload", headers=AUTH, json={"version": 1})
    assert back.json()["model"]["version"] == 1


def test_admin_reload_refuses_a_corrupt_version(admin_client: TestClient, private_store: Path) -> None:
    bad = publish_copy(private_store, model_bytes=b"this is not a keras archive")
    response = admin_client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 409
    assert "still serving version 1" in response.json()["detail"]
    assert admin_client.get("/test/128").json()["model"]["version"] == 1
    versions = admin_client.get("/admin/versions", headers=AUTH).json()
    assert versions["available"] == [1, bad] and str(bad) in versions["refused"]
    assert "mnist_model_load_failures_total 1.0" in admin_client.get("/metrics").text


def test_admin_reload_to_missing_version_is_409(admin_client: TestClient) -> None:
    response = admin_client.post("/admin/reload", headers=AUTH, json={"version": 99})
    assert response.status_code == 409
    assert "99" in response.json()["detail"]


def polling_app(settings: Settings, store: Path) -> TestClient:
    configured = settings.model_copy(
        update={"model_store": store, "admin_token": TOKEN, "reload_poll_seconds": 0.05}
    )
    return TestClient(create_app(Settings.model_validate(configured.model_dump())))


def polls_done(client: TestClient) -> int:
    return int(client.app.state.service.manager.completed_polls)  # type: ignore[attr-defined]


def served(client: TestClient) -> int:
    return int(client.get("/test/128").json()["model"]["version"])


def test_a_rollback_holds_on_every_worker_and_after_a_restart(
    settings: Settings, private_store: Path
) -> None:
    # Two apps on one store stand for two workers (or replicas); both follow the store by polling.
    with polling_app(settings, private_store) as first, polling_app(settings, private_store) as second:
        assert publish_copy(private_store) == 2
        wait_until(lambda: served(first) == 2 and served(second) == 2)

        rollback = first.post("/admin/reload", headers=AUTH, json={"version": 1})
        assert rollback.status_code == 200, rollback.text
        assert rollback.json()["policy"]["source"] == "admin"
        assert served(first) == 1
        wait_until(lambda: served(second) == 1)
        # The pollers keep looking at a store whose newest is 2: the operator's choice must hold.
        polls = polls_done(first), polls_done(second)
        wait_until(lambda: polls_done(first) >= polls[0] + 5 and polls_done(second) >= polls[1] + 5)
        assert served(first) == 1 and served(second) == 1
        policy = first.get("/model").json()["policy"]
        assert policy["source"] == "admin" and policy["version"] == 1
        assert "admin API" in policy["pinned_by"] and policy["pinned_at"]

    with polling_app(settings, private_store) as restarted:
        assert served(restarted) == 1
        unpinned = restarted.delete("/admin/pin", headers=AUTH)
        assert unpinned.status_code == 200, unpinned.text
        assert unpinned.json()["policy"] == {
            "source": "newest",
            "version": 2,
            "pinned_by": None,
            "pinned_at": None,
        }
        assert served(restarted) == 2


def test_a_pin_cannot_contradict_the_version_setting(settings: Settings, private_store: Path) -> None:
    publish_copy(private_store)
    configured = settings.model_copy(
        update={"model_store": private_store, "admin_token": TOKEN, "model_version": 1}
    )
    with TestClient(create_app(Settings.model_validate(configured.model_dump()))) as pinned:
        response = pinned.post("/admin/reload", headers=AUTH, json={"version": 2})
        assert response.status_code == 409
        assert "MNIST_MODEL_VERSION" in response.json()["detail"]
        assert pinned.delete("/admin/pin", headers=AUTH).status_code == 409
        assert served(pinned) == 1
        assert pinned.get("/model").json()["policy"]["source"] == "setting"
