"""Prometheus metrics of one service instance.

With several uvicorn workers, set PROMETHEUS_MULTIPROC_DIR (mnist-serve does it for you) and
/metrics aggregates every worker's numbers, as prometheus-client's multiprocess mode does.
"""

from __future__ import annotations

import os

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    def __init__(self) -> None:
        # Each app gets its own registry, so several apps (as in tests) never collide.
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mnist_http_requests", "HTTP requests served", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "mnist_http_request_duration_seconds",
            "Time from request to response",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_progress = Gauge(
            "mnist_http_requests_in_progress",
            "HTTP requests received and not yet answered (a load signal for autoscaling)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.predictions = Counter("mnist_predictions", "Predicted digits", ["digit"], registry=r)
        self.batch_size = Histogram(
            "mnist_batch_size",
            "Images per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 10_000),
            registry=r,
        )
        self.queue_delay = Histogram(
            "mnist_batch_queue_delay_seconds",
            "Time a request waited in the batching queue",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_loaded = Gauge(
            "mnist_model_loaded",
            "1 for the model version this worker serves",
            ["name", "version"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.load_failures = Counter(
            "mnist_model_load_failures", "Model versions that failed to load or validate", registry=r
        )
        self.reloads = Counter("mnist_model_reloads", "Successful switches to another version", registry=r)

    def observe_batch(self, images: int, queued_seconds: float) -> None:
        self.batch_size.observe(images)
        self.queue_delay.observe(queued_seconds)

    def count_predictions(self, digits: np.ndarray) -> None:
        for digit, count in enumerate(np.bincount(digits, minlength=10).tolist()):
            if count:
                self.predictions.labels(str(digit)).inc(count)

    def set_model(self, name: str, version: int, previous: int | None = None) -> None:
        if previous is not None:
            self.model_loaded.labels(name, str(previous)).set(0)
        self.model_loaded.labels(name, str(version)).set(1)

    def exposition(self) -> bytes:
        if multiprocess_mode():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
