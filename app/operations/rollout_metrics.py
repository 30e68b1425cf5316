"""The automatic rollout's Prometheus metrics, a group of their own on the service's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # Counted by the one worker that wins each decision, so the sum over workers is the truth.
        self.decisions = Counter(
            "mnist_rollout_decisions",
            "Automatic rollout decisions: started, promoted, rolled_back, stopped (by the operator)",
            ["decision", "decided_by"],
            registry=registry,
        )
        self.canary_version = Gauge(
            "mnist_rollout_canary_version",
            "The version an automatic canary runs, 0 when none",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.ticks = Counter(
            "mnist_rollout_ticks",
            "Looks of the rollout controller at the store and the database (shows it alive)",
            registry=registry,
        )
