"""Why the network chose its digit: integrated gradients (Sundararajan et al., 2017).

A pixel's attribution is its value times the mean gradient of the chosen digit's probability along
the straight path from a black image (MNIST's background: no ink, no evidence) to the input. The
attributions add up to p(input) - p(black), no second model is needed, and it is one batched
backward pass: the `steps` points of the path go through the network together. That still costs
about `steps` forward passes, so explaining stays off the batched fast path (`ExplainService`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from app.serving.inference import ServingModel
from model_store.preprocessing import to_model_input

if TYPE_CHECKING:
    # Imported by the first explanation: a service on ONNX Runtime that explains nothing never
    # loads TensorFlow (model_store.store.LoadedModel).
    import keras
    import tensorflow as tf

STEPS = 32
PREDICTED = -1  # as a target: the digit the network predicts for the image

Attribute = Callable[["tf.Tensor", "tf.Tensor"], tuple["tf.Tensor", "tf.Tensor", "tf.Tensor"]]


class ExplainBusyError(Exception):
    """Every explain slot is taken; the caller should retry later (503 for explain only)."""


def integrated_gradients(model: keras.Model, input_shape: tuple[int, ...], steps: int = STEPS) -> Attribute:
    """A compiled function (images (N, *input_shape) float, targets (N,) int, PREDICTED allowed)
    -> (attributions (N, 28, 28), probabilities (N, 10), targets (N,)). One graph for every N."""
    import tensorflow as tf

    alphas = tf.reshape(tf.linspace(1.0 / steps, 1.0, steps), [1, steps, 1, 1, 1])

    @tf.function(
        input_signature=[tf.TensorSpec([None, *input_shape], tf.float32), tf.TensorSpec([None], tf.int32)]
    )
    def attribute(images: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        probabilities = model(images, training=False)
        predicted = tf.argmax(probabilities, axis=1, output_type=tf.int32)
        targets = tf.where(targets == PREDICTED, predicted, targets)
        path = tf.reshape(alphas * images[:, tf.newaxis], [-1, *input_shape])
        with tf.GradientTape() as tape:
            tape.watch(path)
            along = model(path, training=False)
            chosen = tf.gather(along, tf.repeat(targets, steps)[:, tf.newaxis], axis=1, batch_dims=1)
        gradients = tf.reshape(tape.gradient(chosen, path), [-1, steps, *input_shape])
        attributions = tf.reduce_mean(gradients, axis=1) * images
        return attributions[..., 0], probabilities, targets

    return attribute


@dataclass(frozen=True)
class Explanation:
    digit: int  # the digit explained (the predicted one unless asked otherwise)
    attributions: np.ndarray  # (28, 28) float32, in units of probability
    probabilities: np.ndarray  # (10,)

    @property
    def runner_up(self) -> int:
        return int(np.argsort(self.probabilities)[-2])


class Explainer:
    """Integrated-gradients maps for one model version."""

    def __init__(self, model: keras.Model, input_shape: tuple[int, ...], steps: int = STEPS) -> None:
        self.steps = steps
        self._attribute = integrated_gradients(model, input_shape, steps)

    def explain(self, images: np.ndarray, targets: np.ndarray | None = None) -> list[Explanation]:
        """Model inputs (N, 28, 28, 1) float32 -> one explanation each."""
        import tensorflow as tf

        wanted = np.full(len(images), PREDICTED) if targets is None else targets
        attributions, probabilities, chosen = self._attribute(
            tf.constant(images, tf.float32), tf.constant(wanted, tf.int32)
        )
        return [
            Explanation(int(digit), a, p)
            for digit, a, p in zip(chosen.numpy(), attributions.numpy(), probabilities.numpy(), strict=True)
        ]


class ExplainService:
    """Explaining beside the fast path: its own threads, at most `concurrency` explanations at a
    time, and a short wait for a slot (`wait_seconds`) instead of a queue: past it the caller hears
    that explain is busy (ExplainBusyError -> 503), so a flood of explain requests can neither take
    the forward-pass thread nor pile up work, and plain predictions never wait for them."""

    def __init__(self, concurrency: int, wait_seconds: float = 1.0) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._wait = wait_seconds
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="explain")
        self._latest: tuple[ServingModel, Explainer] | None = None

    async def explain(self, serving: ServingModel, pixels: np.ndarray) -> list[Explanation]:
        """uint8 digits (N, 28, 28) in MNIST polarity, explained by `serving`'s network."""
        try:
            await asyncio.wait_for(self._slots.acquire(), self._wait)
        except TimeoutError as exc:
            raise ExplainBusyError(f"every explain slot stayed busy for {self._wait} s") from exc
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._threads, self._explain, serving, pixels)
        finally:
            self._slots.release()

    def _explain(self, serving: ServingModel, pixels: np.ndarray) -> list[Explanation]:
        return self.explainer(serving).explain(to_model_input(pixels, serving.loaded.metadata.input))

    def explainer(self, serving: ServingModel) -> Explainer:
        """One traced graph for the version being served, built on its first explanation (or by
        calling this ahead of time, blocking)."""
        latest = self._latest
        if latest is None or latest[0] is not serving:
            spec = serving.loaded.metadata.input
            latest = self._latest = (serving, Explainer(serving.loaded.model, spec.shape))
        return latest[1]

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)
