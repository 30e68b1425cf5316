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
    generators = ["asyncio", "httpx", *(["wrk"] if shutil.which("wrk") else [])]
    argv = ["--store", str(trained_store), "--data-dir", str(mnist_dir), "--out", str(out)]
    argv += ["--connections", "1", "2", "--batch", "4", "--batch-connections", "3", "--seconds", "2"]
    argv += [
        "--calls",
        "10",
        "--rounds",
        "1",
        "--warmup",
        "0",
        *([] if "wrk" in generators else ["--no-wrk"]),
    ]
    assert main(argv) == 0
    report = out.read_text()
    assert capsys.readouterr().out.strip().endswith(report.strip())
    assert str(tmp_path) not in report and str(trained_store) not in report
    assert "python -m bench.grpc_load --store models --data-dir data/mnist" in report
    assert "--batch 4 --batch-connections 3" in report and "--calls 10" in report
    row = r"^\| (gRPC ModelInfer|HTTP [^|]+?) \| ([\w.]+) \| (\d+) \| (\d+) \| ([\d,]+) \|"
    row += r".*\| (\d+) \| [\d,]+ \|$"  # ... errors, request bytes
    rows = re.findall(row, report, re.M)
    cases = [(1, 1), (2, 1), (3, 4)]  # (calls in flight, digits per call)
    expected = {("gRPC ModelInfer", "grpc.aio", c, n) for c, n in cases}
    expected |= {(name, g, c, n) for name in PROTOCOLS[1:] for g in generators for c, n in cases}
    assert {(name, g, int(c), int(n)) for name, g, c, n, _, _ in rows} == expected
    assert len(rows) == len(expected)
    assert all(int(rate.replace(",", "")) > 0 and errors == "0" for *_, rate, errors in rows)
    ratio = r"^\| [14] \| [123] \| \w+ \| [\d,]+ \| [\d.]+× \| [\d.]+× \| [\d.]+× \| [+-][\d.]+ ms \|"
    assert len(re.findall(ratio, report, re.M)) == len(cases) * len(generators)
    saved = re.findall(r"^- against HTTP v2 (JSON|binary) \((\w+)\): [+-][\d,]+ µs", report, re.M)
    assert sorted(saved) == sorted((kind, g) for kind in ("JSON", "binary") for g in generators)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--connections", "0"], "--connections must be at least 1"),
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--calls", "0"], "--calls must be at least 1"),
        (["--batch-connections", "0"], "--batch-connections must be at least 1"),
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
