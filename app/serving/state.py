"""What the service holds while it runs, created in the lifespan and reached through `deps`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
from opentelemetry.trace import Tracer

from app.config import Settings
from app.operations.api_keys import ApiKeys
from app.operations.metrics import Metrics
from app.operations.rate_limit import RateLimiter
from app.operations.tracing import traced_prediction
from app.records.ids import new_ids
from app.records.writer import Answers, FailedAnswer, PredictionLog
from app.serving.batcher import BatchResult, OverloadedError
from app.serving.drift import DriftMonitor
from app.serving.explain import ExplainService
from app.serving.model import ModelHolder, ServingModel
from app.serving.rollout import RolloutController
from app.serving.router import VersionRouter
from app.serving.versions import VersionManager
from model_store.mnist_data import MnistSplit


class NotServedError(LookupError):
    """The model or version a call names is not served here (HTTP 404, gRPC NOT_FOUND)."""


class Predictor(Protocol):
    async def predict(self, images: np.ndarray, model: ServingModel | None = None) -> BatchResult: ...

    def close(self) -> None: ...


@dataclass
class ServiceState:
    settings: Settings
    holder: ModelHolder
    predictor: Predictor
    manager: VersionManager
    metrics: Metrics
    explainer: ExplainService
    drift: DriftMonitor
    test_set: MnistSplit | None
    test_set_error: str | None = None
    api_keys: ApiKeys | None = None
    rate_limiter: RateLimiter | None = None
    router: VersionRouter = field(init=False)
    tracer: Tracer | None = None
    accuracy_runs: AccuracyRuns = field(default_factory=lambda: AccuracyRuns())
    records: PredictionLog | None = None  # None: MNIST_PREDICTION_LOG=off
    rollout: RolloutController | None = None  # None: MNIST_ROLLOUT=manual

    def __post_init__(self) -> None:
        self.router = VersionRouter(self.holder, self.manager, self.predictor, self.metrics)

    def served_model(self, name: str, version: str | None) -> ServingModel:
        """The default model, or the loaded `version`, if `name` names it; else NotServedError."""
        current = self.holder.current
        if name != current.name:
            raise NotServedError(f"unknown model '{name}'; this server serves '{current.name}'")
        if version is None:
            return current
        model = self.router.loaded(version)
        if model is None:
            loaded = ", ".join(map(str, sorted(self.holder.loaded)))
            raise NotServedError(f"version {version!r} of '{name}' is not loaded; loaded versions: {loaded}")
        return model

    async def predict(
        self,
        images: np.ndarray,
        model: ServingModel,
        protocol: str,
        route: str | None = None,
        api_key: str | None = None,
    ) -> BatchResult:
        """`images` through `model` on the shared predictor, traced, shadowed and counted, whichever
        protocol brought them; OverloadedError when the queue is full. Answers to a `route` get
        prediction ids and are queued for the prediction log (a whole-test-set score has none)."""
        self.metrics.request_images.labels(protocol).observe(len(images))
        started = time.perf_counter()
        try:
            result = await traced_prediction(
                self.tracer, model, images, lambda: self.predictor.predict(images, model)
            )
        except OverloadedError:
            raise  # the service's load, not the version's fault
        except Exception as exc:
            if route is not None and self.records is not None:
                failure = FailedAnswer(
                    datetime.now(UTC), model.version, len(images), f"{type(exc).__name__}: {exc}"
                )
                self.records.submit_failure(failure)
            raise
        seconds = time.perf_counter() - started
        self.router.shadow(images, result, seconds)
        self.drift.observe(model.version, images)
        self.metrics.count_predictions(result.probabilities.argmax(axis=1))
        if route is None:
            return result
        ids = new_ids(len(images))
        if self.records is not None:
            answered = result.model
            self.records.submit(
                Answers(
                    ids,
                    datetime.now(UTC),
                    answered.name,
                    answered.version,
                    answered.precision,
                    route,
                    api_key,
                    images,
                    result.rows,
                    seconds * 1000,
                )
            )
        return replace(result, ids=tuple(ids))


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
