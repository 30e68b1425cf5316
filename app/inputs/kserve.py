"""Open Inference Protocol (KServe v2) tensors: parsing infer requests and building responses.

Supports JSON tensor data (flat or nested) and Triton's binary tensor extension, which the
official `tritonclient` uses by default: a JSON header of `Inference-Header-Content-Length` bytes
followed by the raw tensors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from model_store.preprocessing import IMAGE_SIDE, NUM_CLASSES

INPUT_NAME = "images"
PROBABILITIES = "probabilities"
DIGIT = "digit"
VERDICT = "verdict"
HEADER_LENGTH = "inference-header-content-length"
PIXELS = IMAGE_SIDE * IMAGE_SIDE
INPUT_SHAPES = ([PIXELS], [IMAGE_SIDE, IMAGE_SIDE], [IMAGE_SIDE, IMAGE_SIDE, 1])
DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}
OUTPUT_DTYPES = {PROBABILITIES: "FP32", DIGIT: "INT64", VERDICT: "BYTES"}


class InferError(ValueError):
    pass


class TooManyImagesError(InferError):
    """More images than one request may carry (413)."""


class TensorInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: Any = None
    parameters: dict[str, Any] = Field(default_factory=dict)


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[TensorInput]
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


def tensor_metadata() -> dict[str, list[dict[str, Any]]]:
    return {
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, IMAGE_SIDE, IMAGE_SIDE, 1]}],
        "outputs": [
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, NUM_CLASSES]},
            {"name": DIGIT, "datatype": "INT64", "shape": [-1]},
            {"name": VERDICT, "datatype": "BYTES", "shape": [-1]},
        ],
    }


def parse_infer_request(
    body: bytes, header_length: str | None, max_images: int
) -> tuple[InferRequest, np.ndarray]:
    """The request and its images as uint8 (N, 28, 28), MNIST polarity.

    The declared shape is checked with Python integers (no int64 wrap-around) and the image count
    against `max_images` before any pixel is read or allocated."""
    json_part, binary = body, b""
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
            raise InferError(f"{HEADER_LENGTH} {header_length!r} does not fit a {len(body)}-byte body")
        json_part, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        request = InferRequest.model_validate_json(json_part)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InferError(f"invalid inference request: {problems}") from exc
    if len(request.inputs) != 1:
        raise InferError(f"expected exactly one input '{INPUT_NAME}', got {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.name != INPUT_NAME:
        raise InferError(f"unknown input '{tensor.name}'; this model's input is '{INPUT_NAME}'")
    dtype = DTYPES.get(tensor.datatype)
    if dtype is None:
        raise InferError(f"input datatype {tensor.datatype} not supported; use FP32 (0-1) or UINT8 (0-255)")
    shape = tensor.shape
    if len(shape) < 2 or shape[0] < 1 or shape[1:] not in INPUT_SHAPES:
        raise InferError(f"input shape {shape} not supported; use [N,784], [N,28,28] or [N,28,28,1]")
    if shape[0] > max_images:
        raise TooManyImagesError(f"{shape[0]} images in one request; the limit is {max_images}")
    count = shape[0] * PIXELS
    if "binary_data_size" in tensor.parameters:
        size = tensor.parameters["binary_data_size"]
        if not isinstance(size, int) or size != count * dtype.itemsize or len(binary) != size:
            raise InferError(
                f"binary data for '{tensor.name}' is {len(binary)} bytes, expected {count * dtype.itemsize}"
            )
        values = np.frombuffer(binary, dtype=dtype)
    else:
        try:
            values = np.asarray(tensor.data, dtype=dtype).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InferError(f"input data is not a {tensor.datatype} tensor: {exc}") from exc
        if values.size != count:
            raise InferError(f"input has {values.size} values; shape {shape} needs {count}")
    if tensor.datatype == "FP32":
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise InferError("FP32 pixels must be finite and within 0-1")
        # The model was trained on 8-bit pixels; x/255 inputs round-trip exactly.
        values = np.rint(values * 255).astype(np.uint8)
    return request, values.reshape(shape[0], IMAGE_SIDE, IMAGE_SIDE)


def _bytes_tensor(values: Sequence[str]) -> bytes:
    """Triton's binary BYTES layout: each element as a 4-byte little-endian length, then its bytes."""
    encoded = [value.encode() for value in values]
    return b"".join(len(item).to_bytes(4, "little") + item for item in encoded)


def build_infer_response(
    request: InferRequest, model_name: str, version: int, probabilities: np.ndarray, verdicts: Sequence[str]
) -> tuple[bytes, dict[str, str]]:
    """Response body and headers; outputs asked for with binary_data come as raw bytes."""
    tensors: dict[str, np.ndarray | Sequence[str]] = {
        PROBABILITIES: probabilities.astype("<f4"),
        DIGIT: probabilities.argmax(axis=1).astype("<i8"),
        VERDICT: verdicts,
    }
    all_binary = bool(request.parameters.get("binary_data_output"))
    wanted = request.outputs or [
        RequestedOutput(name=name, parameters={"binary_data": all_binary}) for name in tensors
    ]
    outputs, binary_parts = [], []
    for output in wanted:
        if output.name not in tensors:
            raise InferError(f"unknown output '{output.name}'; outputs are {sorted(tensors)}")
        tensor = tensors[output.name]
        shape = list(tensor.shape) if isinstance(tensor, np.ndarray) else [len(tensor)]
        entry: dict[str, Any] = {"name": output.name, "datatype": OUTPUT_DTYPES[output.name], "shape": shape}
        if output.parameters.get("binary_data"):
            raw = tensor.tobytes() if isinstance(tensor, np.ndarray) else _bytes_tensor(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary_parts.append(raw)
        else:
            entry["data"] = tensor.reshape(-1).tolist() if isinstance(tensor, np.ndarray) else list(tensor)
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": model_name, "model_version": str(version), "outputs": outputs}
    if request.id is not None:
        body["id"] = request.id
    header = json.dumps(body).encode()
    if not binary_parts:
        return header, {"content-type": "application/json"}
    return header + b"".join(binary_parts), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }
