"""The garbage collector while serving: requests in flight do not set off young-generation
collections, and the process gets Python's thresholds back when the service stops."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import httpx
import pytest

import app.main
from app.config import Settings
from app.main import create_app
from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode

CONCURRENT = 64  # the benchmark's connections


async def post_together(settings: Settings, pngs: list[bytes]) -> tuple[list[int], int]:
    """POST every PNG to /predict at once through the app's lifespan; the statuses and how many
    young-generation collections ran while they were answered."""
    app = create_app(settings)
    collections = 0

    def count(phase: str, info: dict[str, Any]) -> None:
        nonlocal collections
        if phase == "start" and info["generation"] == 0:
            collections += 1

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            gc.callbacks.append(count)
            try:
                responses = await asyncio.gather(
                    *(
                        client.post("/predict", files={"file": ("digit.png", png, "image/png")})
                        for png in pngs
                    )
                )
            finally:
                gc.callbacks.remove(count)
    return [response.status_code for response in responses], collections


def test_requests_in_flight_do_not_set_off_the_collector(settings: Settings, test_split: MnistSplit) -> None:
    pngs = [encode(image) for image in test_split.images[:CONCURRENT]]
    before = gc.get_threshold()
    statuses, collections = asyncio.run(post_together(settings, pngs))
    assert statuses == [200] * CONCURRENT
    # At Python's threshold of 700 the collector ran several times for these requests, walking the
    # objects of every one still in flight; at the service's it need not run at all.
    assert collections <= 1, f"{collections} young-generation collections for {CONCURRENT} requests"
    assert gc.get_threshold() == before


def test_python_default_threshold_is_what_the_test_above_rules_out(
    settings: Settings, test_split: MnistSplit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same requests with Python's default: the collector does run, so the test above can fail."""
    pngs = [encode(image) for image in test_split.images[:CONCURRENT]]
    monkeypatch.setattr(app.main, "GC_THRESHOLD", 700)
    statuses, collections = asyncio.run(post_together(settings, pngs))
    assert statuses == [200] * CONCURRENT
    assert collections > 1
