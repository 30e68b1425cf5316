"""Waiting on a condition the test controls, never on the machine's speed."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout: float = 60.0, interval: float = 0.02) -> None:
    """Poll `condition()` until it is true; fails the test if `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        time.sleep(interval)
