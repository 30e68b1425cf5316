"""bench.prediction_log: /predict with the log off, on SQLite and on PostgreSQL, as ratios."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bench.prediction_log import main
from tests.conftest import assert_argument_refused
from tests.support.postgres import PostgresServer


@pytest.mark.slow  # servers and a database
@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
def test_it_measures_every_variant_and_writes_the_ratios(
    trained_store: Path, mnist_dir: Path, postgres: PostgresServer, tmp_path: Path
) -> None:
    out = tmp_path / "prediction-log.md"
    argv = ["--store", str(trained_store), "--data-dir", str(mnist_dir), "--postgres-url", postgres.url]
    argv += ["--workers", "1", "--connections", "2", "--rounds", "1", "--seconds", "1", "--warmup", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    report = out.read_text()
    rows = re.findall(r"^\| (off|sqlite|postgresql) \| [\d,]+ \|.* \| (\d+\.\d\d)x \|$", report, re.MULTILINE)
    assert [name for name, _ in rows] == ["off", "sqlite", "postgresql"]
    assert rows[0][1] == "1.00" and all(float(ratio) > 0 for _, ratio in rows)
    assert str(trained_store) not in report and postgres.url not in report


def test_arguments_are_checked_before_any_server_starts(capsys: pytest.CaptureFixture[str]) -> None:
    assert_argument_refused(
        main, ["--store", "nowhere", "--data-dir", "nowhere"], "--store nowhere: no such file", capsys
    )
