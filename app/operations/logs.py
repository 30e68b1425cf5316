"""Logging for the service: the `app` loggers write one JSON object per line (or plain text)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import threading
from logging.handlers import QueueHandler, QueueListener
from queue import SimpleQueue
from typing import TextIO

from pythonjsonlogger.orjson import OrjsonFormatter

_HANDLER_NAME = "mnist-serve"
_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# How long the log thread lets records gather before writing them: a line reaches the log this late.
GATHER_SECONDS = 0.005


class _BurstWriter(logging.StreamHandler):  # type: ignore[type-arg]
    """Formats each record as it comes but writes only on flush: one write for a whole burst."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._pending:
                self.stream.write("".join(self._pending))
                self._pending.clear()
            super().flush()


class _BurstListener(QueueListener):
    """The standard listener, except that it writes what has gathered only when the queue runs dry,
    then lets records gather for `gather_seconds`.

    The standard one wakes for every record and writes it (a system call, and the GIL taken from
    the event loop) once per request. Measured with `python -m bench.ab --scenario predict`, 5
    alternating rounds against the standard listener: /predict answers 0.057 ms sooner at the p50
    at one connection (0.572 ms against 0.629 ms); at 64 connections the rounds showed no clear
    difference either way."""

    def __init__(
        self, queue: SimpleQueue[logging.LogRecord], handler: logging.Handler, gather_seconds: float
    ) -> None:
        super().__init__(queue, handler, respect_handler_level=True)
        self._gather_seconds = gather_seconds
        self._stopping = threading.Event()

    def dequeue(self, block: bool) -> logging.LogRecord:
        if self.queue.empty():  # type: ignore[attr-defined]
            for handler in self.handlers:
                handler.flush()
            self._stopping.wait(self._gather_seconds)  # stop() cuts it short
        return super().dequeue(block)  # type: ignore[no-any-return]

    def start(self) -> None:
        self._stopping.clear()
        super().start()

    def stop(self) -> None:
        self._stopping.set()
        super().stop()
        for handler in self.handlers:
            # As logging.shutdown does: at exit the stream may be closed already.
            with contextlib.suppress(OSError, ValueError):
                handler.flush()


def start_listener(
    queue: SimpleQueue[logging.LogRecord],
    formatter: logging.Formatter,
    stream: TextIO,
    gather_seconds: float = GATHER_SECONDS,
) -> QueueListener:
    """The listener writing what `queue` receives to `stream` on its thread, in bursts."""
    output = _BurstWriter(stream)
    output.setFormatter(formatter)
    listener = _BurstListener(queue, output, gather_seconds)
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
