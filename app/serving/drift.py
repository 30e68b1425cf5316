"""Input drift per served version: the last digits each version answered, against its reference.

Every answer's digits are copied into the version's ring of the last `window` digits (a few
microseconds on the event loop); every `MNIST_DRIFT_INTERVAL_SECONDS` a thread computes the statistic
of each full window that saw new digits (`model_store.drift`, about a millisecond) and sets the
`mnist_input_drift` gauge beside `mnist_input_drift_threshold`. Each worker watches the digits it
answered; a version published without a reference reports no drift.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from app.operations.metrics import Metrics
from model_store.drift import DriftReference, DriftReferenceError, read_drift_reference
from model_store.preprocessing import IMAGE_SIDE
from model_store.store import LoadedModel

log = logging.getLogger(__name__)


class DriftStatus(TypedDict):
    statistic: float | None  # None until the first full window
    threshold: float
    window: int
    seen: int  # digits this worker has seen this version answer
    drifting: bool
    method: str


@dataclass
class _Window:
    reference: DriftReference
    digits: np.ndarray  # a ring of the last `reference.window` digits
    next: int = 0
    seen: int = 0
    measured_at: int = 0  # `seen` when the statistic was last computed
    statistic: float | None = None

    def append(self, images: np.ndarray) -> None:
        size = len(self.digits)
        images = images[-size:]  # of a batch larger than the window, only its last digits stay
        first = min(len(images), size - self.next)
        self.digits[self.next : self.next + first] = images[:first]
        self.digits[: len(images) - first] = images[first:]
        self.next = (self.next + len(images)) % size
        self.seen += len(images)


class DriftMonitor:
    """The windows of the versions this worker serves, and their latest statistics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._windows: dict[int, _Window] = {}
        # Held only to copy digits in (event loop) or out (the thread): microseconds either way.
        self._lock = threading.Lock()

    def track(self, loaded: LoadedModel) -> None:
        """Read the version's reference and start its window (blocking: call it off the event loop).
        A damaged reference is logged and the version served without drift, never refused for it."""
        if loaded.version in self._windows:
            return
        try:
            reference = read_drift_reference(loaded.path, loaded.metadata.files)
        except DriftReferenceError as exc:
            log.warning("version %s is served without drift monitoring: %s", loaded.version, exc)
            return
        if reference is None:
            return
        digits = np.zeros((reference.window, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
        with self._lock:
            self._windows[loaded.version] = _Window(reference, digits)
        self.metrics.input_drift_threshold.labels(str(loaded.version)).set(reference.threshold)

    def forget(self, version: int) -> None:
        with self._lock:
            self._windows.pop(version, None)

    def observe(self, version: int, images: np.ndarray) -> None:
        """Keep the digits `version` just answered; cheap enough for the event loop."""
        window = self._windows.get(version)
        if window is not None:
            with self._lock:
                window.append(images)

    def update(self) -> None:
        """Compute the statistic of every full window that saw new digits (blocking)."""
        for version, window in list(self._windows.items()):
            with self._lock:
                if window.seen == window.measured_at or window.seen < len(window.digits):
                    continue
                digits, window.measured_at = window.digits.copy(), window.seen
            window.statistic = window.reference.statistic(digits)
            self.metrics.input_drift.labels(str(version)).set(window.statistic)

    async def run(self, interval_seconds: float) -> None:
        """Update every `interval_seconds` until cancelled, in a thread."""
        while True:
            await asyncio.sleep(interval_seconds)
            await asyncio.to_thread(self.update)

    def status(self, version: int) -> DriftStatus | None:
        """The version's latest drift on this worker; None when it has no reference here."""
        window = self._windows.get(version)
        if window is None:
            return None
        reference, statistic = window.reference, window.statistic
        return DriftStatus(
            statistic=statistic,
            threshold=reference.threshold,
            window=reference.window,
            seen=window.seen,
            drifting=statistic is not None and reference.drifting(statistic),
            method=reference.method,
        )
