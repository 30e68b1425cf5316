"""Write the reference pages of the docs from the code, so they cannot drift from it.

    python scripts/reference_pages.py          # rewrite docs/configuration.md and docs/api-reference.md
    python scripts/reference_pages.py --check  # exit 1 when either page is stale

docs/configuration.md: every field's environment name, type, default, description and example, from
`app.config.Settings` (which extends `model_store.settings.StoreSettings`) grouped by purpose
(`app.config.SETTING_GROUPS`), and the few variables
read outside the settings classes (OTHER_VARIABLES). docs/api-reference.md: every route of the
OpenAPI document the service publishes. tests/test_configuration.py and tests/test_docs.py keep
them honest. docs/modules.md: every module with its docstring's first paragraph.
"""

from __future__ import annotations

import argparse
import ast
import json
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
API_PAGE = ROOT / "docs" / "api-reference.md"
MODULES_PAGE = ROOT / "docs" / "modules.md"
PACKAGES = ("app", "model_store", "training", "mnist_client", "bench")
sys.path.insert(0, str(ROOT))

from app.config import SETTING_GROUPS, Settings  # noqa: E402
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

This page is generated from the settings classes by `python scripts/reference_pages.py`;
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


def grouped_service_fields() -> dict[str, dict[str, FieldInfo]]:
    """The service's own settings under the headings of `SETTING_GROUPS`. ValueError names a
    setting in no group, or in two."""
    service = [name for name in Settings.model_fields if name not in StoreSettings.model_fields]
    placed = [name for names in SETTING_GROUPS.values() for name in names]
    ungrouped = sorted(set(service) - set(placed))
    twice = sorted({name for name in placed if placed.count(name) > 1})
    unknown = sorted(set(placed) - set(service))
    if ungrouped or twice or unknown:
        raise ValueError(
            f"app.config.SETTING_GROUPS: in no group {ungrouped}, in two {twice}, not a setting {unknown}"
        )
    return {
        heading: {name: Settings.model_fields[name] for name in names}
        for heading, names in SETTING_GROUPS.items()
    }


def render() -> str:
    shared = {name: Settings.model_fields[name] for name in StoreSettings.model_fields}
    lines = [HEADER, "## Shared by the service, `mnist-train` and `python -m model_store`", ""]
    lines += field_rows(shared)
    lines += [
        "",
        "`mnist-train`'s flags `--store`, `--name` and `--data-dir` override the first three; the "
        "database's URL holds a password, so it comes from the environment (or `.env`) only.",
        "",
    ]
    lines += ["## The service (`mnist-serve`)", ""]
    lines += ["`mnist-serve --host --port --workers` override their variables.", ""]
    for heading, fields in grouped_service_fields().items():
        lines += [f"### {heading}", ""]
        lines += field_rows(fields)
        lines += [""]
    lines += ["## Read by scripts and the client", ""]
    lines += ["| variable | read by | default | what it does | example |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| `{name}` | {who} | {default} | {meaning} | {example} |"
        for name, who, default, meaning, example in OTHER_VARIABLES
    ]
    return "\n".join(lines) + "\n"


API_HEADER = """# Route reference

Every route the service publishes in its OpenAPI document (`/openapi.json`; interactive at `/docs`),
generated from that document by `python scripts/reference_pages.py`. *Key*: the route needs an API
key when `MNIST_API_KEYS_FILE` is set; *admin*: the `/admin` routes, mounted only when
`MNIST_ADMIN_TOKEN` is set. How to call them, with examples: [API](api.md).
"""


def api_document() -> dict[str, Any]:
    """The OpenAPI document of a service with keys and the admin routes on, as an operator runs it."""
    from app.main import create_app

    settings = Settings(api_keys_file=Path("api-keys.txt"), admin_token=SecretStr("0" * 32))
    return create_app(settings).openapi()


def parameter_rows(parameters: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| parameter | in | type | default | example | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for parameter in parameters:
        schema = parameter.get("schema", {})
        kinds = [s.get("type", "") for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
        default = (
            f"`{json.dumps(schema['default'])}`"
            if "default" in schema
            else ("required" if parameter.get("required") else "")
        )
        example = parameter.get("example", next(iter(schema.get("examples", [])), None))
        if example is None and parameter.get("examples"):
            example = next(iter(parameter["examples"].values())).get("value")
        shown = "" if example is None else f"`{example if isinstance(example, str) else json.dumps(example)}`"
        rows.append(
            f"| `{parameter['name']}` | {parameter['in']} | {' or '.join(kinds)} | {default} | "
            f"{shown} | {cell(parameter.get('description', ''))} |"
        )
    return rows


def render_api(document: dict[str, Any]) -> str:
    lines = [API_HEADER]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            by_tag.setdefault(operation.get("tags", ["other"])[0], []).append(
                (method.upper(), path, operation)
            )
    for tag, operations in by_tag.items():
        lines += [f"## {tag}", ""]
        for method, path, operation in operations:
            access = (
                "admin" if path.startswith("/admin") else ("key" if operation.get("security") else "open")
            )
            lines += [f"### `{method} {path}`", "", cell(operation.get("summary", "")) + f" ({access})", ""]
            description = operation.get("description", "").strip()
            if description:
                lines += [description, ""]
            if operation.get("parameters"):
                lines += [*parameter_rows(operation["parameters"]), ""]
            body = operation.get("requestBody", {}).get("content", {})
            if body:
                lines += ["Body: " + ", ".join(f"`{kind}`" for kind in body), ""]
            codes = operation.get("responses", {})
            lines += [
                "Answers: "
                + "; ".join(f"{code} {cell(r.get('description', ''))}" for code, r in codes.items()),
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


MODULES_HEADER = """# Modules

Every module of the project with the first line of its docstring, generated by
`python scripts/reference_pages.py`: what to open for a job. How they fit together:
[architecture](architecture.md).
"""


def render_modules() -> str:
    lines = [MODULES_HEADER]
    for package in PACKAGES:
        lines += [f"## `{package}/`", "", "| module | what it does |", "| --- | --- |"]
        for path in sorted((ROOT / package).rglob("*.py")):
            docstring = ast.get_docstring(ast.parse(path.read_text()))
            if path.name == "__init__.py" and not docstring:
                continue
            summary = cell(docstring.strip().split("\n\n")[0]) if docstring else ""
            lines.append(f"| `{path.relative_to(ROOT)}` | {summary} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def pages() -> dict[Path, str]:
    return {PAGE: render(), API_PAGE: render_api(api_document()), MODULES_PAGE: render_modules()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in pages().items():
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.write_text(text)
    if stale:
        sys.stderr.write(f"stale: {', '.join(stale)}; run python scripts/reference_pages.py\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
