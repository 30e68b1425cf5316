"""FastAPI dependencies: the only way routes reach settings, the model and the test set."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import Depends, Request

from app.api.errors import ApiError
from app.config import Settings
from app.serving.explain import ExplainBusyError, Explanation
from app.serving.inference import BatchResult, OverloadedError, ServingModel
from app.serving.state import ServiceState
from model_store.mnist_data import MnistSplit


async def get_state(request: Request) -> ServiceState:
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None:
        raise ApiError(503, "the service is starting; no model is loaded yet")
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


class RequestPredictor:
    """The predictor as one request sees it: 503 when overloaded, and it notes which version
    answered (for the X-Model-Version header and the log line) and counts the predicted digits."""

    def __init__(self, state: ServiceState, request: Request) -> None:
        self._state = state
        self._request = request

    async def predict(self, images: np.ndarray) -> BatchResult:
        try:
            result = await self._state.predictor.predict(images)
        except OverloadedError as exc:
            raise ApiError(
                503, f"the service is overloaded ({exc}); retry shortly", {"Retry-After": "1"}
            ) from exc
        self._request.state.model_version = result.model.version
        self._state.metrics.count_predictions(result.probabilities.argmax(axis=1))
        return result

    async def explain(self, images: np.ndarray, model: ServingModel) -> list[Explanation]:
        """Attribution maps from `model` (the version that answered); 503 while explain is busy."""
        try:
            return await self._state.explainer.explain(model, images)
        except ExplainBusyError as exc:
            raise ApiError(
                503,
                "explanations are busy; retry shortly (plain predictions are not affected)",
                {"Retry-After": "1"},
            ) from exc


async def get_request_predictor(state: StateDep, request: Request) -> RequestPredictor:
    return RequestPredictor(state, request)


async def get_test_set(state: StateDep) -> MnistSplit:
    if state.test_set is None:
        raise ApiError(503, f"the MNIST test set is not available: {state.test_set_error}")
    return state.test_set


SettingsDep = Annotated[Settings, Depends(get_settings)]
PredictorDep = Annotated[RequestPredictor, Depends(get_request_predictor)]
TestSetDep = Annotated[MnistSplit, Depends(get_test_set)]
