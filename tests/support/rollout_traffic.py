"""Live traffic for the automatic rollout's tests: clients sending real MNIST test digits, and
the true label of every answer sent back as feedback, as users correcting answers would."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from model_store.mnist_data import MnistSplit

IMAGES_PER_REQUEST = 10


@dataclass
class Traffic:
    """What the clients saw: answers per (client id, version that answered), in order."""

    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    requests: int = 0

    def clients_of(self, version: int) -> set[str]:
        return {client for client, answered in self.answers if answered == version}

    def share_of(self, version: int) -> float:
        total = sum(self.answers.values())
        return sum(count for (_, answered), count in self.answers.items() if answered == version) / total


def as_npy(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, images)
    return buffer.getvalue()


def ask(http: httpx.Client, client: str, images: np.ndarray) -> dict[str, Any]:
    """One batch of `images` from `client` (its request id, which the canary's hash splits on)."""
    response = http.post(
        "/predict/batch",
        content=as_npy(images),
        headers={"Content-Type": "application/x-npy", "X-Request-Id": client},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def label(http: httpx.Client, prediction_ids: list[str], labels: np.ndarray) -> None:
    for prediction_id, true_label in zip(prediction_ids, labels.tolist(), strict=True):
        response = http.post("/feedback", json={"prediction_id": prediction_id, "label": true_label})
        assert response.status_code == 201, response.text


def drive(
    https: list[httpx.Client],
    digits: MnistSplit,
    until: Callable[[], bool],
    traffic: Traffic | None = None,
    feedback: bool = True,
    max_requests: int = 2000,
    prefix: str = "client",
    images_per_request: int = IMAGES_PER_REQUEST,
) -> Traffic:
    """Clients `<prefix>-0`, `<prefix>-1`, ... each send one batch of test digits (spread over the
    `https` servers in turn) and label every answer, until `until()` holds; fails past
    `max_requests`."""
    traffic = traffic if traffic is not None else Traffic()
    while not until():
        assert traffic.requests < max_requests, f"still not done after {max_requests} requests"
        n = traffic.requests
        start = n * images_per_request % (len(digits.labels) - images_per_request)
        images = digits.images[start : start + images_per_request]
        http = https[n % len(https)]
        client = f"{prefix}-{n}"
        body = ask(http, client, images)
        traffic.answers[(client, body["model"]["version"])] += images_per_request
        traffic.requests += 1
        if feedback:
            label(http, body["prediction_ids"], digits.labels[start : start + images_per_request])
    return traffic
