"""What runs a version's forward pass in the service: ONNX Runtime on its export, or TensorFlow.

ONNX Runtime runs it faster than TensorFlow, LiteRT and OpenVINO at the batch sizes that matter
(docs/performance.md, `bench/results/runtimes.md`). Training writes the export at publish time
(`training.onnx_export`) with the SHA-256 of the `model.keras` it came from, so a stale copy is
never served for other weights (`model_store.store.read_onnx`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from model_store.forward import INPUT_NAME, OUTPUTS, ForwardOutputs, NumpyForward, forward_function

if TYPE_CHECKING:
    import keras

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


def tensorflow_forward(model: keras.Model, input_shape: tuple[int, ...]) -> NumpyForward:
    """`forward_function` called with and returning numpy arrays."""
    import tensorflow as tf

    forward = forward_function(model, input_shape)

    def run(batch: np.ndarray) -> ForwardOutputs:
        outputs = forward(tf.constant(batch))
        return outputs["probabilities"].numpy(), outputs["logits"].numpy(), outputs["features"].numpy()

    return run


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
        probabilities, logits, features = self._session.run(OUTPUTS, {INPUT_NAME: batch})
        return probabilities, logits, features


def onnx_weight_bytes(content: bytes) -> int:
    """Bytes of an ONNX model's weights (its initializers)."""
    import onnx

    graph = onnx.load_model_from_string(content).graph
    return sum(
        int(np.prod(tensor.dims)) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        for tensor in graph.initializer
    )
