"""Readers for the container files (Dockerfile, .dockerignore, docker-compose.yml, deploy/nginx.conf).

The deployment tests share these: they parse each file the way its real consumer would (dockerfile-parse
for the Dockerfile, Docker's matching rules for .dockerignore, pyyaml plus compose interpolation for the
compose file), so that a test can compare what the files name with what the project has.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser
from dockerfile_parse.util import extract_key_values

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
NGINX_CONF = REPO_ROOT / "deploy" / "nginx.conf"
NGINX_PROXY_CONF = REPO_ROOT / "deploy" / "nginx-proxy.conf"
# Where docker-compose.yml mounts NGINX_PROXY_CONF in the nginx container (nginx.conf includes it).
NGINX_PROXY_CONF_TARGET = "/etc/nginx/mnist-serve-proxy.conf"
DEPLOYMENT_DOC = REPO_ROOT / "docs" / "deployment.md"


# --- Dockerfile -------------------------------------------------------------------------------------


@dataclass
class Instruction:
    name: str  # upper case: RUN, ENV, ...
    value: str  # the text after the keyword, continuation lines joined
    line: int  # 1-based
    envs: dict[str, str] = field(default_factory=dict)  # for ENV: the pairs, unexpanded


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, name: str) -> list[Instruction]:
        return [i for i in self.instructions if i.name == name]

    def last(self, name: str) -> Instruction | None:
        found = self.all(name)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """The stage's ENV pairs in order, `$VAR` references left as written."""
        merged: dict[str, str] = {}
        for instruction in self.all("ENV"):
            merged.update(instruction.envs)
        return merged


def parse_dockerfile(path: Path = DOCKERFILE) -> list[Stage]:
    parser = DockerfileParser(path=str(path), env_replace=False)
    stages: list[Stage] = []
    for item, context in zip(parser.structure, parser.context_structure, strict=True):
        name, value = item["instruction"].upper(), item["value"]
        if name == "COMMENT":
            continue
        if name == "FROM":
            words = value.split()
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=alias))
            continue
        if not stages:
            continue  # ARG before the first FROM
        envs = dict(extract_key_values(False, {}, {}, value)) if name == "ENV" else {}
        assert name != "ENV" or envs == context.line_envs, "ENV parsed differently than dockerfile-parse"
        stages[-1].instructions.append(Instruction(name, value, item["startline"] + 1, envs))
    return stages


def build_arg_defaults(stages: list[Stage]) -> dict[str, str]:
    """Each build stage's `ARG name=default`: what `docker build` uses without `--build-arg`."""
    defaults: dict[str, str] = {}
    for stage in stages:
        for arg in stage.all("ARG"):
            name, _, default = arg.value.partition("=")
            defaults[name] = default
    return defaults


def exec_form(value: str) -> list[str]:
    """A JSON-array instruction argument (CMD, ENTRYPOINT, HEALTHCHECK CMD) as a list."""
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed), value
    return parsed


def split_run_flags(value: str) -> tuple[list[str], str]:
    """`RUN --mount=... --network=... cmd` into (['--mount=...', ...], 'cmd')."""
    flags: list[str] = []
    rest = value.lstrip()
    while match := re.match(r"(--[a-z-]+=\S+)\s+", rest):
        flags.append(match.group(1))
        rest = rest[match.end() :]
    return flags, rest


def mount_options(flag: str) -> dict[str, str]:
    assert flag.startswith("--mount="), flag
    return dict(part.split("=", 1) if "=" in part else (part, "") for part in flag[8:].split(","))


@dataclass
class Healthcheck:
    options: dict[str, str]
    command: list[str]


def parse_healthcheck(value: str) -> Healthcheck:
    match = re.fullmatch(r"((?:--[a-z-]+=\S+\s+)*)CMD\s+(.+)", value.strip(), re.S)
    assert match, f"HEALTHCHECK is not `[options] CMD [...]`: {value}"
    options = dict(opt[2:].split("=", 1) for opt in match.group(1).split())
    return Healthcheck(options, exec_form(match.group(2)))


