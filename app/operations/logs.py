"""Logging for the service: the `app` loggers write one JSON object per line (or plain text)."""

from __future__ import annotations

import atexit
import logging
import sys
from logging.handlers import QueueHandler, QueueListener
from queue import SimpleQueue
from typing import TextIO

from pythonjsonlogger.orjson import OrjsonFormatter

_HANDLER_NAME = "mnist-serve"
_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def start_listener(
    queue: SimpleQueue[logging.LogRecord], formatter: logging.Formatter, stream: TextIO
) -> QueueListener:
    """The standard library's listener, writing what `queue` receives to `stream` on its thread."""
    output = logging.StreamHandler(stream)
    output.setFormatter(formatter)
    listener = QueueListener(queue, output, respect_handler_level=True)
    listener.start()
    return listener


def skip_unused_record_fields() -> None:
    """Leave out of every log record what no line of ours shows: the caller's file and line (a walk
    up the stack), the thread, process and multiprocessing names, as the logging HOWTO's
    "Optimization" section describes, so a record costs the event loop less (docs/performance.md).
    Every logger of the process loses them, so only a process that is the service's alone does this
    (`app.cli.worker_app`), never `create_app`."""
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def configure_logging(json_lines: bool, level: str) -> None:
    """Idempotent: whether uvicorn was started by mnist-serve or directly, `app.*` logs the same way."""
    logger = logging.getLogger("app")
    logger.setLevel(level.upper())
    if any(handler.get_name() == _HANDLER_NAME for handler in logger.handlers):
        return
    formatter = (
        # orjson: the same JSON, formatted in less time than the standard library's (docs/performance.md).
        OrjsonFormatter(_FORMAT, rename_fields={"levelname": "level"})
        if json_lines
        else logging.Formatter(_FORMAT)
    )
    # Formatting the JSON and writing it happen on the listener's thread: a request pays for the
    # queue and the message's own formatting (QueueHandler.prepare), not for the stream.
    queue: SimpleQueue[logging.LogRecord] = SimpleQueue()
    handler = QueueHandler(queue)
    handler.set_name(_HANDLER_NAME)
    listener = start_listener(queue, formatter, sys.stderr)
    handler.listener = listener  # type: ignore[attr-defined]  # as Python 3.12 does
    atexit.register(listener.stop)
    logger.addHandler(handler)
    logger.propagate = False


def flush_logs() -> None:
    """Write out what the `app` loggers queued. The listener's thread is stopped (which drains the
    queue) and started again: when uvicorn ends on a signal, it raises the signal again once the
    lifespan is over, and the process dies without running `atexit`, so a service's last lines, its
    shutdown's, would be lost without this."""
    for handler in logging.getLogger("app").handlers:
        listener = getattr(handler, "listener", None)
        if isinstance(listener, QueueListener) and listener._thread is not None:  # type: ignore[attr-defined]
            listener.stop()
            listener.start()
