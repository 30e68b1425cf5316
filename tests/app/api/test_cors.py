"""CORS: browsers on allowed origins may call the API; others get no CORS headers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.config import Settings
from app.main import create_app
from tests.app.operations.test_api_keys import ALICE, write_keys

ALLOWED = "https://digits.example.com"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}


@pytest.fixture
def cors_client(settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    write_keys(tmp_path / "keys", {"web": ALICE})
    configured = settings.model_copy(
        update={"cors_origins": [ALLOWED, "http://localhost:3000"], "api_keys_file": tmp_path / "keys"}
    )
    with TestClient(create_app(Settings.model_validate(configured.model_dump()))) as client:
        yield client


def test_preflight_from_an_allowed_origin_is_answered(cors_client: TestClient) -> None:
    response = cors_client.options("/predict", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "x-api-key" in response.headers["access-control-allow-headers"].lower()


def test_preflight_from_a_refused_origin_gets_no_cors_headers(cors_client: TestClient) -> None:
    response = cors_client.options("/predict", headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_an_allowed_origin_reads_answers_and_errors_alike(cors_client: TestClient) -> None:
    answer = cors_client.get("/test/7", headers={"Origin": ALLOWED, "X-API-Key": ALICE})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    assert "x-model-version" in answer.headers["access-control-expose-headers"].lower()
    refused = cors_client.get("/test/7", headers={"Origin": ALLOWED})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ALLOWED


def test_without_origins_there_is_no_cross_origin_access(client: TestClient) -> None:
    response = client.options("/predict", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert "access-control-allow-origin" not in response.headers


def test_origins_come_from_a_comma_list_or_json_and_paths_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MNIST_CORS_ORIGINS", f"{ALLOWED}, http://localhost:3000")
    assert Settings().cors_origins == [ALLOWED, "http://localhost:3000"]
    monkeypatch.setenv("MNIST_CORS_ORIGINS", '["*"]')
    assert Settings().cors_origins == ["*"]
    monkeypatch.setenv("MNIST_CORS_ORIGINS", f"{ALLOWED}/app")
    with pytest.raises(ValidationError, match="is not an origin"):
        Settings()
