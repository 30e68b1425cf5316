"""The forward pass a version is served with, as both sides must build it.

Serving needs three outputs from one pass: the probabilities, the logits and the penultimate
features (the trust verdict reads the last two). `forward_function` builds that pass from a
version's Keras model; training converts it to ONNX at publish time (`training.onnx_export`) and
serving runs either (`app.serving.runtimes`). What both read from here: the outputs' names, the
export's file names and its metadata section, and whether Keras is installed at all.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

ONNX_FILE = "model.onnx"
INT8_ONNX_FILE = "model.int8.onnx"
INPUT_NAME = "images"
OUTPUTS = ("probabilities", "logits", "features")

# model input (N, *input shape) float32 -> (probabilities, logits, penultimate features)
ForwardOutputs = tuple[np.ndarray, np.ndarray, np.ndarray]
NumpyForward = Callable[[np.ndarray], ForwardOutputs]

# What to do where `keras_installed()` is False: the serving image has neither TensorFlow nor Keras.
INSTALL_KERAS_HINT = "install the `train` extra (pip install 'mnist-serve[train]') or use the full image"


def keras_installed() -> bool:
    """Whether Keras and TensorFlow can be imported here (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("keras", "tensorflow"))


class OnnxExport(BaseModel):
    """The optional `onnx` section of a version's metadata: what the export was made from."""

    model_sha256: str = Field(description="SHA-256 of the model.keras the export was converted from")
    converter: str = Field(description="the converter and ONNX opset that wrote it")
    max_abs_difference: float = Field(
        ge=0, description="largest |probability difference| from Keras on the publish-time check"
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def penultimate(model: keras.Model) -> tuple[keras.Model, keras.layers.Layer]:
    """A model giving the last layer's input (the features), and that last (dense softmax) layer."""
    import keras  # deferred: reading metadata must not load TensorFlow

    last = model.layers[-1]
    return keras.Model(model.inputs[0], last.input), last


def forward_function(
    model: keras.Model, input_shape: tuple[int, ...]
) -> tf.types.experimental.PolymorphicFunction:
    """One graph for every batch size (the signature's None dimension means no retracing): the
    features come out of the same pass; the logits are the last layer before its softmax."""
    import tensorflow as tf

    features_model, last = penultimate(model)

    @tf.function(
        input_signature=[tf.TensorSpec([None, *input_shape], tf.float32, name=INPUT_NAME)], autograph=False
    )
    def forward(x: tf.Tensor) -> dict[str, tf.Tensor]:
        features = features_model(x, training=False)
        logits = tf.matmul(features, last.kernel) + last.bias
        return {"probabilities": tf.nn.softmax(logits), "logits": logits, "features": features}

    return forward
