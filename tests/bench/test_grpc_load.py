"""bench.grpc_load: gRPC and the HTTP protocols driven side by side against a real server, its report
written with every row, and its arguments checked up front. No timing is asserted."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bench.grpc_load import main
from tests.conftest import assert_argument_refused

PROTOCOLS = ("gRPC ModelInfer", "HTTP v2 JSON", "HTTP v2 binary", "HTTP /predict")


@pytest.mark.e2e
def test_a_short_run_reports_every_protocol_side_by_side(
    trained_store: Path, mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "grpc.md"
    wrk = shutil.which("wrk") is not None
    argv = ["--store", str(trained_store), "--data-dir", str(mnist_dir), "--out", str(out)]
    argv += ["--connections", "1", "2", "--batch", "4", "--seconds", "2", "--calls", "10"]
    argv += ["--rounds", "1", "--warmup", "0", *([] if wrk else ["--no-wrk"])]
    assert main(argv) == 0
    report = out.read_text()
    assert capsys.readouterr().out.strip().endswith(report.strip())
    assert str(tmp_path) not in report and str(trained_store) not in report
    assert "python -m bench.grpc_load --store models --data-dir data/mnist" in report
    assert "--batch 4" in report and "--calls 10" in report
    row = r"^\| (gRPC ModelInfer|HTTP [^|]+?) \| (\d+) \| (\d+) \| ([\d,]+) \|.*\| (\d+) \| [\d,]+ \|$"
    rows = re.findall(row, report, re.M)
    python_rows = {(name, int(c), int(n)) for name, c, n, _, _ in rows[:16]}
    assert python_rows == {(name, c, n) for name in PROTOCOLS for c in (1, 2) for n in (1, 4)}
    assert all(int(rate.replace(",", "")) > 0 and errors == "0" for *_, rate, errors in rows)
    assert len(rows) == (16 + 12 if wrk else 16)
    ratio = r"^\| [14] \| [12] \| [\d,]+ \| [\d.]+× \| [\d.]+× \| [\d.]+× \| [+-][\d.]+ ms \|"
    assert len(re.findall(ratio, report, re.M)) == 4
    assert "against HTTP v2 JSON:" in report and "against HTTP v2 binary:" in report


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--connections", "0"], "--connections must be at least 1"),
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--calls", "0"], "--calls must be at least 1"),
        (["--batch", "1"], "--batch must be between 2 and 10000"),
        (["--warmup", "-1"], "--warmup must be 0 or more"),
        (["--store", "/no/such/store"], "--store /no/such/store: no such folder"),
        (["--version", "1", "--preset", "seed"], "not allowed with argument"),
    ],
)
def test_a_bad_argument_is_one_line_before_anything_starts(
    mnist_dir: Path, args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # argparse keeps the last of a repeated option, so a case's own --store replaces this one.
    argv = ["--store", str(mnist_dir), "--data-dir", str(mnist_dir), "--no-wrk", *args]
    assert_argument_refused(main, argv, words, capsys)