def duration_seconds(text: str) -> float:
    """Docker/Go durations: 90s, 1m30s, 500ms."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def expand_vars(text: str, env: dict[str, str]) -> str:
    """`$VAR` and `${VAR}` as Docker expands them in ENV values (unset means empty)."""
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: env.get(m.group(1) or m.group(2), ""), text)


# --- .dockerignore ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IgnorePattern:
    text: str
    negated: bool
    regex: re.Pattern[str]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob (moby/patternmatcher) as a regular expression on posix paths."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body[:1] in ("!", "^") else body) + "]")
            i = end
        elif char == "\\":
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out))


def read_dockerignore(path: Path = DOCKERIGNORE) -> list[IgnorePattern]:
    patterns = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        body = os.path.normpath(line[1:].strip() if negated else line).lstrip("/")
        patterns.append(IgnorePattern(line, negated, _glob_regex(body)))
    return patterns


def is_ignored(relpath: str, patterns: list[IgnorePattern]) -> bool:
    """Whether Docker leaves `relpath` (posix, relative to the context) out of the build context.

    As in Docker, a pattern excludes a path when it matches the path or any folder above it, and the
    last matching pattern decides (`!` patterns put paths back).
    """
    parts = relpath.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        if any(pattern.regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not pattern.negated
    return ignored


def build_context_files(root: Path = REPO_ROOT, patterns: list[IgnorePattern] | None = None) -> list[str]:
    """The files `docker build` would send from `root`, as sorted posix paths."""
    patterns = read_dockerignore() if patterns is None else patterns
    can_prune = not any(p.negated for p in patterns)  # with `!` patterns a folder may come back
    files = []
    for folder, dirs, names in os.walk(root):
        rel_folder = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel_folder == "." else rel_folder + "/"
        if can_prune:
            dirs[:] = [d for d in dirs if not is_ignored(prefix + d, patterns)]
        files += [prefix + n for n in names if not is_ignored(prefix + n, patterns)]
    return sorted(files)


def materialize_context(destination: Path, root: Path = REPO_ROOT) -> list[str]:
    """Copy the build context into `destination`, as the Docker client would send it."""
    files = build_context_files(root)
    for rel in files:
        target = destination / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    return files


# --- docker-compose.yml -----------------------------------------------------------------------------

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


# --- deploy/nginx.conf ------------------------------------------------------------------------------


def nginx_text(proxy_conf: Path | None = None) -> str:
    """deploy/nginx.conf with its `include` of the proxy rules pointing at `proxy_conf` (a path here)."""
    text = NGINX_CONF.read_text()
    include = f"include {NGINX_PROXY_CONF_TARGET};"
    assert text.count(include) == 1, f"deploy/nginx.conf must {include}"
    return text.replace(include, f"include {proxy_conf or NGINX_PROXY_CONF};")


def nginx_inlined() -> str:
    """deploy/nginx.conf with the proxy rules pasted where it includes them."""
    return nginx_text().replace(f"include {NGINX_PROXY_CONF};", NGINX_PROXY_CONF.read_text())


def nginx_directives(text: str) -> list[tuple[tuple[str, ...], str, list[str]]]:
    """Every simple directive of an nginx config as (enclosing block names, directive, arguments).

    Enough of nginx's grammar for the checks here: comments, quoted strings, blocks, `;`.
    """
    tokens = re.findall(r"\"(?:\\.|[^\"])*\"|'(?:\\.|[^'])*'|[{};]|[^\s{};]+", re.sub(r"#[^\n]*", "", text))
    directives: list[tuple[tuple[str, ...], str, list[str]]] = []
    stack: list[str] = []
    words: list[str] = []
    for token in tokens:
        if token == "{":
            stack.append(" ".join(words))
            words = []
        elif token == "}":
            stack.pop()
        elif token == ";":
            directives.append((tuple(stack), words[0], [w.strip("\"'") for w in words[1:]]))
            words = []
        else:
            words.append(token)
    assert not stack and not words, "unbalanced nginx config"
    return directives
