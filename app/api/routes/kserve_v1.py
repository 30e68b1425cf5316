"""KServe's v1 explainer route: `POST /v1/models/{name}:explain` with `{"instances": [...]}`."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, Field

from app.api.deps import PredictorDep, StateDep
from app.api.errors import ApiError
from app.api.examples import EXPLAIN_REQUEST, MODEL_NAME, named
from app.api.responses import describe_explanation, model_ref, scores
from app.api.schemas import ErrorBody, Explanation, ModelRef, Scores
from model_store.preprocessing import IMAGE_SIDE

router = APIRouter(prefix="/v1", tags=["explain"])

MAX_INSTANCES = 8


class ExplainRequest(BaseModel):
    instances: list[list[int] | list[list[int]]] = Field(
        min_length=1,
        max_length=MAX_INSTANCES,
        description="28x28 digits as 784 pixels or 28 rows of 28, 0-255, light ink on black as in MNIST",
    )


class ExplainedInstance(Scores):
    explanation: Explanation


class ExplainResponse(BaseModel):
    model: ModelRef
    explanations: list[ExplainedInstance]


def instances_to_pixels(instances: list[list[int] | list[list[int]]]) -> np.ndarray:
    """Each instance, flat or in rows, as one uint8 28x28 digit."""
    digits = []
    for number, instance in enumerate(instances):
        try:
            values = np.asarray(instance, dtype=np.int64)
        except OverflowError as exc:  # an integer beyond 64 bits: not a pixel either
            raise ApiError(400, f"instance {number}: pixels must be within 0-255") from exc
        except ValueError as exc:
            raise ApiError(400, f"instance {number}: rows of different lengths") from exc
        if values.shape not in ((IMAGE_SIDE * IMAGE_SIDE,), (IMAGE_SIDE, IMAGE_SIDE)):
            raise ApiError(400, f"instance {number} has shape {list(values.shape)}; send 784 pixels or 28x28")
        if values.min() < 0 or values.max() > 255:
            raise ApiError(400, f"instance {number}: pixels must be within 0-255")
        digits.append(values.astype(np.uint8).reshape(IMAGE_SIDE, IMAGE_SIDE))
    return np.stack(digits)


@router.post(
    "/models/{name}:explain",
    response_model=ExplainResponse,
    responses={code: {"model": ErrorBody} for code in (400, 404, 503)},
)
async def explain(
    name: Annotated[str, Path(description="the model's name", examples=[MODEL_NAME])],
    body: Annotated[
        ExplainRequest, Body(openapi_examples=named("test image 128, an 8, as 784 pixels", EXPLAIN_REQUEST))
    ],
    state: StateDep,
    predictor: PredictorDep,
) -> ExplainResponse:
    """Predict and explain up to 8 digits: an attribution map per digit (occlusion, or integrated
    gradients if so configured), for the predicted one, with an overlay PNG and the runner-up.
    503 (Retry-After) while explanations are busy."""
    if name != state.holder.current.name:
        raise ApiError(404, f"unknown model {name!r}; this server serves {state.holder.current.name!r}")
    pixels = instances_to_pixels(body.instances)
    result = await predictor.predict(pixels)
    found = await predictor.explain(pixels, result.model)
    return ExplainResponse(
        model=model_ref(result.model),
        explanations=[
            ExplainedInstance(
                **scores(result, i),
                explanation=describe_explanation(pixels[i], found[i]),
            )
            for i in range(len(pixels))
        ],
    )
