"""A short soak (the CI-sized version of `python -m bench.soak`): 64 connections on POST /predict
against two real uvicorn workers, zero errors, and no worker's memory growing past the limits."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.soak import Limits, problems, render, run_soak

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="the soak drives the service with wrk"),
]


def test_short_soak_has_no_errors_and_bounded_memory(
    trained_store: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    result = run_soak(
        trained_store, mnist_dir, seconds=12, connections=64, workers=2, warmup_seconds=3, log_dir=tmp_path
    )
    report = render(result, Limits())
    assert result.load.requests_per_second > 0, report
    assert len(result.rss) == 2 and all(len(trace.samples) >= 10 for trace in result.rss), report
    assert problems(result, Limits()) == [], report
