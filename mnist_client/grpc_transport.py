"""ModelInfer of the Open Inference Protocol over gRPC: the request for some images, the
`Prediction`s in its answer, and its errors as `MnistServeError`.

Images travel as one raw UINT8 tensor [N, 28, 28], already normalised the way the service
normalises an uploaded file (`app.inputs.normalisation`), so a digit gets the same answer over
gRPC as over HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import grpc
import numpy as np

from mnist_client.results import MnistServeError, Prediction, UnreachableError
from model_store.open_inference.messages import ModelInferRequest, ModelInferResponse, method_path

SCHEMES = ("grpc", "grpcs")
MODEL_INFER = method_path("ModelInfer")
PREDICTION_IDS = "prediction_ids"  # the response parameter with each image's id, comma-separated
# The HTTP status each gRPC code stands for, so one retry rule and one `status` serve both.
STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def is_grpc_url(url: str) -> bool:
    return urlsplit(url).scheme in SCHEMES


def target(url: str) -> tuple[str, bool]:
    """`host:port` of a grpc:// (plaintext) or grpcs:// (TLS) URL, and whether it is TLS."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname or parts.port is None:
        raise ValueError(f"a gRPC address is grpc://host:port or grpcs://host:port; got {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}", parts.scheme == "grpcs"


def metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("x-api-key", api_key),) if api_key else ()


def file_digit(data: bytes) -> np.ndarray:
    """The 28x28 digit the service would make of an uploaded file; 400 if it is not an image."""
    # Imported here: OpenCV is needed only to send files over gRPC, not by `import mnist_client`.
    from app.inputs.normalisation import normalise_file

    try:
        return normalise_file(data).pixels
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise MnistServeError(400, f"not an image the service can read: {exc}") from exc


def array_digit(image: np.ndarray) -> np.ndarray:
    """A 28x28 uint8 array, turned around if it is dark on light, as an upload of it would be."""
    from app.inputs.normalisation import normalise_native

    return normalise_native(image).pixels


def infer_request(images: np.ndarray, version: int | None) -> Any:
    """One ModelInfer call for uint8 images (N, 28, 28), their raw bytes in raw_input_contents."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    request = ModelInferRequest(model_version=str(version or ""))
    request.inputs.add(name="images", datatype="UINT8", shape=list(images.shape))
    request.raw_input_contents.append(images.tobytes())
    return request


def _strings(raw: bytes) -> list[str]:
    """A raw BYTES tensor: each element a 4-byte little-endian length, then its bytes."""
    values, offset = [], 0
    while offset < len(raw):
        size = int.from_bytes(raw[offset : offset + 4], "little")
        values.append(raw[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    return values


def predictions(response: Any, sources: Sequence[str | None]) -> list[Prediction]:
    """The answer's outputs (raw, as the server sends them for a raw request) as Predictions."""
    raw = dict(zip((output.name for output in response.outputs), response.raw_output_contents, strict=True))
    probabilities = np.frombuffer(raw["probabilities"], dtype="<f4").reshape(len(sources), -1)
    verdicts = _strings(raw["verdict"]) if "verdict" in raw else [None] * len(sources)
    version = int(response.model_version)
    ids: list[str | None] = [None] * len(sources)
    if PREDICTION_IDS in response.parameters:
        ids = list(response.parameters[PREDICTION_IDS].string_param.split(","))
    answers = []
    for row, verdict, source, prediction_id in zip(
        probabilities.tolist(), verdicts, sources, ids, strict=True
    ):
        best = row.index(max(row))
        answers.append(Prediction(best, row[best], row, version, verdict, source, prediction_id))
    return answers


def retry_advice(error: grpc.RpcError) -> str | None:
    """The server's `retry-after` trailer: seconds to wait, as text."""
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "retry-after":
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def failure(error: grpc.RpcError) -> MnistServeError | UnreachableError:
    """The exception a failed call raises: UnreachableError when no server answered."""
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    detail = error.details() or code.name  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE and retry_advice(error) is None:
        return UnreachableError(detail)
    return MnistServeError(STATUS.get(code, 500), detail, code.name)


def channel_options() -> list[tuple[str, int]]:
    # An answer is at most a few kB per image; a large batch's may pass gRPC's 4 MB default.
    return [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


def open_channel(url: str) -> grpc.Channel:
    address, tls = target(url)
    if tls:
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(), options=channel_options())
    return grpc.insecure_channel(address, options=channel_options())


def open_aio_channel(url: str) -> grpc.aio.Channel:
    address, tls = target(url)
    if tls:
        return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(), options=channel_options())
    return grpc.aio.insecure_channel(address, options=channel_options())


def serializers() -> dict[str, Any]:
    return {
        "request_serializer": ModelInferRequest.SerializeToString,
        "response_deserializer": ModelInferResponse.FromString,
    }
