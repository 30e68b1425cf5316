"""What both peers share: the model file the bench hands them, run the way their users would.

A compiled `tf.function` with a fixed input signature, called on a whole batch (the best practice
the service itself follows), never `model.predict` per image. The pixels are scaled like the store's
input convention: MNIST polarity, times 1/255.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import numpy as np
from PIL import Image

MODEL_PATH_ENV = "BENCH_MODEL_PATH"  # the `.keras` file of the version under test
WORKERS_ENV = "BENCH_WORKERS"
PORT_ENV = "BENCH_PORT"
MAX_BATCH = 128  # the service's default MNIST_BATCH_MAX_SIZE
READY_MARKER = "BENCH_PEER_READY"  # printed once per worker when its model is warm


def workers() -> int:
    return int(os.environ.get(WORKERS_ENV, "1"))


def load_forward() -> Callable[[np.ndarray], np.ndarray]:
    """uint8 digits (N, 28, 28) -> softmax probabilities (N, 10), through one traced graph."""
    import keras
    import tensorflow as tf

    model = keras.saving.load_model(os.environ[MODEL_PATH_ENV], compile=False)
    shape = tuple(model.inputs[0].shape[1:])

    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32)])
    def forward(x: tf.Tensor) -> tf.Tensor:
        return model(x, training=False)

    def run(images: np.ndarray) -> np.ndarray:
        batch = images.reshape((-1, *shape)).astype(np.float32) / np.float32(255)
        return np.asarray(forward(tf.constant(batch)))

    for size in (1, MAX_BATCH):  # trace and warm up before the first request
        run(np.zeros((size, 28, 28), np.uint8))
    print(READY_MARKER, flush=True)
    return run


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.uint8)


def answer(probabilities: np.ndarray) -> dict[str, object]:
    return {"prediction": int(probabilities.argmax()), "probabilities": probabilities.tolist()}
