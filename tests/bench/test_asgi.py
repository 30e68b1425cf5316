"""bench.asgi: the whole app in process, its CPU per request, and its arguments checked up front."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bench.asgi import main
from tests.conftest import assert_argument_refused


def test_it_measures_the_served_app_answering_real_digits(
    trained_store: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--store", str(trained_store), "--data-dir", str(mnist_dir)]
    settings = {name: value for name, value in os.environ.items() if name.startswith("MNIST_")}
    assert main([*argv, "--concurrency", "4", "--windows", "2", "--seconds", "0.2"]) == 0
    # Settings go to the app, not into the environment every later subprocess inherits (a leaked
    # MNIST_LOG_LEVEL once silenced the logs that a drain test reads).
    assert {name: value for name, value in os.environ.items() if name.startswith("MNIST_")} == settings
    line = capsys.readouterr().out.strip().splitlines()[-1]
    found = re.search(r"at 4 concurrent calls: (\d+) us CPU per request$", line)
    assert found and int(found[1]) > 0, line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--seconds", "0"], "--seconds must be positive"),
        (["--repo", "/no/such/checkout"], "--repo /no/such/checkout: no such file or folder"),
    ],
)
def test_a_bad_argument_is_one_line_before_anything_loads(
    mnist_dir: Path, args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_argument_refused(
        main, ["--store", str(mnist_dir), "--data-dir", str(mnist_dir), *args], words, capsys
    )
