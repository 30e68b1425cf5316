"""API keys on the inference routes: 401/403/429, open routes, per-key counters, rotation."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.operations.api_keys import ApiKeys, ApiKeysError, parse_keys
from app.operations.rate_limit import RateLimiter

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef00"


def write_keys(path: Path, keys: dict[str, str]) -> None:
    """Replace the key file atomically, as an operator (or Kubernetes) should."""
    staging = path.with_name(path.name + ".new")
    staging.write_text("".join(f"{name}:{key}\n" for name, key in keys.items()))
    os.replace(staging, path)


def keyed_app(settings: Settings, key_file: Path, **overrides: object) -> TestClient:
    configured = settings.model_copy(update={"api_keys_file": key_file, **overrides})
    return TestClient(create_app(Settings.model_validate(configured.model_dump())))


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    write_keys(path, {"alice": ALICE, "bob": BOB})
    return path


@pytest.fixture
def keyed(settings: Settings, key_file: Path) -> Iterator[TestClient]:
    with keyed_app(settings, key_file) as client:
        yield client


def test_key_file_lines_and_json_give_the_same_keys(tmp_path: Path) -> None:
    lines = parse_keys(f"# ops team\n\nalice:{ALICE}\n bob : {BOB} \n", tmp_path)
    as_json = parse_keys(json.dumps({"alice": ALICE, "bob": BOB}), tmp_path)
    assert lines == as_json == {"alice": ALICE.encode(), "bob": BOB.encode()}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("alice", "line 1: expected 'name:key'"),
        ("alice:short", "at least 16 characters"),
        (f"al ice:{ALICE}", "key name"),
        (f"alice:{ALICE}\nalice:{BOB}", "used twice"),
        ('{"alice": ', "not valid JSON"),
        (f'["{ALICE}"]', "must be an object"),
    ],
)
def test_a_malformed_key_file_is_refused_with_the_reason(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ApiKeysError, match=problem):
        ApiKeys(path)


def test_a_broken_rotation_keeps_the_previous_keys(key_file: Path) -> None:
    keys = ApiKeys(key_file)
    key_file.write_text("this line has no separator\n")
    assert keys.identify(ALICE) == "alice"
    write_keys(key_file, {"bob": BOB})
    assert keys.identify(ALICE) is None and keys.identify(BOB) == "bob"


def test_the_service_refuses_to_start_without_its_key_file(settings: Settings, tmp_path: Path) -> None:
    with (
        pytest.raises(ApiKeysError, match="cannot read the API key file"),
        keyed_app(settings, tmp_path / "none"),
    ):
        pass


def test_inference_without_a_key_is_401(keyed: TestClient) -> None:
    response = keyed.get("/test/0")
    assert response.status_code == 401
    assert "X-API-Key" in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_inference_with_a_wrong_key_is_403_in_each_routes_shape(keyed: TestClient) -> None:
    response = keyed.get("/test/0", headers={"X-API-Key": ALICE + "x"})
    assert response.status_code == 403
    assert response.json() == {"detail": "unknown API key"}
    infer = keyed.post("/v2/models/mnist/infer", json={}, headers={"Authorization": "Bearer wrong"})
    assert infer.status_code == 403
    assert infer.json() == {"error": "unknown API key"}


def test_either_header_carries_a_key_and_each_key_is_counted(keyed: TestClient) -> None:
    assert keyed.get("/test/3", headers={"X-API-Key": ALICE}).status_code == 200
    assert keyed.get("/test/3", headers={"Authorization": f"Bearer {BOB}"}).status_code == 200
    assert keyed.post("/predict", headers={"X-API-Key": BOB}).status_code == 400  # past the key check
    metrics = keyed.get("/metrics").text
    assert 'mnist_api_key_requests_total{key="alice",outcome="accepted"} 1.0' in metrics
    assert 'mnist_api_key_requests_total{key="bob",outcome="accepted"} 2.0' in metrics


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/", "/model"])
def test_health_metrics_docs_and_the_web_page_stay_open(keyed: TestClient, path: str) -> None:
    assert keyed.get(path).status_code == 200


def test_a_key_over_its_rate_gets_429_with_retry_after(settings: Settings, key_file: Path) -> None:
    # One request per 100 s after a burst of two: the third request of the same key is refused.
    with keyed_app(settings, key_file, api_key_rate_per_second=0.01, api_key_rate_burst=2) as client:
        alice = {"X-API-Key": ALICE}
        assert [client.get("/test/1", headers=alice).status_code for _ in range(2)] == [200, 200]
        refused = client.get("/test/1", headers=alice)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 100
        assert "alice" in refused.json()["detail"]
        assert client.get("/test/1", headers={"X-API-Key": BOB}).status_code == 200  # its own bucket
        assert 'key="alice",outcome="rate_limited"} 1.0' in client.get("/metrics").text


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(4)] == [0, 0, 0, 1]
    now[0] += 0.5  # one token back
    assert limiter.acquire("a") == 0 and limiter.acquire("a") == 1
    assert limiter.acquire("b") == 0
