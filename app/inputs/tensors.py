"""The model's tensors in the Open Inference Protocol, whatever carries them (HTTP JSON, HTTP binary
extension, gRPC): the input's name, datatypes and shapes, how its values become images, and the
outputs with their datatypes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from model_store.preprocessing import IMAGE_SIDE, NUM_CLASSES

INPUT_NAME = "images"
PROBABILITIES = "probabilities"
DIGIT = "digit"
VERDICT = "verdict"
# The response parameter holding the images' prediction ids, comma-separated (for POST /feedback).
PREDICTION_IDS = "prediction_ids"
PIXELS = IMAGE_SIDE * IMAGE_SIDE
INPUT_SHAPES = ([PIXELS], [IMAGE_SIDE, IMAGE_SIDE], [IMAGE_SIDE, IMAGE_SIDE, 1])
DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}
OUTPUT_DTYPES = {PROBABILITIES: "FP32", DIGIT: "INT64", VERDICT: "BYTES"}
PLATFORM = "tensorflow_keras"

OutputTensor = np.ndarray | Sequence[str]


class InferError(ValueError):
    pass


class TooManyImagesError(InferError):
    """More images than one request may carry (HTTP 413, gRPC INVALID_ARGUMENT)."""


def tensor_metadata() -> dict[str, list[dict[str, Any]]]:
    return {
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, IMAGE_SIDE, IMAGE_SIDE, 1]}],
        "outputs": [
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, NUM_CLASSES]},
            {"name": DIGIT, "datatype": "INT64", "shape": [-1]},
            {"name": VERDICT, "datatype": "BYTES", "shape": [-1]},
        ],
    }


def check_input(name: str, datatype: str, shape: Sequence[int], max_images: int) -> np.dtype[Any]:
    """The input's element type, once its name, datatype and shape are ones this model takes.

    The shape is checked with Python integers (no int64 wrap-around) and the image count against
    `max_images` before any pixel is read or allocated."""
    if name != INPUT_NAME:
        raise InferError(f"unknown input '{name}'; this model's input is '{INPUT_NAME}'")
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise InferError(f"input datatype {datatype} not supported; use FP32 (0-1) or UINT8 (0-255)")
    shape = list(shape)
    if len(shape) < 2 or shape[0] < 1 or shape[1:] not in INPUT_SHAPES:
        raise InferError(f"input shape {shape} not supported; use [N,784], [N,28,28] or [N,28,28,1]")
    if shape[0] > max_images:
        raise TooManyImagesError(f"{shape[0]} images in one request; the limit is {max_images}")
    return dtype


def raw_values(raw: bytes, name: str, dtype: np.dtype[Any], count: int) -> np.ndarray:
    """`count` elements of `dtype` from raw little-endian bytes, which must hold exactly that many."""
    if len(raw) != count * dtype.itemsize:
        raise InferError(f"binary data for '{name}' is {len(raw)} bytes, expected {count * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype)


def to_images(values: np.ndarray, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """Flat input values -> uint8 images (N, 28, 28) in MNIST polarity."""
    count = shape[0] * PIXELS
    if values.size != count:
        raise InferError(f"input has {values.size} values; shape {list(shape)} needs {count}")
    if datatype == "FP32":
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise InferError("FP32 pixels must be finite and within 0-1")
        # The model was trained on 8-bit pixels; x/255 inputs round-trip exactly.
        values = np.rint(values * 255).astype(np.uint8)
    return values.reshape(shape[0], IMAGE_SIDE, IMAGE_SIDE)


def output_tensors(probabilities: np.ndarray, verdicts: Sequence[str]) -> dict[str, OutputTensor]:
    """Every output of the model, by name, in its protocol datatype."""
    return {
        PROBABILITIES: probabilities.astype("<f4"),
        DIGIT: probabilities.argmax(axis=1).astype("<i8"),
        VERDICT: verdicts,
    }


def check_output(name: str, tensors: dict[str, OutputTensor]) -> OutputTensor:
    if name not in tensors:
        raise InferError(f"unknown output '{name}'; outputs are {sorted(tensors)}")
    return tensors[name]


def output_shape(tensor: OutputTensor) -> list[int]:
    return list(tensor.shape) if isinstance(tensor, np.ndarray) else [len(tensor)]


def raw_output(tensor: OutputTensor) -> bytes:
    """An output's raw bytes; BYTES elements each as a 4-byte little-endian length, then its bytes."""
    if isinstance(tensor, np.ndarray):
        return tensor.tobytes()
    encoded = [value.encode() for value in tensor]
    return b"".join(len(item).to_bytes(4, "little") + item for item in encoded)
