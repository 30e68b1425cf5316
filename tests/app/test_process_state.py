"""`create_app` leaves the process as it found it: what it tunes for serving lasts only while its
lifespan runs, and what tunes the whole process is `mnist-serve`'s worker start alone.

Each case runs in a fresh interpreter: the state it reads (BLAS threads, the collector, logging's
globals) is the process's, which the other tests' apps share."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from app.config import Settings
from app.main import GC_THRESHOLD
from tests.support.live_server import environment_without_settings
from tests.support.paths import REPO_ROOT

PROCESS_STATE = """
import gc, json, logging
from threadpoolctl import threadpool_info

def process_state():
    return {
        "freeze count": gc.get_freeze_count(),
        "thresholds": gc.get_threshold(),
        "blas threads": sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}),
        "logging caller lookup": logging._srcfile is not None,
        "logging thread names": [logging.logThreads, logging.logProcesses, logging.logMultiprocessing],
    }
"""

APP_OPENED_AND_CLOSED = (
    PROCESS_STATE
    + """
import numpy  # BLAS loaded before the first reading
from fastapi.testclient import TestClient
from app.config import Settings
from app.main import create_app

seen = {"before": process_state()}
with TestClient(create_app(Settings(reload_poll_seconds=0))) as client:
    assert client.get("/test/1").status_code == 200
    seen["during"] = process_state()
seen["after"] = process_state()
print(json.dumps(seen))
"""
)

WORKER_STARTED = (
    PROCESS_STATE
    + """
from app.cli import worker_app
worker_app()
print(json.dumps(process_state()))
"""
)


def run_fresh(script: str, settings: Settings) -> Any:
    env = environment_without_settings() | {
        "PYTHONPATH": str(REPO_ROOT),
        "MNIST_MODEL_STORE": str(settings.model_store),
        "MNIST_DATA_DIR": str(Path(settings.data_dir)),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_building_serving_and_closing_an_app_leaves_the_process_as_it_was(settings: Settings) -> None:
    seen = run_fresh(APP_OPENED_AND_CLOSED, settings)
    before, during, after = seen["before"], seen["during"], seen["after"]
    assert before["blas threads"], "no BLAS library loaded: nothing to compare"
    # While it serves: one BLAS thread and the service's collector threshold.
    assert during["blas threads"] == [1]
    assert during["thresholds"][0] == GC_THRESHOLD
    # Afterwards: nothing of it is left, and nothing was ever frozen or switched off in logging.
    assert after == before
    assert during["freeze count"] == 0 and during["logging caller lookup"] is True


def test_the_worker_start_freezes_imported_objects_and_skips_the_caller_lookup(settings: Settings) -> None:
    started = run_fresh(WORKER_STARTED, settings)
    assert started["freeze count"] > 10_000
    assert started["logging caller lookup"] is False
    assert started["logging thread names"] == [False, False, False]
