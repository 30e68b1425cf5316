"""Canary and shadow: a sticky traffic split, a shadow that never answers, promote and roll back."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.serving.router import share_of
from tests.app.api.test_admin import AUTH, polling_app, polls_done
from tests.app.api.test_versions import service, versions_app
from tests.app.conftest import without_ids
from tests.support.waiting import wait_until


@pytest.fixture
def two_version_app(settings: Settings, two_versions: Path) -> Iterator[TestClient]:
    with versions_app(settings, two_versions) as client:
        yield client


def answered_by(client: TestClient, index: int, request_id: str) -> str:
    response = client.get(f"/test/{index}", headers={"X-Request-Id": request_id})
    assert response.status_code == 200, response.text
    return response.headers["x-model-version"]


def test_share_of_a_client_is_stable_and_uniform() -> None:
    assert share_of("client-7") == share_of("client-7")
    shares = [share_of(f"client-{n}") for n in range(10_000)]
    assert all(0 <= s < 100 for s in shares)
    assert 9 <= sum(s < 10 for s in shares) / 100 <= 11


def test_a_90_10_canary_over_2000_requests_is_within_3_points(two_version_app: TestClient) -> None:
    client = two_version_app
    started = client.put("/admin/routing", headers=AUTH, json={"mode": "canary", "version": 1, "percent": 10})
    assert started.status_code == 200, started.text
    assert started.json()["routing"]["candidate"] == 1 and started.json()["routing"]["percent"] == 10
    versions = Counter(answered_by(client, n % 10_000, f"client-{n}") for n in range(2000))
    assert set(versions) == {"1", "2"}
    assert 7.0 <= versions["1"] / 2000 * 100 <= 13.0, versions
    # Sticky: one client sees one version, whatever it asks.
    assert len({answered_by(client, n, "client-42") for n in range(20)}) == 1
    assert client.get("/model").json()["routing"]["mode"] == "canary"


def test_shadow_never_changes_a_response_and_its_metrics_move(two_version_app: TestClient) -> None:
    client = two_version_app
    indices = range(40)
    before = [client.get(f"/test/{n}") for n in indices]
    assert (
        client.put("/admin/routing", headers=AUTH, json={"mode": "shadow", "version": 1}).status_code == 200
    )
    after = [client.get(f"/test/{n}") for n in indices]
    for old, new in zip(before, after, strict=True):
        assert new.status_code == 200 and new.headers["x-model-version"] == "2"
        assert without_ids(new.json()) == without_ids(old.json())

    def shadowed() -> int:
        reports = client.get("/model").json()["shadow"]
        return int(reports[0]["images"]) if reports else 0

    wait_until(lambda: shadowed() == len(indices))
    report = client.get("/model").json()["shadow"][0]
    assert report["candidate"] == 1 and report["requests"] == len(indices) and report["skipped"] == 0
    assert 0.8 <= report["agreement"] <= 1.0  # the candidate is a perturbed copy: it mostly agrees
    assert report["default_mean_ms"] > 0 and report["shadow_mean_ms"] > 0
    metrics = client.get("/metrics").text
    assert f'mnist_shadow_images_total{{candidate="1"}} {len(indices)}.0' in metrics
    assert 'mnist_shadow_latency_seconds_count{candidate="1",role="shadow"}' in metrics


def test_promote_makes_the_candidate_the_default_and_ends_the_canary(two_version_app: TestClient) -> None:
    client = two_version_app
    assert client.post("/admin/routing/promote", headers=AUTH).status_code == 409  # nothing to promote
    client.put("/admin/routing", headers=AUTH, json={"mode": "canary", "version": 1, "percent": 50})
    promoted = client.post("/admin/routing/promote", headers=AUTH)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["model"]["version"] == 1 and promoted.json()["policy"]["source"] == "admin"
    assert client.get("/model").json()["routing"] is None
    assert {answered_by(client, 0, f"c{n}") for n in range(50)} == {"1"}


def test_routing_refuses_the_default_and_a_missing_version(two_version_app: TestClient) -> None:
    for version in (2, 9):
        response = two_version_app.put(
            "/admin/routing", headers=AUTH, json={"mode": "canary", "version": version}
        )
        assert response.status_code == 409, response.text
    assert two_version_app.put("/admin/routing", json={"mode": "canary", "version": 1}).status_code == 401


def test_a_rollback_holds_on_every_worker_and_after_a_restart(settings: Settings, two_versions: Path) -> None:
    # Two apps on one store stand for two workers; both follow the store's routing file by polling.
    with polling_app(settings, two_versions) as first, polling_app(settings, two_versions) as second:
        canary = {"mode": "canary", "version": 1, "percent": 50}
        assert first.put("/admin/routing", headers=AUTH, json=canary).status_code == 200
        wait_until(lambda: service(second).manager.routing is not None and 1 in service(second).holder.loaded)
        assert {answered_by(second, 0, f"c{n}") for n in range(40)} == {"1", "2"}

        assert first.delete("/admin/routing", headers=AUTH).json() == {"routing": None}
        wait_until(lambda: service(second).manager.routing is None)
        polls = polls_done(second)
        wait_until(lambda: polls_done(second) >= polls + 5)
        for app in (first, second):
            assert {answered_by(app, 0, f"c{n}") for n in range(40)} == {"2"}

    with polling_app(settings, two_versions) as restarted:
        assert restarted.get("/model").json()["routing"] is None
        assert {answered_by(restarted, 0, f"c{n}") for n in range(40)} == {"2"}


def test_a_canary_holds_across_a_restart(settings: Settings, two_versions: Path) -> None:
    with versions_app(settings, two_versions) as before:
        before.put("/admin/routing", headers=AUTH, json={"mode": "canary", "version": 1, "percent": 30})
        seen = {n: answered_by(before, 0, f"c{n}") for n in range(30)}
    with versions_app(settings, two_versions) as after:
        assert after.get("/model").json()["routing"]["percent"] == 30
        assert {n: answered_by(after, 0, f"c{n}") for n in range(30)} == seen
