"""Logging for the service: the `app` loggers write one JSON object per line (or plain text)."""

from __future__ import annotations

import atexit
import logging
import sys
from logging.handlers import QueueHandler, QueueListener
from queue import SimpleQueue

from pythonjsonlogger.json import JsonFormatter

_HANDLER_NAME = "mnist-serve"
_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _DeferredQueueHandler(QueueHandler):
    """Queues the record as it is. The standard QueueHandler formats the message on the caller's
    thread first; here the message and the JSON are both built on the listener's thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def configure_logging(json_lines: bool, level: str) -> None:
    """Idempotent: whether uvicorn was started by mnist-serve or directly, `app.*` logs the same way."""
    logger = logging.getLogger("app")
    logger.setLevel(level.upper())
    if any(handler.get_name() == _HANDLER_NAME for handler in logger.handlers):
        return
    output = logging.StreamHandler(sys.stderr)
    output.setFormatter(
        JsonFormatter(_FORMAT, rename_fields={"levelname": "level"})
        if json_lines
        else logging.Formatter(_FORMAT)
    )
    # Formatting and writing happen on the listener's thread: a request pays only for the queue.
    handler = _DeferredQueueHandler(SimpleQueue())
    handler.set_name(_HANDLER_NAME)
    listener = QueueListener(handler.queue, output)
    handler.listener = listener  # type: ignore[attr-defined]  # as Python 3.12 does
    listener.start()
    atexit.register(listener.stop)
    logger.addHandler(handler)
    logger.propagate = False
