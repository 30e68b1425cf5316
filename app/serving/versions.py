"""The version manager: which versions are loaded and which one answers, switched without a restart.

It follows the store's policy (the MNIST_MODEL_VERSION setting, an operator's pin, else the newest
version), keeps the versions asked for loaded beside the default, runs a canary's or a shadow's
candidate, and polls the store so that every worker follows a change made through any of them.

A candidate version is loaded, validated and warmed up off the event loop while the old one keeps
serving; only then is the holder's reference swapped. Requests already in a forward pass finish on
the model they started with. A version that fails is refused, logged, counted, and not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np

from app.operations.metrics import Metrics
from app.serving.drift import DriftMonitor
from app.serving.model import ModelHolder, ServingModel
from app.serving.runtimes import DEFAULT_RUNTIME, RuntimeChoice
from model_store.pins import (
    ROLLOUT,
    Routing,
    clear_pin,
    clear_routing,
    read_pin,
    read_routing,
    write_pin,
    write_routing,
)
from model_store.preprocessing import IMAGE_SIDE
from model_store.store import ModelStore, ModelStoreError, StoreUnavailableError

log = logging.getLogger(__name__)


class ReloadError(Exception):
    pass


def load_serving_model(
    store: ModelStore, version: int | None, warmup_batch: int, runtime: RuntimeChoice = DEFAULT_RUNTIME
) -> ServingModel:
    """Load, compile and check a version: it must turn a blank image into 10 probabilities.
    On ONNX Runtime the Keras model is not read (`LoadedModel.model`), so neither is TensorFlow."""
    serving = ServingModel.compile(store.open(version), runtime=runtime)
    serving.warm_up((1, warmup_batch))
    probabilities = serving.forward(np.zeros((2, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8))
    if probabilities.shape != (2, 10) or not np.allclose(probabilities.sum(axis=1), 1, atol=1e-3):
        raise ModelStoreError(f"{serving.loaded.path}: outputs are not softmax probabilities")
    return serving


@dataclass(frozen=True)
class VersionDetails:
    """What loading a version cost: its weights' memory and the seconds to load, compile and warm up."""

    weight_bytes: int
    warmup_seconds: float


@dataclass(frozen=True)
class ServingPolicy:
    """Which version should be served, and who decided: the MNIST_MODEL_VERSION setting, an
    operator's pin through the admin API (kept in the store, see model_store.pins), the automatic
    rollout's stable version (a pin too), or the newest."""

    source: Literal["setting", "admin", "rollout", "newest"]
    version: int
    pinned_by: str | None = None
    pinned_at: datetime | None = None


def described(serving: ServingModel) -> str:
    """`version 2 (cnn, full)`: which version, its preset, and whether it is a quick first model."""
    training = serving.loaded.metadata.training
    return f"version {serving.version} ({training.preset}, {'quick' if training.quick else 'full'})"


def serving_policy(store: ModelStore, setting: int | None) -> ServingPolicy:
    """Reads the store (blocking). The setting wins over a pin; a pin over the newest version."""
    if setting is not None:
        return ServingPolicy("setting", setting, "MNIST_MODEL_VERSION")
    pin = read_pin(store)
    if pin is not None:
        source: Literal["admin", "rollout"] = "rollout" if pin.set_by == ROLLOUT else "admin"
        return ServingPolicy(source, pin.version, pin.pinned_by, pin.pinned_at)
    return ServingPolicy("newest", store.resolve())


