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

from app.inputs.tensors import (
    INPUT_NAME,
    OUTPUT_DTYPES,
    PIXELS,
    PREDICTION_IDS,
    InferError,
    TooManyImagesError,
    check_input,
    check_output,
    output_shape,
    output_tensors,
    raw_output,
    raw_values,
    tensor_metadata,
    to_images,
)

__all__ = [
    "HEADER_LENGTH",
    "InferError",
    "InferRequest",
    "TooManyImagesError",
    "build_infer_response",
    "parse_infer_request",
    "tensor_metadata",
]

HEADER_LENGTH = "inference-header-content-length"


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


def parse_infer_request(
    body: bytes, header_length: str | None, max_images: int
) -> tuple[InferRequest, np.ndarray]:
    """The request and its images as uint8 (N, 28, 28), MNIST polarity (checks in `check_input`)."""
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
    dtype = check_input(tensor.name, tensor.datatype, tensor.shape, max_images)
    count = tensor.shape[0] * PIXELS
    if "binary_data_size" in tensor.parameters:
        size = tensor.parameters["binary_data_size"]
        if not isinstance(size, int) or size != len(binary):
            raise InferError(
                f"binary data for '{tensor.name}' is {len(binary)} bytes, expected {count * dtype.itemsize}"
            )
        values = raw_values(binary, tensor.name, dtype, count)
    else:
        try:
            values = np.asarray(tensor.data, dtype=dtype).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InferError(f"input data is not a {tensor.datatype} tensor: {exc}") from exc
    return request, to_images(values, tensor.datatype, tensor.shape)


def build_infer_response(
    request: InferRequest,
    model_name: str,
    version: int,
    probabilities: np.ndarray,
    verdicts: Sequence[str],
    prediction_ids: Sequence[str] = (),
) -> tuple[bytes, dict[str, str]]:
    """Response body and headers; outputs asked for with binary_data come as raw bytes. The
    images' prediction ids go in the response's parameters, comma-separated in request order
    (the protocol's parameters are scalars)."""
    tensors = output_tensors(probabilities, verdicts)
    all_binary = bool(request.parameters.get("binary_data_output"))
    wanted = request.outputs or [
        RequestedOutput(name=name, parameters={"binary_data": all_binary}) for name in tensors
    ]
    outputs, binary_parts = [], []
    for output in wanted:
        tensor = check_output(output.name, tensors)
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": OUTPUT_DTYPES[output.name],
            "shape": output_shape(tensor),
        }
        if output.parameters.get("binary_data"):
            raw = raw_output(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary_parts.append(raw)
        else:
            entry["data"] = tensor.reshape(-1).tolist() if isinstance(tensor, np.ndarray) else list(tensor)
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": model_name, "model_version": str(version), "outputs": outputs}
    if request.id is not None:
        body["id"] = request.id
    if prediction_ids:
        body["parameters"] = {PREDICTION_IDS: ",".join(prediction_ids)}
    header = json.dumps(body).encode()
    if not binary_parts:
        return header, {"content-type": "application/json"}
    return header + b"".join(binary_parts), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }
