"""The rollout controller through the app's lifespan, one look at a time: what it writes to the
store, how it repairs a store left behind by a worker that died between its two writes, and who
wins over it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from app.config import Settings
from app.main import create_app
from app.records import rollouts
from app.serving.state import ServiceState
from model_store.pins import read_pin, read_routing
from model_store.store import ModelStore
from tests.app.api.test_admin import AUTH, TOKEN
from tests.app.conftest import publish_copy
from tests.support.waiting import wait_until

NO_BACKGROUND_LOOKS = 3600.0  # the test makes each look itself


def rollout_app(
    settings: Settings,
    store: Path,
    database: Path,
    tracer_provider: TracerProvider | None = None,
    **overrides: object,
) -> TestClient:
    update = {
        "model_store": store,
        "admin_token": TOKEN,
        "reload_poll_seconds": NO_BACKGROUND_LOOKS,
        "database_url": f"sqlite:///{database}",
        "rollout": "auto",
        **overrides,
    }
    configured = Settings.model_validate(settings.model_copy(update=update).model_dump())
    return TestClient(create_app(configured, tracer_provider))


def service(client: TestClient) -> ServiceState:
    state: ServiceState = client.app.state.service  # type: ignore[attr-defined]
    return state


def look(client: TestClient) -> None:
    rollout = service(client).rollout
    assert rollout is not None
    client.portal.call(rollout.tick)  # type: ignore[union-attr]


@pytest.fixture
def auto_client(settings: Settings, private_store: Path, tmp_path: Path) -> Iterator[TestClient]:
    with rollout_app(settings, private_store, tmp_path / "log.db") as client:
        yield client


def test_under_auto_the_served_version_is_pinned_and_a_newer_one_is_only_a_canary(
    auto_client: TestClient, private_store: Path
) -> None:
    store = ModelStore(private_store)
    pin = read_pin(store)
    assert pin is not None and (pin.version, pin.set_by) == (1, "rollout")
    assert publish_copy(private_store) == 2
    look(auto_client)
    routing = read_routing(store)
    assert routing is not None and (routing.mode, routing.candidate, routing.percent) == ("canary", 2, 10.0)
    assert routing.set_by == "rollout"
    assert read_pin(store) == pin  # not the default by following the newest
    assert auto_client.get("/test/0").headers["x-model-version"] in {"1", "2"}
    body = auto_client.get("/admin/rollouts", headers=AUTH).json()
    assert body["mode"] == "auto"
    (canary,) = body["rollouts"]
    assert (canary["candidate"], canary["stable"], canary["state"], canary["decided_by"]) == (
        2,
        1,
        "canary",
        None,
    )

    def answered_in_window() -> int:
        evidence = auto_client.get("/admin/rollouts", headers=AUTH).json()["rollouts"][0]["evidence"]
        return int(evidence["candidate"]["answers"] + evidence["stable"]["answers"])

    wait_until(lambda: answered_in_window() == 1)  # the live evidence, once the answer is logged


def test_a_look_repairs_the_store_after_a_winner_died_between_its_two_writes(
    auto_client: TestClient, private_store: Path
) -> None:
    store = ModelStore(private_store)
    assert publish_copy(private_store) == 2
    look(auto_client)
    engine = service(auto_client).records.engine  # type: ignore[union-attr]
    active = rollouts.active(engine)
    assert active is not None
    # The winner of the promotion wrote the table, then died: pin and routing are as before.
    assert rollouts.end(engine, active.id, "promoted", "rollout", "no worse", None, active.started_at)
    look(auto_client)
    pin = read_pin(store)
    assert pin is not None and (pin.version, pin.set_by) == (2, "rollout")
    assert read_routing(store) is None
    assert auto_client.get("/test/0").headers["x-model-version"] == "2"


def test_an_operators_promote_and_rollback_during_an_automatic_canary_are_recorded_as_theirs(
    settings: Settings, private_store: Path, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    store = ModelStore(private_store)
    with rollout_app(settings, private_store, tmp_path / "log.db", provider) as client:
        assert publish_copy(private_store) == 2
        look(client)
        assert client.delete("/admin/routing", headers=AUTH).status_code == 200
        (rolled_back,) = client.get("/admin/rollouts", headers=AUTH).json()["rollouts"]
        assert (rolled_back["state"], rolled_back["decided_by"]) == ("rolled_back", "operator")
        assert rolled_back["reason"] == "the operator rolled it back"
        look(client)
        assert read_routing(store) is None  # version 2 is never canaried again automatically

        assert publish_copy(private_store) == 3
        look(client)
        assert client.post("/admin/routing/promote", headers=AUTH).status_code == 200
        promoted, _ = client.get("/admin/rollouts", headers=AUTH).json()["rollouts"]
        assert (promoted["candidate"], promoted["state"], promoted["decided_by"]) == (
            3,
            "promoted",
            "operator",
        )
        pin = read_pin(store)
        assert pin is not None and (pin.version, pin.set_by) == (3, "operator")
        metrics = client.get("/metrics").text
        assert 'mnist_rollout_decisions_total{decided_by="operator",decision="promoted"} 1.0' in metrics
        assert 'mnist_rollout_decisions_total{decided_by="rollout",decision="started"} 2.0' in metrics
    spans = [span for span in exporter.get_finished_spans() if span.name == "rollout decision"]
    decisions = [(span.attributes or {}).get("mnist.rollout.decision") for span in spans]
    assert decisions == ["started", "rolled_back", "started", "promoted"]
    assert (spans[-1].attributes or {})["mnist.rollout.candidate.answers"] == 0


def test_an_operators_pin_file_from_before_the_rollout_freezes_it(
    settings: Settings, private_store: Path, tmp_path: Path
) -> None:
    pin_file = private_store / "mnist" / "pin.json"
    pin_file.write_text(
        json.dumps({"version": 1, "pinned_by": "an operator", "pinned_at": "2026-01-01T00:00:00Z"})
    )
    assert publish_copy(private_store) == 2
    with rollout_app(settings, private_store, tmp_path / "log.db") as client:
        look(client)
        assert read_routing(ModelStore(private_store)) is None
        assert client.get("/admin/rollouts", headers=AUTH).json() == {"mode": "auto", "rollouts": []}
        policy = client.get("/admin/versions", headers=AUTH).json()["policy"]
        assert (policy["source"], policy["pinned_by"]) == ("admin", "an operator")


def test_the_history_needs_the_admin_token_and_says_manual_when_manual(
    settings: Settings, private_store: Path, tmp_path: Path
) -> None:
    with rollout_app(settings, private_store, tmp_path / "log.db", rollout="manual") as client:
        assert client.get("/admin/rollouts").status_code == 401
        assert client.get("/admin/rollouts", headers=AUTH).json() == {"mode": "manual", "rollouts": []}
        assert service(client).rollout is None


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"rollout": "auto", "model_version": 1}, "auto cannot change what MNIST_MODEL_VERSION pins"),
        ({"rollout": "auto", "reload_poll_seconds": 0}, "auto decides at each look at the store"),
        ({"rollout_min_feedback": 500, "rollout_max_feedback": 100}, "at least MNIST_ROLLOUT_MIN_FEEDBACK"),
    ],
)
def test_rollout_settings_that_cannot_work_are_refused(settings: dict[str, object], expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        Settings.model_validate(settings)
