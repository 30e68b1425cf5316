"""docker-compose.yml loaded as Compose loads it: pyyaml, then Compose's variable interpolation."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.paths import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

_INTERPOLATION = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation on every string of a loaded file; `$$` becomes `$`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def replace(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        operator, default = m.group(3), m.group(4) or ""
        current = env.get(name)
        if operator == ":-":
            return current if current else default
        if operator == "-":
            return current if current is not None else default
        if operator in (":?", "?"):
            assert current, f"${{{name}}} is required: {default}"
        return current or ""

    return _INTERPOLATION.sub(replace, value)


def interpolation_variables(text: str) -> set[str]:
    """Names of the variables a compose file interpolates (`$$` escapes excluded)."""
    return {m.group(2) or m.group(5) for m in _INTERPOLATION.finditer(text) if not m.group(1)}


def load_compose_raw(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def load_compose(env: dict[str, str] | None = None, path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file with anchors merged and variables interpolated (empty environment: defaults)."""
    return interpolate(load_compose_raw(path), env or {})


def service_environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's `environment`; None for a bare name, which Compose passes through from the
    shell or .env when set there and otherwise leaves unset (so the image's ENV applies)."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    return {k: None if v is None else str(v) for k, v in environment.items()}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/", "~"))


def service_mounts(service: dict[str, Any]) -> list[Mount]:
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append(Mount(entry["source"], entry["target"], bool(entry.get("read_only"))))
            continue
        parts = entry.split(":")
        mode = parts[2] if len(parts) > 2 else "rw"
        mounts.append(Mount(parts[0], parts[1], "ro" in mode.split(",")))
    return mounts


def as_command(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else list(value)
