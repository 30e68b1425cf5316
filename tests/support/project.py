"""What the project offers, for comparing with what the container files and manifests name:
its settings variables, console scripts, entry points and routes."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from functools import cache
from typing import Any

import pytest

from app.config import Settings
from tests.support.live_server import environment_without_settings
from tests.support.paths import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
ENV_PREFIX = "MNIST_"
# Environment variables outside MNIST_* that a container may set, and who reads them.
OTHER_VARIABLES = {
    "PATH": "the shell",
    "PYTHONDONTWRITEBYTECODE": "python",
    "PYTHONUNBUFFERED": "python",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip",
    "MPLCONFIGDIR": "matplotlib (its cache, under /tmp)",
    "FORWARDED_ALLOW_IPS": "uvicorn (trusted proxies for X-Forwarded-For)",
    "AWS_ENDPOINT_URL": "boto3 (a store in a bucket: the S3 endpoint)",
    "AWS_ACCESS_KEY_ID": "boto3 and rclone (a store in a bucket)",
    "AWS_SECRET_ACCESS_KEY": "boto3 and rclone (a store in a bucket)",
    "AWS_DEFAULT_REGION": "boto3 (a store in a bucket)",
    "POSTGRES_USER": "the postgres image (the prediction log's database, --profile postgres)",
    "POSTGRES_PASSWORD": "the postgres image",
    "POSTGRES_DB": "the postgres image",
}


def settings_variables() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def training_variables() -> set[str]:
    """MNIST_* variables the command-line tools read besides Settings (mnist-train, python -m model_store)."""
    sources = [*(REPO_ROOT / "training").glob("*.py"), REPO_ROOT / "model_store" / "__main__.py"]
    found = set()
    for source in sources:
        found |= set(re.findall(r"os\.environ(?:\.get\(|\[)\"(MNIST_\w+)\"", source.read_text()))
    return found


def settings_from(env: Mapping[str, str | None], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a process with exactly these MNIST_* variables would read them (no .env file)."""
    for name in settings_variables():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if value is not None and name.startswith(ENV_PREFIX):
            monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


OPENAPI_SCRIPT = """
import json, sys
from pydantic import SecretStr
from app.config import Settings
from app.main import create_app
operator = sys.argv[1] == "operator"
extra = {"api_keys_file": "api-keys.txt", "admin_token": SecretStr("0" * 32)} if operator else {}
print(json.dumps(create_app(Settings(_env_file=None, **extra)).openapi()))
"""


@cache
def app_openapi(operator: bool = False) -> dict[str, Any]:
    """The OpenAPI document of the app that create_app builds (no model needed); `operator`: with API
    keys and the admin routes on, as an operator runs it.

    In a subprocess: create_app configures logging, which must not leak into this test session.
    """
    env = environment_without_settings()
    result = subprocess.run(
        [sys.executable, "-c", OPENAPI_SCRIPT, "operator" if operator else "plain"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def app_routes(operator: bool = False) -> dict[str, set[str]]:
    """Path -> HTTP methods of the app that create_app builds (its OpenAPI schema)."""
    return {path: {m.upper() for m in ops} for path, ops in app_openapi(operator)["paths"].items()}


def route_status_codes(operator: bool = True) -> dict[tuple[str, str], set[int]]:
    """(method, path) -> the status codes the OpenAPI document says the route answers."""
    return {
        (method.upper(), path): {int(code) for code in operation.get("responses", {}) if code.isdigit()}
        for path, operations in app_openapi(operator)["paths"].items()
        for method, operation in operations.items()
    }


def console_scripts() -> dict[str, str]:
    return PYPROJECT["project"]["scripts"]


def resolve_entry_point(spec: str) -> Any:
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)


def url_of_python_probe(command: list[str]) -> tuple[str, str]:
    """(port expression, path) of the `python -c "...urlopen('http://127.0.0.1:%s/healthz' ...)"` probe."""
    assert command[:2] == ["python", "-c"], command
    match = re.search(r"urlopen\('http://127\.0\.0\.1:(%s|\d+)(/[^'?]*)'", command[2])
    assert match, f"no http://127.0.0.1:<port>/<path> URL in {command[2]!r}"
    if match.group(1) == "%s":
        assert "os.environ.get('MNIST_PORT'" in command[2], "the probe's port must come from MNIST_PORT"
    return match.group(1), match.group(2)
