"""Write docs/configuration.md from the settings classes, so the reference cannot drift from the code.

    python scripts/configuration_reference.py          # rewrite the page
    python scripts/configuration_reference.py --check  # exit 1 when the page is stale

Every field's environment name, type, default, description and example come from `app.config.Settings`
(which extends `model_store.settings.StoreSettings`); the few variables read outside the settings
classes are listed in OTHER_VARIABLES. tests/test_configuration_reference.py keeps both honest.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from model_store.settings import ENV_PREFIX, StoreSettings  # noqa: E402

# Variables read outside the settings classes: (name, read by, default, meaning, example).
OTHER_VARIABLES = (
    (
        "MNIST_TRAIN_PRESET",
        "`scripts/serve.sh`",
        "`cnn`",
        "The preset trained when the store is empty at start.",
        "`seed`",
    ),
    (
        "MNIST_SERVE_URL",
        "`mnist-predict`",
        "`http://127.0.0.1:8000`",
        "The service the command-line client calls (`--url` overrides it).",
        "`http://mnist.internal:8000`",
    ),
    (
        "MNIST_API_KEY",
        "`mnist-predict`",
        "unset",
        "The API key the command-line client sends (`--api-key` overrides it).",
        "`k-2f8e1c9a7b3d5e60`",
    ),
    (
        "MNIST_IMAGE_CACHE",
        "`scripts/build-image.sh`",
        "`/var/tmp/mnist-serve-image`",
        "Where the image build keeps its container storage, so a rebuild reuses the base image.",
        "`/srv/buildah`",
    ),
)

HEADER = """# Configuration

Everything is set by environment variables with the `MNIST_` prefix, or by a `.env` file in the
working folder (the environment wins). An empty variable counts as unset, so a compose file or a
ConfigMap may list every setting with most of them blank. A wrong value stops the command at once
with one line naming the variable and what is wrong; secrets are never printed.

List settings take the comma form (`MNIST_LOADED_VERSIONS=3,5`) or a JSON list
(`MNIST_LOADED_VERSIONS='[3, 5]'`). Booleans take `true`/`false` (also `1`/`0`, `yes`/`no`).

This page is generated from the settings classes by `python scripts/configuration_reference.py`;
a test fails when it is stale, and another sets every example below in the environment and in `.env`
and checks that the service reads it as shown.
"""


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def shell_form(value: Any) -> str:
    """How a user writes `value` in the environment (lists in the comma form the docs promise)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(shell_form(item) for item in value)
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin is list:
        return f"list of {type_name(args[0])}"
    return {
        int: "integer",
        float: "number",
        bool: "boolean",
        str: "text",
        Path: "path",
        SecretStr: "secret",
    }.get(annotation, getattr(annotation, "__name__", str(annotation)))


def default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None or value == []:
        return "unset"
    return f"`{shell_form(value)}`"


def bounds(info: FieldInfo) -> str:
    limits = []
    for rule in info.metadata:
        for name, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(rule, name, None) is not None:
                limits.append(f"{sign} {getattr(rule, name)}")
    return f" ({', '.join(limits)})" if limits else ""


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def field_rows(fields: dict[str, FieldInfo]) -> list[str]:
    rows = ["| variable | type | default | what it does | example |", "| --- | --- | --- | --- | --- |"]
    for name, info in fields.items():
        example = f"`{env_name(name)}={shell_form(info.examples[0])}`" if info.examples else ""
        rows.append(
            f"| `{env_name(name)}` | {type_name(info.annotation)}{bounds(info)} | {default_text(info)} | "
            f"{cell(info.description or '')} | {example} |"
        )
    return rows


def render() -> str:
    shared = {name: Settings.model_fields[name] for name in StoreSettings.model_fields}
    service = {
        name: info for name, info in Settings.model_fields.items() if name not in StoreSettings.model_fields
    }
    lines = [HEADER, "## Shared by the service, `mnist-train` and `python -m model_store`", ""]
    lines += field_rows(shared)
    lines += ["", "`mnist-train`'s flags `--store`, `--name` and `--data-dir` override these three.", ""]
    lines += ["## The service (`mnist-serve`)", ""]
    lines += field_rows(service)
    lines += ["", "`mnist-serve --host --port --workers` override their variables.", ""]
    lines += ["## Read by scripts and the client", ""]
    lines += ["| variable | read by | default | what it does | example |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| `{name}` | {who} | {default} | {meaning} | {example} |"
        for name, who, default, meaning, example in OTHER_VARIABLES
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is stale")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != page:
            sys.stderr.write(
                f"{PAGE.relative_to(ROOT)} is stale: run python scripts/configuration_reference.py\n"
            )
            return 1
        return 0
    PAGE.write_text(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
