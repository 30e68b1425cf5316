"""Open Inference Protocol (KServe v2) over REST, beside our own routes, for Triton/KServe clients."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from app import __version__
from app.api.deps import RequestPredictor, SettingsDep, StateDep, require_api_key
from app.api.errors import ApiError
from app.api.examples import INFER_REQUEST, MODEL_NAME, VERSION, named
from app.inputs.kserve import (
    HEADER_LENGTH,
    InferError,
    TooManyImagesError,
    build_infer_response,
    parse_infer_request,
    tensor_metadata,
)
from app.inputs.tensors import PLATFORM
from app.serving.model import ServingModel
from app.serving.state import NotServedError, ServiceState

router = APIRouter(prefix="/v2", tags=["KServe v2 (Open Inference Protocol)"])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": 'invalid request: `{"error": "..."}`'},
    404: {"description": 'unknown model or version: `{"error": "..."}`'},
}


def example(body: object, errors: bool = True) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses: a 200 example, plus the protocol's 400/404 error bodies."""
    ok: dict[int | str, dict[str, Any]] = {200: {"content": {"application/json": {"example": body}}}}
    return ok | ERRORS if errors else ok


METADATA_EXAMPLE = {
    "name": "mnist",
    "versions": ["3"],
    "platform": PLATFORM,
    "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 28, 28, 1]}],
    "outputs": [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "digit", "datatype": "INT64", "shape": [-1]},
    ],
}
INFER_EXAMPLE = {
    "model_name": "mnist",
    "model_version": "3",
    "outputs": [
        {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": [1, 10],
            "data": [0.0, 0.0, 0.0001, 0.0031, 0.0, 0.0002, 0.0, 0.0, 0.9964, 0.0002],
        },
        {"name": "digit", "datatype": "INT64", "shape": [1], "data": [8]},
        {"name": "verdict", "datatype": "BYTES", "shape": [1], "data": ["digit"]},
    ],
}


def served_model(state: ServiceState, name: str, version: str | None) -> ServingModel:
    """The default model, or the loaded `version`, if `name` names it; else 404."""
    try:
        return state.served_model(name, version)
    except NotServedError as exc:
        raise ApiError(404, str(exc)) from exc


@router.get(
    "",
    responses=example(
        {"name": "mnist-serve", "version": "0.1.0", "extensions": ["binary_tensor_data"], "grpc_port": 8081},
        False,
    ),
)
async def server_metadata(settings: SettingsDep) -> dict[str, Any]:
    """Server metadata; `grpc_port` is where the same protocol is served over gRPC (absent: off)."""
    body: dict[str, Any] = {
        "name": "mnist-serve",
        "version": __version__,
        "extensions": ["binary_tensor_data"],
    }
    if settings.grpc_port:
        body["grpc_port"] = settings.grpc_port
    return body


@router.get("/health/live", responses=example({"live": True}, False))
async def server_live() -> dict[str, bool]:
    """Server liveness."""
    return {"live": True}


@router.get(
    "/health/ready",
    responses=example({"ready": True}, False) | {503: {"description": "no model loaded yet"}},
)
async def server_ready(state: StateDep) -> dict[str, bool]:
    """Server readiness: a model is loaded (503 before that)."""
    return {"ready": True}


ModelName = Annotated[str, Path(description="the model's name", examples=[MODEL_NAME])]
VersionPath = Annotated[str, Path(description="a loaded version", examples=[str(VERSION)])]
# The protocol's version is a string, in the path or the query alike: one that is not loaded is 404
# (the service's own routes take `?version=` as an integer, through the predictor's dependency).
VersionQuery = Annotated[
    str | None,
    Query(
        description="a loaded version (default: the served one)",
        openapi_examples=named("version 1: a freshly trained store has no other", str(VERSION)),
    ),
]


