"""`/predict` and `/predict/batch`: the digit in one uploaded image, or in many."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request

from app.api.deps import PredictorDep
from app.api.errors import ApiError
from app.api.responses import describe_explanation, describe_normalisation, model_ref, scores
from app.api.schemas import BatchInput, BatchPrediction, Explanation, Prediction, error_responses
from app.api.uploads import MULTIPART, UPLOAD_FIELD, content_type, uploaded_digit, uploaded_digits
from app.inputs.arrays import ArrayError, TooManyImagesError, parse_image_array

router = APIRouter(prefix="/predict", tags=["predict"])

ARRAY_TYPES = ("application/x-npy", "application/octet-stream")
# A batch body that is not multipart is an array; no content type at all is read as one too.
BATCH_ARRAY_TYPES = (*ARRAY_TYPES, "")
IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/gif", "image/webp", "image/tiff")
ERRORS = error_responses(
    {
        400: "not an image, corrupt, or empty",
        413: "body, image or batch over the configured limit",
        415: "unsupported content type",
        422: "the multipart field 'file' is missing",
        503: "queue full; retry after the Retry-After seconds",
    }
)


def upload_body(multiple: bool) -> dict[str, Any]:
    """The routes' `requestBody`: a multipart form with field `file` (several for a batch), or the
    image itself (a batch: one binary array).

    Declared here rather than by `File` parameters: FastAPI would then parse the form with
    Starlette's machinery before the route runs, and `app.inputs.multipart`'s parser serves 10.1 %
    more `/predict` requests a second at 64 connections (its module says how this was measured)."""
    file_schema = {"type": "string", "format": "binary"}
    field = {"type": "array", "items": file_schema} if multiple else file_schema
    description = IMAGE_FILES if multiple else IMAGE_FILE
    form = {
        "type": "object",
        "required": [UPLOAD_FIELD],
        "properties": {UPLOAD_FIELD: field | {"description": description}},
    }
    content: dict[str, Any] = {"multipart/form-data": {"schema": form}}
    raw_types = ARRAY_TYPES if multiple else IMAGE_TYPES
    content |= {kind: {"schema": file_schema} for kind in raw_types}
    return {"requestBody": {"required": True, "content": content}}


IMAGE_FILE = (
    "the digit image: PNG, JPEG, BMP, GIF, WebP or TIFF (or send the file itself as the body, "
    "with an image/* content type)"
)
IMAGE_FILES = "the digit images, one file each, answered in this order"
INCLUDE_IMAGE = "also return the normalised 28x28 image the model saw, as base64 PNG"
IncludeImage = Annotated[bool, Query(description=INCLUDE_IMAGE, examples=[True])]


ExplainParam = Annotated[
    bool,
    Query(
        description="also explain the answer: a 28x28 attribution map (occlusion, or integrated "
        "gradients if so configured) and an overlay PNG; costs 30-170 forward passes, at most "
        "MNIST_EXPLAIN_CONCURRENCY at once (503 beyond)",
        examples=[False],
    ),
]


@router.post(
    "",
    response_model=Prediction,
    responses=ERRORS,
    openapi_extra=upload_body(multiple=False),
)
async def predict(
    request: Request,
    predictor: PredictorDep,
    include_image: IncludeImage = False,
    explain: ExplainParam = False,
) -> Prediction:
    """Classify one digit image, sent as multipart field `file` or as the raw body.

    A 28x28 grayscale light-on-dark image is used as it is; anything else is normalised the way
    MNIST was made (grayscale, polarity, crop, fit 20x20, centre by mass).
    """
    digit = await uploaded_digit(request, predictor.settings.max_image_pixels)
    result = await predictor.predict(digit.pixels[np.newaxis])
    explanation = None
    if explain:
        found = await predictor.explain(digit.pixels[np.newaxis], result.model)
        explanation = describe_explanation(digit.pixels, found[0])
    return Prediction(
        **scores(result, 0),
        model=model_ref(result.model),
        normalisation=describe_normalisation(digit, include_image),
        explanation=explanation,
    )


@router.post(
    "/explanation",
    response_model=Explanation,
    responses=ERRORS,
    openapi_extra=upload_body(multiple=False),
)
async def explanation(request: Request, predictor: PredictorDep) -> Explanation:
    """Explain one digit image without answering it again: the attribution map of the version that
    answered (`?version=` of the answer's `model.version`), not logged and with no prediction id.

    For a client that shows an answer first and its explanation after: `/predict?explain=true`
    would log the same image twice. 503 while explanations are busy.
    """
    digit = await uploaded_digit(request, predictor.settings.max_image_pixels)
    found = await predictor.explain(digit.pixels[np.newaxis], predictor.model())
    return describe_explanation(digit.pixels, found[0])


@router.post(
    "/batch", response_model=BatchPrediction, responses=ERRORS, openapi_extra=upload_body(multiple=True)
)
async def predict_batch(
    request: Request, predictor: PredictorDep, include_image: IncludeImage = False
) -> BatchPrediction:
    """Classify many digits at once: several multipart `file` fields, or one binary array.

    The array is a `.npy` file or raw bytes of N 28x28 uint8 images (MNIST polarity), sent as
    `application/x-npy` or `application/octet-stream`. Results come in request order.
    """
    settings = predictor.settings
    inputs: list[BatchInput] | None = None
    kind = content_type(request)
    if kind == MULTIPART:
        uploads = await uploaded_digits(request, settings.max_batch_images, settings.max_image_pixels)
        images = np.stack([upload.digit.pixels for upload in uploads])
        inputs = [
            BatchInput(
                filename=upload.filename, normalisation=describe_normalisation(upload.digit, include_image)
            )
            for upload in uploads
        ]
    else:
        if kind not in BATCH_ARRAY_TYPES:
            raise ApiError(
                415,
                f"unsupported content type {kind!r}: send {MULTIPART} with fields '{UPLOAD_FIELD}', "
                "or a .npy array or raw 28x28 uint8 bytes as application/x-npy or application/octet-stream",
            )
        body = await request.body()
        if not body:
            raise ApiError(400, "the request body is empty; send a .npy array or multipart files")
        try:
            images = parse_image_array(body, settings.max_array_images)
        except TooManyImagesError as exc:
            raise ApiError(413, str(exc)) from exc
        except ArrayError as exc:
            raise ApiError(400, str(exc)) from exc
    result = await predictor.predict(images)
    probabilities = result.probabilities
    predictions = probabilities.argmax(axis=1)
    return BatchPrediction(
        model=model_ref(result.model),
        count=len(images),
        prediction_ids=list(result.ids),
        predictions=predictions.tolist(),
        confidences=probabilities[np.arange(len(images)), predictions].tolist(),
        probabilities=probabilities.tolist(),
        verdicts=result.verdicts,
        calibrated_confidences=result.calibrated_confidence.tolist(),
        inputs=inputs,
    )
