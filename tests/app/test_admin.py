from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.app.conftest import publish_copy

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
    assert response.json() == {"model": {"name": "mnist", "version": 2}, "previous_version": 1}
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
