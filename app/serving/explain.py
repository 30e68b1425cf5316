"""Why the network chose its digit: a map of what each pixel contributed to the digit's probability.

Two methods, both measured against a black image (MNIST's background: no ink, no evidence):

- **Integrated gradients** (Sundararajan et al., 2017), with TensorFlow. A pixel's
  attribution is its value times the mean gradient of the chosen digit's probability along the
  straight path from black to the input; the attributions add up to p(input) - p(black). One batched
  backward pass through the `steps` points of the path, about `steps` forward passes of work.
- **Occlusion** (Zeiler and Fergus, 2014), the default: forward passes only, on whatever runtime
  serves the version. Each `patch` x `patch` square (every `stride` pixels) is blacked out in turn,
  and the drop in the digit's probability is shared among that square's pixels by their ink,
  averaged over the squares covering each pixel. A model that standardises each image (the `cnn`)
  answers the same for every point of integrated gradients' path but the first few, so its
  gradients there say little; occlusion is not fooled (docs/trust.md, "Why occlusion is the default").

Either costs tens to hundreds of forward passes, so explaining stays off the batched fast path
(`ExplainService`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, get_args

import numpy as np

from app.serving.model import ServingModel
from model_store.preprocessing import NUM_CLASSES, to_model_input

if TYPE_CHECKING:
    # Imported by the first explanation: a service on ONNX Runtime that explains nothing never
    # loads TensorFlow (model_store.store.LoadedModel).
    import keras
    import tensorflow as tf

Method = Literal["integrated_gradients", "occlusion"]
METHODS: tuple[Method, ...] = get_args(Method)
STEPS = 32
PATCH = 4
STRIDE = 2  # with PATCH 4 on 28 pixels: 13 x 13 squares, each interior pixel under 4 of them
# Occluded copies per forward pass: 170 per image would take a Keras cnn of 100 images past 20 GB.
OCCLUSION_BATCH = 512
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
class Attribution:
    digit: int  # the digit explained (the predicted one unless asked otherwise)
    attributions: np.ndarray  # (28, 28) float32, in units of probability
    probabilities: np.ndarray  # (10,)
    method: Method
    steps: int | None = None  # integrated gradients: points on the path
    patch: int | None = None  # occlusion: side of the square blacked out

    @property
    def runner_up(self) -> int:
        return int(np.argsort(self.probabilities)[-2])


class Explains(Protocol):
    def explain(self, images: np.ndarray, targets: np.ndarray | None = None) -> list[Attribution]:
        """Model inputs (N, 28, 28, 1) float32 -> one explanation each (of `targets`, else of the
        predicted digits)."""
        ...


class IntegratedGradients:
    """Integrated-gradients maps for one Keras model."""

    def __init__(self, model: keras.Model, input_shape: tuple[int, ...], steps: int = STEPS) -> None:
        self.steps = steps
        self._attribute = integrated_gradients(model, input_shape, steps)

    def explain(self, images: np.ndarray, targets: np.ndarray | None = None) -> list[Attribution]:
        import tensorflow as tf

        wanted = np.full(len(images), PREDICTED) if targets is None else targets
        attributions, probabilities, chosen = self._attribute(
            tf.constant(images, tf.float32), tf.constant(wanted, tf.int32)
        )
        return [
            Attribution(int(digit), a, p, "integrated_gradients", steps=self.steps)
            for digit, a, p in zip(chosen.numpy(), attributions.numpy(), probabilities.numpy(), strict=True)
        ]


class Occlusion:
    """Occlusion maps from a forward pass: model input (N, *input_shape) -> probabilities (N, 10)."""

    def __init__(
        self,
        forward: Callable[[np.ndarray], np.ndarray],
        input_shape: tuple[int, ...],
        patch: int = PATCH,
        stride: int = STRIDE,
    ) -> None:
        self.patch = patch
        self._forward = forward
        side = input_shape[0]
        starts = range(0, side - patch + 1, stride)
        self._squares = np.zeros((len(starts) ** 2, *input_shape), np.float32)
        for square, (row, column) in zip(self._squares, itertools.product(starts, starts), strict=True):
            square[row : row + patch, column : column + patch] = 1
        self._kept = 1 - self._squares  # 0 inside each square
        self._covering = np.maximum(self._squares.sum(axis=0), 1)  # squares over each pixel

    def explain(self, images: np.ndarray, targets: np.ndarray | None = None) -> list[Attribution]:
        occluded = images[:, np.newaxis] * self._kept  # (N, S, *shape)
        batch = np.concatenate([images, occluded.reshape(-1, *images.shape[1:])])
        probabilities = np.concatenate(
            [self._forward(batch[i : i + OCCLUSION_BATCH]) for i in range(0, len(batch), OCCLUSION_BATCH)]
        )
        originals = probabilities[: len(images)]
        each = probabilities[len(images) :].reshape(len(images), len(self._squares), NUM_CLASSES)
        digits = np.argmax(originals, axis=1) if targets is None else targets
        found = []
        for i, digit in enumerate(digits):
            drops = originals[i, digit] - each[i, :, digit]  # (S,)
            ink = np.abs(images[i]) * self._squares  # (S, *shape): each square's share by its ink
            shares = ink / np.maximum(ink.sum(axis=tuple(range(1, ink.ndim)), keepdims=True), 1e-12)
            attributions = np.tensordot(drops, shares, axes=1) / self._covering
            found.append(
                Attribution(
                    int(digit),
                    attributions[..., 0].astype(np.float32),
                    originals[i],
                    "occlusion",
                    patch=self.patch,
                )
            )
        return found


class ExplainService:
    """Explaining beside the fast path: its own threads, at most `concurrency` explanations at a
    time, and a short wait for a slot (`wait_seconds`) instead of a queue: past it the caller hears
    that explain is busy (ExplainBusyError -> 503), so a flood of explain requests can neither take
    the forward-pass thread nor pile up work, and plain predictions never wait for them."""

    def __init__(self, concurrency: int, method: Method = "occlusion", wait_seconds: float = 1.0) -> None:
        self.method = method
        self._slots = asyncio.Semaphore(concurrency)
        self._wait = wait_seconds
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="explain")
        self._latest: tuple[ServingModel, Explains] | None = None

    async def explain(self, serving: ServingModel, pixels: np.ndarray) -> list[Attribution]:
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

    def _explain(self, serving: ServingModel, pixels: np.ndarray) -> list[Attribution]:
        return self.explainer(serving).explain(to_model_input(pixels, serving.loaded.metadata.input))

    def explainer(self, serving: ServingModel) -> Explains:
        """The explainer of the version being served, made on its first explanation (or by calling
        this ahead of time, blocking: integrated gradients trace a graph)."""
        latest = self._latest
        if latest is None or latest[0] is not serving:
            shape = serving.loaded.metadata.input.shape
            explainer: Explains
            if self.method == "occlusion":
                explainer = Occlusion(lambda images: serving.forward_float(images)[0], shape)
            else:
                explainer = IntegratedGradients(serving.loaded.model, shape)
            latest = self._latest = (serving, explainer)
        return latest[1]

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)
