"""An operator's choices, kept beside the versions in `<root>/<name>/` (a folder or a bucket):
`pin.json`, the version served by default, and `routing.json`, a canary or shadow candidate beside it.

The files are the one place every worker and every restart reads the choices from, so a rollback
made through one worker holds on all of them and survives restarts. No pin means: follow the
newest; no routing means: every request goes to the default version. A pin or a routing is an
operator's, or the automatic rollout's (`set_by` of the pin, `ROLLOUT` as the routing's `set_by`):
an operator's pin freezes the automation until it is dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from model_store.store import ModelStore, ModelStoreError

PIN_FILE = "pin.json"
ROLLOUT: Literal["rollout"] = "rollout"  # who set a pin or routing when the automatic rollout did
ROUTING_FILE = "routing.json"

Choice = TypeVar("Choice", bound=BaseModel)


class Pin(BaseModel):
    version: int = Field(ge=1)
    pinned_by: str = Field(description="who made the choice, e.g. the admin API and the request id")
    pinned_at: datetime
    # A pin file written before the automatic rollout has no such field: it was an operator's.
    set_by: Literal["operator", "rollout"] = Field(
        "operator", description="an operator's pin freezes the automatic rollout; the rollout's is its stable"
    )


class Routing(BaseModel):
    """A candidate version beside the default: a canary answers `percent` % of requests (chosen by
    a hash of the client's key or request id, so one client sees one version); a shadow answers
    none, it only runs on a copy of the traffic to be compared with the default."""

    mode: Literal["canary", "shadow"]
    candidate: int = Field(ge=1)
    percent: float = Field(0.0, ge=0.0, le=100.0, description="canary only: share of requests it answers")
    set_by: str
    set_at: datetime


def _read(store: ModelStore, file: str, kind: type[Choice], what: str) -> Choice | None:
    content = store.storage.read_choice(file)
    if content is None:
        return None
    try:
        return kind.model_validate_json(content)
    except ValidationError as exc:
        raise ModelStoreError(
            f"{store.location.rstrip('/')}/{file}: unreadable {what} ({exc}); delete it to drop the choice"
        ) from exc


def _write(store: ModelStore, file: str, choice: BaseModel, what: str) -> None:
    """Record a choice atomically (readers see the old one or the new one, never a part)."""
    try:
        store.storage.write_choice(file, choice.model_dump_json(indent=2).encode())
    except ModelStoreError as exc:
        raise ModelStoreError(f"cannot record the {what}: {exc}") from exc


def _clear(store: ModelStore, file: str, what: str) -> None:
    try:
        store.storage.delete_choice(file)
    except ModelStoreError as exc:
        raise ModelStoreError(f"cannot remove the {what}: {exc}") from exc


def read_pin(store: ModelStore) -> Pin | None:
    return _read(store, PIN_FILE, Pin, "pin")


def write_pin(
    store: ModelStore, version: int, pinned_by: str, set_by: Literal["operator", "rollout"] = "operator"
) -> Pin:
    pin = Pin(version=version, pinned_by=pinned_by, pinned_at=datetime.now(UTC), set_by=set_by)
    _write(store, PIN_FILE, pin, "pin")
    return pin


def clear_pin(store: ModelStore) -> None:
    _clear(store, PIN_FILE, "pin")


def serving_version(store: ModelStore) -> int:
    """The version the store says to serve: the operator's pin, else the newest the gate did not
    reject. (The service's MNIST_MODEL_VERSION setting, when set, wins over both.)"""
    pin = read_pin(store)
    return pin.version if pin is not None else store.resolve()


def read_routing(store: ModelStore) -> Routing | None:
    return _read(store, ROUTING_FILE, Routing, "routing")


def write_routing(
    store: ModelStore, mode: Literal["canary", "shadow"], candidate: int, percent: float, set_by: str
) -> Routing:
    routing = Routing(
        mode=mode, candidate=candidate, percent=percent, set_by=set_by, set_at=datetime.now(UTC)
    )
    _write(store, ROUTING_FILE, routing, "routing")
    return routing


def clear_routing(store: ModelStore) -> None:
    _clear(store, ROUTING_FILE, "routing")
