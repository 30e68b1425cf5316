"""Switching the served version without a restart.

A candidate version is loaded, validated and warmed up off the event loop while the old one keeps
serving; only then is the holder's reference swapped. Requests already in a forward pass finish on
the model they started with. A version that fails is refused, logged, counted, and not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np

from app.operations.metrics import Metrics
from app.serving.inference import ModelHolder, ServingModel
from model_store.pins import clear_pin, read_pin, write_pin
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


@dataclass(frozen=True)
class ServingPolicy:
    """Which version should be served, and who decided: the MNIST_MODEL_VERSION setting, an
    operator's pin through the admin API (kept in the store, see model_store.pins), or the newest."""

    source: Literal["setting", "admin", "newest"]
    version: int
    pinned_by: str | None = None
    pinned_at: datetime | None = None


def serving_policy(store: ModelStore, setting: int | None) -> ServingPolicy:
    """Reads the store (blocking). The setting wins over a pin; a pin over the newest version."""
    if setting is not None:
        return ServingPolicy("setting", setting, "MNIST_MODEL_VERSION")
    pin = read_pin(store)
    if pin is not None:
        return ServingPolicy("admin", pin.version, pin.pinned_by, pin.pinned_at)
    return ServingPolicy("newest", store.resolve())


class ModelManager:
    def __init__(
        self,
        store: ModelStore,
        holder: ModelHolder,
        metrics: Metrics,
        setting: int | None,
        warmup_batch: int,
    ) -> None:
        self.store = store
        self.holder = holder
        self.metrics = metrics
        self.setting = setting
        self.warmup_batch = warmup_batch
        self.refused: dict[int, str] = {}
        self.completed_polls = 0
        self._lock = asyncio.Lock()

    async def policy(self) -> ServingPolicy:
        return await asyncio.to_thread(serving_policy, self.store, self.setting)

    async def switch_to(self, version: int | None = None) -> ServingModel:
        """Serve `version` (default: what the policy says). Raises ReloadError, old one kept."""
        async with self._lock:
            target = version if version is not None else (await self.policy()).version
            if target == self.holder.current.version:
                return self.holder.current
            return self._swap(await self._load(target))

    async def pin(self, version: int, pinned_by: str) -> ServingModel:
        """Serve `version` on every worker until an operator says otherwise, restarts included."""
        self._refuse_over_setting(version)
        async with self._lock:
            current = self.holder.current
            candidate = current if version == current.version else await self._load(version)
            try:
                await asyncio.to_thread(write_pin, self.store, version, pinned_by)
            except ModelStoreError as exc:
                raise ReloadError(str(exc)) from exc
            return self._swap(candidate)

    async def follow_newest(self) -> ServingModel:
        """Drop an operator's pin: every worker goes back to following the newest version."""
        self._refuse_over_setting(None)
        try:
            await asyncio.to_thread(clear_pin, self.store)
        except ModelStoreError as exc:
            raise ReloadError(str(exc)) from exc
        return await self.switch_to()

    def _refuse_over_setting(self, version: int | None) -> None:
        if self.setting is not None and version != self.setting:
            raise ReloadError(
                f"MNIST_MODEL_VERSION pins version {self.setting}; change that setting to serve another"
            )

    async def _load(self, version: int) -> ServingModel:
        try:
            return await asyncio.to_thread(load_serving_model, self.store, version, self.warmup_batch)
        except ModelStoreError as exc:
            self.refused[version] = str(exc)
            self.metrics.load_failures.inc()
            log.error(
                "refused model version %s, still serving %s: %s", version, self.holder.current.version, exc
            )
            raise ReloadError(str(exc)) from exc

    def _swap(self, candidate: ServingModel) -> ServingModel:
        previous = self.holder.current
        if candidate is not previous:
            self.holder.current = candidate
            self.metrics.reloads.inc()
            self.metrics.set_model(candidate.name, candidate.version, previous=previous.version)
            log.info(
                "now serving %s version %s (was %s)", candidate.name, candidate.version, previous.version
            )
        return candidate

    async def poll(self, interval_seconds: float) -> None:
        """Follow the store's policy: a pin made through any worker, or else the newest version."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                wanted = (await self.policy()).version
                if wanted != self.holder.current.version and wanted not in self.refused:
                    # A refusal is logged and counted in _load; the old version keeps serving.
                    with contextlib.suppress(ReloadError):
                        await self.switch_to(wanted)
            except ModelStoreError as exc:
                log.warning(
                    "cannot read the store's policy, still serving %s: %s", self.holder.current.version, exc
                )
            self.completed_polls += 1
