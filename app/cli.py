"""`mnist-serve`: run the service with uvicorn, configured by MNIST_* variables and flags."""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from app.config import Settings, get_settings
from app.main import create_app
from app.operations.logs import skip_unused_record_fields
from app.operations.metrics import multiprocess_mode
from app.records.database import SchemaError, create_database_engine, prepare_schema
from app.serving.model import int8_refusal
from app.serving.versions import serving_policy
from app.startup import STARTUP_FAILURE_EXIT, STARTUP_FAILURE_FILE
from model_store.reporting import fail, load_settings
from model_store.store import ModelStoreError, NoModelError, read_int8

PROG = "mnist-serve"


def port(text: str) -> int:
    if not text.isdecimal() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (1-65535)")
    return int(text)


def grpc_port(text: str) -> int:
    if not text.isdecimal() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (0-65535; 0 turns gRPC off)")
    return int(text)


def worker_count(text: str) -> int:
    if not text.isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of at least 1")
    return int(text)


def check_store(settings: Settings) -> None:
    """A store with nothing to serve, or one that cannot be reached, is the user's to fix: one line,
    before uvicorn starts a worker."""
    try:
        settings.open_store().resolve(settings.model_version)
    except NoModelError as exc:
        fail(PROG, f"{exc}; publish one with mnist-train, or point MNIST_MODEL_STORE at a store that has one")
    except ModelStoreError as exc:
        fail(PROG, str(exc))


def check_int8(settings: Settings) -> None:
    """MNIST_PRECISION=int8 on a version without its int8 export: one line, before a worker starts."""
    if settings.precision != "int8":
        return
    store = settings.open_store()
    try:
        versions = [serving_policy(store, settings.model_version).version, *settings.loaded_versions]
        for version in dict.fromkeys(versions):
            try:
                read_int8(store.open(version))
            except LookupError as exc:
                fail(PROG, int8_refusal(version, exc))
    except ModelStoreError as exc:
        fail(PROG, str(exc))


def worker_app() -> FastAPI:
    """uvicorn's factory in each worker of mnist-serve: a process that serves and does nothing else,
    so it is tuned here for the whole process, which `create_app` never is."""
    skip_unused_record_fields()
    app = create_app()
    # The imported libraries (FastAPI, pydantic, NumPy, ONNX Runtime's bindings) leave about 100,000
    # long-lived objects; frozen, a full collection no longer walks them (docs/performance.md).
    gc.freeze()
    return app


def check_database(settings: Settings) -> None:
    """A database whose schema this code cannot use: one line, before a worker starts. One that
    does not answer is left to the workers: inference serves without it."""
    if not settings.prediction_log:
        return
    engine = create_database_engine(settings.database_url)
    try:
        prepare_schema(engine, settings.database_migrate)
    except SchemaError as exc:
        fail(PROG, str(exc))
    except OperationalError:
        pass
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(PROG, get_settings)
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--host", default=settings.host, help="env MNIST_HOST")
    parser.add_argument("--port", type=port, default=settings.port, help="env MNIST_PORT")
    parser.add_argument(
        "--grpc-port", type=grpc_port, default=settings.grpc_port, help="env MNIST_GRPC_PORT (0: no gRPC)"
    )
    parser.add_argument("--workers", type=worker_count, default=settings.workers, help="env MNIST_WORKERS")
    args = parser.parse_args(argv)
    check_store(settings)
    check_int8(settings)
    check_database(settings)
    # The workers read their settings from the environment: the gRPC server listens on the port
    # given here, on the HTTP host given here, and each
    # worker sizes ONNX Runtime's threads to its share of the cores among the workers given here.
    os.environ["MNIST_GRPC_PORT"] = str(args.grpc_port)
    os.environ["MNIST_HOST"] = args.host
    os.environ["MNIST_WORKERS"] = str(args.workers)
    get_settings.cache_clear()
    if args.workers > 1 and not multiprocess_mode():
        # Workers share one metrics directory so /metrics adds up every worker, not just one.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mnist-metrics-")
    failure = Path(tempfile.mkdtemp(prefix="mnist-serve-")) / "startup-failed"
    os.environ[STARTUP_FAILURE_FILE] = str(failure)
    uvicorn.run(
        "app.cli:worker_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level,
        access_log=False,  # the service writes its own access line, with request id and version
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
    )
    if failure.exists():
        sys.stderr.write(f"{PROG}: startup failed: {failure.read_text()}\n")
        sys.exit(STARTUP_FAILURE_EXIT)


if __name__ == "__main__":
    main()
