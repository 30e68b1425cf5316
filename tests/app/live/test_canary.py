"""Canary and rollback on a real uvicorn with two workers, and after a restart."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from app.serving.router import share_of
from tests.app.api.test_admin import AUTH, TOKEN
from tests.support.live_server import service_env, uvicorn_server

pytestmark = pytest.mark.e2e
# Client ids whose hash falls in a 10 % canary's share, and ids that fall outside it.
IN_SHARE = [f"client-{n}" for n in range(2000) if share_of(f"client-{n}") < 10][:20]


def answered(http: httpx.Client, client_id: str) -> str:
    response = http.get("/test/0", headers={"X-Request-Id": client_id})
    assert response.status_code == 200, response.text
    return response.headers["x-model-version"]


def settle(http: httpx.Client, expected: str, timeout: float = 60.0) -> None:
    """Until 40 requests in a row (spread over both workers) from canary-share clients get `expected`."""
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < 40:
        assert time.monotonic() < deadline, f"the workers did not all switch to version {expected}"
        streak = streak + 1 if answered(http, IN_SHARE[streak % len(IN_SHARE)]) == expected else 0


def test_a_90_10_canary_and_its_rollback_hold_on_every_worker_and_after_a_restart(
    two_versions: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    env = service_env(two_versions, mnist_dir, admin_token=TOKEN, reload_poll_seconds="0.2")
    with (
        uvicorn_server(env, tmp_path / "first.log", workers=2) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        started = http.put(
            "/admin/routing", headers=AUTH, json={"mode": "canary", "version": 1, "percent": 10}
        )
        assert started.status_code == 200, started.text
        settle(http, "1")
        split = Counter(answered(http, f"user-{n}") for n in range(2000))
        assert 7.0 <= split["1"] / 2000 * 100 <= 13.0, split

        assert http.delete("/admin/routing", headers=AUTH).json() == {"routing": None}
        settle(http, "2")
    with (
        uvicorn_server(env, tmp_path / "second.log", workers=2) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        assert {answered(http, client_id) for client_id in IN_SHARE * 2} == {"2"}
