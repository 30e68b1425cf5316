"""`/test/...`: the MNIST test digits, one by index, at random or all of them scored."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Query, Response

from app.api.deps import PredictorDep, StateDep, TestSetDep
from app.api.errors import ApiError
from app.api.examples import TEST_INDEX, named
from app.api.responses import model_ref, png_bytes, scores
from app.api.schemas import ErrorBody, RandomSamples, TestAccuracy, TestSample
from app.serving.batcher import BatchResult
from model_store.mnist_data import MnistSplit

router = APIRouter(
    prefix="/test",
    tags=["test set"],
    responses={503: {"model": ErrorBody, "description": "the MNIST test files are not available"}},
)

TestIndex = Annotated[int, Path(description="a test image, 0-9999", examples=[TEST_INDEX])]

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "index outside 0-9999"}
}


def check_index(index: int, test_set: MnistSplit) -> int:
    if not 0 <= index < len(test_set.labels):
        raise ApiError(404, f"test index {index} is out of range: use 0-{len(test_set.labels) - 1}")
    return index


def samples(indices: np.ndarray, result: BatchResult, test_set: MnistSplit) -> list[TestSample]:
    return [
        TestSample(
            index=int(index),
            label=int(test_set.labels[index]),
            correct=bool(result.probabilities[i].argmax() == test_set.labels[index]),
            model=model_ref(result.model),
            **scores(result, i),
        )
        for i, index in enumerate(indices)
    ]


# The largest `count` of `/random`: a page of samples to look at, not a way to read the test set
# (`/test/accuracy` scores all of it in one call).
MAX_RANDOM_COUNT = 100


@router.get(
    "/random",
    response_model=RandomSamples,
    responses={413: {"model": ErrorBody, "description": f"count over {MAX_RANDOM_COUNT}"}},
)
async def random_samples(
    test_set: TestSetDep,
    predictor: PredictorDep,
    count: Annotated[
        int, Query(ge=1, description=f"how many samples (at most {MAX_RANDOM_COUNT})", examples=[5])
    ] = 20,
    seed: Annotated[
        int | None,
        Query(ge=0, description="repeatable choice of samples", openapi_examples=named("seed 7", 7)),
    ] = None,
) -> RandomSamples:
    """`count` random test digits with prediction and true label."""
    if count > MAX_RANDOM_COUNT:
        raise ApiError(413, f"count {count} is over the limit of {MAX_RANDOM_COUNT}")
    indices = np.random.default_rng(seed).choice(len(test_set.labels), size=count, replace=False)
    result = await predictor.predict(test_set.images[indices])
    items = samples(indices, result, test_set)
    return RandomSamples(
        model=model_ref(result.model), count=count, correct=sum(s.correct for s in items), samples=items
    )


@router.get("/accuracy", response_model=TestAccuracy)
async def accuracy(state: StateDep, test_set: TestSetDep, predictor: PredictorDep) -> TestAccuracy:
    """Score the served model on all 10,000 test images (the dense 784-1000-10 example: 9,622)."""
    result = await state.accuracy_runs.get(
        predictor.model().version, lambda: predictor.predict(test_set.images, logged=False)
    )
    predicted = result.probabilities.argmax(axis=1)
    hits = predicted == test_set.labels
    per_class = [float(hits[test_set.labels == digit].mean()) for digit in range(10)]
    return TestAccuracy(
        model=model_ref(result.model),
        accuracy=float(hits.mean()),
        correct=int(hits.sum()),
        total=len(hits),
        per_class_accuracy=per_class,
        recorded_accuracy=result.model.loaded.metadata.evaluation.accuracy,
    )


@router.get("/{index}", response_model=TestSample, responses=NOT_FOUND)
async def test_sample(index: TestIndex, test_set: TestSetDep, predictor: PredictorDep) -> TestSample:
    """Predict test image `index` (0-9999) and compare with its true label."""
    check_index(index, test_set)
    result = await predictor.predict(test_set.images[index : index + 1])
    return samples(np.array([index]), result, test_set)[0]


@router.get(
    "/{index}/image",
    response_class=Response,
    responses={**NOT_FOUND, 200: {"content": {"image/png": {}}, "description": "the sample as PNG"}},
)
def test_image(
    index: TestIndex,
    test_set: TestSetDep,
    scale: Annotated[int, Query(ge=1, le=20, description="enlarge by this factor", examples=[4])] = 1,
) -> Response:
    """Test image `index` as a PNG, exactly the pixels the model gets (light digit on dark)."""
    check_index(index, test_set)
    return Response(png_bytes(test_set.images[index], scale), media_type="image/png")
