"""`/predict` and `/predict/batch`: the digit in one uploaded image, or in many."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from app.api.deps import PredictorDep
from app.api.errors import ApiError
from app.api.responses import describe_explanation, describe_normalisation, model_ref, scores
from app.api.schemas import BatchInput, BatchPrediction, Explanation, Prediction, error_responses
from app.api.uploads import ImageFiles, SingleImage, form_limits, prepare_digit, prepare_digits
from app.inputs.arrays import ArrayError, TooManyImagesError, parse_image_array

router = APIRouter(prefix="/predict", tags=["predict"])

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
# The multipart body is FastAPI's, from the `File` parameters; these are the other bodies the
# routes read themselves: the image file itself, or a batch as one binary array.
BINARY = {"schema": {"type": "string", "format": "binary"}}
RAW_IMAGE_BODY = {"requestBody": {"content": dict.fromkeys(IMAGE_TYPES, BINARY)}}
ARRAY_TYPES = ("application/x-npy", "application/octet-stream")
ARRAY_BODY = {"requestBody": {"content": dict.fromkeys(ARRAY_TYPES, BINARY)}}

INCLUDE_IMAGE = "also return the normalised 28x28 image the model saw, as base64 PNG"
IncludeImage = Annotated[bool, Query(description=INCLUDE_IMAGE, examples=[True])]


class PredictOptions(BaseModel):
    """`/predict`'s query parameters, beside `?version=` (the predictor's dependency reads it)."""

    include_image: bool = Field(False, description=INCLUDE_IMAGE, examples=[True])
    explain: bool = Field(
        False,
        description="also explain the answer: a 28x28 attribution map (occlusion, or integrated "
        "gradients if so configured) and an overlay PNG; costs 30-170 forward passes, at most "
        "MNIST_EXPLAIN_CONCURRENCY at once (503 beyond)",
        examples=[False],
    )


@router.post(
    "",
    response_model=Prediction,
    responses=ERRORS,
    form_limits=form_limits(max_files=1),
    openapi_extra=RAW_IMAGE_BODY,
)
async def predict(
    predictor: PredictorDep, options: Annotated[PredictOptions, Query()], image: SingleImage
) -> Prediction:
    """Classify one digit image, sent as multipart field `file` or as the raw body.

    A 28x28 grayscale light-on-dark image is used as it is; anything else is normalised the way
    MNIST was made (grayscale, polarity, crop, fit 20x20, centre by mass).
    """
    digit = await prepare_digit(image, predictor.settings.max_image_pixels)
    result = await predictor.predict(digit.pixels[np.newaxis])
    explanation = None
    if options.explain:
        found = await predictor.explain(digit.pixels[np.newaxis], result.model)
        explanation = describe_explanation(digit.pixels, found[0])
    return Prediction(
        **scores(result, 0),
        model=model_ref(result.model),
        normalisation=describe_normalisation(digit, options.include_image),
        explanation=explanation,
    )


@router.post(
    "/explanation",
    response_model=Explanation,
    responses=ERRORS,
    form_limits=form_limits(max_files=1),
    openapi_extra=RAW_IMAGE_BODY,
)
async def explanation(predictor: PredictorDep, image: SingleImage) -> Explanation:
    """Explain one digit image without answering it again: the attribution map of the version that
    answered (`?version=` of the answer's `model.version`), not logged and with no prediction id.

    For a client that shows an answer first and its explanation after: `/predict?explain=true`
    would log the same image twice. 503 while explanations are busy.
    """
    digit = await prepare_digit(image, predictor.settings.max_image_pixels)
    found = await predictor.explain(digit.pixels[np.newaxis], predictor.model())
    return describe_explanation(digit.pixels, found[0])


@router.post("/batch", response_model=BatchPrediction, responses=ERRORS, openapi_extra=ARRAY_BODY)
async def predict_batch(
    request: Request,
    predictor: PredictorDep,
    files: ImageFiles,
    include_image: IncludeImage = False,
) -> BatchPrediction:
    """Classify many digits at once: several multipart `file` fields, or one binary array.

    The array is a `.npy` file or raw bytes of N 28x28 uint8 images (MNIST polarity), sent as
    `application/x-npy` or `application/octet-stream`. Results come in request order.
    """
    settings = predictor.settings
    inputs: list[BatchInput] | None = None
    if files is not None:
        uploads = [(await upload.read(), f"file {i} ({upload.filename})") for i, upload in enumerate(files)]
        digits = await prepare_digits(uploads, settings.max_image_pixels)
        images = np.stack([digit.pixels for digit in digits])
        inputs = [
            BatchInput(filename=upload.filename, normalisation=describe_normalisation(digit, include_image))
            for upload, digit in zip(files, digits, strict=True)
        ]
    else:
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
