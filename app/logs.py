"""Logging for the service: the `app` loggers write one JSON object per line (or plain text)."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

_HANDLER_NAME = "mnist-serve"


def configure_logging(json_lines: bool, level: str) -> None:
    """Idempotent: whether uvicorn was started by mnist-serve or directly, `app.*` logs the same way."""
    logger = logging.getLogger("app")
    logger.setLevel(level.upper())
    if any(handler.get_name() == _HANDLER_NAME for handler in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    if json_lines:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields={"levelname": "level"}
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
