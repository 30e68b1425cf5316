"""What the service holds while it runs, created in the lifespan and reached through `deps`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from opentelemetry.trace import Tracer

from app.config import Settings
from app.operations.api_keys import ApiKeys, RateLimiter
from app.operations.metrics import Metrics
from app.serving.explain import ExplainService
from app.serving.inference import BatchResult, ModelHolder, ServingModel
from app.serving.reload import ModelManager
from app.serving.router import VersionRouter
from model_store.mnist_data import MnistSplit


class Predictor(Protocol):
    async def predict(self, images: np.ndarray, model: ServingModel | None = None) -> BatchResult: ...

    def close(self) -> None: ...


@dataclass
class ServiceState:
    settings: Settings
    holder: ModelHolder
    predictor: Predictor
    manager: ModelManager
    metrics: Metrics
    explainer: ExplainService
    test_set: MnistSplit | None
    test_set_error: str | None = None
    api_keys: ApiKeys | None = None
    rate_limiter: RateLimiter | None = None
    router: VersionRouter = field(init=False)
    tracer: Tracer | None = None
    accuracy_runs: AccuracyRuns = field(default_factory=lambda: AccuracyRuns())

    def __post_init__(self) -> None:
        self.router = VersionRouter(self.holder, self.manager, self.predictor, self.metrics)


class AccuracyRuns:
    """Whole-test-set scores, per model version: the test set never changes while we run, so each
    version is scored at most once, and callers arriving while it runs wait for that same run
    instead of starting their own (a cold cache is not a lever for a denial of service)."""

    def __init__(self) -> None:
        self._runs: dict[int, asyncio.Future[BatchResult]] = {}

    async def get(self, version: int, compute: Callable[[], Awaitable[BatchResult]]) -> BatchResult:
        run = self._runs.get(version)
        if run is None or (run.done() and (run.cancelled() or run.exception() is not None)):
            run = self._runs[version] = asyncio.ensure_future(compute())
        # Shielded: a caller that goes away does not cancel the run the others wait for.
        return await asyncio.shield(run)
