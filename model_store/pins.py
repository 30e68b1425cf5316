"""An operator's choice of version, kept beside the versions: `<root>/<name>/pin.json`.

The file is the one place every worker and every restart reads the choice from, so a rollback made
through one worker holds on all of them and survives restarts. No file means: follow the newest.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, Field, ValidationError

from model_store.store import ModelStore, ModelStoreError

PIN_FILE = "pin.json"


class Pin(BaseModel):
    version: int = Field(ge=1)
    pinned_by: str = Field(description="who made the choice, e.g. the admin API and the request id")
    pinned_at: datetime


def read_pin(store: ModelStore) -> Pin | None:
    path = store.model_dir / PIN_FILE
    try:
        return Pin.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        raise ModelStoreError(
            f"{path}: unreadable pin ({exc}); delete it to follow the newest version"
        ) from exc


def write_pin(store: ModelStore, version: int, pinned_by: str) -> Pin:
    """Record the choice atomically (readers see the old file or the new one, never a part)."""
    pin = Pin(version=version, pinned_by=pinned_by, pinned_at=datetime.now(UTC))
    path = store.model_dir / PIN_FILE
    staging = path.with_name(f".{PIN_FILE}.{uuid.uuid4().hex}")
    try:
        staging.write_text(pin.model_dump_json(indent=2))
        os.replace(staging, path)
    except OSError as exc:
        staging.unlink(missing_ok=True)
        raise ModelStoreError(f"cannot record the pin in {path}: {exc}") from exc
    return pin


def clear_pin(store: ModelStore) -> None:
    path = store.model_dir / PIN_FILE
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise ModelStoreError(f"cannot remove the pin {path}: {exc}") from exc
