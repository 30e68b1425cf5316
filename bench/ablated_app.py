"""The service with some of its parts taken out, for `bench/ablate.py`: a measurement, not a setting.

    MNIST_BENCH_WITHOUT=access-log,metrics uvicorn bench.ablated_app:create_app --factory

Each part is replaced by the least that keeps the rest working (a disabled logger, metric updates
that do nothing, a constant answer for the model), so what the service gains without a part is
what that part costs a request.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from fastapi import FastAPI
from prometheus_client import Counter, Gauge, Histogram

from app.main import create_app as create_service
from app.operations.body_limit import BodySizeLimit
from app.serving.model import ServingModel
from model_store.preprocessing import NUM_CLASSES, to_model_input

PARTS = {
    "access-log": "the JSON log line of each request",
    "metrics": "every Prometheus update (requests, latency, batches, predictions)",
    "body-limit": "the middleware answering 413 to an oversized body",
    "verdict": "calibrated confidence and the not-a-digit check (the forward pass stays)",
    "model": "the forward pass and the verdict: a constant answer",
}
WITHOUT_VARIABLE = "MNIST_BENCH_WITHOUT"


class _Nothing:
    """Takes any call and attribute, does nothing: set as a metric's methods, its updates are free."""

    def __getattr__(self, name: str) -> _Nothing:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> _Nothing:
        return self


def _answer_without_verdict(self: ServingModel, images: np.ndarray) -> np.ndarray:
    probabilities = self.forward_float(to_model_input(images, self.loaded.metadata.input))[0]
    # The top probability stands in for the calibrated confidence; verdict 0 is "digit".
    return np.column_stack([probabilities, probabilities.max(axis=1), np.zeros(len(images))]).astype(
        np.float32
    )


def _constant_answer(self: ServingModel, images: np.ndarray) -> np.ndarray:
    row = np.zeros(NUM_CLASSES + 2, np.float32)
    row[[8, NUM_CLASSES]] = 1.0
    return np.tile(row, (len(images), 1))


def without(parts: set[str]) -> None:
    """Take `parts` out of the service this process will create (they patch classes, so once)."""
    if unknown := parts - PARTS.keys():
        raise ValueError(f"unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}")
    if "access-log" in parts:
        logging.getLogger("app.access").disabled = True
    if "metrics" in parts:
        for metric in (Counter, Gauge, Histogram):
            for method in ("labels", "inc", "dec", "set", "observe"):
                if hasattr(metric, method):
                    setattr(metric, method, _Nothing())
    if "verdict" in parts:
        ServingModel.answer = _answer_without_verdict  # type: ignore[method-assign]
    if "model" in parts:
        ServingModel.answer = _constant_answer  # type: ignore[method-assign]


def create_app() -> FastAPI:
    parts = {part for part in os.environ.get(WITHOUT_VARIABLE, "").split(",") if part}
    without(parts)
    app = create_service()
    if "body-limit" in parts:
        app.user_middleware = [entry for entry in app.user_middleware if entry.cls is not BodySizeLimit]
    return app
