"""The model a version runs: its compiled forward pass, its verdict rule, and the holder of the
loaded versions.

`ServingModel.answer` is the one call the batcher makes per forward pass: uint8 digits in, the
probabilities with the calibrated confidence and the verdict out, as one array that a batch
splits by slicing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.serving.runtimes import (
    DEFAULT_RUNTIME,
    OnnxForward,
    Runtime,
    RuntimeChoice,
    onnx_weight_bytes,
    tensorflow_forward,
)
from model_store.forward import INT8_ONNX_FILE, ONNX_FILE, NumpyForward
from model_store.metadata import ModelMetadata
from model_store.preprocessing import IMAGE_SIDE, to_model_input
from model_store.store import LoadedModel, ModelStoreError, read_int8, read_onnx
from model_store.trust import TrustRule
from model_store.verdict_rule import ClassStatistics, judge, served_trust

log = logging.getLogger(__name__)

ServedPrecision = Literal["float32", "int8"]


@dataclass(frozen=True)
class ServingModel:
    """A loaded store version with its compiled forward pass and the rule for its verdicts."""

    loaded: LoadedModel
    forward_float: NumpyForward  # model input -> (probabilities, logits, penultimate features)
    rule: TrustRule
    statistics: ClassStatistics | None
    runtime: Runtime = "tensorflow"  # what runs `forward_float`, as chosen or fallen back to
    precision: ServedPrecision = "float32"  # which export ONNX Runtime runs

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def version(self) -> int:
        return self.loaded.version

    @classmethod
    def compile(cls, loaded: LoadedModel, runtime: RuntimeChoice = DEFAULT_RUNTIME) -> ServingModel:
        """ONNX Runtime if chosen and the version has a usable export; otherwise TensorFlow, and
        the log says why."""
        forward, used, precision = runtime_forward(loaded, runtime)
        rule, statistics = trust_rule(loaded)
        return cls(loaded, forward, rule, statistics, used, precision)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1, 64)) -> None:
        """Answer blank batches of these sizes, so the first requests do not pay for the runtime's
        lazy allocations at each size."""
        for size in batch_sizes:
            self.answer(np.zeros((size, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8))

    def weight_bytes(self) -> int:
        """The memory of the weights: from the export ONNX Runtime serves, else from the Keras model."""
        if isinstance(self.forward_float, OnnxForward):
            file = INT8_ONNX_FILE if self.precision == "int8" else ONNX_FILE
            return onnx_weight_bytes((self.loaded.path / file).read_bytes())
        return sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in self.loaded.model.weights)

    def forward(self, images: np.ndarray) -> np.ndarray:
        """uint8 digits (N, 28, 28) in MNIST polarity -> softmax probabilities (N, 10), float32."""
        return self.forward_float(to_model_input(images, self.loaded.metadata.input))[0]

    def answer(self, images: np.ndarray) -> np.ndarray:
        """uint8 digits (N, 28, 28) -> rows (N, 12): the 10 probabilities, the calibrated confidence
        and the index of the verdict in VERDICTS. One array, so a batch splits by plain slicing."""
        probabilities, logits, features = self.forward_float(
            to_model_input(images, self.loaded.metadata.input)
        )
        judgement = judge(images, logits, features, self.rule, self.statistics)
        return np.column_stack([probabilities, judgement.confidence, judgement.codes]).astype(np.float32)


def runtime_forward(
    loaded: LoadedModel, choice: RuntimeChoice
) -> tuple[NumpyForward, Runtime, ServedPrecision]:
    """The forward pass on the chosen runtime and precision, or on TensorFlow when the version has
    no usable export. ModelStoreError if int8 is required and the version cannot run it."""
    shape = tuple(loaded.metadata.input.shape)
    if choice.name == "onnxruntime" and wants_int8(loaded, choice):
        try:
            forward = OnnxForward(read_int8(loaded), choice.threads, shape)
            log.info("version %s: int8 forward pass on ONNX Runtime", loaded.version)
            return forward, "onnxruntime", "int8"
        except Exception as exc:
            if choice.precision == "int8":
                raise ModelStoreError(int8_refusal(loaded.version, exc)) from exc
            log.warning("version %s: float32, not its int8 export: %s", loaded.version, exc)
    elif choice.precision == "int8":
        raise ModelStoreError(int8_refusal(loaded.version, "int8 runs on ONNX Runtime only"))
    if choice.name == "onnxruntime":
        try:
            forward = OnnxForward(read_onnx(loaded), choice.threads, shape)
            log.info("version %s: forward pass on ONNX Runtime", loaded.version)
            return forward, "onnxruntime", "float32"
        except Exception as exc:  # ONNX Runtime's errors (InvalidProtobuf, Fail) are plain Exceptions
            # A version published before the export, or a damaged file: slower, never wrong.
            log.warning("version %s: forward pass on TensorFlow, not ONNX Runtime: %s", loaded.version, exc)
    return tensorflow_forward(loaded.model, shape), "tensorflow", "float32"


def wants_int8(loaded: LoadedModel, choice: RuntimeChoice) -> bool:
    """int8 when asked for, or under `auto` when the version's publish-time proof made it the default."""
    export = loaded.metadata.int8
    return choice.precision == "int8" or (
        choice.precision == "auto" and export is not None and export.default
    )


def int8_refusal(version: int, problem: object) -> str:
    """The one line that says why MNIST_PRECISION=int8 cannot serve a version, and what to do."""
    return (
        f"MNIST_PRECISION=int8: version {version} has no usable int8 export ({problem}); publish a new "
        "version with mnist-train (it writes model.int8.onnx), or set MNIST_PRECISION=auto"
    )


def trust_rule(loaded: LoadedModel) -> tuple[TrustRule, ClassStatistics | None]:
    """The version's verdict rule; a version published without one gets `UNCALIBRATED`."""
    metadata: ModelMetadata = loaded.metadata
    return served_trust(metadata.trust, loaded.path)


class ModelHolder:
    """The version being served by default, and every version loaded beside it. Swapping either
    is one reference assignment, so it is atomic: a batch already running finishes on the model
    it started with."""

    def __init__(self, serving: ServingModel) -> None:
        self.current = serving
        self.loaded: dict[int, ServingModel] = {serving.version: serving}

    def get(self, version: int) -> ServingModel | None:
        """A loaded version (the default included), or None."""
        return self.current if version == self.current.version else self.loaded.get(version)
