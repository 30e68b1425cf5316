"""The automatic rollout on real uvicorn processes, with real feedback: the true labels of real
MNIST test digits sent back for the answers the service gave."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from app.serving.router import share_of
from model_store.mnist_data import MnistSplit
from tests.app.api.test_admin import AUTH, TOKEN
from tests.app.conftest import publish_copy, publish_permuted
from tests.support.live_server import service_env, uvicorn_server
from tests.support.model_versions import HALF_SWAPPED, SHUFFLED
from tests.support.postgres import PostgresServer
from tests.support.rollout_traffic import Traffic, ask, drive
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

POLL_SECONDS = "0.2"


def rollout_env(store: Path, mnist_dir: Path, database_url: str, **settings: str) -> dict[str, str]:
    """A service under MNIST_ROLLOUT=auto, looking at the store and the table every 0.2 s."""
    return service_env(
        store,
        mnist_dir,
        admin_token=TOKEN,
        reload_poll_seconds=POLL_SECONDS,
        prediction_log="on",
        database_url=database_url,
        rollout="auto",
        **settings,
    )


def history(http: httpx.Client) -> dict[str, Any]:
    response = http.get("/admin/rollouts", headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def latest(http: httpx.Client) -> dict[str, Any] | None:
    rollouts = history(http)["rollouts"]
    return rollouts[0] if rollouts else None


def in_state(http: httpx.Client, state: str) -> bool:
    found = latest(http)
    return found is not None and found["state"] == state


def metric(http: httpx.Client, line_start: str) -> float:
    """The value of the /metrics line that starts with `line_start`, 0 if none."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def after_looks(http: httpx.Client, looks: int) -> None:
    """Until the controller of the worker behind `http` has started `looks` more looks: the look
    in progress, and whatever it changes, is over when the next one starts."""
    ticks = metric(http, "mnist_rollout_ticks_total")
    wait_until(lambda: metric(http, "mnist_rollout_ticks_total") >= ticks + looks, timeout=10)


def versions_answering(http: httpx.Client, digits: MnistSplit, clients: int = 20) -> set[int]:
    return {ask(http, f"after-{n}", digits.images[:1])["model"]["version"] for n in range(clients)}


def only_version_answering(http: httpx.Client, digits: MnistSplit, version: int) -> bool:
    return versions_answering(http, digits) == {version}


def pin_file(store: Path) -> dict[str, Any]:
    pin: dict[str, Any] = json.loads((store / "mnist" / "pin.json").read_text())
    return pin


@pytest.fixture
def bad_stable_store(fixture_store: Path, tmp_path: Path) -> Path:
    """Version 1: the fixture network answering with six labels swapped in pairs (about 40 %
    right), published as a version that passed its gate."""
    store = tmp_path / "store"
    (store / "mnist").mkdir(parents=True)
    assert publish_permuted(store, HALF_SWAPPED, source_root=fixture_store) == 1
    return store


@pytest.fixture
def digits(test_split: MnistSplit) -> MnistSplit:
    return test_split


