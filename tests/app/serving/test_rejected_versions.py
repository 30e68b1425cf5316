"""A version the publish-time gate rejected is never served: not as the newest, not by a pin, not
as a canary, and a poller that sees it published keeps serving the version before it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Settings
from model_store.metadata import Gate, GateScores
from model_store.store import ModelStore
from tests.app.api.test_admin import AUTH, polling_app, polls_done, served
from tests.app.conftest import publish_copy
from tests.support.waiting import wait_until

REASON = "rejected against version 1: hold-out accuracy 40.00 % is 50.00 points below version 1's 90.00 %"


def reject(store_root: Path, version: int) -> None:
    store = ModelStore(store_root)
    scores = GateScores(mnist_accuracy=0.9, int8_default=False)
    gate = Gate(passed=False, reason=REASON, against=scores, candidate=scores, holdout_examples=10)
    store.update_metadata(store.read_metadata(version).model_copy(update={"gate": gate}))


@pytest.mark.slow
def test_a_rejected_version_is_never_served_by_policy_pin_or_canary(
    settings: Settings, private_store: Path
) -> None:
    with polling_app(settings, private_store) as client:
        assert served(client) == 1
        # Published and rejected in one step, as mnist-train does: never a moment as the newest.
        assert publish_copy(private_store) == 2
        reject(private_store, 2)
        polls = polls_done(client)
        wait_until(lambda: polls_done(client) >= polls + 5)
        assert served(client) == 1
        assert client.get("/model").json()["policy"] == {
            "source": "newest",
            "version": 1,
            "pinned_by": None,
            "pinned_at": None,
        }

        pinned = client.post("/admin/reload", headers=AUTH, json={"version": 2})
        assert pinned.status_code == 409
        assert (
            "version 2 of model 'mnist' was rejected at publish time and is never served"
            in pinned.json()["detail"]
        )
        canary = client.put(
            "/admin/routing", headers=AUTH, json={"mode": "canary", "version": 2, "percent": 10}
        )
        assert canary.status_code == 409
        assert REASON in canary.json()["detail"]
        assert served(client) == 1
