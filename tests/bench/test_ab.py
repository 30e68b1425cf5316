"""bench.ab: two checkouts served side by side over HTTP, and its arguments checked up front."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bench.ab import main
from tests.conftest import REPO_ROOT, assert_argument_refused


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
def test_it_serves_both_checkouts_and_reports_each(
    trained_store: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--store", str(trained_store), "--data-dir", str(mnist_dir), "--before", str(REPO_ROOT)]
    assert (
        main(
            [
                *argv,
                "--workers",
                "1",
                "--connections",
                "2",
                "--rounds",
                "2",
                "--seconds",
                "1",
                "--warmup",
                "1",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    runs = [line for line in lines if " round " in line]
    # Two rounds, each checkout once per round, the first round's order reversed in the second.
    assert [line.split(":")[0].split()[-1] for line in runs] == ["before", "this", "this", "before"]
    for line in lines:
        found = re.search(r"([\d,]+) req/s, p50 [\d.]+ ms, p99 [\d.]+ ms, errors (\d+)$", line)
        assert found, line
        assert int(found[1].replace(",", "")) > 0 and found[2] == "0", line
    assert sum(" median " in line for line in lines) == 2


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--connections", "0"], "--connections must be at least 1"),
        (["--before", "/no/such/checkout"], "--before /no/such/checkout: no such file or folder"),
        (["--env", "MNIST_LOG_LEVEL"], "--env MNIST_LOG_LEVEL: expected NAME=VALUE"),
    ],
)
def test_a_bad_argument_is_one_line_before_anything_starts(
    mnist_dir: Path, args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # argparse keeps the last of a repeated option, so a case's own --before replaces this one.
    argv = ["--store", str(mnist_dir), "--data-dir", str(mnist_dir), "--before", str(REPO_ROOT), *args]
    assert_argument_refused(main, argv, words, capsys)
