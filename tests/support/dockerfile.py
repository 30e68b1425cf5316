"""The Dockerfile read as dockerfile-parse reads it: stages, instructions, ENV pairs, HEALTHCHECK."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from dockerfile_parse import DockerfileParser
from dockerfile_parse.util import extract_key_values

from tests.support.paths import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"


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
    return {key: value for key, _, value in (part.partition("=") for part in flag[8:].split(","))}


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
