"""Which loaded version answers a request, and the shadow that answers none.

Unless a request asks for a version, it goes to the default one, or, while a canary runs, to the
candidate for the canary's share of clients: a hash of the client's API key (or of its request
id) picks the share, so one client keeps seeing one version. A shadow candidate runs on a copy of
the images after the default's answer is decided; its answer is only compared, never returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from app.operations.metrics import Metrics
from app.serving.batcher import BatchResult, OverloadedError
from app.serving.model import ModelHolder, ServingModel
from app.serving.versions import VersionManager
from model_store.store import InvalidVersionError, parse_version

log = logging.getLogger(__name__)


class UnknownVersionError(Exception):
    """The version asked for is not loaded (404)."""


def share_of(key: str) -> float:
    """A stable point in [0, 100) for a client key or request id, the same in every worker."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100


@dataclass
class ShadowStats:
    """What one worker saw of a shadow candidate against the default, since it started shadowing."""

    requests: int = 0
    images: int = 0
    agreeing: int = 0
    skipped: int = 0  # the queue was full or the candidate failed: the shadow gives way
    default_seconds: float = 0.0
    shadow_seconds: float = 0.0


class ShadowPredictor(Protocol):
    async def predict(self, images: np.ndarray, model: ServingModel | None = None) -> BatchResult: ...


class VersionRouter:
    def __init__(
        self, holder: ModelHolder, manager: VersionManager, predictor: ShadowPredictor, metrics: Metrics
    ) -> None:
        self._holder = holder
        self._manager = manager
        self._predictor = predictor
        self._metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()
        self.shadow_stats: dict[int, ShadowStats] = {}

    def choose(self, requested: str | None, client: str) -> ServingModel:
        """The version asked for (must be loaded), else a canary's share, else the default."""
        if requested is not None:
            model = self.loaded(requested)
            if model is None:
                loaded = ", ".join(map(str, sorted(self._holder.loaded)))
                raise UnknownVersionError(f"version {requested!r} is not loaded; loaded versions: {loaded}")
            return model
        routing = self._manager.routing
        if routing is not None and routing.mode == "canary" and share_of(client) < routing.percent:
            candidate = self._holder.get(routing.candidate)
            if candidate is not None:
                return candidate
        return self._holder.current

    def loaded(self, requested: str) -> ServingModel | None:
        """The loaded version a request names (`"3"`), or None: not a version, or not loaded."""
        try:
            return self._holder.get(parse_version(requested))
        except InvalidVersionError:
            return None

    def shadow(self, images: np.ndarray, answered: BatchResult, seconds: float) -> None:
        """Once `answered` is decided: run the shadow candidate, if any, on a copy of `images`."""
        routing = self._manager.routing
        # Only the default's traffic is shadowed: the comparison is candidate against default.
        if routing is None or routing.mode != "shadow" or answered.model is not self._holder.current:
            return
        candidate = self._holder.get(routing.candidate)
        if candidate is None or not len(images):
            return
        task = asyncio.get_running_loop().create_task(
            self._compare(images.copy(), answered, seconds, candidate)
        )
        self._tasks.add(task)  # a task nobody holds may be collected before it runs
        task.add_done_callback(self._tasks.discard)

    async def _compare(
        self, images: np.ndarray, answered: BatchResult, seconds: float, candidate: ServingModel
    ) -> None:
        stats = self.shadow_stats.setdefault(candidate.version, ShadowStats())
        label = str(candidate.version)
        started = time.perf_counter()
        try:
            shadow = await self._predictor.predict(images, candidate)
        except OverloadedError:
            stats.skipped += 1
            self._metrics.shadow_skipped.labels(label).inc()
            return
        except Exception:
            log.warning("shadow version %s failed on a copy of live traffic", label, exc_info=True)
            stats.skipped += 1
            self._metrics.shadow_skipped.labels(label).inc()
            return
        elapsed = time.perf_counter() - started
        agreeing = int((shadow.probabilities.argmax(axis=1) == answered.probabilities.argmax(axis=1)).sum())
        stats.requests += 1
        stats.images += len(images)
        stats.agreeing += agreeing
        stats.default_seconds += seconds
        stats.shadow_seconds += elapsed
        self._metrics.observe_shadow(label, len(images), agreeing, seconds, elapsed)
