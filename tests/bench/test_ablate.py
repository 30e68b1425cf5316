"""bench.ablate: the service with parts really taken out, served beside the empty endpoint."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.ablate import main
from bench.ablated_app import PARTS, WITHOUT_VARIABLE
from bench.servers import service_env, start_server
from model_store.mnist_data import load_split
from tests.app.conftest import encode
from tests.conftest import assert_argument_refused

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")


def json_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def served(trained_store: Path, mnist_dir: Path, parts: str, tmp_path: Path) -> dict[str, object]:
    """What the service without `parts` answers and records for a 7, noise and an oversized body."""
    test = load_split(mnist_dir, "test")
    assert test.labels[0] == 7
    noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    logs = tmp_path / (parts.replace(",", "-") or "whole")
    logs.mkdir()
    env = service_env(trained_store, mnist_dir, MNIST_LOG_LEVEL="info", **{WITHOUT_VARIABLE: parts})
    server = start_server("ablated", 1, env, log_dir=logs)
    try:
        seven = httpx.post(f"{server.url}/predict", files={"file": encode(test.images[0])}).json()
        scribble = httpx.post(f"{server.url}/predict", files={"file": encode(noise)}).json()
        oversized = httpx.post(f"{server.url}/predict", content=b"\0" * (4 * 1024 * 1024 + 1))
        metrics = httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()
    return {
        "seven": seven["prediction"],
        "noise": scribble["verdict"],
        "oversized": oversized.status_code,
        "counted": 'route="/predict"' in metrics,
        "logged": any(line.get("route") == "/predict" for line in json_lines(logs / "ablated-1.log")),
    }


def test_each_part_taken_out_is_really_gone(trained_store: Path, mnist_dir: Path, tmp_path: Path) -> None:
    whole = served(trained_store, mnist_dir, "", tmp_path)
    assert whole == {"seven": 7, "noise": "not_a_digit", "oversized": 413, "counted": True, "logged": True}

    stripped = served(trained_store, mnist_dir, "access-log,metrics,body-limit,verdict", tmp_path)
    # The forward pass stays: still a 7; the noise is no longer judged.
    assert stripped == {"seven": 7, "noise": "digit", "oversized": 400, "counted": False, "logged": False}

    # Without the model every answer is the constant one.
    assert served(trained_store, mnist_dir, "model", tmp_path)["seven"] == 8


@needs_wrk
def test_it_reports_each_variant_against_the_empty_endpoint(
    trained_store: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--store", str(trained_store), "--data-dir", str(mnist_dir), "--without", "model", "verdict"]
    argv += ["--workers", "1", "--connections", "2", "--rounds", "2", "--seconds", "1", "--warmup", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    row = re.compile(r"^\| ([a-z -]+) \| ([\d,]+, [\d,]+) \| [\d.]+ ms \| [\d.]+x \|$", re.MULTILINE)
    rows = dict(row.findall(out))
    assert list(rows) == [
        "empty endpoint",
        "the whole service",
        "without model",
        "without verdict",
        "without all of them",
    ]
    assert all(int(rate.replace(",", "")) > 0 for runs in rows.values() for rate in runs.split(", "))
    assert "| empty endpoint | " in out and "| 1.00x |" in out


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--without", "tracing"], f"--without tracing: not a part; choose from {', '.join(PARTS)}"),
        (["--store", "/no/such/store"], "--store /no/such/store: no such file or folder"),
    ],
)
def test_a_bad_argument_is_one_line_before_anything_starts(
    mnist_dir: Path, args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_argument_refused(
        main, ["--store", str(mnist_dir), "--data-dir", str(mnist_dir), *args], words, capsys
    )
