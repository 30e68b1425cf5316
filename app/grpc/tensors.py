"""ModelInfer's tensors: the request's input as images, the answer as a ModelInferResponse.

Typed `contents` or `raw_input_contents` in; the outputs come back the same way the input came
(raw bytes for a raw request, as Triton's and KServe's servers answer, typed contents otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.grpc.open_inference.messages import ModelInferResponse
from app.inputs.tensors import (
    DIGIT,
    INPUT_NAME,
    OUTPUT_DTYPES,
    PIXELS,
    PREDICTION_IDS,
    PROBABILITIES,
    InferError,
    OutputTensor,
    check_input,
    check_output,
    output_shape,
    output_tensors,
    raw_output,
    raw_values,
    to_images,
)

# Where each input datatype's typed values go in InferTensorContents.
CONTENTS = {"FP32": "fp32_contents", "UINT8": "uint_contents"}
CONTENT_FIELDS = (
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
)


def requested_outputs(request: Any) -> list[str]:
    """The outputs asked for (all by default), checked before any work is done."""
    names = [output.name for output in request.outputs] or list(OUTPUT_DTYPES)
    for name in names:
        if name not in OUTPUT_DTYPES:
            raise InferError(f"unknown output '{name}'; outputs are {sorted(OUTPUT_DTYPES)}")
    return names


def request_images(request: Any, max_images: int) -> np.ndarray:
    """The request's input as uint8 images (N, 28, 28) in MNIST polarity."""
    if len(request.inputs) != 1:
        raise InferError(f"expected exactly one input '{INPUT_NAME}', got {len(request.inputs)}")
    tensor = request.inputs[0]
    shape = list(tensor.shape)
    dtype = check_input(tensor.name, tensor.datatype, shape, max_images)
    count = shape[0] * PIXELS
    filled = [name for name in CONTENT_FIELDS if len(getattr(tensor.contents, name))]
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InferError(
                f"raw_input_contents has {len(request.raw_input_contents)} entries; the model has one input"
            )
        if filled:
            raise InferError("an input comes in raw_input_contents or in contents, not both")
        return to_images(
            raw_values(request.raw_input_contents[0], tensor.name, dtype, count), tensor.datatype, shape
        )
    wanted = CONTENTS[tensor.datatype]
    if filled and filled != [wanted]:
        raise InferError(f"{tensor.datatype} values go in contents.{wanted}, not {', '.join(filled)}")
    field = getattr(tensor.contents, wanted)
    if len(field) != count:
        raise InferError(f"input has {len(field)} values; shape {shape} needs {count}")
    if tensor.datatype == "UINT8":
        values = np.fromiter(field, dtype=np.uint32, count=count)
        if values.size and values.max() > 255:
            raise InferError("UINT8 values must be within 0-255")
        return to_images(values.astype(np.uint8), tensor.datatype, shape)
    return to_images(np.fromiter(field, dtype=np.float32, count=count), tensor.datatype, shape)


def infer_response(
    request: Any,
    names: list[str],
    version: int,
    probabilities: np.ndarray,
    verdicts: Sequence[str],
    prediction_ids: Sequence[str] = (),
) -> Any:
    """The ModelInferResponse with the outputs `names`, raw if the request's input was raw; the
    prediction ids in its parameters, comma-separated, as over HTTP."""
    tensors = output_tensors(probabilities, verdicts)
    raw = bool(request.raw_input_contents)
    response = ModelInferResponse(model_name=request.model_name, model_version=str(version), id=request.id)
    if prediction_ids:
        response.parameters[PREDICTION_IDS].string_param = ",".join(prediction_ids)
    for name in names:
        tensor = check_output(name, tensors)
        output = response.outputs.add(name=name, datatype=OUTPUT_DTYPES[name], shape=output_shape(tensor))
        if raw:
            response.raw_output_contents.append(raw_output(tensor))
        else:
            _fill_contents(output.contents, name, tensor)
    return response


def _fill_contents(contents: Any, name: str, tensor: OutputTensor) -> None:
    if name == PROBABILITIES:
        contents.fp32_contents.extend(np.asarray(tensor).reshape(-1).tolist())
    elif name == DIGIT:
        contents.int64_contents.extend(np.asarray(tensor).tolist())
    else:
        contents.bytes_contents.extend(value.encode() for value in tensor)