def test_a_better_version_is_canaried_then_promoted_by_itself(
    bad_stable_store: Path, fixture_store: Path, digits: MnistSplit, mnist_dir: Path, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'log.db'}"
    env = rollout_env(
        bad_stable_store,
        mnist_dir,
        database,
        rollout_canary_percent="50",
        rollout_min_feedback="40",
        rollout_max_feedback="1000",
    )
    with (
        uvicorn_server(env, tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        assert pin_file(bad_stable_store)["set_by"] == "rollout"
        assert publish_copy(bad_stable_store, source_root=fixture_store) == 2
        wait_until(lambda: in_state(http, "canary"), timeout=30)
        canary = latest(http)
        assert canary is not None and (canary["candidate"], canary["stable"]) == (2, 1)
        # Not the default by "follow newest": half the clients get it, the rest the stable version.
        wait_until(lambda: metric(http, "mnist_rollout_canary_version") == 2, timeout=10)

        traffic = drive([http], digits, until=lambda: in_state(http, "promoted"))

        promoted = latest(http)
        assert promoted is not None
        assert (promoted["state"], promoted["decided_by"]) == ("promoted", "rollout")
        evidence = promoted["evidence"]
        assert evidence["candidate"]["feedback"] >= 40
        assert evidence["candidate"]["accuracy"] > 0.9 > 0.6 > evidence["stable"]["accuracy"]
        assert evidence["difference"][0] > 0
        assert traffic.clients_of(1) and traffic.clients_of(2)  # both answered during the canary
        after_looks(http, 1)
        assert pin_file(bad_stable_store)["version"] == 2
        assert pin_file(bad_stable_store)["set_by"] == "rollout"
        assert versions_answering(http, digits, clients=40) == {2}
        assert metric(http, 'mnist_rollout_decisions_total{decided_by="rollout",decision="promoted"}') == 1
        assert "version 2 promoted (by rollout) against stable version 1" in server.log()


def test_a_candidate_that_fails_live_is_rolled_back_by_itself_within_its_share(
    private_store: Path, digits: MnistSplit, mnist_dir: Path, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'log.db'}"
    env = rollout_env(private_store, mnist_dir, database, rollout_min_feedback="200")
    with (
        uvicorn_server(env, tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        assert publish_permuted(private_store, SHUFFLED) == 2
        wait_until(lambda: in_state(http, "canary"), timeout=30)

        # Small requests: many clients, so that the share of clients is close to 10 %.
        traffic = drive([http], digits, until=lambda: in_state(http, "rolled_back"), images_per_request=2)

        rolled_back = latest(http)
        assert rolled_back is not None
        assert (rolled_back["candidate"], rolled_back["decided_by"]) == (2, "rollout")
        assert "clearly less accurate" in rolled_back["reason"]
        evidence = rolled_back["evidence"]
        assert evidence["candidate"]["correct"] == 0 and evidence["candidate"]["feedback"] >= 20
        assert evidence["difference"][1] < 0
        # Counted per client (its request id, which the hash splits on): only clients whose hash
        # falls in the 10 % share ever got the candidate, and at most 10 % of answers (+5 points:
        # the share is of clients, and a hundred or so were needed).
        served_bad = traffic.clients_of(2)
        # (The share's clients may get the stable version too: between the rollback and the last
        # look at the rollout's state, and on a worker that has not read the canary yet.)
        assert served_bad and all(share_of(client) < 10 for client in served_bad)
        assert traffic.share_of(2) <= 0.15, traffic.share_of(2)
        # None after the rollback: the clients of the share get the stable version again.
        after_looks(http, 1)
        after = Traffic()
        drive(
            [http], digits, until=lambda: after.requests >= 100, traffic=after, feedback=False, prefix="later"
        )
        assert after.clients_of(2) == set() and any(share_of(f"later-{n}") < 10 for n in range(100))
        # And never again: the versions stay as they are at later looks, and after a restart.
        after_looks(http, 3)
        assert len(history(http)["rollouts"]) == 1
        assert pin_file(private_store)["version"] == 1
        assert "version 2 rolled_back (by rollout)" in server.log()


def test_an_operator_pin_wins_during_a_rollout_and_after_a_restart(
    private_store: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'log.db'}"
    env = rollout_env(private_store, mnist_dir, database)
    with (
        uvicorn_server(env, tmp_path / "first.log") as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        assert publish_copy(private_store) == 2
        wait_until(lambda: in_state(http, "canary"), timeout=30)
        pinned = http.post("/admin/reload", headers=AUTH, json={"version": 1})
        assert pinned.status_code == 200, pinned.text
        stopped = latest(http)
        assert stopped is not None
        assert (stopped["state"], stopped["decided_by"]) == ("stopped", "operator")
        assert stopped["reason"] == "the operator pinned version 1" and stopped["ended_at"] is not None
        assert not (private_store / "mnist" / "routing.json").exists()
        assert pin_file(private_store)["set_by"] == "operator"
    with (
        uvicorn_server(env, tmp_path / "second.log") as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        # A newer version while the operator's pin holds: no canary starts, at any look.
        assert publish_copy(private_store) == 3
        after_looks(http, 3)
        assert [rollout["state"] for rollout in history(http)["rollouts"]] == ["stopped"]
        assert pin_file(private_store)["set_by"] == "operator"
        policy = http.get("/admin/versions", headers=AUTH).json()["policy"]
        assert (policy["source"], policy["version"]) == ("admin", 1)
        # The operator hands control back: the newest version never canaried is canaried.
        assert http.delete("/admin/pin", headers=AUTH).status_code == 200
        wait_until(lambda: in_state(http, "canary"), timeout=30)
        canary = latest(http)
        assert canary is not None and (canary["candidate"], canary["stable"]) == (3, 1)
        assert pin_file(private_store) | {"pinned_at": None} == pin_file(private_store) | {
            "version": 1,
            "set_by": "rollout",
            "pinned_at": None,
        }


@pytest.fixture
def replica_store(bad_stable_store: Path) -> Iterator[Path]:
    yield bad_stable_store
    shutil.rmtree(bad_stable_store, ignore_errors=True)


def test_two_replicas_of_two_workers_share_one_rollout_through_postgresql(
    replica_store: Path,
    fixture_store: Path,
    digits: MnistSplit,
    postgres: PostgresServer,
    mnist_dir: Path,
    tmp_path: Path,
) -> None:
    env = rollout_env(
        replica_store,
        mnist_dir,
        postgres.url,
        rollout_canary_percent="50",
        rollout_min_feedback="40",
        rollout_max_feedback="1000",
    )
    with (
        uvicorn_server(env, tmp_path / "first.log", workers=2) as first,
        uvicorn_server(env, tmp_path / "second.log", workers=2) as second,
        httpx.Client(base_url=first.url, timeout=30) as one,
        httpx.Client(base_url=second.url, timeout=30) as two,
    ):
        assert publish_copy(replica_store, source_root=fixture_store) == 2
        wait_until(lambda: in_state(one, "canary") and in_state(two, "canary"), timeout=30)
        traffic = drive([one, two], digits, until=lambda: in_state(one, "promoted"))
        # The canary answered on both replicas (the clients alternate between them).
        replicas_of_candidate = {int(client.split("-")[1]) % 2 for client in traffic.clients_of(2)}
        assert replicas_of_candidate == {0, 1}
        wait_until(lambda: history(one) == history(two), timeout=10)
        assert [rollout["state"] for rollout in history(two)["rollouts"]] == ["promoted"]
        with psycopg.connect(postgres.conninfo) as connection:
            rows = connection.execute("SELECT candidate, state, decided_by FROM rollouts").fetchall()
        assert rows == [(2, "promoted", "rollout")]
        logs = first.log() + second.log()
        assert logs.count("version 2 promoted (by rollout)") == 1
        assert logs.count("version 2 started (by rollout)") == 1
        for http in (one, two):
            # Every worker follows the new pin at its next look at the store.
            wait_until(partial(only_version_answering, http, digits, 2), timeout=10)
