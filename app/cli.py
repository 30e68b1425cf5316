"""`mnist-serve`: run the service with uvicorn, configured by MNIST_* variables and flags."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import uvicorn

from app.config import get_settings
from app.operations.metrics import multiprocess_mode
from app.startup import STARTUP_FAILURE_EXIT, STARTUP_FAILURE_FILE


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="mnist-serve", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--workers", type=int, default=settings.workers)
    args = parser.parse_args(argv)
    if args.workers > 1 and not multiprocess_mode():
        # Workers share one metrics directory so /metrics adds up every worker, not just one.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mnist-metrics-")
    failure = Path(tempfile.mkdtemp(prefix="mnist-serve-")) / "startup-failed"
    os.environ[STARTUP_FAILURE_FILE] = str(failure)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level,
        access_log=False,  # the service writes its own access line, with request id and version
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
    )
    if failure.exists():
        sys.stderr.write(f"mnist-serve: startup failed: {failure.read_text()}\n")
        sys.exit(STARTUP_FAILURE_EXIT)


if __name__ == "__main__":
    main()
