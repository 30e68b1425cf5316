"""Prometheus metrics of one service instance.

With several uvicorn workers, set PROMETHEUS_MULTIPROC_DIR (mnist-serve does it for you) and
/metrics aggregates every worker's numbers, as prometheus-client's multiprocess mode does.
"""

from __future__ import annotations

import contextlib
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
        self._http_metrics()
        self._grpc_metrics()
        self._batching_metrics()
        self._model_metrics()
        self._shadow_metrics()
        self._drift_metrics()
        self._api_keys_metrics()
        self._prediction_log_metrics()

    def _http_metrics(self) -> None:
        """HTTP requests: counts, latency and load, overall and per model version."""
        self.requests = Counter(
            "mnist_http_requests",
            "HTTP requests served",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mnist_http_request_duration_seconds",
            "Time from request to response",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "mnist_http_requests_in_progress",
            "HTTP requests received and not yet answered (a load signal for autoscaling)",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        # Per model version, for the requests a version was chosen for: p99 per version, errors per version.
        self.version_latency = Histogram(
            "mnist_model_request_duration_seconds",
            "Time from request to response, by the model version that answered",
            ["route", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.version_errors = Counter(
            "mnist_model_request_errors",
            "Requests that ended in an error after a model version was chosen for them",
            ["route", "version", "status"],
            registry=self.registry,
        )
        self.request_images = Histogram(
            "mnist_request_images",
            "Images per inference request, by the protocol that brought it (http, grpc)",
            ["protocol"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 10_000),
            registry=self.registry,
        )

    def _grpc_metrics(self) -> None:
        """gRPC calls: counts, latency and load."""
        self.grpc_requests = Counter(
            "mnist_grpc_requests", "gRPC calls served", ["method", "code"], registry=self.registry
        )
        self.grpc_in_progress = Gauge(
            "mnist_grpc_calls_in_progress",
            "gRPC calls received and not yet answered",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.grpc_latency = Histogram(
            "mnist_grpc_request_duration_seconds",
            "Time from gRPC call to response",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def _batching_metrics(self) -> None:
        """The forward passes: digits predicted, images per pass, time queued."""
        self.predictions = Counter("mnist_predictions", "Predicted digits", ["digit"], registry=self.registry)
        self.batch_size = Histogram(
            "mnist_batch_size",
            "Images per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 10_000),
            registry=self.registry,
        )
        self.queue_delay = Histogram(
            "mnist_batch_queue_delay_seconds",
            "Time a request waited in the batching queue",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def _model_metrics(self) -> None:
        """The loaded versions: which serves, their threads, loads, reloads, size and warm-up."""
        self.model_loaded = Gauge(
            "mnist_model_loaded",
            "1 for the model version this worker serves",
            ["name", "version"],
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        # One series per worker process: what each sized its sessions to (`MNIST_RUNTIME_THREADS`,
        # or its share of the cores among `MNIST_WORKERS`).
        self.runtime_threads = Gauge(
            "mnist_onnxruntime_threads",
            "ONNX Runtime's intra-op threads per session in this worker",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.load_failures = Counter(
            "mnist_model_load_failures",
            "Model versions that failed to load or validate",
            registry=self.registry,
        )
        self.reloads = Counter(
            "mnist_model_reloads", "Successful switches to another version", registry=self.registry
        )
        self.weight_bytes = Gauge(
            "mnist_model_weight_bytes",
            "Memory of a loaded version's weights",
            ["version"],
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.warmup_seconds = Gauge(
            "mnist_model_warmup_seconds",
            "Seconds a loaded version took to load, compile and warm up",
            ["version"],
            registry=self.registry,
            multiprocess_mode="liveall",
        )

    def _shadow_metrics(self) -> None:
        """A shadow candidate beside the default: images, agreement, skips and latency."""
        self.shadow_images = Counter(
            "mnist_shadow_images", "Images a shadow candidate ran on", ["candidate"], registry=self.registry
        )
        self.shadow_agreeing = Counter(
            "mnist_shadow_agreeing_images",
            "Images on which a shadow candidate predicted the default's digit",
            ["candidate"],
            registry=self.registry,
        )
        self.shadow_skipped = Counter(
            "mnist_shadow_skipped",
            "Requests not shadowed: queue full or candidate failed",
            ["candidate"],
            registry=self.registry,
        )
        self.shadow_latency = Histogram(
            "mnist_shadow_latency_seconds",
            "Forward-pass wait of shadowed requests, for the default and the shadow candidate",
            ["candidate", "role"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def _drift_metrics(self) -> None:
        """Input drift per version: the statistic and its threshold."""
        # Per worker: each computes the statistic over the digits it answered (liveall adds its pid).
        self.input_drift = Gauge(
            "mnist_input_drift",
            "Drift statistic of the last window of digits a version answered (docs/drift.md)",
            ["version"],
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.input_drift_threshold = Gauge(
            "mnist_input_drift_threshold",
            "The drift statistic's threshold, calibrated when the version was published",
            ["version"],
            registry=self.registry,
            multiprocess_mode="liveall",
        )

    def _api_keys_metrics(self) -> None:
        """Inference requests per API key."""
        self.api_key_requests = Counter(
            "mnist_api_key_requests",
            "Inference requests by API key name (empty: no key or an unknown one) and outcome",
            ["key", "outcome"],
            registry=self.registry,
        )

    def _prediction_log_metrics(self) -> None:
        """The prediction log and the feedback on its answers."""
        self.prediction_log_written = Counter(
            "mnist_prediction_log_written", "Answers written to the prediction log", registry=self.registry
        )
        self.prediction_log_dropped = Counter(
            "mnist_prediction_log_dropped",
            "Answers not logged: the log's queue was full (the database slow or unreachable)",
            registry=self.registry,
        )
        self.feedback = Counter(
            "mnist_feedback",
            "Feedback received, by the version that answered and outcome (correct, wrong, contribution)",
            ["version", "outcome"],
            registry=self.registry,
        )
        self.live_accuracy = Gauge(
            "mnist_live_accuracy",
            "Share of answers with feedback that the feedback says were right, per version",
            ["version"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )

    def observe_batch(self, images: int, queued_seconds: float) -> None:
        self.batch_size.observe(images)
        self.queue_delay.observe(queued_seconds)

    def count_predictions(self, digits: np.ndarray) -> None:
        if len(digits) == 1:  # the common case, without bincount's cost
            self.predictions.labels(str(digits[0])).inc()
            return
        for digit, count in enumerate(np.bincount(digits, minlength=10).tolist()):
            if count:
                self.predictions.labels(str(digit)).inc(count)

    def set_model(self, name: str, version: int, previous: int | None = None) -> None:
        if previous is not None:
            self.model_loaded.labels(name, str(previous)).set(0)
        self.model_loaded.labels(name, str(version)).set(1)

    def observe_shadow(
        self, candidate: str, images: int, agreeing: int, default_seconds: float, shadow_seconds: float
    ) -> None:
        self.shadow_images.labels(candidate).inc(images)
        self.shadow_agreeing.labels(candidate).inc(agreeing)
        self.shadow_latency.labels(candidate, "default").observe(default_seconds)
        self.shadow_latency.labels(candidate, "shadow").observe(shadow_seconds)

    def describe_version(self, version: int, weight_bytes: int, warmup_seconds: float) -> None:
        self.weight_bytes.labels(str(version)).set(weight_bytes)
        self.warmup_seconds.labels(str(version)).set(warmup_seconds)

    def forget_version(self, version: int) -> None:
        for gauge in (self.weight_bytes, self.warmup_seconds, self.input_drift, self.input_drift_threshold):
            with contextlib.suppress(KeyError):
                gauge.remove(str(version))

    def exposition(self) -> bytes:
        if multiprocess_mode():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
