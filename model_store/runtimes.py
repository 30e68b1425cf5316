"""The forward pass serving runs, and its ONNX export for ONNX Runtime.

Serving needs three outputs from one pass: the probabilities, the logits and the penultimate
features (the trust verdict reads the last two). `forward_function` builds that pass as one
`tf.function`; `onnx_bytes` converts the same function to ONNX (tf2onnx). ONNX Runtime runs it
faster than TensorFlow, LiteRT and OpenVINO at the batch sizes that matter (docs/performance.md,
`bench/results/runtimes.md`). The store writes the export at publish time (`export_onnx`), next to
the SavedModel, with the SHA-256 of the `model.keras` it came from, so a stale copy is never served
for other weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

ONNX_FILE = "model.onnx"
INT8_ONNX_FILE = "model.int8.onnx"
ONNX_OPSET = 17
OUTPUTS = ("probabilities", "logits", "features")
# Probabilities of the export may differ from Keras' by float32 rounding only (fused kernels sum in
# another order); anything larger means the conversion changed the network.
ONNX_TOLERANCE = 1e-5
_CHECK_IMAGES = 64

Runtime = Literal["onnxruntime", "tensorflow"]
# auto: the int8 export where the version's metadata proved it the default, else float32.
Precision = Literal["auto", "float32", "int8"]


@dataclass(frozen=True)
class RuntimeChoice:
    """What serving runs the forward pass on: ONNX Runtime on the version's export, or TensorFlow."""

    name: Runtime = "onnxruntime"
    threads: int = 0  # ONNX Runtime's threads per session; 0: one per physical core
    precision: Precision = "auto"  # which ONNX export ONNX Runtime runs


DEFAULT_RUNTIME = RuntimeChoice()

# What to do where `keras_installed()` is False: the serving image has neither TensorFlow nor Keras.
INSTALL_KERAS_HINT = "install the `train` extra (pip install 'mnist-serve[train]') or use the full image"


def keras_installed() -> bool:
    """Whether Keras and TensorFlow can be imported here (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("keras", "tensorflow"))


# model input (N, *input shape) float32 -> (probabilities, logits, penultimate features)
ForwardOutputs = tuple[np.ndarray, np.ndarray, np.ndarray]
NumpyForward = Callable[[np.ndarray], ForwardOutputs]


class OnnxExport(BaseModel):
    """The optional `onnx` section of a version's metadata: what the export was made from."""

    model_sha256: str = Field(description="SHA-256 of the model.keras the export was converted from")
    converter: str = Field(description="the converter and ONNX opset that wrote it")
    max_abs_difference: float = Field(
        ge=0, description="largest |probability difference| from Keras on the publish-time check"
    )


def forward_function(
    model: keras.Model, input_shape: tuple[int, ...]
) -> tf.types.experimental.PolymorphicFunction:
    """One graph for every batch size (the signature's None dimension means no retracing): the
    features come out of the same pass; the logits are the last layer before its softmax."""
    import tensorflow as tf

    from model_store.trust import penultimate

    features_model, last = penultimate(model)

    @tf.function(
        input_signature=[tf.TensorSpec([None, *input_shape], tf.float32, name="images")], autograph=False
    )
    def forward(x: tf.Tensor) -> dict[str, tf.Tensor]:
        features = features_model(x, training=False)
        logits = tf.matmul(features, last.kernel) + last.bias
        return {"probabilities": tf.nn.softmax(logits), "logits": logits, "features": features}

    return forward


def tensorflow_forward(model: keras.Model, input_shape: tuple[int, ...]) -> NumpyForward:
    """`forward_function` called with and returning numpy arrays."""
    import tensorflow as tf

    forward = forward_function(model, input_shape)

    def run(batch: np.ndarray) -> ForwardOutputs:
        outputs = forward(tf.constant(batch))
        return outputs["probabilities"].numpy(), outputs["logits"].numpy(), outputs["features"].numpy()

    return run


def onnx_bytes(model: keras.Model, input_shape: tuple[int, ...]) -> bytes:
    """The forward pass as an ONNX model with input `images` and outputs named as in OUTPUTS."""
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # a dozen INFO lines per conversion
    forward = forward_function(model, input_shape)
    proto, _ = tf2onnx.convert.from_function(
        forward, input_signature=forward.input_signature, opset=ONNX_OPSET
    )
    return bytes(proto.SerializeToString())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OnnxForward:
    """An ONNX Runtime session. A session may run from several threads at once, so the batcher's
    thread, direct (unbatched) predictions and version checks need no lock around it."""

    def __init__(self, content: bytes, threads: int = 0, input_shape: tuple[int, ...] | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per physical core
        options.inter_op_num_threads = 1  # the graph is a chain: nothing to run side by side
        # ONNX Runtime's pool threads spin for a while after each run, waiting for the next: with
        # small passes that is most of the CPU they use, taken from the event loop and the other
        # workers on the same cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        names = [output.name for output in self._session.get_outputs()]
        if sorted(names) != sorted(OUTPUTS):
            raise ValueError(f"the ONNX model's outputs are {names}, not {list(OUTPUTS)}")
        declared = tuple(self._session.get_inputs()[0].shape[1:])
        if input_shape is not None and declared != tuple(input_shape):
            raise ValueError(f"the ONNX model's input is {declared} per image, not {tuple(input_shape)}")

    def __call__(self, batch: np.ndarray) -> ForwardOutputs:
        probabilities, logits, features = self._session.run(OUTPUTS, {"images": batch})
        return probabilities, logits, features


def onnx_weight_bytes(content: bytes) -> int:
    """Bytes of an ONNX model's weights (its initializers)."""
    import onnx

    graph = onnx.load_model_from_string(content).graph
    return sum(
        int(np.prod(tensor.dims)) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        for tensor in graph.initializer
    )


def check_images(input_shape: tuple[int, ...], count: int = _CHECK_IMAGES) -> np.ndarray:
    """Fixed inputs for comparing an export with Keras: blank, full and random-valued images."""
    rng = np.random.default_rng(0)
    images = rng.random((count, *input_shape), dtype=np.float32)
    images[0], images[1] = 0.0, 1.0
    return images


def export_onnx(model: keras.Model, model_file: Path, input_shape: tuple[int, ...]) -> OnnxExport:
    """Write `model.onnx` beside `model_file` (the model.keras `model` was loaded from) and check
    that it gives Keras' probabilities. Raises ValueError if it does not."""
    import tf2onnx

    content = onnx_bytes(model, input_shape)
    images = check_images(input_shape)
    expected = np.asarray(model(images, training=False))
    difference = float(np.abs(OnnxForward(content, threads=1)(images)[0] - expected).max())
    if not difference <= ONNX_TOLERANCE:
        raise ValueError(f"the ONNX export differs from Keras by {difference:.2g} in probability")
    # Renamed into place: a version being served may get its export later (`export-onnx`).
    staging = model_file.parent / f".tmp-{ONNX_FILE}"
    staging.write_bytes(content)
    os.replace(staging, model_file.parent / ONNX_FILE)
    return OnnxExport(
        model_sha256=file_sha256(model_file),
        converter=f"tf2onnx {tf2onnx.__version__}, opset {ONNX_OPSET}",
        max_abs_difference=difference,
    )
