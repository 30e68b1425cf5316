"""Switching the served version without a restart.

A candidate version is loaded, validated and warmed up off the event loop while the old one keeps
serving; only then is the holder's reference swapped. Requests already in a forward pass finish on
the model they started with. A version that fails is refused, logged, counted, and not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import numpy as np

from app.operations.metrics import Metrics
from app.serving.inference import ModelHolder, ServingModel
from model_store.preprocessing import IMAGE_SIDE
from model_store.store import ModelStore, ModelStoreError

log = logging.getLogger(__name__)


class ReloadError(Exception):
    pass


def load_serving_model(store: ModelStore, version: int | None, warmup_batch: int) -> ServingModel:
    """Load, compile and check a version: it must turn a blank image into 10 probabilities."""
    serving = ServingModel.compile(store.load(version), warmup_batch_sizes=(1, warmup_batch))
    probabilities = serving.forward(np.zeros((2, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8))
    if probabilities.shape != (2, 10) or not np.allclose(probabilities.sum(axis=1), 1, atol=1e-3):
        raise ModelStoreError(f"{serving.loaded.path}: outputs are not softmax probabilities")
    return serving


class ModelManager:
    def __init__(
        self,
        store: ModelStore,
        holder: ModelHolder,
        metrics: Metrics,
        pinned: int | None,
        warmup_batch: int,
    ) -> None:
        self.store = store
        self.holder = holder
        self.metrics = metrics
        self.pinned = pinned
        self.warmup_batch = warmup_batch
        self.refused: dict[int, str] = {}
        self._lock = asyncio.Lock()

    def wanted_version(self) -> int:
        return self.pinned if self.pinned is not None else self.store.resolve()

    async def switch_to(self, version: int | None = None) -> ServingModel:
        """Serve `version` (default: the pinned or newest one). Raises ReloadError, old one kept."""
        async with self._lock:
            target = version if version is not None else await asyncio.to_thread(self.wanted_version)
            current = self.holder.current
            if target == current.version:
                return current
            try:
                candidate = await asyncio.to_thread(load_serving_model, self.store, target, self.warmup_batch)
            except ModelStoreError as exc:
                self.refused[target] = str(exc)
                self.metrics.load_failures.inc()
                log.error("refused model version %s, still serving %s: %s", target, current.version, exc)
                raise ReloadError(str(exc)) from exc
            self.holder.current = candidate
            self.metrics.reloads.inc()
            self.metrics.set_model(candidate.name, candidate.version, previous=current.version)
            log.info("now serving %s version %s (was %s)", candidate.name, target, current.version)
            return candidate

    async def poll(self, interval_seconds: float) -> None:
        """Follow the store: switch when a newer version appears (not when a version is pinned)."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                newest = await asyncio.to_thread(self.store.resolve)
            except ModelStoreError:
                continue
            if newest != self.holder.current.version and newest not in self.refused:
                # A refusal is logged and counted in switch_to; the old version keeps serving.
                with contextlib.suppress(ReloadError):
                    await self.switch_to(newest)