def metadata(state: ServiceState, name: str, version: str | None) -> dict[str, Any]:
    model = served_model(state, name, version)
    versions = [model.version] if version is not None else sorted(state.holder.loaded)
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        **tensor_metadata(),
    }


@router.get("/models/{name}", responses=example(METADATA_EXAMPLE))
async def model_metadata(state: StateDep, name: ModelName, version: VersionQuery = None) -> dict[str, Any]:
    """Model metadata: versions, inputs and outputs with datatypes and shapes (-1 = batch)."""
    return metadata(state, name, version)


@router.get("/models/{name}/versions/{version}", responses=example(METADATA_EXAMPLE))
async def version_metadata(state: StateDep, name: ModelName, version: VersionPath) -> dict[str, Any]:
    """Metadata of one loaded version: inputs and outputs with datatypes and shapes (-1 = batch)."""
    return metadata(state, name, version)


READY_EXAMPLE = example({"name": "mnist", "ready": True})


@router.get("/models/{name}/ready", responses=READY_EXAMPLE)
async def model_ready(state: StateDep, name: ModelName, version: VersionQuery = None) -> dict[str, Any]:
    """Model readiness."""
    return {"name": served_model(state, name, version).name, "ready": True}


@router.get("/models/{name}/versions/{version}/ready", responses=READY_EXAMPLE)
async def version_ready(state: StateDep, name: ModelName, version: VersionPath) -> dict[str, Any]:
    """Readiness of one version."""
    return {"name": served_model(state, name, version).name, "ready": True}


# The route reads the raw body itself (JSON, or JSON with binary tensors after it), so the body is
# declared here rather than by a pydantic parameter.
INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"examples": named("test image 128, an 8, as UINT8 pixels", INFER_REQUEST)}
        },
    }
}
BUSY: dict[int | str, dict[str, Any]] = {
    503: {"description": "the queue is full or the service is stopping; `Retry-After` says when to retry"}
}
INFER_ROUTE: dict[str, Any] = {
    "responses": example(INFER_EXAMPLE) | BUSY,
    "openapi_extra": INFER_BODY,
    "dependencies": [Depends(require_api_key)],
}


@router.post("/models/{name}/infer", **INFER_ROUTE)
async def infer(request: Request, state: StateDep, name: ModelName, version: VersionQuery = None) -> Response:
    """Inference: `images` as FP32 (0-1) or UINT8 (0-255), shape [N,784], [N,28,28] or [N,28,28,1];
    returns `probabilities` [N,10] FP32, `digit` [N] INT64 and `verdict` [N] BYTES (`digit`,
    `unsure` or `not_a_digit`)."""
    return await inference(request, state, name, version)


@router.post("/models/{name}/versions/{version}/infer", **INFER_ROUTE)
async def version_infer(request: Request, state: StateDep, name: ModelName, version: VersionPath) -> Response:
    """Inference by one loaded version, as `/v2/models/{name}/infer` does by the default one."""
    return await inference(request, state, name, version)


async def inference(request: Request, state: ServiceState, name: str, version: str | None) -> Response:
    served_model(state, name, version)
    predictor = RequestPredictor(state, request, version)
    try:
        infer_request, images = parse_infer_request(
            await request.body(), request.headers.get(HEADER_LENGTH), state.settings.max_array_images
        )
    except TooManyImagesError as exc:
        raise ApiError(413, str(exc)) from exc
    except (InferError, ValueError, TypeError, OverflowError) as exc:
        # Whatever a client's tensor does to the parser is the client's error, in the v2 shape.
        raise ApiError(400, str(exc) if isinstance(exc, InferError) else f"invalid tensor: {exc}") from exc
    result = await predictor.predict(images)
    try:
        body, headers = build_infer_response(
            infer_request,
            result.model.name,
            result.model.version,
            result.probabilities,
            result.verdicts,
            result.ids,
        )
    except InferError as exc:
        raise ApiError(400, str(exc)) from exc
    return Response(body, headers=headers)
