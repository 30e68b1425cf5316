"""The build context Docker sends: .dockerignore with Docker's own matching rules."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import REPO_ROOT

DOCKERIGNORE = REPO_ROOT / ".dockerignore"


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
