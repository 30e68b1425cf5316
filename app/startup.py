"""How a worker that fails to start tells `mnist-serve`, whose uvicorn supervisor would exit 0."""

from __future__ import annotations

import os
from pathlib import Path

# uvicorn's multi-worker supervisor exits 0 when workers fail to start; a worker whose startup
# fails leaves its reason in this file, so that mnist-serve can exit non-zero in every mode.
STARTUP_FAILURE_FILE = "MNIST_SERVE_STARTUP_FAILURE_FILE"
STARTUP_FAILURE_EXIT = 3


def record_startup_failure(exc: BaseException) -> None:
    path = os.environ.get(STARTUP_FAILURE_FILE)
    if path:
        Path(path).write_text(f"{type(exc).__name__}: {exc}")