class VersionManager:
    """The loaded versions and the default among them, kept as the store's policy and routing say."""

    def __init__(
        self,
        store: ModelStore,
        holder: ModelHolder,
        metrics: Metrics,
        drift: DriftMonitor,
        setting: int | None,
        warmup_batch: int,
        keep_versions: tuple[int, ...] = (),
        runtime: RuntimeChoice = DEFAULT_RUNTIME,
    ) -> None:
        self.store = store
        self.holder = holder
        self.metrics = metrics
        self.drift = drift
        self.setting = setting
        self.warmup_batch = warmup_batch
        # Loaded beside the default (TF Serving's specific-versions policy).
        self.keep_versions = keep_versions
        self.runtime = runtime
        self.details: dict[int, VersionDetails] = {}
        # A canary or shadow candidate beside the default, as the store's routing file says.
        self.routing: Routing | None = None
        self.refused: dict[int, str] = {}
        self.completed_polls = 0
        # Under MNIST_ROLLOUT=auto a newer version is a canary first, never the default at once.
        self.automatic = False
        self._lock = asyncio.Lock()

    async def policy(self) -> ServingPolicy:
        policy = await asyncio.to_thread(serving_policy, self.store, self.setting)
        if self.automatic and policy.source == "newest":
            # No pin yet: the rollout's next look pins what is served as its stable version.
            return ServingPolicy("rollout", self.holder.current.version)
        return policy

    async def switch_to(self, version: int | None = None) -> ServingModel:
        """Serve `version` (default: what the policy says). Raises ReloadError, old one kept."""
        async with self._lock:
            target = version if version is not None else (await self.policy()).version
            if target != self.holder.current.version:
                self._swap(self.holder.loaded.get(target) or await self._load(target))
            await self._reconcile()
            return self.holder.current

    async def pin(
        self, version: int, pinned_by: str, set_by: Literal["operator", "rollout"] = "operator"
    ) -> ServingModel:
        """Serve `version` on every worker until an operator (or, for its own pin, the automatic
        rollout) says otherwise, restarts included."""
        self._refuse_over_setting(version)
        async with self._lock:
            candidate = self.holder.get(version) or await self._load(version)
            try:
                await asyncio.to_thread(write_pin, self.store, version, pinned_by, set_by)
            except ModelStoreError as exc:
                raise ReloadError(str(exc)) from exc
            self._swap(candidate)
            await self._reconcile()
            return candidate

    async def follow_newest(self) -> ServingModel:
        """Drop an operator's pin: every worker goes back to following the newest version, or,
        under the automatic rollout, to the rollout, with the version served now as its stable."""
        self._refuse_over_setting(None)
        if self.automatic:
            return await self.pin(self.holder.current.version, "the operator's pin dropped", ROLLOUT)
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

    async def reconcile(self) -> None:
        """Load the versions kept beside the default, unload the others."""
        async with self._lock:
            await self._reconcile()

    def wanted_versions(self) -> set[int]:
        """Reads the store and its routing file (blocking)."""
        try:
            self.routing = read_routing(self.store)
        except ModelStoreError as exc:
            log.error("%s; keeping the routing in force", exc)
        kept = set(self.keep_versions) | {self.holder.current.version}
        return kept | ({self.routing.candidate} if self.routing is not None else set())

    async def route(
        self, mode: Literal["canary", "shadow"], candidate: int, percent: float, by: str
    ) -> Routing:
        """Start (or change) a canary or a shadow, on every worker and across restarts."""
        async with self._lock:
            if candidate == self.holder.current.version:
                raise ReloadError(f"version {candidate} is already the default")
            if self.holder.get(candidate) is None:
                self.holder.loaded = {**self.holder.loaded, candidate: await self._load(candidate)}
            try:
                await asyncio.to_thread(write_routing, self.store, mode, candidate, percent, by)
            except ModelStoreError as exc:
                raise ReloadError(str(exc)) from exc
            await self._reconcile()
            assert self.routing is not None
            return self.routing

    async def promote(self, by: str) -> ServingModel:
        """The candidate becomes the default (pinned), and the routing ends."""
        routing = self.routing
        if routing is None:
            raise ReloadError("no canary or shadow is running")
        serving = await self.pin(routing.candidate, by)
        await self.rollback()
        return serving

    async def rollback(self) -> None:
        """End the canary or shadow: every request goes to the default again, on every worker."""
        async with self._lock:
            try:
                await asyncio.to_thread(clear_routing, self.store)
            except ModelStoreError as exc:
                raise ReloadError(str(exc)) from exc
            await self._reconcile()

    async def _reconcile(self) -> None:
        wanted = await asyncio.to_thread(self.wanted_versions)
        loaded = dict(self.holder.loaded)
        for version in sorted(wanted - loaded.keys() - self.refused.keys()):
            with contextlib.suppress(ReloadError):  # logged and counted in _load
                loaded[version] = await self._load(version)
        for version in sorted(loaded.keys() - wanted):
            del loaded[version]
            self.details.pop(version, None)
            self.metrics.forget_version(version)
            self.drift.forget(version)
            log.info("unloaded version %s", version)
        self.holder.loaded = loaded

    def note_loaded(self, serving: ServingModel, seconds: float) -> None:
        details = VersionDetails(serving.weight_bytes(), seconds)
        self.details[serving.version] = details
        self.metrics.describe_version(serving.version, details.weight_bytes, details.warmup_seconds)

    async def _load(self, version: int) -> ServingModel:
        started = time.perf_counter()
        try:
            serving = await asyncio.to_thread(self._load_and_track, version)
            self.note_loaded(serving, time.perf_counter() - started)
            return serving
        except ModelStoreError as exc:
            # A store out of reach says nothing against the version: the next look tries it again.
            if not isinstance(exc, StoreUnavailableError):
                self.refused[version] = str(exc)
            self.metrics.load_failures.inc()
            log.error(
                "refused model version %s, still serving %s: %s", version, self.holder.current.version, exc
            )
            raise ReloadError(str(exc)) from exc

    def _load_and_track(self, version: int) -> ServingModel:
        serving = load_serving_model(self.store, version, self.warmup_batch, self.runtime)
        self.drift.track(serving.loaded)
        return serving

    def _swap(self, candidate: ServingModel) -> ServingModel:
        previous = self.holder.current
        if candidate is not previous:
            self.holder.loaded = {**self.holder.loaded, candidate.version: candidate}
            self.holder.current = candidate
            self.metrics.reloads.inc()
            self.metrics.set_model(candidate.name, candidate.version, previous=previous.version)
            log.info(
                "now serving %s %s in place of %s", candidate.name, described(candidate), described(previous)
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
                await self.reconcile()
            except ModelStoreError as exc:
                log.warning(
                    "cannot read the store's policy, still serving %s: %s", self.holder.current.version, exc
                )
            self.completed_polls += 1
