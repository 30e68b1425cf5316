"""Every command line the README and the docs show for the project's own tools (`mnist-train`,
`mnist-serve`, `mnist-predict`, `python -m ...`), in a code block or inline, is accepted by that
tool's real argparse parser. Nothing runs: the parser's answer is taken and the tool stops there."""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import shlex
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.paths import REPO_ROOT
from tests.support.project import console_scripts, resolve_entry_point

PAGES = sorted([REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL_BLOCKS = {"", "sh", "bash", "console", "shell", "text"}
INLINE = re.compile(r"`((?:mnist-train|mnist-serve|mnist-predict|python -m [\w.]+)(?: [^`]*)?)`")
TOOL = re.compile(r"^(?:mnist-train|mnist-serve|mnist-predict|python -m [\w.]+)(?:\s|$)")
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&"}
VARIABLE = re.compile(r"^[A-Z_][A-Z0-9_]*=")
PACKAGES = {"app", "training", "model_store", "mnist_client", "bench"}


class ParsedSignalError(Exception):
    """Raised in place of running the tool once its parser accepted the line."""


def command_lines() -> Iterator[tuple[str, str]]:
    for page in PAGES:
        text = page.read_text()
        name = str(page.relative_to(REPO_ROOT))
        for language, block in FENCE.findall(text):
            if language not in SHELL_BLOCKS:
                continue
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                words = line.split()
                while words and (VARIABLE.match(words[0]) or words[0] in {"sudo", "nice", "exec"}):
                    words.pop(0)
                line = " ".join(words)
                if TOOL.match(line) and ours(line):
                    yield name, line
        for span in INLINE.findall(FENCE.sub("", text)):
            if complete(span) and ours(span):
                yield name, span


def ours(line: str) -> bool:
    """The project's tools; a third party's (`python -m uvicorn`) is theirs to parse."""
    return not line.startswith("python -m") or line.split()[2].split(".")[0] in PACKAGES


def complete(span: str) -> bool:
    """An inline span that is a whole command line, not a tool's name or a list of its flags:
    some value given, and no placeholder (`...`, `[a|b]`, `<file>`)."""
    words = span.split()[3 if span.startswith("python -m") else 1 :]
    placeholder = any(mark in span for mark in ("...", "[", "<"))
    return not placeholder and any(not word.startswith("-") for word in words)


def words_of(line: str) -> list[str]:
    """The tool's own arguments: shell comments, operators and what follows them left off."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = []
    for word in lexer:
        if word in SHELL_OPERATORS:
            break
        words.append(word)
    return words


def entry_point(words: list[str]) -> tuple[Any, list[str]]:
    if words[0] in console_scripts():
        return resolve_entry_point(console_scripts()[words[0]]), words[1:]
    assert words[:2] == ["python", "-m"], words
    module = importlib.import_module(words[2])
    main = getattr(module, "main", None)
    if main is None:
        main = importlib.import_module(f"{words[2]}.__main__").main
    return main, words[3:]


LINES = sorted(set(command_lines()))


def test_the_docs_show_command_lines_of_every_tool() -> None:
    shown = {words_of(line)[0] if not line.startswith("python") else "python -m" for _, line in LINES}
    assert {"mnist-train", "mnist-serve", "mnist-predict", "python -m"} <= shown
    assert len(LINES) >= 30


@pytest.mark.parametrize(("page", "line"), LINES, ids=[f"{page}: {line}" for page, line in LINES])
def test_every_command_line_in_the_docs_parses(page: str, line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise ParsedSignalError(original(self, *args, **kwargs))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    main, arguments = entry_point(words_of(line))
    monkeypatch.setattr(sys, "argv", [line.split()[0], *arguments])
    with pytest.raises(ParsedSignalError):
        try:
            main(arguments) if inspect.signature(main).parameters else main()
        except SystemExit as exc:
            pytest.fail(f"{page}: `{line}` is refused by its parser (exit {exc.code})")


def test_a_wrong_command_line_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a required flag left out, and a shell pipe where a value belongs."""
    for line in (
        "python -m bench.prediction_log --workers 1|2 --connections 64",
        "mnist-train --preset resnet",
    ):
        with pytest.raises(pytest.fail.Exception, match="refused"):
            test_every_command_line_in_the_docs_parses("page", line, monkeypatch)


def test_the_kubernetes_steps_create_the_namespace_before_its_secret_and_set_the_image() -> None:
    steps = (REPO_ROOT / "docs" / "deployment.md").read_text()
    namespace = steps.index("kubectl create namespace mnist-serve")
    assert namespace < steps.index("kubectl -n mnist-serve create secret")
    assert namespace < steps.index("kubectl apply -k deploy/kubernetes/overlays/production")
    for folder in ("overlays/production", "training"):
        assert f"(cd deploy/kubernetes/{folder} && kustomize edit set image mnist-serve=" in steps, folder
