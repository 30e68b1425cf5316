"""What the service holds while it runs, created in the lifespan and reached through `deps`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from app.config import Settings
from app.operations.metrics import Metrics
from app.serving.inference import BatchResult, ModelHolder
from app.serving.reload import ModelManager
from model_store.mnist_data import MnistSplit


class Predictor(Protocol):
    async def predict(self, images: np.ndarray) -> BatchResult: ...

    def close(self) -> None: ...


@dataclass
class ServiceState:
    settings: Settings
    holder: ModelHolder
    predictor: Predictor
    manager: ModelManager
    metrics: Metrics
    test_set: MnistSplit | None
    test_set_error: str | None = None
    # Whole-test-set scores, per model version: the test set never changes while we run.
    accuracy_cache: dict[int, BatchResult] = field(default_factory=dict)
